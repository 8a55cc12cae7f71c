// The write-ahead log: replay at boot, and group commit while serving.
//
// Group commit: every record appended during one event-loop turn joins the current group.
// At the end of the turn (setImmediate) the group is written with one write() and made
// durable with one fdatasync(). While that is in flight, new records gather in the next group,
// which is flushed as soon as the previous one completes. Each group has an epoch number;
// the server holds every reply until the epoch it depends on is durable, so no `OK` leaves
// before its record is on disk (with --fsync always).
//
// Failure: if a write or fdatasync fails (ENOSPC, EIO), every group not yet durable fails
// together, the file is truncated back to the last durable byte, and the owner undoes those
// writes in memory. The next group tries again, so the server recovers when the disk does.
import fs from 'node:fs';
import path from 'node:path';
import { fsyncDirectory } from '../common/durable-file.js';
import { MAGIC, MAX_FIELD, Parse, RECORD_HEADER, RecordBatch, RecordType, isAllZero, parseRecord, sampleRecords, skipZeros, type ParsedRecord } from './wal-format.js';

export type FsyncPolicy = 'always' | 'everysec' | 'no';
export const FSYNC_POLICIES: readonly FsyncPolicy[] = ['always', 'everysec', 'no'];

/** Corruption in the middle of the log: never served, never skipped silently. */
export class WalCorruptionError extends Error {
  override readonly name = 'WalCorruptionError';
  constructor(
    readonly file: string,
    readonly offset: number,
    readonly reason: string,
  ) {
    super(`${file}: corrupt record at byte offset ${offset} (${reason}); refusing to start. Run 'kv-server --repair' to truncate the log there (a backup is kept).`);
  }
}

export interface ReplayStats {
  /** Records applied (COMMIT markers not counted). */
  records: number;
  groups: number;
  bytes: number;
  /** Set when a torn or garbage tail was cut off. */
  truncatedFrom?: number;
  /** Bytes of that tail, up to its last non-zero byte (zeros written ahead are not counted). */
  droppedBytes: number;
  /** Records of an unfinished group, dropped with the tail. */
  droppedRecords: number;
  millis: number;
}

/** Called per replayed record with views into the read buffer (copy to keep). */
export type ApplyRecord = (type: RecordType, key: Buffer, value: Buffer) => void;

export interface WalEvents {
  /** Every group up to and including `epoch` is durable (per the fsync policy). */
  durable(epoch: number): void;
  /** Every group up to and including `epoch` that was not durable has failed. */
  failed(epoch: number, error: Error): void;
}

const READ_CHUNK = 8 * 1024 * 1024;

interface RewriteState {
  /** Records appended since the rewrite began, in order. */
  tail: RecordBatch;
  /** Bytes of `tail` that belong to groups already handed to the old log. */
  tailMark: number;
  /** Set when the rewrite must be abandoned. */
  aborted: string | undefined;
}

/** Remove and return the part of the tail already written to the old log, as a committed group. */
function takeTailHead(state: RewriteState): Buffer {
  const mark = state.tailMark;
  if (mark === 0) return Buffer.alloc(0);
  const all = state.tail.bytes();
  const head = Buffer.allocUnsafe(mark + RECORD_HEADER);
  all.copy(head, 0, 0, mark);
  const commit = encodeCommit();
  commit.copy(head, mark);
  const rest = Buffer.from(all.subarray(mark));
  state.tail.reset();
  state.tail.appendRaw(rest);
  state.tailMark = 0;
  return head;
}

let commitRecord: Buffer | undefined;
function encodeCommit(): Buffer {
  if (commitRecord === undefined) {
    const b = new RecordBatch();
    b.append(RecordType.Commit, null, null);
    commitRecord = Buffer.from(b.bytes());
  }
  return commitRecord;
}

interface ScanResult {
  stats: ReplayStats;
  /** Offset just past the last COMMIT: where the log is truncated if the tail is bad. */
  goodEnd: number;
  /** Offset where the first bad or short record starts, if any. */
  badAt?: number;
  badReason?: string;
}

/**
 * How much the log holds, without reading it all: its bytes up to the zeros written ahead
 * (read backwards from the end), and about how many data records, from its first MiB. Enough
 * to size the store before a replay. Zeros when the log is empty or unreadable.
 */
export function estimateLog(file: string): { bytes: number; records: number } {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return { bytes: 0, records: 0 };
  }
  try {
    const bytes = dataEnd(fd, 0, fs.fstatSync(fd).size);
    if (bytes <= MAGIC.length) return { bytes, records: 0 };
    const head = Buffer.allocUnsafe(Math.min(1024 * 1024, bytes - MAGIC.length));
    const got = fs.readSync(fd, head, 0, head.length, MAGIC.length);
    const sample = sampleRecords(head.subarray(0, got));
    return { bytes, records: sample.bytes === 0 ? 0 : Math.ceil(((bytes - MAGIC.length) * sample.records) / sample.bytes) };
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The offset just past the last non-zero byte of the file in [from, to), or `from` when that
 * range is all zeros (the space written ahead of the log). Reads backwards from `to` a MiB at a
 * time, so it stops at the log's end without reading the log itself.
 */
function dataEnd(fd: number, from: number, to: number): number {
  const chunk = Buffer.allocUnsafe(Math.min(1024 * 1024, Math.max(0, to - from)));
  for (let end = to; end > from; ) {
    const start = Math.max(from, end - chunk.length);
    const got = fs.readSync(fd, chunk, 0, end - start, start);
    if (!isAllZero(chunk, 0, got)) {
      let last = got - 1;
      while (chunk[last] === 0) last--;
      return start + last + 1;
    }
    end = start;
  }
  return from;
}

/**
 * Read the log, applying every record of every committed group in order. Throws
 * WalCorruptionError when damage is followed by a later complete group. Does not modify the file.
 */
export function scanLog(file: string, apply: ApplyRecord, options: { allowCorruption?: boolean } = {}): ScanResult {
  const started = performance.now();
  const fd = fs.openSync(file, 'r');
  try {
    const fileSize = fs.fstatSync(fd).size;
    const stats: ReplayStats = { records: 0, groups: 0, bytes: fileSize, droppedBytes: 0, droppedRecords: 0, millis: 0 };
    if (fileSize < MAGIC.length) {
      const head = Buffer.alloc(fileSize);
      fs.readSync(fd, head, 0, fileSize, 0);
      if (!MAGIC.subarray(0, fileSize).equals(head)) throw new WalCorruptionError(file, 0, 'not a kvstore WAL (bad magic)');
      return { stats: { ...stats, millis: performance.now() - started }, goodEnd: 0 };
    }
    const magic = Buffer.alloc(MAGIC.length);
    fs.readSync(fd, magic, 0, MAGIC.length, 0);
    if (!magic.equals(MAGIC)) throw new WalCorruptionError(file, 0, 'not a kvstore WAL (bad magic)');

    // Records of the group being read; applied when its COMMIT arrives.
    const types: RecordType[] = [];
    const keys: Buffer[] = [];
    const values: Buffer[] = [];
    let pending = 0;

    let buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, fileSize));
    let bufStart = MAGIC.length; // file offset of buf[0]
    let bufLen = fs.readSync(fd, buf, 0, Math.min(buf.length, fileSize - bufStart), bufStart);
    let pos = 0;
    let goodEnd = MAGIC.length;
    const rec: ParsedRecord = { type: RecordType.Commit, keyStart: 0, keyLen: 0, valueStart: 0, valueLen: 0, size: 0 };

    for (;;) {
      const status = parseRecord(buf, pos, bufLen, rec);
      if (status === Parse.Ok) {
        if (rec.type === RecordType.Commit) {
          for (let i = 0; i < pending; i++) apply(types[i]!, keys[i]!, values[i]!);
          stats.records += pending;
          stats.groups++;
          pending = 0;
          goodEnd = bufStart + pos + rec.size;
        } else {
          types[pending] = rec.type;
          keys[pending] = buf.subarray(rec.keyStart, rec.keyStart + rec.keyLen);
          values[pending] = buf.subarray(rec.valueStart, rec.valueStart + rec.valueLen);
          pending++;
        }
        pos += rec.size;
        continue;
      }
      const fileOffset = bufStart + pos;
      if (status === Parse.Short && bufStart + bufLen < fileSize) {
        // Refill: keep the partial record, read more behind it (growing for a huge record).
        let need = READ_CHUNK;
        if (bufLen - pos >= RECORD_HEADER) {
          const size = RECORD_HEADER + buf.readUInt32LE(pos + 5) + buf.readUInt32LE(pos + 9);
          need = Math.max(need, size);
        }
        // Reuse the buffer when the record fits (one read buffer for the whole replay, instead
        // of a new one per chunk left for the GC); records of the group still pending point
        // into it, so they are copied out first.
        for (let i = 0; i < pending; i++) {
          keys[i] = Buffer.from(keys[i]!);
          values[i] = Buffer.from(values[i]!);
        }
        const size = Math.min(need, fileSize - fileOffset);
        const next = size <= buf.length ? buf : Buffer.allocUnsafe(size);
        buf.copy(next, 0, pos, bufLen);
        const carried = bufLen - pos;
        const got = fs.readSync(fd, next, carried, Math.min(next.length, size) - carried, fileOffset + carried);
        buf = next;
        bufStart = fileOffset;
        bufLen = carried + got;
        pos = 0;
        continue;
      }
      if (isAllZero(buf, pos, Math.min(bufLen, pos + RECORD_HEADER)) && dataEnd(fd, fileOffset, fileSize) === fileOffset) {
        // Clean end of the log: the end of the file, or the zeros written ahead of the log.
        stats.droppedRecords = pending;
        stats.bytes = fileOffset;
        const result: ScanResult = { stats, goodEnd };
        if (goodEnd < fileOffset) {
          result.badAt = goodEnd;
          result.badReason = 'unfinished group at end of log';
        }
        stats.millis = performance.now() - started;
        return result;
      }
      // A bad record, or a record cut short by the end of the file.
      const reason = status === Parse.Short ? 'record cut short by end of file' : describeBad(buf, pos, bufLen);
      // A damaged length can make a record look cut short by the end of the file: whether it is
      // really the tail is decided the same way for both cases, by what follows.
      if (!options.allowCorruption) assertTailOnly(fd, file, fileOffset, fileSize, reason);
      stats.droppedRecords = pending;
      stats.millis = performance.now() - started;
      return { stats, goodEnd, badAt: fileOffset, badReason: reason };
    }
  } finally {
    fs.closeSync(fd);
  }
}

function describeBad(buf: Buffer, at: number, end: number): string {
  if (end - at < RECORD_HEADER) return 'truncated header';
  const type = buf[at + 4]!;
  const keyLen = buf.readUInt32LE(at + 5);
  const valueLen = buf.readUInt32LE(at + 9);
  if (keyLen > MAX_FIELD || valueLen > MAX_FIELD) return `impossible length (key ${keyLen}, value ${valueLen})`;
  if (!(type in RecordType)) return `unknown record type ${type}`;
  return 'CRC mismatch';
}

/**
 * Damage at `badAt` is a torn tail only if no complete group follows it. Look for any valid
 * record after it and follow the run: two COMMITs in a run means a later group was written
 * after this one was synced, so the damage happened to durable data.
 */
function assertTailOnly(fd: number, file: string, badAt: number, fileSize: number, reason: string): void {
  const rest = Buffer.allocUnsafe(fileSize - badAt);
  fs.readSync(fd, rest, 0, rest.length, badAt);
  if (countRecordsAfterDamage(rest).commits >= 2) throw new WalCorruptionError(file, badAt, reason);
}

/**
 * Valid records (and COMMITs among them) found by resynchronising past damage at rest[0].
 * Two COMMITs in one run after the damage mean a later group was written after this one was
 * synced: the damage happened to durable data, not to an interrupted append.
 */
export function countRecordsAfterDamage(rest: Buffer): { records: number; commits: number } {
  const rec: ParsedRecord = { type: RecordType.Commit, keyStart: 0, keyLen: 0, valueStart: 0, valueLen: 0, size: 0 };
  let at = 1;
  let records = 0;
  let maxCommits = 0;
  while (at + RECORD_HEADER <= rest.length) {
    if (parseRecord(rest, at, rest.length, rec) !== Parse.Ok) {
      // No record's type byte (at +4) is zero: through zeros (written ahead of the log), the
      // next candidate is at most 4 bytes before the next non-zero byte.
      at = Math.max(at + 1, skipZeros(rest, at, rest.length) - 4);
      continue;
    }
    let commits = 0;
    let run = at;
    while (parseRecord(rest, run, rest.length, rec) === Parse.Ok) {
      if (rec.type === RecordType.Commit) commits++;
      else records++;
      run += rec.size;
    }
    maxCommits = Math.max(maxCommits, commits);
    at = run + 1;
  }
  return { records, commits: maxCommits };
}

export interface OpenOptions {
  fsync?: FsyncPolicy;
  events: WalEvents;
  /** Called for every replayed record, in order, before open() returns. */
  apply: ApplyRecord;
  /** Called when a torn tail is cut off, with counts, so the owner can log a warning. */
  onTruncated?: (stats: ReplayStats) => void;
  /**
   * With `always`: write and fdatasync each group synchronously (default true). False hands both
   * to the libuv pool instead; tests use it to hold an fsync open and watch what waits for it.
   */
  syncWrites?: boolean;
  /**
   * Bytes of zeros to write ahead of the log's end at a time (with synchronous group commit),
   * so that group fsyncs overwrite allocated blocks instead of growing the file: on ext4 that
   * skips a journal commit per fsync. 0 turns it off.
   */
  preallocate?: number;
}

export const DEFAULT_PREALLOCATE = 256 * 1024;
/** A piece of zeros covers about this much of the log's recent growth... */
const PREALLOC_AHEAD_SECONDS = 0.25;
/** ...but at most this many times the configured piece (and a whole number of them). */
const PREALLOC_MAX_FACTOR = 16;
/** The largest piece of zeros written at a time. */
const ZEROS = Buffer.alloc(1024 * 1024);

export class WriteAheadLog {
  /** Group being filled, and the one spare for double buffering while a write is in flight. */
  private batch = new RecordBatch();
  private spare = new RecordBatch();
  /** Epoch of the group being filled. */
  private fillEpoch = 1;
  /** Epoch of the most recently appended record (0: nothing appended yet). */
  lastEpoch = 0;
  /** Every group up to this epoch is settled: durable, or failed and reported via events.failed. */
  settledEpoch = 0;
  private flushing = false;
  private scheduled = false;
  private resetPending = false;
  /** Set after a failed write until the file is truncated back successfully. */
  private needsTruncate = false;
  private closed = false;
  private dirtySinceSync = false;
  private syncTimer: NodeJS.Timeout | undefined;
  private idleWaiters: (() => void)[] = [];
  /** Bytes of the file that hold complete, written groups. */
  size: number;
  /** Bytes of the file known to exist: past `size` they are zeros written ahead (preallocated). */
  allocated: number;
  private preallocRetryAt = 0;
  /** When the last piece was written ahead, and the log's size then (sizes the next one). */
  private lastPrealloc: { at: number; size: number } | undefined;
  /** Pieces of zeros written ahead so far. */
  preallocations = 0;
  /** The online rewrite in progress, if any (see rewrite()). */
  private rewriting: RewriteState | undefined;
  /** While set, no new group is written: the rewrite is swapping files. */
  private paused = false;
  private pauseWaiters: (() => void)[] = [];
  rewrites = 0;
  lastRewriteAt = 0;
  lastRewriteMs = 0;
  fsyncs = 0;
  lastFsyncAt = 0;
  lastError: string | undefined;

  private constructor(
    readonly file: string,
    private fd: number,
    size: number,
    readonly policy: FsyncPolicy,
    private readonly events: WalEvents,
    /** Write and sync groups synchronously (policy `always` only). */
    private readonly syncWrites: boolean,
    allocated: number,
    /** Zeros written ahead at a time (0: none); only with synchronous group commit. */
    private readonly prealloc: number,
  ) {
    this.size = size;
    this.allocated = Math.max(size, allocated);
    if (policy === 'everysec') {
      this.syncTimer = setInterval(() => this.backgroundSync(), 1000);
      this.syncTimer.unref();
    }
  }

  /** Open (creating if needed) and replay the log. Cuts off a torn tail; throws WalCorruptionError for mid-log damage. */
  static open(file: string, options: OpenOptions): { wal: WriteAheadLog; stats: ReplayStats } {
    const fresh = !fs.existsSync(file);
    const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
    try {
      let stats: ReplayStats;
      let size: number;
      if (fresh || fs.fstatSync(fd).size === 0) {
        fs.writeSync(fd, MAGIC, 0, MAGIC.length, 0);
        fs.fdatasyncSync(fd);
        fsyncDirectory(path.dirname(file));
        stats = { records: 0, groups: 0, bytes: 0, droppedBytes: 0, droppedRecords: 0, millis: 0 };
        size = MAGIC.length;
      } else {
        const scan = scanLog(file, options.apply);
        stats = scan.stats;
        size = scan.goodEnd;
        if (scan.badAt !== undefined || size < MAGIC.length) {
          if (size < MAGIC.length) {
            fs.writeSync(fd, MAGIC, 0, MAGIC.length, 0);
            size = MAGIC.length;
          }
          const fileSize = fs.fstatSync(fd).size;
          stats.truncatedFrom = size;
          stats.droppedBytes = dataEnd(fd, size, fileSize) - size; // not counting zeros written ahead
          fs.ftruncateSync(fd, size);
          fs.fdatasyncSync(fd);
          options.onTruncated?.(stats);
        }
      }
      const policy = options.fsync ?? 'always';
      const syncWrites = policy === 'always' && options.syncWrites !== false;
      const allocated = fs.fstatSync(fd).size;
      const wal = new WriteAheadLog(file, fd, size, policy, options.events, syncWrites, allocated, options.preallocate ?? DEFAULT_PREALLOCATE);
      return { wal, stats };
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  /** The epoch of the group that the next append() joins. */
  get fillingEpoch(): number {
    return this.fillEpoch;
  }

  /** Add a record to the current group; returns the group's epoch. The flush happens at the end of this turn. */
  append(type: RecordType, key: Uint8Array | null, value: Uint8Array | null): number {
    if (this.closed) throw new Error('WAL is closed');
    this.batch.append(type, key, value);
    this.rewriting?.tail.append(type, key, value);
    this.lastEpoch = this.fillEpoch;
    this.schedule();
    return this.fillEpoch;
  }

  /** Drop every record before this point: the next group starts a fresh, empty log. */
  reset(): number {
    this.abortRewrite('reset');
    this.batch.reset();
    this.resetPending = true;
    this.lastEpoch = this.fillEpoch;
    this.schedule();
    return this.fillEpoch;
  }

  /** True when every appended record is durable. */
  get idle(): boolean {
    return this.lastEpoch === this.settledEpoch && !this.flushing;
  }

  private schedule(): void {
    if (this.scheduled || this.flushing || this.paused) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.flushing || this.paused) return;
    if (this.batch.records === 0 && !this.resetPending) {
      this.notifyIdle();
      return;
    }
    // Everything in the rewrite's tail so far belongs to this group or earlier ones.
    if (this.rewriting !== undefined) this.rewriting.tailMark = this.rewriting.tail.length;
    const writing = this.batch;
    this.batch = this.spare;
    this.spare = writing;
    const epoch = this.fillEpoch++;
    const reset = this.resetPending;
    this.resetPending = false;
    if (writing.records > 0) writing.append(RecordType.Commit, null, null);
    this.flushing = true;
    const data = writing.bytes();
    const finish = (err: Error | null): void => {
      writing.reset();
      this.flushing = false;
      if (this.paused) {
        // A rewrite is waiting to swap files: it resumes flushing when done.
        if (err) this.fail(epoch, err);
        else {
          this.settledEpoch = epoch;
          this.events.durable(epoch);
        }
        const waiters = this.pauseWaiters;
        this.pauseWaiters = [];
        for (const w of waiters) w();
        return;
      }
      if (err) this.fail(epoch, err);
      else {
        this.settledEpoch = epoch;
        this.lastError = undefined;
        this.events.durable(epoch);
      }
      if (this.batch.records > 0 || this.resetPending) this.flush();
      else this.notifyIdle();
    };
    const start = reset || this.needsTruncate ? this.size : -1;
    const afterTruncate = (err: Error | null): void => {
      if (err) return finish(err);
      this.needsTruncate = false;
      // `size` advances only once the group is durable: after a failed fsync the next group
      // truncates back to the last byte that is known good.
      const base = this.size;
      this.writeAll(data, base, 0, (werr) => {
        if (werr) return finish(werr);
        this.dirtySinceSync = true;
        if (this.policy !== 'always' && !reset) {
          this.size = base + data.length;
          return finish(null);
        }
        fs.fdatasync(this.fd, (serr) => {
          if (!serr) {
            this.size = base + data.length;
            this.fsyncs++;
            this.lastFsyncAt = Date.now();
            this.dirtySinceSync = false;
          }
          finish(serr);
        });
      });
    };
    if (this.syncWrites && !reset && start < 0) {
      // Redis's way for appendfsync always: write and fdatasync the group right here, on the
      // event loop. Measured ~35% more SET/s than handing both calls to the libuv pool, whose
      // two thread hand-offs per group cost more than the sync calls block (docs/performance.md).
      // Requests keep arriving meanwhile and form the next group.
      const base = this.size;
      try {
        let off = 0;
        while (off < data.length) off += fs.writeSync(this.fd, data, off, data.length - off, base + off);
        fs.fdatasyncSync(this.fd);
      } catch (err) {
        return finish(err as Error);
      }
      this.size = base + data.length;
      this.fsyncs++;
      this.lastFsyncAt = Date.now();
      finish(null);
      // After the replies were released: this group's stall is not made longer by it.
      this.preallocate(data.length);
      return;
    }
    if (reset) {
      this.size = MAGIC.length;
      this.cutBack();
      fs.ftruncate(this.fd, MAGIC.length, afterTruncate);
    } else if (start >= 0) {
      this.cutBack();
      fs.ftruncate(this.fd, start, afterTruncate);
    } else {
      afterTruncate(null);
    }
  }

  private writeAll(data: Buffer, base: number, offset: number, done: (err: Error | null) => void): void {
    fs.write(this.fd, data, offset, data.length - offset, base + offset, (err, written) => {
      if (err) return done(err);
      if (offset + written < data.length) return this.writeAll(data, base, offset + written, done);
      done(null);
    });
  }

  /** Fail every group not yet durable: the one in flight and the one being filled. */
  private fail(epoch: number, err: Error): void {
    // Records of the failed groups may already be in a rewrite's tail: that rewrite is void.
    this.abortRewrite(`write failed: ${err.message}`);
    this.lastError = `${(err as NodeJS.ErrnoException).code ?? 'EIO'}: ${err.message}`;
    // The failed group may have reached the file (its fdatasync failed after the write): cut it
    // off now, before anyone is told it failed, so a restart cannot bring it back. If even that
    // fails, the next group truncates first, and close() tries again.
    this.needsTruncate = true;
    this.cutBack();
    try {
      fs.ftruncateSync(this.fd, this.size);
      this.needsTruncate = false;
    } catch {
      // keep needsTruncate
    }
    const upTo = this.batch.records > 0 || this.resetPending ? this.fillEpoch++ : epoch;
    this.batch.reset();
    this.resetPending = false;
    if (this.lastEpoch > upTo) this.lastEpoch = upTo;
    this.settledEpoch = upTo;
    this.events.failed(upTo, err);
  }

  /** True while an online rewrite is running. */
  get rewriteInProgress(): boolean {
    return this.rewriting !== undefined;
  }

  /**
   * Rewrite the log online as a snapshot of `snapshot()` plus every record appended meanwhile,
   * then atomically replace the log with it (Redis's AOF rewrite, without the fork).
   *
   *  1. From now on every appended record is also kept in `tail`.
   *  2. The snapshot is written to `<file>.rewrite` in chunks, one await per chunk, so clients
   *     are never held for more than one chunk's worth of work (~a few ms).
   *  3. The tail is copied over while it is large.
   *  4. Swap: wait for the group in flight, hold new groups, write the rest of the tail (only
   *     records of groups already written to the old log: the group being filled will go to
   *     the new file), fsync, rename over the log, fsync the directory, reopen. Held groups then
   *     flow to the new file.
   * A crash before the rename leaves the old log (the temp file is removed at the next start);
   * after it, the new one, which is complete because it was synced before the rename. A failed
   * group or a RESET during the rewrite aborts it.
   */
  async rewrite(fill: (batch: RecordBatch) => boolean): Promise<{ ok: boolean; reason?: string; before: number; after: number }> {
    if (this.rewriting !== undefined) return { ok: false, reason: 'a rewrite is already running', before: this.size, after: this.size };
    const started = performance.now();
    const before = this.size;
    const tmp = `${this.file}.rewrite`;
    const state: RewriteState = { tail: new RecordBatch(), tailMark: 0, aborted: undefined };
    this.rewriting = state;
    const fd = fs.openSync(tmp, 'w', 0o644);
    let pos = 0;
    const writeChunk = async (data: Buffer): Promise<void> => {
      let off = 0;
      while (off < data.length) {
        off += await new Promise<number>((resolve, reject) =>
          fs.write(fd, data, off, data.length - off, pos + off, (err, n) => (err ? reject(err) : resolve(n))),
        );
      }
      pos += data.length;
    };
    try {
      await writeChunk(MAGIC);
      const chunk = new RecordBatch();
      for (let done = false; !done; ) {
        // `fill` adds a bounded amount of the snapshot per call (a few ms of work).
        done = fill(chunk);
        if (chunk.records > 0) {
          chunk.append(RecordType.Commit, null, null);
          await writeChunk(Buffer.from(chunk.bytes()));
          chunk.reset();
        }
        if (state.aborted !== undefined) throw new Error(state.aborted);
      }
      // Catch up with the tail while it is big, so the final swap has little left to write.
      while (state.tailMark > 256 * 1024) {
        const head = takeTailHead(state);
        await writeChunk(head);
        if (state.aborted !== undefined) throw new Error(state.aborted);
      }
      await this.pause();
      try {
        if (state.aborted !== undefined) throw new Error(state.aborted);
        const head = takeTailHead(state);
        if (head.length > 0) fs.writeSync(fd, head, 0, head.length, pos);
        pos += head.length;
        fs.fsyncSync(fd);
        fs.closeSync(fd);
        fs.renameSync(tmp, this.file);
        fsyncDirectory(path.dirname(this.file));
        const fresh = fs.openSync(this.file, fs.constants.O_RDWR);
        fs.closeSync(this.fd);
        this.fd = fresh;
        this.size = pos;
        this.cutBack();
        this.needsTruncate = false;
        this.rewriting = undefined;
      } finally {
        this.resume();
      }
      this.rewrites++;
      this.lastRewriteAt = Date.now();
      this.lastRewriteMs = Math.round(performance.now() - started);
      return { ok: true, before, after: pos };
    } catch (err) {
      if (this.rewriting === state) this.rewriting = undefined;
      try {
        fs.closeSync(fd);
      } catch {
        // already closed by the swap
      }
      fs.rmSync(tmp, { force: true });
      return { ok: false, reason: (err as Error).message, before, after: this.size };
    }
  }

  private abortRewrite(reason: string): void {
    if (this.rewriting === undefined) return;
    this.rewriting.aborted = reason;
    this.rewriting = undefined;
  }

  /** Resolves once no group is being written; no new one starts until resume(). */
  private pause(): Promise<void> {
    this.paused = true;
    if (!this.flushing) return Promise.resolve();
    return new Promise((resolve) => this.pauseWaiters.push(resolve));
  }

  /**
   * Write the next piece of zeros ahead of the log, when less than half a piece is left, and
   * fdatasync it, synchronously, between two groups: later groups then overwrite blocks that
   * are allocated and on disk already, and their fdatasync has no file size or block allocation
   * to journal (docs/durability.md). Nothing else touches the file meanwhile, so a group's
   * fdatasync never has someone else's dirty pages to flush, and no group can land where zeros
   * are still to be written. After a group larger than a quarter piece (a bulk load, whose
   * fsyncs are dominated by its data) nothing is written: zeros would only double its writes.
   * Best effort: a failure (ENOSPC) only means groups grow the file again for a while.
   */
  private preallocate(groupBytes: number): void {
    if (this.prealloc <= 0 || !this.syncWrites || this.closed || this.paused) return;
    const piece = this.preallocPiece();
    if (groupBytes > piece / 4 || this.allocated - this.size >= piece / 2 || Date.now() < this.preallocRetryAt) return;
    const from = Math.max(this.allocated, this.size);
    try {
      for (let at = from; at < from + piece; ) at += fs.writeSync(this.fd, ZEROS, 0, Math.min(ZEROS.length, from + piece - at), at);
      fs.fdatasyncSync(this.fd);
      this.allocated = from + piece;
      this.preallocations++;
      this.lastPrealloc = { at: performance.now(), size: this.size };
    } catch {
      // Zeros that did land past `size` are harmless (replay ends the log at them).
      this.preallocRetryAt = Date.now() + 1000;
    }
  }

  /**
   * How much to write ahead this time: about a quarter second of the log's growth since the last
   * piece, at least the configured piece and at most 16 times it. A bulk import (an ADD's
   * target grows its log by 10+ MB/s) then writes a few large pieces a second instead of dozens
   * of small ones, each with its own fdatasync; a log growing slowly keeps the configured size.
   */
  private preallocPiece(): number {
    const base = this.prealloc;
    const last = this.lastPrealloc;
    if (last === undefined) return base;
    const seconds = Math.max(0.001, (performance.now() - last.at) / 1000);
    const wanted = ((this.size - last.size) / seconds) * PREALLOC_AHEAD_SECONDS;
    return base * Math.min(PREALLOC_MAX_FACTOR, Math.max(1, Math.ceil(wanted / base)));
  }

  /** Bytes of zeros known to be written ahead of the log (0 once the log has outrun them). */
  get preallocatedBytes(): number {
    return Math.max(0, this.allocated - this.size);
  }

  /** The file is being cut back to `size` (or replaced): what was written ahead is gone. */
  private cutBack(): void {
    this.allocated = this.size;
  }

  private resume(): void {
    this.paused = false;
    if (this.batch.records > 0 || this.resetPending) this.flush();
    else this.notifyIdle();
  }

  private backgroundSync(): void {
    if (!this.dirtySinceSync || this.closed) return;
    this.dirtySinceSync = false;
    fs.fdatasync(this.fd, (err) => {
      if (err) {
        this.lastError = `${(err as NodeJS.ErrnoException).code ?? 'EIO'}: ${err.message}`;
        this.dirtySinceSync = true;
        return;
      }
      this.fsyncs++;
      this.lastFsyncAt = Date.now();
    });
  }

  private notifyIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** Resolves once everything appended so far has been written (and synced per policy). */
  drain(): Promise<void> {
    if (!this.flushing && !this.paused && this.batch.records === 0 && !this.resetPending) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Finish in-flight work, fsync, close. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.abortRewrite('closing');
    await this.drain();
    this.closed = true;
    if (this.syncTimer) clearInterval(this.syncTimer);
    try {
      if (this.needsTruncate) fs.ftruncateSync(this.fd, this.size);
      fs.fdatasyncSync(this.fd);
    } catch {
      // Nothing left to report to: every reply already reflects its own fsync.
    }
    fs.closeSync(this.fd);
  }
}
