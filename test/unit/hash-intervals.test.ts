import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { HashIntervals } from '../../src/server/hash-intervals.js';
import { HashRing, inRange } from '../../src/common/ring.js';
import { hashBytes } from '../../src/common/hash.js';

const TOP = 0xffffffff;

describe('HashIntervals', () => {
  it('a plain range is (start, end]', () => {
    const iv = new HashIntervals([{ start: 10, end: 20 }]);
    expect([9, 10, 11, 20, 21].map((h) => iv.has(h))).toEqual([false, false, true, true, false]);
  });

  it('start === end is the whole ring', () => {
    const iv = new HashIntervals([{ start: 1234, end: 1234 }]);
    for (const h of [0, 1233, 1234, 1235, TOP]) expect(iv.has(h)).toBe(true);
  });

  it('a wrapping range covers the top of the ring and the bottom', () => {
    const iv = new HashIntervals([{ start: TOP - 5, end: 3 }]);
    expect([TOP - 6, TOP - 5, TOP - 4, TOP, 0, 3, 4].map((h) => iv.has(h))).toEqual([false, false, true, true, true, true, false]);
  });

  it('a range starting at the very top wraps to just the bottom', () => {
    const iv = new HashIntervals([{ start: TOP, end: 3 }]);
    expect([TOP - 1, TOP, 0, 3, 4].map((h) => iv.has(h))).toEqual([false, false, true, true, false]);
  });

  it('a range ending at the very top', () => {
    const iv = new HashIntervals([{ start: TOP - 2, end: TOP }]);
    expect([TOP - 2, TOP - 1, TOP, 0].map((h) => iv.has(h))).toEqual([false, true, true, false]);
  });

  it('overlapping and adjacent ranges merge; gaps stay out', () => {
    const iv = new HashIntervals([{ start: 20, end: 30 }, { start: 0, end: 10 }, { start: 5, end: 20 }, { start: 40, end: 50 }]);
    for (let h = 0; h <= 60; h++) expect(iv.has(h), `hash ${h}`).toBe((h >= 1 && h <= 30) || (h >= 41 && h <= 50));
  });

  it('no ranges: nothing is in', () => {
    const iv = new HashIntervals([]);
    for (const h of [0, 1, TOP]) expect(iv.has(h)).toBe(false);
  });

  it('agrees with inRange for arbitrary range sets', () => {
    const hash = fc.integer({ min: 0, max: TOP });
    const range = fc.record({ start: hash, end: hash });
    fc.assert(
      fc.property(fc.array(range, { maxLength: 6 }), fc.array(hash, { maxLength: 40 }), (ranges, hashes) => {
        const iv = new HashIntervals(ranges);
        const edges = ranges.flatMap((r) => [r.start, r.end, (r.start + 1) % 2 ** 32, (r.end + 1) % 2 ** 32]);
        for (const h of [...hashes, ...edges, 0, TOP]) {
          expect(iv.has(h), `hash ${h} in ${JSON.stringify(ranges)}`).toBe(ranges.some((r) => inRange(h, r)));
        }
      }),
      { numRuns: 300 },
    );
  });

  it('agrees with a ring: a member’s ranges hold exactly the hashes it owns', () => {
    const ring = new HashRing(['127.0.0.1:8081', '127.0.0.1:8082', '127.0.0.1:8083'], 64);
    for (const member of ring.members) {
      const iv = new HashIntervals(ring.rangesOf(member));
      for (let i = 0; i < 3000; i++) {
        const h = hashBytes(Buffer.from(`key:${i}`));
        if (iv.has(h) !== (ring.ownerOfHash(h) === member)) throw new Error(`hash ${h}: ${member}`);
      }
      expect(iv.has(0)).toBe(ring.ownerOfHash(0) === member);
      expect(iv.has(TOP)).toBe(ring.ownerOfHash(TOP) === member);
    }
  });
});

describe('HashIntervals with targets', () => {
  it('find() gives the target label of the range holding a hash, -1 outside', () => {
    const iv = new HashIntervals([
      { start: 0, end: 10, target: 2 },
      { start: 10, end: 20, target: 0 },
      { start: 20, end: 30, target: 2 },
      { start: TOP - 5, end: 3, target: 1 },
    ]);
    expect(iv.labels).toBe(3);
    const expected = (h: number): number => (h <= 3 || h > TOP - 5 ? 1 : h <= 10 ? 2 : h <= 20 ? 0 : h <= 30 ? 2 : -1);
    for (const h of [0, 3, 4, 10, 11, 20, 21, 30, 31, TOP - 5, TOP - 4, TOP]) expect(iv.find(h), `hash ${h}`).toBe(expected(h));
  });

  it('agrees with the new ring: every hash moving off a source is labelled with its new owner', () => {
    const before = new HashRing(['127.0.0.1:8081', '127.0.0.1:8082', '127.0.0.1:8083', '127.0.0.1:8084'], 64);
    const after = new HashRing(['127.0.0.1:8082', '127.0.0.1:8083', '127.0.0.1:8084'], 64);
    const moved = before.movedTo(after).filter((r) => r.from === '127.0.0.1:8081');
    const targets = [...new Set(moved.map((r) => r.to))];
    expect(targets.length).toBe(3);
    const iv = new HashIntervals(moved.map((r) => ({ ...r, target: targets.indexOf(r.to) })));
    for (let i = 0; i < 5000; i++) {
      const h = hashBytes(Buffer.from(`key:${i}`));
      const want = before.ownerOfHash(h) === '127.0.0.1:8081' ? targets.indexOf(after.ownerOfHash(h)!) : -1;
      if (iv.find(h) !== want) throw new Error(`hash ${h}: label ${iv.find(h)}, expected ${want}`);
    }
  });
});

describe('HashIntervals clip, encode and decode', () => {
  const ranges = fc.array(fc.record({ start: fc.integer({ min: 0, max: TOP }), end: fc.integer({ min: 0, max: TOP }) }), { maxLength: 8 });
  const hash = fc.integer({ min: 0, max: TOP });

  it('clip keeps exactly the held hashes inside [from, to]', () => {
    fc.assert(
      fc.property(ranges, hash, hash, fc.array(hash, { maxLength: 30 }), (rs, x, y, probes) => {
        const [from, to] = x <= y ? [x, y] : [y, x];
        const iv = new HashIntervals(rs);
        const clipped = iv.clip(from, to);
        for (const h of [...probes, from, to, from - 1, to + 1, 0, TOP].filter((h) => h >= 0 && h <= TOP)) {
          if (clipped.has(h) !== (iv.has(h) && h >= from && h <= to)) throw new Error(`hash ${h}`);
        }
        const bounds = clipped.bounds;
        if (bounds !== undefined && (bounds[0] < from || bounds[1] > to || !clipped.has(bounds[0]) || !clipped.has(bounds[1]))) throw new Error('bounds');
      }),
    );
  });

  it('decode(encode()) holds the same hashes; labels are not kept', () => {
    fc.assert(
      fc.property(ranges, fc.array(hash, { maxLength: 30 }), (rs, probes) => {
        const iv = new HashIntervals(rs.map((r, i) => ({ ...r, target: i % 3 })));
        const back = HashIntervals.decode(iv.encode());
        expect(back.count).toBe(iv.clip(0, TOP).count);
        expect(back.bounds).toEqual(iv.bounds);
        for (const h of [...probes, 0, TOP]) if (back.has(h) !== iv.has(h)) throw new Error(`hash ${h}`);
      }),
    );
  });

  it('blocks(): a block said to hold no hash or every hash does so; the rest are marked SOME', () => {
    fc.assert(
      fc.property(ranges, fc.array(hash, { maxLength: 50 }), (rs, probes) => {
        const iv = new HashIntervals(rs);
        const blocks = iv.blocks();
        // Probe each interval's edges and their neighbours, and random hashes.
        const edges = rs.flatMap((r) => [r.start - 1, r.start, r.start + 1, r.end - 1, r.end, r.end + 1]);
        for (const h of [...probes, ...edges].filter((h) => h >= 0 && h <= TOP)) {
          const block = blocks[h >>> 16];
          if (block === 0 && iv.has(h)) throw new Error(`hash ${h} is held, its block says none`);
          if (block === 1 && !iv.has(h)) throw new Error(`hash ${h} is not held, its block says all`);
        }
        for (let b = 0; b < 65536; b++) {
          const first = iv.has(b * 65536);
          const last = iv.has(b * 65536 + 65535);
          if (blocks[b] === 0 && (first || last)) throw new Error(`block ${b}`);
          if (blocks[b] === 1 && !(first && last)) throw new Error(`block ${b}`);
        }
      }),
      { numRuns: 50 },
    );
  });

  it('decode refuses bytes encode() cannot make', () => {
    const le = (...words: number[]): Buffer => Buffer.from(new Uint32Array(words).buffer);
    expect(() => HashIntervals.decode(Buffer.alloc(7))).toThrow(/whole number/);
    expect(() => HashIntervals.decode(le(10, 5))).toThrow(/sorted/); // lo > hi
    expect(() => HashIntervals.decode(le(10, 20, 15, 30))).toThrow(/sorted/); // overlapping
    expect(HashIntervals.decode(Buffer.alloc(0)).count).toBe(0);
    expect(HashIntervals.decode(le(0, TOP)).has(12345)).toBe(true);
  });
});
