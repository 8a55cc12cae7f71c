// One client connection, shared by kv-server and kv-proxy: the only code that reads client
// sockets. It decodes requests, applies the rules every command shares (unknown command,
// arity, AUTH/NOAUTH, QUIT), hands the rest to an executor, and writes replies in request order,
// in the framing each request used (text or RESP).
//
// Replies are collected per event-loop turn and leave in one socket write. An executor may
// answer later (the proxy waits for a backend); such replies take a slot in an ordered queue.
// A server also holds replies until the WAL group they depend on is durable: see OutputGate.
import type { Socket } from 'node:net';
import { RequestDecoder, Decode } from '../protocol/request-decoder.js';
import { ByteSink } from '../protocol/byte-sink.js';
import { writeRespReply } from '../protocol/resp.js';
import { writeTextReply, type TextStyle } from '../protocol/text.js';
import { error, OK, ownedReply, type Reply } from '../protocol/reply.js';
import { arityError, hasFlag, lookupCommand, TEXT_REST, type CommandSpec } from '../commands/table.js';
import { CommandError } from '../errors.js';
import { DEFAULT_MAX_OUTPUT, type Limits } from '../limits.js';
import type { PasswordCheck } from '../auth.js';

/** Returned by an executor that will answer later through `conn.complete(slot, reply)`. */
export const LATER = Symbol('later');
/**
 * Like LATER, and the connection runs nothing else until this reply is in. For commands whose
 * effects later requests on the same connection must observe, but which are not a single
 * FIFO-ordered backend request: ADD/REMOVE, and multi-step operations on moving keys.
 */
export const LATER_EXCLUSIVE = Symbol('later-exclusive');
export type Answer = Reply | typeof LATER | typeof LATER_EXCLUSIVE;

export interface Executor {
  /** Which commands this process serves; anything else is an unknown command. */
  serves(spec: CommandSpec): boolean;
  /**
   * `args` are views into the client's read buffer, valid only until this returns: copy
   * whatever is kept longer (the store and the backend queues copy what they are given).
   */
  execute(conn: ClientConnection, spec: CommandSpec, args: Buffer[], slot: number): Answer;
}

/**
 * Lets a server hold replies until the WAL group they depend on is settled: a write's own
 * group, or for a read, the group that last wrote the key it read (so no client ever sees
 * data that a crash could still take back). On a failed group, the held replies become errors.
 */
export interface OutputGate {
  settledEpoch(): number;
  /** Call `conn.settle()` as epochs settle, for as long as `conn.waitingEpoch` is non-zero. */
  watch(conn: ClientConnection): void;
}

export interface ConnectionOptions {
  limits: Limits;
  executor: Executor;
  password?: PasswordCheck | undefined;
  gate?: OutputGate | undefined;
  /** Disconnect a client whose unread replies exceed this (unset: DEFAULT_MAX_OUTPUT). */
  maxOutputBytes?: number | undefined;
  /** Close a connection idle this long (0 or unset: never, as Redis's `timeout 0`). */
  idleTimeoutMs?: number | undefined;
  onClose?: (conn: ClientConnection) => void;
  onCommand?: () => void;
  /**
   * Read the socket's 'data' events. Otherwise its owner calls received() with each read
   * (ClientListener: a shared read buffer).
   */
  streamReads?: boolean | undefined;
}

interface Slot {
  resp: boolean;
  style: TextStyle;
  reply: Reply | undefined;
  exclusive: boolean;
}

interface HeldOutput {
  epoch: number;
  bytes: Buffer;
  /** Framing of each reply in `bytes`, to rewrite them as errors if the group fails. */
  modes: boolean[];
}

let nextId = 1;

/**
 * Most requests of one client awaiting an answer before we stop reading it (proxy
 * backpressure). Bounds what one client can have in flight at the servers, and so how much
 * reply data can be coming back for a client that may not be reading it.
 */
const MAX_IN_FLIGHT = 256;
/** A NO-EVICT link is throttled above this much unread output. */
const NO_EVICT_HIGH_WATER = 8 * 1024 * 1024;
/** Hand output to the socket mid-batch once this much has built up. */
const FLUSH_EARLY_BYTES = 256 * 1024;

export class ClientConnection {
  readonly id = nextId++;
  readonly connectedAt = Date.now();
  authenticated: boolean;
  name = '';
  /** Set by CLIENT NO-EVICT on: throttle instead of disconnecting when output piles up. */
  noEvict = false;
  commands = 0;
  private readonly decoder: RequestDecoder;
  private readonly sink = new ByteSink(4096);
  /** Framing of each reply currently in `sink`, in order. */
  private sinkModes: boolean[] = [];
  /** Highest WAL epoch a reply in `sink` depends on (0: none). */
  private sinkEpoch = 0;
  /** Replies not yet in `sink` because an earlier one is still outstanding. */
  private readonly slots: Slot[] = [];
  private slotBase = 0;
  private held: HeldOutput[] = [];
  private heldBytes = 0;
  /** Decoding stopped because MAX_IN_FLIGHT answers are outstanding (socket paused). */
  private throttled = false;
  /** Decoding stopped because a NO-EVICT link's output is over its high-water mark. */
  private outputWait = false;
  private quitting = false;
  private closed = false;
  private processing = false;
  /** An exclusive request is outstanding: decode nothing further until it completes. */
  private blocked = false;
  /** The client shut down its sending side: answer what it sent, then close. */
  private eof = false;
  /** Every complete request received so far has been dispatched. */
  private inputDrained = true;
  /** Slot of the request being executed right now, and its reply if it completed synchronously. */
  private executingSlot = -1;
  private syncReply: Reply | undefined;

  constructor(
    readonly socket: Socket,
    private readonly options: ConnectionOptions,
  ) {
    this.authenticated = options.password === undefined;
    this.decoder = new RequestDecoder({ limits: options.limits, textRest: TEXT_REST });
    socket.setNoDelay(true);
    if (options.idleTimeoutMs) {
      // Idle means no traffic and nothing outstanding: a client waiting for a long ADD is not idle.
      socket.setTimeout(options.idleTimeoutMs, () => {
        if (this.slots.length === 0 && this.held.length === 0) socket.destroy();
      });
    }
    if (options.streamReads !== false) socket.on('data', (chunk: Buffer) => this.received(chunk));
    // The listener runs with allowHalfOpen: a client that sends its requests and then shuts
    // down its side (`nc -q1`, `printf ... | nc`) still gets every reply, including those held
    // for an fsync or a backend. We end our side once the last reply is out.
    socket.on('end', () => {
      this.eof = true;
      this.maybeEnd();
    });
    socket.on('error', () => socket.destroy());
    socket.on('drain', () => this.resumeOutput());
    socket.on('close', () => {
      this.closed = true;
      options.onClose?.(this);
    });
  }

  get remoteAddress(): string {
    return `${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? 0}`;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Bytes from the client. `chunk` may be a view into memory reused for the next read: every
   * request in it is executed now, and what is left of it (a request not complete yet, or not
   * run yet because this client must wait) is copied before this returns. So executors must
   * copy any argument they keep past execute(), and a reply queued behind an outstanding one
   * is copied too (see reply()).
   */
  received(chunk: Buffer): void {
    if (this.quitting || this.closed) return;
    this.decoder.push(chunk);
    this.resumeDecoding();
    this.decoder.own();
  }

  private drainRequests(): void {
    const decoder = this.decoder;
    this.inputDrained = false;
    while (!this.quitting && !this.blocked && !this.closed && !this.outputWait) {
      if (this.slots.length >= MAX_IN_FLIGHT) {
        // Enough answers outstanding (a proxy client pipelining hard): read on once they come.
        this.throttled = true;
        this.socket.pause();
        return;
      }
      const status = decoder.next();
      if (status === Decode.NeedMore) {
        this.inputDrained = true;
        return;
      }
      if (status === Decode.Request) {
        this.handle(decoder.args, decoder.resp);
        // Bound what replies can pile up while one chunk of requests is executed: hand big
        // output to the socket as we go, and cut a client whose unread output passes the limit.
        if (this.sink.length > FLUSH_EARLY_BYTES) this.flush();
        if (this.outputFull()) return;
        continue;
      }
      // Error keeps the stream (a too-long text line was skipped); Fatal ends it.
      this.reply(error(decoder.error), decoder.resp, 'plain');
      if (status === Decode.Fatal) {
        this.quitting = true;
        return;
      }
    }
  }

  private handle(args: Buffer[], resp: boolean): void {
    this.commands++;
    this.options.onCommand?.();
    const spec = lookupCommand(args[0]!);
    if (spec === undefined || !this.options.executor.serves(spec)) {
      this.reply(error(`ERR unknown command '${printableName(args[0]!)}'`), resp, 'plain');
      return;
    }
    const style = spec.text;
    const bad = arityError(spec, args.length);
    if (bad !== undefined) {
      this.reply(error(bad), resp, style);
      return;
    }
    if (spec.name === 'quit') {
      this.reply(OK, resp, 'plain');
      this.quitting = true;
      return;
    }
    if (spec.name === 'auth') {
      this.reply(this.auth(args), resp, 'plain');
      return;
    }
    if (!this.authenticated && !hasFlag(spec, 'noauth')) {
      this.reply(error('NOAUTH Authentication required.'), resp, style);
      return;
    }
    const slot = this.slotBase + this.slots.length;
    let answer: Answer;
    this.executingSlot = slot;
    try {
      answer = this.options.executor.execute(this, spec, args, slot);
    } catch (err) {
      answer = err instanceof CommandError ? error(err.reply) : error(`ERR internal error: ${(err as Error).message}`);
    } finally {
      this.executingSlot = -1;
    }
    if (answer !== LATER && answer !== LATER_EXCLUSIVE) {
      this.reply(answer, resp, style);
    } else if (this.syncReply !== undefined) {
      // The executor completed the slot before returning (e.g. a node known to be down).
      const reply = this.syncReply;
      this.syncReply = undefined;
      this.reply(reply, resp, style);
    } else {
      const exclusive = answer === LATER_EXCLUSIVE;
      this.slots.push({ resp, style, reply: undefined, exclusive });
      if (exclusive) {
        // Stop reading too, so a client cannot pile up unbounded input behind a long ADD.
        this.blocked = true;
        this.socket.pause();
      }
    }
  }

  private auth(args: Buffer[]): Reply {
    const password = this.options.password;
    // AUTH <password> or AUTH <username> <password> (Redis 6 form; the username is ignored).
    const candidate = args[args.length - 1]!;
    if (args.length > 3) return error("ERR wrong number of arguments for 'auth' command");
    if (password === undefined) return error('ERR AUTH called without any password configured for the default user. Are you sure your configuration is correct?');
    if (!password.matches(candidate)) return error('WRONGPASS invalid username-password pair or user is disabled.');
    this.authenticated = true;
    return OK;
  }

  /** Queue a reply in order: straight into the sink when nothing is outstanding. */
  private reply(reply: Reply, resp: boolean, style: TextStyle): void {
    if (this.slots.length > 0) {
      // Kept past this read: it may hold an argument's bytes (ECHO, PING msg).
      this.slots.push({ resp, style, reply: ownedReply(reply), exclusive: false });
      return;
    }
    this.slotBase++;
    this.encode(reply, resp, style);
  }

  private encode(reply: Reply, resp: boolean, style: TextStyle): void {
    if (resp) writeRespReply(this.sink, reply);
    else writeTextReply(this.sink, reply, style);
    this.sinkModes.push(resp);
  }

  /** Fill a slot handed out by an executor that answered LATER. */
  complete(slot: number, reply: Reply): void {
    if (slot === this.executingSlot) {
      this.syncReply = reply;
      return;
    }
    if (this.closed) return; // the client is gone: drop late answers instead of buffering them
    const index = slot - this.slotBase;
    const entry = this.slots[index];
    if (entry === undefined || entry.reply !== undefined) return;
    entry.reply = reply;
    if (entry.exclusive) {
      this.blocked = false;
      if (!this.throttled) this.socket.resume();
    }
    if (index === 0) {
      let n = 0;
      while (n < this.slots.length && this.slots[n]!.reply !== undefined) {
        const s = this.slots[n]!;
        this.encode(s.reply!, s.resp, s.style);
        n++;
      }
      this.slots.splice(0, n);
      this.slotBase += n;
    }
    if (this.processing) return;
    const resume = (entry.exclusive || (this.throttled && this.slots.length < MAX_IN_FLIGHT / 2)) && !this.closed;
    if (!resume) {
      // Many replies usually arrive in one backend read: write them out together.
      scheduleFlush(this);
      return;
    }
    if (this.throttled) {
      this.throttled = false;
      this.socket.resume();
    }
    // Resume the requests that queued up behind the exclusive one (or the in-flight limit).
    this.resumeDecoding();
  }

  /** Decode and run what the client already sent, then send what that produced. */
  private resumeDecoding(): void {
    this.processing = true;
    try {
      this.drainRequests();
    } finally {
      this.processing = false;
    }
    this.flush();
  }

  /** The reply being produced depends on WAL group `epoch` (called by the server's executor). */
  dependsOn(epoch: number): void {
    if (epoch > this.sinkEpoch) this.sinkEpoch = epoch;
  }

  /** Send what the sink holds, unless it depends on a WAL group that is not durable yet. */
  flush(): void {
    if (this.closed) return;
    if (this.sink.length > 0) {
      const gate = this.options.gate;
      const lastHeld = this.held.length > 0 ? this.held[this.held.length - 1]!.epoch : 0;
      const epoch = Math.max(this.sinkEpoch, lastHeld);
      this.sinkEpoch = 0;
      if (gate !== undefined && (this.held.length > 0 || epoch > gate.settledEpoch())) {
        const bytes = this.sink.take();
        this.held.push({ epoch, bytes, modes: this.sinkModes });
        this.heldBytes += bytes.length;
        this.sinkModes = [];
        gate.watch(this);
      } else {
        this.write(this.sink.take());
        this.sinkModes = [];
      }
    }
    this.maybeEnd();
  }

  /** The gate settled `epoch`: send held output up to it (as errors if its group failed). */
  settle(epoch: number, failure?: string): void {
    let n = 0;
    const out: Buffer[] = [];
    for (const h of this.held) {
      if (h.epoch > epoch) break;
      out.push(failure === undefined ? h.bytes : errorsFor(h.modes, failure));
      this.heldBytes -= h.bytes.length;
      n++;
    }
    if (n === 0) return;
    this.held.splice(0, n);
    this.write(out.length === 1 ? out[0]! : Buffer.concat(out));
    this.resumeOutput();
    this.maybeEnd();
  }

  get waitingEpoch(): number {
    return this.held.length > 0 ? this.held[0]!.epoch : 0;
  }

  /** Reply bytes produced for this client and not yet read by it. */
  private unreadOutput(): number {
    return this.sink.length + this.heldBytes + this.socket.writableLength;
  }

  /**
   * Is this client's unread output over its bound? A client that does not read its replies is
   * cut off there, as Redis does with its client-output-buffer-limit. A NO-EVICT link (the
   * proxy) is throttled instead: we stop reading its requests until it has caught up.
   */
  private outputFull(): boolean {
    const unread = this.unreadOutput();
    if (this.noEvict) {
      if (unread <= Math.min(this.options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT, NO_EVICT_HIGH_WATER)) return false;
      this.outputWait = true;
      this.socket.pause();
      return true;
    }
    if (unread <= (this.options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT)) return false;
    this.socket.destroy();
    return true;
  }

  /** A throttled NO-EVICT link caught up: read and execute its requests again. */
  private resumeOutput(): void {
    if (!this.outputWait || this.closed || this.unreadOutput() > NO_EVICT_HIGH_WATER / 2) return;
    this.outputWait = false;
    if (!this.blocked && !this.throttled) this.socket.resume();
    this.resumeDecoding();
  }

  private write(bytes: Buffer): void {
    if (this.closed) return;
    this.socket.write(bytes);
    if (!this.processing) this.outputFull();
  }

  private maybeEnd(): void {
    const done = this.quitting || (this.eof && this.inputDrained && !this.blocked);
    if (done && this.slots.length === 0 && this.held.length === 0 && this.sink.length === 0 && !this.closed) {
      this.socket.end();
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Connections with replies completed during the current callback, flushed in one go after it. */
const pendingFlush = new Set<ClientConnection>();
let flushQueued = false;

function scheduleFlush(conn: ClientConnection): void {
  pendingFlush.add(conn);
  if (flushQueued) return;
  flushQueued = true;
  queueMicrotask(() => {
    flushQueued = false;
    for (const c of pendingFlush) c.flush();
    pendingFlush.clear();
  });
}

function errorsFor(modes: boolean[], message: string): Buffer {
  return Buffer.from(modes.map((resp) => (resp ? `-${message}\r\n` : `${message}\n`)).join(''), 'latin1');
}

function printableName(name: Buffer): string {
  const text = name.subarray(0, 64).toString('latin1');
  return text.replace(/[^\x20-\x7e]/g, '?');
}
