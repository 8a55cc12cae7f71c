// The on-disk format of the write-ahead log. Pure: bytes in, records out (docs/durability.md).
//
//   file   := MAGIC record* zero*
//   record := crc32:u32le  type:u8  keyLen:u32le  valueLen:u32le  key  value
//
// crc32 (zlib's CRC-32, see crc32.ts) covers everything after the crc field. Keys and values are raw bytes.
// The zeros at the end are space written ahead of the log (preallocated, so that a group's
// fdatasync overwrites blocks instead of growing the file). No record has type 0, so the log
// ends at the first header of zero bytes, and everything after it must be zeros too.
// Every group commit ends with a COMMIT record. Records after the last COMMIT belong to a
// group whose fsync never finished, so replay drops them: that is how a torn tail is told
// apart from corruption in the middle (a damaged group followed by a complete later group can
// only mean the disk changed under us, since group N+1 is written only after N is synced).
import { crc32 } from './crc32.js';

export const MAGIC = Buffer.from('KVWAL01\n', 'latin1');
export const RECORD_HEADER = 13;
/** No key or value may be this large; a length beyond it marks a damaged record. */
export const MAX_FIELD = 512 * 1024 * 1024;

export enum RecordType {
  Set = 1,
  Delete = 2,
  /** Delete and leave a tombstone (a DEL on a range that is being migrated in). */
  Tombstone = 3,
  /** Forget all tombstones (a migration finished). */
  ClearTombstones = 4,
  /**
   * Delete every live value whose ring hash is in the value's intervals (HashIntervals.encode:
   * u32le lo, u32le hi, ...): a source's copies of the ranges it moved away (DROPRANGE).
   */
  DropRanges = 5,
  /** End of a group commit. */
  Commit = 0x7f,
}

const KNOWN = new Set<number>([RecordType.Set, RecordType.Delete, RecordType.Tombstone, RecordType.ClearTombstones, RecordType.DropRanges, RecordType.Commit]);

/** A growable buffer of encoded records for one group commit. */
export class RecordBatch {
  private buf = Buffer.allocUnsafe(64 * 1024);
  length = 0;
  records = 0;

  private reserve(extra: number): void {
    if (this.length + extra <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + extra) size *= 2;
    const bigger = Buffer.allocUnsafe(size);
    this.buf.copy(bigger, 0, 0, this.length);
    this.buf = bigger;
  }

  /** Append one record (null stands for an empty key or value). */
  append(type: RecordType, key: Uint8Array | null, value: Uint8Array | null): void {
    const keyLen = key === null ? 0 : key.length;
    const valueLen = value === null ? 0 : value.length;
    const size = RECORD_HEADER + keyLen + valueLen;
    this.reserve(size);
    const buf = this.buf;
    const at = this.length;
    buf[at + 4] = type;
    buf.writeUInt32LE(keyLen, at + 5);
    buf.writeUInt32LE(valueLen, at + 9);
    if (key !== null) buf.set(key, at + RECORD_HEADER);
    if (value !== null) buf.set(value, at + RECORD_HEADER + keyLen);
    buf.writeUInt32LE(crc32(buf, at + 4, at + size), at);
    this.length += size;
    this.records++;
  }

  /** Append already-encoded records (e.g. carried over from another batch). */
  appendRaw(encoded: Buffer): void {
    this.reserve(encoded.length);
    encoded.copy(this.buf, this.length);
    this.length += encoded.length;
  }

  /** The encoded bytes (a view: valid until the next append or reset). */
  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }

  reset(): void {
    this.length = 0;
    this.records = 0;
    if (this.buf.length > 8 * 1024 * 1024) this.buf = Buffer.allocUnsafe(64 * 1024);
  }
}

export function encodeRecord(type: RecordType, key: Uint8Array | string | null, value: Uint8Array | string | null = null): Buffer {
  const bytes = (x: Uint8Array | string | null): Uint8Array | null => (typeof x === 'string' ? Buffer.from(x, 'latin1') : x);
  const batch = new RecordBatch();
  batch.append(type, bytes(key), bytes(value));
  return Buffer.from(batch.bytes());
}

export enum Parse {
  Ok = 0,
  /** The buffer ends inside this record. */
  Short = 1,
  /** The bytes here are not a valid record. */
  Bad = 2,
}

/** Decoded fields of the last record parsed by `parseRecord`. */
export interface ParsedRecord {
  type: RecordType;
  keyStart: number;
  keyLen: number;
  valueStart: number;
  valueLen: number;
  size: number;
}

/**
 * Parse the record at `at`. `out` is filled on Ok. A record whose length fields point past
 * the end of the buffer is Short if the lengths are plausible, so callers with more bytes to
 * read can refill and retry; at end of file, Short means a torn tail.
 */
export function parseRecord(buf: Buffer, at: number, end: number, out: ParsedRecord): Parse {
  if (end - at < RECORD_HEADER) return Parse.Short;
  const type = buf[at + 4]!;
  const keyLen = buf.readUInt32LE(at + 5);
  const valueLen = buf.readUInt32LE(at + 9);
  if (!KNOWN.has(type) || keyLen > MAX_FIELD || valueLen > MAX_FIELD) return Parse.Bad;
  const size = RECORD_HEADER + keyLen + valueLen;
  if (end - at < size) return Parse.Short;
  if (crc32(buf, at + 4, at + size) !== buf.readUInt32LE(at)) return Parse.Bad;
  out.type = type;
  out.keyStart = at + RECORD_HEADER;
  out.keyLen = keyLen;
  out.valueStart = at + RECORD_HEADER + keyLen;
  out.valueLen = valueLen;
  out.size = size;
  return Parse.Ok;
}

const ZERO_PAGE = Buffer.alloc(4096);

/** True when buf[start, end) is all zero bytes. */
export function isAllZero(buf: Buffer, start: number, end: number): boolean {
  for (let at = start; at < end; at += ZERO_PAGE.length) {
    const n = Math.min(ZERO_PAGE.length, end - at);
    if (buf.compare(ZERO_PAGE, 0, n, at, at + n) !== 0) return false;
  }
  return true;
}

/** The offset of the first non-zero byte in buf[at, end), or end (a page at a time through zeros). */
export function skipZeros(buf: Buffer, at: number, end: number): number {
  while (at < end && buf[at] === 0) {
    const page = ZERO_PAGE.length;
    if (at % page === 0 && at + page <= end && buf.compare(ZERO_PAGE, 0, page, at, at + page) === 0) at += page;
    else at++;
  }
  return at;
}

/**
 * Walk the record headers at the start of `buf` (no CRC check: this is only an estimate) and
 * count the data records (not COMMITs) and the bytes they and the COMMITs span.
 */
export function sampleRecords(buf: Buffer): { records: number; bytes: number } {
  let at = 0;
  let records = 0;
  while (at + RECORD_HEADER <= buf.length) {
    const type = buf[at + 4]!;
    const keyLen = buf.readUInt32LE(at + 5);
    const valueLen = buf.readUInt32LE(at + 9);
    if (!KNOWN.has(type) || keyLen > MAX_FIELD || valueLen > MAX_FIELD) break;
    const size = RECORD_HEADER + keyLen + valueLen;
    if (at + size > buf.length) break;
    if (type !== RecordType.Commit) records++;
    at += size;
  }
  return { records, bytes: at };
}
