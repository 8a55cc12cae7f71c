// The accept loop shared by kv-server and kv-proxy: bind (paused, half-open allowed), enforce
// --max-clients, wrap each socket in a ClientConnection, and keep the counters INFO reports.
//
// Every client socket reads into one buffer, shared by all of them (see sharedReads below).
import net from 'node:net';
import { ClientConnection, type ConnectionOptions } from './client-connection.js';

/**
 * Client sockets read into this one buffer instead of a fresh Buffer per read. Reads are
 * handled one at a time, and ClientConnection.received() copies what it still needs of a read
 * (a request not complete yet) before it returns, so the next read, of any socket, can reuse
 * it. That spares an allocation and a pass through the stream machinery per read: ~1.7 µs of
 * the ~17 µs of CPU a plain request costs a minimal Node server here (docs/performance.md).
 */
const READ_BUFFER_BYTES = 64 * 1024;

/**
 * The accepted `socket`, re-opened on the same handle so that it reads into `buffer` (Node's
 * `onread` option, which it offers only for sockets made from a handle, not for accepted ones).
 * The accepted socket keeps nothing but the server's connection count, given back when the
 * new one closes. Undefined if the handle cannot be reached (then the stream reads as usual).
 */
function sharedReads(accepted: net.Socket, buffer: Buffer, received: (chunk: Buffer) => void): net.Socket | undefined {
  const holder = accepted as unknown as { _handle: unknown };
  const handle = holder._handle as { useUserBuffer?: unknown } | null;
  if (handle === null || typeof handle !== 'object' || typeof handle.useUserBuffer !== 'function') return undefined;
  holder._handle = null;
  const socket = new net.Socket({
    handle,
    allowHalfOpen: true,
    pauseOnCreate: true,
    onread: { buffer, callback: (n: number, buf: Uint8Array) => received((buf as Buffer).subarray(0, n)) },
  } as net.SocketConstructorOpts);
  socket.once('close', () => accepted.destroy());
  return socket;
}

export class ClientListener {
  readonly clients = new Set<ClientConnection>();
  totalConnections = 0;
  totalCommands = 0;
  /** How client sockets read: into the shared buffer, or (fallback) as streams. INFO shows it. */
  readMode: 'shared_buffer' | 'stream' = 'shared_buffer';
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
    const readBuffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
    this.server.on('connection', (accepted: net.Socket) => {
      this.totalConnections++;
      if (this.clients.size >= maxClients) {
        accepted.end('-ERR max clients reached\r\n');
        accepted.on('error', () => accepted.destroy());
        return;
      }
      let conn: ClientConnection | undefined;
      const shared = sharedReads(accepted, readBuffer, (chunk) => conn!.received(chunk));
      const socket = shared ?? accepted;
      this.readMode = shared === undefined ? 'stream' : 'shared_buffer';
      conn = new ClientConnection(socket, {
        streamReads: shared === undefined,
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
