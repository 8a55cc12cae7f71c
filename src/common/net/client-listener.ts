// The accept loop shared by kv-server and kv-proxy: bind (paused, half-open allowed), enforce
// --max-clients, wrap each socket in a ClientConnection, and keep the counters INFO reports.
import net from 'node:net';
import { ClientConnection, type ConnectionOptions } from './client-connection.js';

export class ClientListener {
  readonly clients = new Set<ClientConnection>();
  totalConnections = 0;
  totalCommands = 0;
  /** Commands in the last whole second. */
  opsPerSec = 0;
  private opsTimer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  /**
   * Bind now; connections wait (paused) until accept(). Half-open connections are allowed, so
   * a client that sends its requests and shuts its side (`nc -q1`) still gets every reply.
   */
  static async bind(host: string, port: number): Promise<ClientListener> {
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port, host, exclusive: true }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return new ClientListener(server, (server.address() as net.AddressInfo).port);
  }

  /** Start serving connections, at most `maxClients` at once. */
  accept(maxClients: number, options: Omit<ConnectionOptions, 'onClose' | 'onCommand'>): void {
    let lastCommands = 0;
    this.opsTimer = setInterval(() => {
      this.opsPerSec = this.totalCommands - lastCommands;
      lastCommands = this.totalCommands;
    }, 1000);
    this.opsTimer.unref();
    this.server.on('connection', (socket: net.Socket) => {
      this.totalConnections++;
      if (this.clients.size >= maxClients) {
        socket.end('-ERR max clients reached\r\n');
        socket.on('error', () => socket.destroy());
        return;
      }
      const conn = new ClientConnection(socket, {
        ...options,
        onClose: (c) => this.clients.delete(c),
        onCommand: () => this.totalCommands++,
      });
      this.clients.add(conn);
      socket.resume();
    });
  }

  /** Stop accepting; resolves when the listening socket is closed. */
  stop(): Promise<void> {
    if (this.opsTimer) clearInterval(this.opsTimer);
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  closeClients(): void {
    for (const conn of this.clients) conn.close();
  }
}
