// RESP2 encoding of requests and replies, and a push-style decoder for replies (used by the
// proxy to read its backends, and by kv-client). Only this folder knows the wire format.
import type { Reply } from './reply.js';
import { ByteQueue, parseIntBytes } from './byte-queue.js';
import { ByteSink } from './byte-sink.js';
import { DEFAULT_LIMITS, type Limits } from '../limits.js';

const CR = 0x0d;
const LF = 0x0a;

export function writeRespReply(out: ByteSink, reply: Reply): void {
  switch (reply.type) {
    case 'simple':
      out.latin1('+').latin1(oneLine(reply.value)).latin1('\r\n');
      return;
    case 'error':
      out.latin1('-').latin1(oneLine(reply.message)).latin1('\r\n');
      return;
    case 'int':
      out.latin1(`:${reply.value}\r\n`);
      return;
    case 'bulk':
      if (reply.value === null) out.latin1('$-1\r\n');
      else out.latin1(`$${reply.value.length}\r\n`).bytes(reply.value).latin1('\r\n');
      return;
    case 'array':
      if (reply.items === null) {
        out.latin1('*-1\r\n');
        return;
      }
      out.latin1(`*${reply.items.length}\r\n`);
      for (const item of reply.items) writeRespReply(out, item);
      return;
  }
}

/** Write a request as a RESP array of bulk strings. */
export function writeRespRequest(out: ByteSink, args: readonly (Buffer | string)[]): void {
  out.latin1(`*${args.length}\r\n`);
  for (const arg of args) {
    if (typeof arg === 'string') {
      const bytes = Buffer.from(arg, 'utf8');
      out.latin1(`$${bytes.length}\r\n`).bytes(bytes).latin1('\r\n');
    } else {
      out.latin1(`$${arg.length}\r\n`).bytes(arg).latin1('\r\n');
    }
  }
}

function digitCount(n: number): number {
  let digits = 1;
  for (let rest = n; rest >= 10; rest = Math.floor(rest / 10)) digits++;
  return digits;
}

/** Bytes of `$<n>\r\n<n bytes>\r\n`: a bulk string of `n` bytes. */
export function bulkLength(n: number): number {
  return digitCount(n) + n + 5;
}

/**
 * Write `data` as a bulk string into `out` at `at`, which must have bulkLength(data.length)
 * bytes of room there (no check); returns the offset after it. For encoders that size their
 * output first.
 */
export function writeBulk(out: Buffer, at: number, data: Uint8Array): number {
  const n = data.length;
  const digits = digitCount(n);
  out[at] = 0x24; // '$'
  for (let rest = n, i = at + digits; i > at; i--, rest = Math.floor(rest / 10)) out[i] = 0x30 + (rest % 10);
  let end = at + digits + 1;
  out[end] = CR;
  out[end + 1] = LF;
  out.set(data, end + 2);
  end += 2 + n;
  out[end] = CR;
  out[end + 1] = LF;
  return end + 2;
}

export function encodeRespRequest(args: readonly (Buffer | string)[]): Buffer {
  const sink = new ByteSink(256);
  writeRespRequest(sink, args);
  return sink.take();
}

export function encodeRespReply(reply: Reply): Buffer {
  const sink = new ByteSink(256);
  writeRespReply(sink, reply);
  return sink.take();
}

/** Simple strings and errors cannot carry CR or LF. */
function oneLine(text: string): string {
  return /[\r\n]/.test(text) ? text.replace(/[\r\n]+/g, ' ') : text;
}

export interface ReplyDecoderOptions {
  limits?: Limits;
  /** Deepest nesting of arrays accepted. */
  maxDepth?: number;
}

interface OpenArray {
  items: Reply[];
  left: number;
}

/**
 * Push-style RESP reply decoder. `next()` returns a Reply, `undefined` when more bytes are
 * needed, and throws ProtocolError-style `Error` for unrecoverable framing problems (the caller
 * closes the connection). Parse state is kept across pushes, so a large array costs linear work.
 */
export class ReplyDecoder {
  private readonly q = new ByteQueue();
  private readonly limits: Limits;
  private readonly maxDepth: number;
  private stack: OpenArray[] = [];
  private bulkLen = -1;

  constructor(options: ReplyDecoderOptions = {}) {
    this.limits = options.limits ?? { ...DEFAULT_LIMITS, maxBulkBytes: 512 * 1024 * 1024, maxArgs: 64 * 1024 * 1024 };
    this.maxDepth = options.maxDepth ?? 8;
  }

  push(chunk: Buffer): void {
    this.q.push(chunk);
  }

  /**
   * Push a chunk and hand every complete reply to `onReply` (which may return false to stop).
   * Returns the reason if the bytes are not RESP; the caller should then close the connection.
   */
  feed(chunk: Buffer, onReply: (reply: Reply) => boolean | void): string | undefined {
    this.push(chunk);
    for (;;) {
      let reply: Reply | undefined;
      try {
        reply = this.next();
      } catch (err) {
        return (err as Error).message;
      }
      if (reply === undefined || onReply(reply) === false) return undefined;
    }
  }

  next(): Reply | undefined {
    const q = this.q;
    for (;;) {
      let value: Reply;
      if (this.bulkLen >= 0) {
        if (!q.ensure(this.bulkLen + 2)) return undefined;
        const head = q.head;
        const start = q.pos;
        if (head[start + this.bulkLen] !== CR || head[start + this.bulkLen + 1] !== 0x0a) {
          throw new Error('Protocol error: bulk string not terminated by CRLF');
        }
        // Copy: the reply may outlive the socket chunk it arrived in, and must not pin it.
        value = { type: 'bulk', value: Buffer.from(head.subarray(start, start + this.bulkLen)) };
        q.consume(this.bulkLen + 2);
        this.bulkLen = -1;
      } else {
        const lf = q.indexOfLF();
        if (lf < 0) {
          if (q.lineLength > this.limits.maxLineBytes) throw new Error('Protocol error: reply line too long');
          return undefined;
        }
        const head = q.head;
        const start = q.pos;
        const end = lf > start && head[lf - 1] === CR ? lf - 1 : lf;
        const kind = head[start];
        q.consume(lf + 1 - start);
        switch (kind) {
          case 0x2b: // +
            value = { type: 'simple', value: head.toString('latin1', start + 1, end) };
            break;
          case 0x2d: // -
            value = { type: 'error', message: head.toString('latin1', start + 1, end) };
            break;
          case 0x3a: {
            // :
            const n = parseIntBytes(head, start + 1, end);
            if (Number.isNaN(n)) throw new Error('Protocol error: invalid integer');
            value = { type: 'int', value: n };
            break;
          }
          case 0x24: {
            // $
            const n = parseIntBytes(head, start + 1, end);
            if (Number.isNaN(n) || n < -1) throw new Error('Protocol error: invalid bulk length');
            if (n > this.limits.maxBulkBytes) throw new Error('Protocol error: bulk too large');
            if (n === -1) {
              value = { type: 'bulk', value: null };
              break;
            }
            this.bulkLen = n;
            continue;
          }
          case 0x2a: {
            // *
            const n = parseIntBytes(head, start + 1, end);
            if (Number.isNaN(n) || n < -1) throw new Error('Protocol error: invalid multibulk length');
            if (n > this.limits.maxArgs) throw new Error('Protocol error: array too large');
            if (n === -1) {
              value = { type: 'array', items: null };
              break;
            }
            if (n === 0) {
              value = { type: 'array', items: [] };
              break;
            }
            if (this.stack.length >= this.maxDepth) throw new Error('Protocol error: arrays nested too deeply');
            this.stack.push({ items: [], left: n });
            continue;
          }
          default:
            throw new Error(`Protocol error: unexpected reply type byte ${kind ?? -1}`);
        }
      }
      // Attach the finished value to its parent array(s), or return it.
      for (;;) {
        const top = this.stack[this.stack.length - 1];
        if (top === undefined) return value;
        top.items.push(value);
        if (--top.left > 0) break;
        this.stack.pop();
        value = { type: 'array', items: top.items };
      }
    }
  }
}
