// CRC-32 (the zlib / IEEE 802.3 polynomial), as the WAL's records use it. Pure.
//
// zlib.crc32 is fast per byte but costs ~0.2 µs per call (a native call, plus the Buffer view it
// needs), which is most of the cost for a WAL record of a few dozen bytes. Below SMALL bytes this
// computes it in JavaScript with the slice-by-8 tables instead: ~0.11 µs for a 117-byte record
// against ~0.25 µs through zlib (docs/performance.md). Both give the same value.
import { crc32 as zlibCrc32 } from 'node:zlib';

/** Spans at least this long go to zlib, whose per-byte speed wins from about 400 bytes on. */
const SMALL = 256;

/** TABLES[k][b]: the CRC of byte b followed by k zero bytes (slice-by-8). */
const TABLES = ((): Int32Array[] => {
  const t = Array.from({ length: 8 }, () => new Int32Array(256));
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[0]![n] = c;
  }
  for (let n = 0; n < 256; n++) for (let k = 1; k < 8; k++) t[k]![n] = (t[k - 1]![n]! >>> 8) ^ t[0]![t[k - 1]![n]! & 0xff]!;
  return t;
})();
const [T0, T1, T2, T3, T4, T5, T6, T7] = TABLES as [Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array, Int32Array];

/** CRC-32 of bytes [start, end) of `buf` (unsigned, as zlib.crc32 returns it). */
export function crc32(buf: Uint8Array, start: number, end: number): number {
  if (end - start >= SMALL) return zlibCrc32(buf.subarray(start, end));
  let c = -1;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    c ^= buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24);
    c = T7[c & 0xff]! ^ T6[(c >>> 8) & 0xff]! ^ T5[(c >>> 16) & 0xff]! ^ T4[c >>> 24]! ^ T3[buf[i + 4]!]! ^ T2[buf[i + 5]!]! ^ T1[buf[i + 6]!]! ^ T0[buf[i + 7]!]!;
  }
  for (; i < end; i++) c = T0[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}
