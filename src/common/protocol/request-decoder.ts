// Decodes requests from a client byte stream. Pure: push bytes in, pull requests out.
//
// Two framings share one connection, chosen per request by its first byte:
//  - `*` starts a RESP array of bulk strings (what redis-cli, redis-benchmark and ioredis send);
//  - anything else is one text line ending in LF (a trailing CR is dropped), split on blanks.
//    Commands listed in `textRest` take the rest of the line, spaces included, as their last
//    argument (`SET key hello world`).
//
// `next()` returns a status instead of an object so the hot path allocates nothing but the
// argument array. "Need more bytes" is not an error (STYLE habit 3).
//
// The arguments are views into the pushed bytes, so they are valid only until the caller
// reuses the memory it pushed: call own() before that, and copy any argument kept longer.
import { ByteQueue, parseIntBytes } from './byte-queue.js';
import type { Limits } from '../limits.js';
import { DEFAULT_LIMITS } from '../limits.js';

export enum Decode {
  /** Not enough bytes yet. */
  NeedMore = 0,
  /** `args` and `resp` describe one complete request. */
  Request = 1,
  /** One request was unusable (`error` says why); the stream is still in sync. */
  Error = 2,
  /** The stream cannot be framed any more (`error` says why); reply once and close. */
  Fatal = 3,
}

const CR = 0x0d;
const STAR = 0x2a;
const DOLLAR = 0x24;
const SPACE = 0x20;
const TAB = 0x09;

export interface RequestDecoderOptions {
  limits?: Limits;
  /** Lower-case command name -> index of the argument that takes the rest of a text line. */
  textRest?: ReadonlyMap<string, number>;
}

export class RequestDecoder {
  /** Arguments of the last decoded request (args[0] is the command name). */
  args: Buffer[] = [];
  /** Whether the last decoded request was RESP (and so must be answered in RESP). */
  resp = false;
  /** Reason for the last Error/Fatal. */
  error = '';

  private readonly q = new ByteQueue();
  private readonly limits: Limits;
  private readonly textRest: ReadonlyMap<string, number>;
  /** RESP array state, kept across pushes so a large array is parsed once, not per chunk. */
  private arrayLeft = 0;
  private bulkLen = -1;
  private partial: Buffer[] = [];
  /** partial[0 .. partialOwned) are copies (see own()). */
  private partialOwned = 0;
  /** Discarding the rest of an over-long text line. */
  private skippingLine = false;
  private fatal = false;

  constructor(options: RequestDecoderOptions = {}) {
    this.limits = options.limits ?? DEFAULT_LIMITS;
    this.textRest = options.textRest ?? new Map();
  }

  /** Bytes held but not yet decoded: bounded by the limits, whatever the peer sends. */
  get buffered(): number {
    return this.q.available;
  }

  push(chunk: Buffer): void {
    if (this.fatal) return;
    if (this.skippingLine) {
      const lf = chunk.indexOf(0x0a);
      if (lf < 0) return; // still inside the over-long line: drop it unbuffered
      this.skippingLine = false;
      chunk = chunk.subarray(lf + 1);
    }
    this.q.push(chunk);
  }

  /**
   * Copy what is still held of the pushed bytes (a request not complete yet, or not decoded
   * yet), so the memory they were pushed in can be reused. Arguments returned so far are not
   * copied: they are the caller's to copy if it keeps them.
   */
  own(): void {
    this.q.own();
    for (let i = this.partialOwned; i < this.partial.length; i++) this.partial[i] = Buffer.from(this.partial[i]!);
    this.partialOwned = this.partial.length;
  }

  next(): Decode {
    if (this.fatal) return Decode.NeedMore;
    for (;;) {
      if (this.skippingLine) return Decode.NeedMore;
      if (this.arrayLeft > 0) return this.continueArray();
      if (this.q.available === 0) return Decode.NeedMore;
      this.q.ensure(1);
      if (this.q.head[this.q.pos] === STAR) {
        const lf = this.q.indexOfLF();
        if (lf < 0) return this.lineTooLong() ? this.fail('ERR Protocol error: too big multibulk header') : Decode.NeedMore;
        const head = this.q.head;
        const end = lf > this.q.pos && head[lf - 1] === CR ? lf - 1 : lf;
        const n = parseIntBytes(head, this.q.pos + 1, end);
        this.q.consume(lf + 1 - this.q.pos);
        if (Number.isNaN(n)) return this.fail('ERR Protocol error: invalid multibulk length');
        if (n > this.limits.maxArgs) return this.fail(`ERR Protocol error: multibulk length ${n} exceeds limit ${this.limits.maxArgs}`);
        if (n <= 0) continue; // `*0` / `*-1`: Redis ignores these, and so do we
        this.arrayLeft = n;
        this.partial = [];
        this.partialOwned = 0;
        this.bulkLen = -1;
        continue;
      }
      const status = this.textLine();
      if (status === -1) continue; // blank line
      return status;
    }
  }

  private continueArray(): Decode {
    const q = this.q;
    while (this.arrayLeft > 0) {
      if (this.bulkLen < 0) {
        const lf = q.indexOfLF();
        if (lf < 0) return this.lineTooLong() ? this.fail('ERR Protocol error: too big bulk header') : Decode.NeedMore;
        const head = q.head;
        if (head[q.pos] !== DOLLAR) {
          const got = String.fromCharCode(head[q.pos]!);
          return this.fail(`ERR Protocol error: expected '$', got '${printable(got)}'`);
        }
        const end = head[lf - 1] === CR ? lf - 1 : lf;
        const len = parseIntBytes(head, q.pos + 1, end);
        q.consume(lf + 1 - q.pos);
        if (Number.isNaN(len) || len < 0) return this.fail('ERR Protocol error: invalid bulk length');
        if (len > this.limits.maxBulkBytes) return this.fail(`ERR Protocol error: bulk length ${len} exceeds limit ${this.limits.maxBulkBytes}`);
        this.bulkLen = len;
      }
      if (!q.ensure(this.bulkLen + 2)) return Decode.NeedMore;
      const start = q.pos;
      const head = q.head;
      if (head[start + this.bulkLen] !== CR || head[start + this.bulkLen + 1] !== 0x0a) {
        return this.fail('ERR Protocol error: bulk string not terminated by CRLF');
      }
      this.partial.push(head.subarray(start, start + this.bulkLen));
      q.consume(this.bulkLen + 2);
      this.bulkLen = -1;
      this.arrayLeft--;
    }
    this.args = this.partial;
    this.partial = [];
    this.partialOwned = 0;
    this.resp = true;
    return Decode.Request;
  }

  /** Returns a Decode status, or -1 for a blank line that should simply be skipped. */
  private textLine(): Decode | -1 {
    const q = this.q;
    const lf = q.indexOfLF();
    if (lf < 0) {
      if (this.lineTooLong()) {
        // Recoverable: forget what we hold and drop bytes up to the next newline.
        q.clear();
        this.skippingLine = true;
        this.resp = false;
        this.error = `ERR line too long (limit ${this.limits.maxLineBytes} bytes)`;
        return Decode.Error;
      }
      return Decode.NeedMore;
    }
    const head = q.head;
    const start = q.pos;
    const end = lf > start && head[lf - 1] === CR ? lf - 1 : lf;
    q.consume(lf + 1 - start);
    this.resp = false;
    if (end - start > this.limits.maxLineBytes) {
      this.error = `ERR line too long (limit ${this.limits.maxLineBytes} bytes)`;
      return Decode.Error;
    }
    const args = tokenize(head, start, end, this.textRest);
    if (args.length === 0) return -1;
    this.args = args;
    return Decode.Request;
  }

  /** A line still arriving is too long once it cannot fit even if its next bytes are CR LF. */
  private lineTooLong(): boolean {
    return this.q.lineLength > this.limits.maxLineBytes + 1;
  }

  /** Only RESP framing errors are fatal, so the final ERR goes out in RESP. */
  private fail(message: string): Decode {
    this.fatal = true;
    this.resp = true;
    this.error = message;
    this.q.clear();
    this.partial = [];
    this.partialOwned = 0;
    this.arrayLeft = 0;
    return Decode.Fatal;
  }
}

function isBlank(c: number | undefined): boolean {
  return c === SPACE || c === TAB;
}

/** Split a text line on blanks; a `textRest` command's last argument is the rest of the line. */
export function tokenize(line: Buffer, start: number, end: number, textRest: ReadonlyMap<string, number>): Buffer[] {
  const args: Buffer[] = [];
  let restAt = -1;
  let i = start;
  while (i < end) {
    while (i < end && isBlank(line[i])) i++;
    if (i >= end) break;
    if (args.length === restAt) {
      args.push(line.subarray(i, end));
      break;
    }
    const from = i;
    while (i < end && !isBlank(line[i])) i++;
    args.push(line.subarray(from, i));
    if (args.length === 1) restAt = textRest.get(line.toString('latin1', from, i).toLowerCase()) ?? -1;
  }
  return args;
}

function printable(s: string): string {
  return /^[\x20-\x7e]$/.test(s) ? s : `\\x${s.charCodeAt(0).toString(16).padStart(2, '0')}`;
}
