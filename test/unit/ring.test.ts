import { describe, expect, it } from 'vitest';
import { DEFAULT_VNODES, HashRing, inRange, rangeSize, type HashRange, type MovedRange } from '../../src/common/ring.js';
import { hashBytes } from '../../src/common/hash.js';
import { seededRandom } from './chunking.js';

const LOCAL = ['127.0.0.1:8081', '127.0.0.1:8082', '127.0.0.1:8083', '127.0.0.1:8084', '127.0.0.1:8085', '127.0.0.1:8086', '127.0.0.1:8087'];
const REMOTE = ['10.0.0.1:7000', '10.0.0.1:7001', '10.0.0.1:7002', '10.0.0.1:7003', '10.0.0.1:7004', '10.0.0.1:7005', '10.0.0.1:7006'];
const HASH_SPACE = 2 ** 32;

const KEY_COUNT = 200_000;
const KEY_HASHES: Uint32Array = (() => {
  const out = new Uint32Array(KEY_COUNT);
  for (let i = 0; i < KEY_COUNT; i++) out[i] = hashBytes(Buffer.from(`key:${i}`));
  return out;
})();

/** Random hashes plus the values where off-by-one mistakes live. */
function sampleHashes(count: number, seed: number, ranges: readonly HashRange[] = []): number[] {
  const next = seededRandom(seed);
  const out = [0, 1, HASH_SPACE - 1, HASH_SPACE - 2, 2 ** 31];
  for (let i = 0; i < count; i++) out.push(Math.floor(next() * HASH_SPACE));
  for (const r of ranges) {
    for (const h of [r.start, r.start + 1, r.end, r.end + 1, r.end - 1]) out.push(((h % HASH_SPACE) + HASH_SPACE) % HASH_SPACE);
  }
  return out;
}

function countOwners(ring: HashRing): Map<string, number> {
  const counts = new Map<string, number>(ring.members.map((m) => [m, 0]));
  for (const h of KEY_HASHES) {
    const owner = ring.ownerOfHash(h)!;
    counts.set(owner, counts.get(owner)! + 1);
  }
  return counts;
}

describe('inRange and rangeSize', () => {
  it('ranges are (start, end], clockwise', () => {
    expect(inRange(10, { start: 10, end: 20 })).toBe(false);
    expect(inRange(11, { start: 10, end: 20 })).toBe(true);
    expect(inRange(20, { start: 10, end: 20 })).toBe(true);
    expect(inRange(21, { start: 10, end: 20 })).toBe(false);
    expect(rangeSize({ start: 10, end: 20 })).toBe(10);
  });

  it('a range with start > end wraps through 0', () => {
    const r = { start: HASH_SPACE - 10, end: 5 };
    expect(inRange(HASH_SPACE - 10, r)).toBe(false);
    expect(inRange(HASH_SPACE - 9, r)).toBe(true);
    expect(inRange(HASH_SPACE - 1, r)).toBe(true);
    expect(inRange(0, r)).toBe(true);
    expect(inRange(5, r)).toBe(true);
    expect(inRange(6, r)).toBe(false);
    expect(rangeSize(r)).toBe(15);
  });

  it('start === end is the whole ring', () => {
    for (const h of [0, 7, HASH_SPACE - 1]) expect(inRange(h, { start: 7, end: 7 })).toBe(true);
    expect(rangeSize({ start: 7, end: 7 })).toBe(HASH_SPACE);
  });
});

describe('HashRing basics', () => {
  it('validates vnodes', () => {
    for (const bad of [0, -1, 1.5, 65_537]) expect(() => new HashRing(['a'], bad)).toThrow(RangeError);
    expect(new HashRing(['a'], 65_536).vnodes).toBe(65_536);
    expect(new HashRing(['a']).vnodes).toBe(DEFAULT_VNODES);
  });

  it('an empty ring owns nothing', () => {
    const ring = new HashRing([]);
    expect(ring.size).toBe(0);
    expect(ring.ownerOfHash(123)).toBeUndefined();
    expect(ring.ownerIndexOfHash(123)).toBe(-1);
    expect(ring.shares().size).toBe(0);
  });

  it('a single member owns every hash and the whole ring', () => {
    const ring = new HashRing(['solo:1']);
    expect(new Set(sampleHashes(100, 1).map((h) => ring.ownerOfHash(h)))).toEqual(new Set(['solo:1']));
    expect(ring.shares().get('solo:1')).toBeCloseTo(1, 12);
    const ranges = ring.rangesOf('solo:1');
    expect(ranges).toHaveLength(1);
    expect(ranges[0]!.start).toBe(ranges[0]!.end);
  });

  it('a single member with a single vnode still owns the whole ring', () => {
    const ring = new HashRing(['solo:1'], 1);
    expect(ring.shares().get('solo:1')).toBeCloseTo(1, 12);
    const ranges = ring.rangesOf('solo:1');
    expect(ranges).toHaveLength(1);
    expect(rangeSize(ranges[0]!)).toBe(HASH_SPACE);
  });

  it('with, without, has, size; duplicates count once; members are sorted', () => {
    const ring = new HashRing(['b:1', 'a:1', 'b:1']);
    expect(ring.members).toEqual(['a:1', 'b:1']);
    expect(ring.size).toBe(2);
    expect(ring.has('a:1')).toBe(true);
    expect(ring.has('c:1')).toBe(false);
    const bigger = ring.with('c:1');
    expect(bigger.members).toEqual(['a:1', 'b:1', 'c:1']);
    expect(bigger.vnodes).toBe(ring.vnodes);
    expect(bigger.without('a:1').members).toEqual(['b:1', 'c:1']);
    expect(ring.members).toEqual(['a:1', 'b:1']); // rings are immutable
  });

  it('ownerIndexOfHash agrees with ownerOfHash', () => {
    const ring = new HashRing(LOCAL.slice(0, 5));
    const disagree = sampleHashes(5000, 2).filter((h) => ring.members[ring.ownerIndexOfHash(h)] !== ring.ownerOfHash(h));
    expect(disagree).toEqual([]);
  });
});

describe('(a) balance at DEFAULT_VNODES', () => {
  for (const [label, nodes] of [
    ['127.0.0.1:8081..8085', LOCAL.slice(0, 5)],
    ['10.0.0.1:7000..7004', REMOTE.slice(0, 5)],
  ] as const) {
    it(`${label}: busiest node ≤ 1.10 × mean by shares()`, () => {
      const shares = new HashRing(nodes).shares();
      const values = [...shares.values()];
      expect(values).toHaveLength(5);
      expect(values.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 9);
      expect(Math.max(...values)).toBeLessThanOrEqual(1.1 * (1 / 5));
    });

    it(`${label}: busiest node ≤ 1.10 × mean over ${KEY_COUNT} keys`, () => {
      const counts = [...countOwners(new HashRing(nodes)).values()];
      expect(counts.reduce((a, b) => a + b, 0)).toBe(KEY_COUNT);
      expect(Math.max(...counts)).toBeLessThanOrEqual(1.1 * (KEY_COUNT / 5));
    });
  }
});

describe('(b) minimal movement', () => {
  for (const nodes of [LOCAL, REMOTE]) {
    for (let n = 1; n <= 6; n++) {
      it(`adding node ${n + 1} to ${n} (${nodes[0]}…) moves ~1/${n + 1} of the keys, all onto the new node`, () => {
        const before = new HashRing(nodes.slice(0, n));
        const added = nodes[n]!;
        const after = before.with(added);
        let moved = 0;
        for (const h of KEY_HASHES) {
          const from = before.ownerOfHash(h);
          const to = after.ownerOfHash(h);
          if (from === to) continue;
          moved++;
          if (to !== added) throw new Error(`hash ${h} moved from ${from} to ${to}, not to the new node ${added}`);
        }
        const expected = KEY_COUNT / (n + 1);
        expect(moved).toBeGreaterThanOrEqual(0.75 * expected);
        expect(moved).toBeLessThanOrEqual(1.25 * expected);
      });
    }

    it(`removing a node (${nodes[0]}…) moves only that node's keys, and all of them`, () => {
      const full = new HashRing(nodes.slice(0, 5));
      for (const removed of full.members) {
        const after = full.without(removed);
        let moved = 0;
        let owned = 0;
        for (const h of KEY_HASHES) {
          const from = full.ownerOfHash(h);
          const to = after.ownerOfHash(h);
          if (from === removed) owned++;
          if (from === to) continue;
          moved++;
          if (from !== removed) throw new Error(`hash ${h} moved from ${from} to ${to} although only ${removed} left`);
        }
        expect(moved).toBe(owned);
        expect(owned).toBeGreaterThan(0);
      }
    });
  }
});

/**
 * Index of the range holding each hash, by binary search over the ranges cut into closed
 * intervals (a wrapping range is two). Throws if two ranges overlap: moved ranges are disjoint.
 * Cross-checked against inRange, so the test's own lookup cannot drift from the ring's meaning.
 */
function rangeLookup(ranges: readonly HashRange[]): (hash: number) => number {
  const parts: [number, number, number][] = [];
  ranges.forEach((r, i) => {
    if (r.start === r.end) parts.push([0, HASH_SPACE - 1, i]);
    else if (r.start < r.end) parts.push([r.start + 1, r.end, i]);
    else {
      if (r.start < HASH_SPACE - 1) parts.push([r.start + 1, HASH_SPACE - 1, i]);
      parts.push([0, r.end, i]);
    }
  });
  parts.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < parts.length; i++) {
    if (parts[i]![0] <= parts[i - 1]![1]) throw new Error(`ranges ${parts[i - 1]![2]} and ${parts[i]![2]} overlap`);
  }
  return (hash) => {
    let lo = 0;
    let hi = parts.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const [from, to, index] = parts[mid]!;
      if (hash < from) hi = mid - 1;
      else if (hash > to) lo = mid + 1;
      else {
        found = index;
        break;
      }
    }
    if (found >= 0 && !inRange(hash, ranges[found]!)) throw new Error(`lookup disagrees with inRange for ${hash}`);
    return found;
  };
}

/** Every sampled hash: inside a moved range its owners are (from, to); outside, nothing changed. */
function expectMovedRangesAgree(before: HashRing, after: HashRing, moved: readonly MovedRange[], seed: number): void {
  for (const r of moved) expect(r.from, JSON.stringify(r)).not.toBe(r.to);
  const lookup = rangeLookup(moved);
  const problems: string[] = [];
  for (const h of sampleHashes(20_000, seed, moved)) {
    const hit = lookup(h);
    const from = before.ownerOfHash(h) ?? '';
    const to = after.ownerOfHash(h) ?? '';
    if (hit >= 0) {
      const r = moved[hit]!;
      if (from !== r.from || to !== r.to) problems.push(`hash ${h} in ${JSON.stringify(r)} but owners are ${from} -> ${to}`);
    } else if (from !== to) {
      problems.push(`hash ${h} is in no moved range but moved ${from} -> ${to}`);
    }
  }
  expect(problems.slice(0, 10)).toEqual([]);
}

describe('(c) movedTo agrees with ownerOfHash', () => {
  it('adding a node', () => {
    const before = new HashRing(LOCAL.slice(0, 3));
    const after = before.with(LOCAL[3]!);
    const moved = before.movedTo(after);
    expect(moved.length).toBeGreaterThan(0);
    for (const r of moved) expect(r.to).toBe(LOCAL[3]);
    expectMovedRangesAgree(before, after, moved, 10);
  });

  it('removing a node', () => {
    const before = new HashRing(REMOTE.slice(0, 5));
    const after = before.without(REMOTE[2]!);
    const moved = before.movedTo(after);
    for (const r of moved) expect(r.from).toBe(REMOTE[2]);
    expectMovedRangesAgree(before, after, moved, 11);
  });

  it('replacing members, with few vnodes', () => {
    const before = new HashRing(['a:1', 'b:1', 'c:1'], 8);
    const after = new HashRing(['b:1', 'c:1', 'd:1', 'e:1'], 8);
    expectMovedRangesAgree(before, after, before.movedTo(after), 12);
  });

  it('from an empty ring every arc moves from nobody', () => {
    const after = new HashRing(LOCAL.slice(0, 3), 16);
    const moved = new HashRing([], 16).movedTo(after);
    for (const r of moved) expect(r.from).toBe('');
    expect(moved.reduce((sum, r) => sum + rangeSize(r), 0)).toBe(HASH_SPACE);
    expectMovedRangesAgree(new HashRing([], 16), after, moved, 13);
  });

  it('identical rings move nothing', () => {
    const ring = new HashRing(LOCAL.slice(0, 4));
    expect(ring.movedTo(new HashRing([...LOCAL.slice(0, 4)].reverse()))).toEqual([]);
  });

  for (const vnodes of [4, DEFAULT_VNODES]) {
    it(`a moved range that wraps through 0 (vnodes ${vnodes})`, () => {
      const before = new HashRing(['a:1', 'b:1', 'c:1'], vnodes);
      // Find a new member that takes over hash 0, so its moved range crosses the top of the ring.
      let added = '';
      for (let i = 0; i < 10_000 && added === ''; i++) {
        const candidate = `n${i}:1`;
        if (before.with(candidate).ownerOfHash(0) === candidate) added = candidate;
      }
      expect(added).not.toBe('');
      const after = before.with(added);
      const moved = before.movedTo(after);
      const wrapping = moved.filter((r) => inRange(0, r));
      expect(wrapping).toHaveLength(1);
      const r = wrapping[0]!;
      expect(r.start).toBeGreaterThan(r.end);
      expect(inRange(HASH_SPACE - 1, r)).toBe(true);
      expect(after.ownerOfHash(HASH_SPACE - 1)).toBe(added);
      expect(before.ownerOfHash(0)).toBe(r.from);
      expectMovedRangesAgree(before, after, moved, 14 + vnodes);
    });
  }
});

describe('(d) determinism and rangesOf', () => {
  it('the same members in any order give identical owners', () => {
    const members = [...LOCAL.slice(0, 4), ...REMOTE.slice(0, 3)];
    const reference = new HashRing(members);
    const next = seededRandom(99);
    for (let round = 0; round < 5; round++) {
      const shuffled = [...members].sort(() => next() - 0.5);
      const ring = new HashRing([...shuffled, shuffled[0]!]);
      expect(ring.members).toEqual(reference.members);
      for (const h of sampleHashes(5000, round)) {
        if (ring.ownerOfHash(h) !== reference.ownerOfHash(h)) throw new Error(`hash ${h}: ${ring.ownerOfHash(h)} vs ${reference.ownerOfHash(h)}`);
      }
      expect(ring.movedTo(reference)).toEqual([]);
      expect([...ring.shares()]).toEqual([...reference.shares()]);
    }
  });

  for (const vnodes of [3, 64, DEFAULT_VNODES]) {
    it(`rangesOf(member) covers exactly its share (vnodes ${vnodes})`, () => {
      const ring = new HashRing(REMOTE.slice(0, 5), vnodes);
      const shares = ring.shares();
      let total = 0;
      const all: { member: string; ranges: HashRange[] }[] = [];
      for (const member of ring.members) {
        const ranges = ring.rangesOf(member);
        all.push({ member, ranges });
        const size = ranges.reduce((sum, r) => sum + rangeSize(r), 0);
        total += size;
        expect(size / HASH_SPACE, member).toBeCloseTo(shares.get(member)!, 9);
      }
      expect(total).toBe(HASH_SPACE);
      const lookups = all.map(({ member, ranges }) => ({ member, lookup: rangeLookup(ranges) }));
      for (const h of sampleHashes(5000, vnodes, all.flatMap((a) => a.ranges))) {
        const owner = ring.ownerOfHash(h);
        for (const { member, lookup } of lookups) {
          const inside = lookup(h) >= 0;
          if (inside !== (owner === member)) throw new Error(`hash ${h}: owner ${owner}, but in ${member}'s ranges: ${inside}`);
        }
      }
    });
  }
});
