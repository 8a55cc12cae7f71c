import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { crc32 } from '../../src/server/crc32.js';

describe('crc32', () => {
  it('the check value of the CRC-32 catalogue, and the empty span', () => {
    const digits = Buffer.from('123456789', 'latin1');
    expect(crc32(digits, 0, digits.length)).toBe(0xcbf43926);
    expect(crc32(digits, 3, 3)).toBe(0);
  });

  it('equals zlib.crc32 for every length on both sides of the JavaScript/zlib boundary, at any offset', () => {
    const data = Buffer.alloc(1200);
    for (let i = 0; i < data.length; i++) data[i] = (i * 167 + (i >> 3) * 13) & 0xff;
    for (let len = 0; len <= 600; len++) {
      for (const start of [0, 1, 5, 8, 599]) {
        const want = zlibCrc32(data.subarray(start, start + len));
        if (crc32(data, start, start + len) !== want) throw new Error(`length ${len} at ${start}`);
      }
    }
  });

  it('equals zlib.crc32 for random bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 700 }), fc.nat(40), (bytes, cut) => {
        const start = Math.min(cut, bytes.length);
        expect(crc32(bytes, start, bytes.length)).toBe(zlibCrc32(bytes.subarray(start)));
      }),
      { numRuns: 500 },
    );
  });
});
