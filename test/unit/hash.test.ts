import { describe, expect, it } from 'vitest';
import XXH from 'xxhashjs';
import { hashBytes, hashString } from '../../src/common/hash.js';
import { seededBytes } from './chunking.js';

/** The reference: a pure-JS xxHash32, independent of the wasm build we ship. */
function reference(bytes: Buffer): number {
  return XXH.h32(bytes, 0).toNumber();
}

describe('hashBytes matches the xxhashjs reference (xxHash32, seed 0)', () => {
  it('empty input (the published xxHash32 value)', () => {
    expect(hashBytes(Buffer.alloc(0))).toBe(0x02cc5d05);
    expect(hashBytes(Buffer.alloc(0))).toBe(reference(Buffer.alloc(0)));
  });

  it('every length from 1 to 64 bytes (covers the 16-byte stripe and 4/1-byte tails)', () => {
    for (let len = 1; len <= 64; len++) {
      const bytes = seededBytes(len, len);
      expect(hashBytes(bytes), `length ${len}`).toBe(reference(bytes));
    }
  });

  it('long inputs', () => {
    for (const len of [255, 256, 1000, 4096, 65_537, 1_000_003]) {
      const bytes = seededBytes(1000 + len, len);
      expect(hashBytes(bytes), `length ${len}`).toBe(reference(bytes));
    }
  });

  it('random binary inputs, all byte values', () => {
    for (let seed = 0; seed < 300; seed++) {
      const bytes = seededBytes(seed * 7919, seed % 97);
      expect(hashBytes(bytes), `seed ${seed}`).toBe(reference(bytes));
    }
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    expect(hashBytes(all)).toBe(reference(all));
  });

  it('hashes a view without reading outside it', () => {
    const big = seededBytes(42, 100);
    const view = big.subarray(10, 37);
    expect(hashBytes(view)).toBe(reference(Buffer.from(view)));
  });

  it('returns an unsigned 32-bit integer', () => {
    for (let seed = 0; seed < 200; seed++) {
      const h = hashBytes(seededBytes(seed, 8));
      expect(Number.isInteger(h) && h >= 0 && h <= 0xffffffff).toBe(true);
    }
  });
});

describe('hashString agrees with hashBytes on the same bytes', () => {
  const texts = ['', 'a', 'key:1', '127.0.0.1:8081#0', '10.0.0.1:7004#1023', 'héllo wörld', '日本語のキー', 'emoji 🎉', 'x'.repeat(1000)];

  it('hashString hashes the UTF-8 bytes', () => {
    for (const t of texts) {
      expect(hashString(t), JSON.stringify(t)).toBe(hashBytes(Buffer.from(t, 'utf8')));
      expect(hashString(t)).toBe(reference(Buffer.from(t, 'utf8')));
    }
  });
});
