// kv-client's connection to the proxy: RESP requests (binary-safe), one at a time.
// A failure to reach the proxy is a TransportError; an error reply is just a Reply of type
// 'error' (STYLE habit 8: the two are different things to the caller).
import net from 'node:net';
import { ReplyDecoder, encodeRespRequest } from '../common/protocol/resp.js';
import type { Reply } from '../common/protocol/reply.js';
import { TransportError } from '../common/errors.js';

export class ProxyConnection {
  private socket: net.Socket | undefined;
  private decoder = new ReplyDecoder();
  private waiting: { resolve: (r: Reply) => void; reject: (e: Error) => void }[] = [];

  constructor(
    readonly host: string,
    readonly port: number,
    private readonly timeoutMs = 0,
  ) {}

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  private connect(): Promise<net.Socket> {
    if (this.socket !== undefined && !this.socket.destroyed) return Promise.resolve(this.socket);
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: this.host, port: this.port, noDelay: true });
      this.decoder = new ReplyDecoder();
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(new TransportError(`cannot connect to the proxy at ${this.address}: ${err.code ?? err.message}`));
      };
      socket.setTimeout(5000, () => socket.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })));
      socket.once('error', onError);
      socket.once('connect', () => {
        socket.setTimeout(0);
        socket.off('error', onError);
        this.socket = socket;
        socket.on('data', (chunk: Buffer) => this.onData(chunk));
        socket.on('error', () => {});
        socket.on('close', () => this.onClose(socket));
        resolve(socket);
      });
    });
  }

  private onData(chunk: Buffer): void {
    const bad = this.decoder.feed(chunk, (reply) => {
      this.waiting.shift()?.resolve(reply);
    });
    if (bad !== undefined) this.socket?.destroy(new Error(bad));
  }

  private onClose(socket: net.Socket): void {
    if (this.socket === socket) this.socket = undefined;
    const waiting = this.waiting;
    this.waiting = [];
    for (const w of waiting) w.reject(new TransportError(`lost the connection to the proxy at ${this.address}`));
  }

  /** Send one command; reconnects first if the previous connection dropped. */
  async send(args: readonly (Buffer | string)[]): Promise<Reply> {
    const socket = await this.connect();
    return new Promise<Reply>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      if (this.timeoutMs > 0) {
        timer = setTimeout(() => {
          reject(new TransportError(`no reply from the proxy within ${this.timeoutMs} ms`));
          socket.destroy();
        }, this.timeoutMs);
      }
      this.waiting.push({
        resolve: (r) => {
          if (timer) clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          if (timer) clearTimeout(timer);
          reject(e);
        },
      });
      socket.write(encodeRespRequest(args));
    });
  }

  close(): void {
    this.socket?.end();
    this.socket = undefined;
  }
}
