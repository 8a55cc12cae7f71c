// A growable output buffer. Replies for one event-loop turn are appended here and leave in a
// single socket write, so a pipelined batch costs one syscall instead of one per reply.

export class ByteSink {
  private buf: Buffer;
  length = 0;

  constructor(initial = 16 * 1024) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  private reserve(extra: number): void {
    const need = this.length + extra;
    if (need <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < need) size *= 2;
    const bigger = Buffer.allocUnsafe(size);
    this.buf.copy(bigger, 0, 0, this.length);
    this.buf = bigger;
  }

  /** Append a string whose characters are all < 256 (ASCII headers, latin1 payloads). */
  latin1(text: string): this {
    this.reserve(text.length);
    this.length += this.buf.write(text, this.length, 'latin1');
    return this;
  }

  bytes(data: Uint8Array): this {
    this.reserve(data.length);
    this.buf.set(data, this.length);
    this.length += data.length;
    return this;
  }

  /** Take the bytes written so far (a copy, so the sink can be reused) and reset. */
  take(): Buffer {
    const out = Buffer.allocUnsafe(this.length);
    this.buf.copy(out, 0, 0, this.length);
    this.length = 0;
    // Do not keep a huge buffer around after one big reply.
    if (this.buf.length > 4 * 1024 * 1024) this.buf = Buffer.allocUnsafe(16 * 1024);
    return out;
  }
}
