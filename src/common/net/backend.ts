// One persistent, pipelined RESP connection to a kv-server: the proxy's to each node, and a
// source server's to its targets while it pushes a migration (server/range-push.ts).
//
// Requests are queued in a FIFO and written once per event-loop turn; replies come back in the
// same order, so the FIFO says whom each reply is for. A reply goes either to a client
// connection's reply slot (the hot path: no closure per request) or to a callback (migration,
// fan-out). When the connection fails, every outstanding request gets
// `ERR node <host:port> unavailable` and the node is marked down; the next request after a
// backoff reconnects. A request that sees no reply within `requestTimeoutMs` (a hung node)
// tears the connection down the same way.
import net from 'node:net';
import { encodeRespRequest, ReplyDecoder, writeRespRequest } from '../protocol/resp.js';
import { ByteSink } from '../protocol/byte-sink.js';
import { error, type Reply } from '../protocol/reply.js';
import type { Logger } from '../logger.js';

export type ReplyCallback = (reply: Reply) => void;

/** Anything that can take a reply into a numbered slot (ClientConnection does). */
export interface SlotTarget {
  complete(slot: number, reply: Reply): void;
}

/** Hand a reply to whoever waits for it: a callback, or a slot of a client connection. */
function deliver(target: SlotTarget | ReplyCallback, slot: number, reply: Reply): void {
  if (typeof target === 'function') target(reply);
  else target.complete(slot, reply);
}

export type Health = 'up' | 'down' | 'connecting' | 'idle';

export interface BackendOptions {
  password?: string | undefined;
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  logger: Logger;
}

const BACKOFF_MIN_MS = 100;

function ignoreReply(): void {}
const BACKOFF_MAX_MS = 2000;

export class Backend {
  readonly host: string;
  readonly port: number;
  health: Health = 'idle';
  lastError = '';
  private socket: net.Socket | undefined;
  private connected = false;
  private decoder = new ReplyDecoder();
  private readonly out = new ByteSink(16 * 1024);
  private flushScheduled = false;
  /** FIFO of whom each outstanding request's reply is for. */
  private targets: (SlotTarget | ReplyCallback | null)[] = [];
  private slots: number[] = [];
  private sentAt: number[] = [];
  private head = 0;
  private backoffMs = BACKOFF_MIN_MS;
  private retryAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Replies to our own handshake (AUTH) still to come, before the FIFO's. */
  private handshake = 0;
  private authPending = false;
  requests = 0;

  constructor(
    readonly address: string,
    private readonly options: BackendOptions,
  ) {
    const i = address.lastIndexOf(':');
    this.host = address.slice(0, i);
    this.port = Number(address.slice(i + 1));
  }

  get outstanding(): number {
    return this.targets.length - this.head;
  }

  private get unavailable(): string {
    return `ERR node ${this.address} unavailable${this.lastError ? ` (${this.lastError})` : ''}`;
  }

  /** Send a request whose reply fills `slot` of `target`. */
  sendToSlot(args: readonly (Buffer | string)[], target: SlotTarget, slot: number): void {
    this.submit(args, target, slot);
  }

  /** Send a request and get its reply through a callback. */
  send(args: readonly (Buffer | string)[], callback: ReplyCallback): void {
    this.submit(args, callback, 0);
  }

  /** Promise form, for the migration and admin paths (not the request hot path). */
  call(args: readonly (Buffer | string)[]): Promise<Reply> {
    return new Promise((resolve) => this.send(args, resolve));
  }

  /** Send one request that is already RESP-encoded (a migration batch made by the source). */
  callEncoded(request: Buffer): Promise<Reply> {
    return new Promise((resolve) => this.submit(request, resolve, 0));
  }

  /** Queue a request, or answer it at once with an error if the node cannot be reached now. */
  private submit(request: readonly (Buffer | string)[] | Buffer, target: SlotTarget | ReplyCallback, slot: number): void {
    if (this.ready()) this.enqueue(request, target, slot);
    else deliver(target, slot, error(this.unavailable));
  }

  private enqueue(request: readonly (Buffer | string)[] | Buffer, target: SlotTarget | ReplyCallback, slot: number): void {
    this.requests++;
    if (Buffer.isBuffer(request)) this.out.bytes(request);
    else writeRespRequest(this.out, request);
    this.targets.push(target);
    this.slots.push(slot);
    this.sentAt.push(performance.now());
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // Send at the end of this event-loop turn, so that requests from every client read in it
      // leave in one write and reach the node as one group commit. (Sending the first request
      // at once when the connection was idle cost a group of one: measured A/B, 10% more fsyncs
      // on the nodes and 8-11% fewer GET/s, for no gain in 1-client latency.)
      setImmediate(this.flushNow);
    }
  }

  private readonly flushNow = (): void => this.flush();

  private flush(): void {
    this.flushScheduled = false;
    if (this.out.length === 0) return;
    if (!this.connected) return; // written on connect
    this.socket!.write(this.out.take());
  }

  /** True if requests can be queued now (connected, or a connection attempt is under way). */
  private ready(): boolean {
    if (this.closed) return false;
    if (this.socket !== undefined) return true;
    if (performance.now() < this.retryAt) return false;
    this.connect();
    return true;
  }

  private connect(): void {
    const { connectTimeoutMs = 1000, requestTimeoutMs = 2000, password } = this.options;
    this.health = 'connecting';
    this.decoder = new ReplyDecoder();
    const socket = net.connect({ host: this.host, port: this.port, noDelay: true });
    this.socket = socket;
    socket.setTimeout(connectTimeoutMs, () => socket.destroy(new Error(`connect timeout after ${connectTimeoutMs} ms`)));
    // With a node password, AUTH is the first thing on the wire; its reply is consumed before
    // the FIFO (see onData), so queued requests keep their order behind it.
    this.authPending = password !== undefined && password !== '';
    this.handshake = this.authPending ? 1 : 0;
    socket.on('connect', () => {
      socket.setTimeout(0);
      this.connected = true;
      this.health = 'up';
      this.backoffMs = BACKOFF_MIN_MS;
      this.lastError = '';
      this.options.logger.info({ node: this.address }, 'connected to node');
      const queued = this.out.take();
      const auth = this.authPending ? encodeRespRequest(['AUTH', password!]) : undefined;
      if (auth !== undefined || queued.length > 0) socket.write(auth === undefined ? queued : Buffer.concat([auth, queued]));
      // We read everything the server sends: ask it to throttle us rather than cut us off when
      // a burst of large replies piles up (ClientConnection.outputFull). Queued behind the
      // requests already waiting, so a health check sees the node's answer to its own request.
      this.enqueue(['CLIENT', 'NO-EVICT', 'on'], ignoreReply, 0);
    });
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => {
      this.lastError = (err as NodeJS.ErrnoException).code ?? err.message;
    });
    socket.on('close', () => this.onClose(socket));
    this.timer ??= setInterval(() => this.checkTimeouts(requestTimeoutMs), Math.min(250, requestTimeoutMs));
    this.timer.unref();
  }

  private onData(chunk: Buffer): void {
    const bad = this.decoder.feed(chunk, this.onReply);
    if (bad !== undefined) {
      this.lastError = `protocol error: ${bad}`;
      this.socket?.destroy();
    }
    this.compact();
  }

  /** One reply, in FIFO order: our handshake's first, then whoever sent each request. */
  private readonly onReply = (reply: Reply): boolean => {
    if (this.handshake > 0) {
      this.handshake--;
      if (this.authPending) {
        this.authPending = false;
        if (reply.type === 'error') {
          this.lastError = `node refused our password: ${reply.message}`;
          this.socket?.destroy();
          return false;
        }
      }
      return true;
    }
    if (this.head >= this.targets.length) {
      this.lastError = 'unexpected reply';
      this.socket?.destroy();
      return false;
    }
    const target = this.targets[this.head]!;
    const slot = this.slots[this.head]!;
    this.targets[this.head] = null;
    this.head++;
    deliver(target, slot, reply);
    return true;
  };

  private compact(): void {
    if (this.head === this.targets.length) {
      this.targets = [];
      this.slots = [];
      this.sentAt = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.targets.length) {
      this.targets = this.targets.slice(this.head);
      this.slots = this.slots.slice(this.head);
      this.sentAt = this.sentAt.slice(this.head);
      this.head = 0;
    }
  }

  private checkTimeouts(requestTimeoutMs: number): void {
    if (this.head >= this.sentAt.length || this.socket === undefined) return;
    const age = performance.now() - this.sentAt[this.head]!;
    if (age > requestTimeoutMs) {
      this.lastError = `no reply within ${requestTimeoutMs} ms`;
      this.options.logger.warn({ node: this.address, ms: Math.round(age) }, 'node stopped answering; dropping connection');
      this.socket.destroy();
    }
  }

  private onClose(socket: net.Socket): void {
    if (this.socket !== socket) return;
    const wasUp = this.connected;
    this.socket = undefined;
    this.connected = false;
    this.health = this.closed ? 'idle' : 'down';
    if (!this.lastError) this.lastError = 'connection closed';
    // A connection we closed ourselves (close(): a migration's pool, a dropped node) is no loss.
    if (wasUp && !this.closed) this.options.logger.warn({ node: this.address, reason: this.lastError }, 'lost connection to node');
    // Fail everything outstanding (sent or not): the caller decides whether to retry.
    this.out.take();
    const targets = this.targets;
    const slots = this.slots;
    const head = this.head;
    this.targets = [];
    this.slots = [];
    this.sentAt = [];
    this.head = 0;
    const failure = error(this.unavailable);
    for (let i = head; i < targets.length; i++) deliver(targets[i]!, slots[i]!, failure);
    if (head === targets.length && this.lastError === 'connection closed' && wasUp) {
      // The node closed an idle connection (e.g. its --timeout): nothing failed, so the next
      // request simply reconnects, with no backoff and no "down" state.
      this.health = 'idle';
      this.retryAt = 0;
      this.lastError = '';
      return;
    }
    this.retryAt = performance.now() + this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
  }

  /** Connect now if not connected, and report whether the node answers PING. */
  async probe(): Promise<boolean> {
    this.retryAt = 0;
    const reply = await this.call(['PING']);
    return reply.type === 'simple' && reply.value === 'PONG';
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.socket?.destroy();
  }
}

/** Connections to kv-servers, one per node address. */
export class BackendPool {
  private readonly backends = new Map<string, Backend>();

  constructor(private readonly options: BackendOptions) {}

  /**
   * A second, empty pool with the same settings: separate connections, so that slow requests
   * (a move's RANGEPUSH WAIT, which holds its reply up to 100 ms, and DROPRANGE) never queue
   * client requests behind them.
   */
  fork(): BackendPool {
    return new BackendPool(this.options);
  }

  get(address: string): Backend {
    let b = this.backends.get(address);
    if (b === undefined) {
      b = new Backend(address, this.options);
      this.backends.set(address, b);
    }
    return b;
  }

  drop(address: string): void {
    this.backends.get(address)?.close();
    this.backends.delete(address);
  }

  all(): Backend[] {
    return [...this.backends.values()];
  }

  close(): void {
    for (const b of this.backends.values()) b.close();
    this.backends.clear();
  }
}
