import { describe, expect, it } from 'vitest';
import { KeyState, ShardedStore } from '../../src/server/store.js';
import { HashIntervals } from '../../src/server/hash-intervals.js';
import { hashBytes } from '../../src/common/hash.js';
import { seededBytes } from './chunking.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
/** A value read from the store, as a latin1 string (a copy: views die at the next write). */
const str = (v: Buffer | undefined): string | undefined => v?.toString('latin1');

/** Live keys per shard, as the store's own walk places them (the cursor names the shard). */
function shardSizes(store: ShardedStore): number[] {
  const sizes = new Array<number>(store.shardCount).fill(0);
  const cursor = store.newCursor();
  while (!store.scan(cursor, 10_000, () => sizes[cursor.shard]!++));
  return sizes;
}

/** Every live entry as latin1 strings. */
function contents(store: ShardedStore): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of store.entries()) {
    const key = k.toString('latin1');
    expect(out.has(key), `key ${JSON.stringify(key)} listed twice`).toBe(false);
    out.set(key, v.toString('latin1'));
  }
  return out;
}

describe('ShardedStore basics', () => {
  it('set, get, has, delete, size and bytes', () => {
    const store = new ShardedStore();
    expect(store.shardCount).toBe(16);
    expect(store.size).toBe(0);
    expect(store.bytes).toBe(0);
    expect(store.get(b('a'))).toBeUndefined();
    expect(store.has(b('a'))).toBe(false);
    expect(store.state(b('a'))).toBe(KeyState.Absent);

    store.set(b('a'), b('1'));
    expect(str(store.get(b('a')))).toBe('1');
    expect(store.has(b('a'))).toBe(true);
    expect(store.state(b('a'))).toBe(KeyState.Live);
    expect(store.size).toBe(1);
    expect(store.bytes).toBe(2);

    // An overwrite replaces the value and does not change the count.
    store.set(b('a'), b('22'));
    expect(str(store.get(b('a')))).toBe('22');
    expect(store.size).toBe(1);
    expect(store.bytes).toBe(3);

    store.set(b('b'), b(''));
    expect(store.has(b('b'))).toBe(true);
    expect(str(store.get(b('b')))).toBe('');
    expect(store.size).toBe(2);
    expect(store.bytes).toBe(4);

    expect(store.delete(b('a'))).toBe(true);
    expect(store.delete(b('a'))).toBe(false);
    expect(store.has(b('a'))).toBe(false);
    expect(store.get(b('a'))).toBeUndefined();
    expect(store.size).toBe(1);
    expect(store.bytes).toBe(1);
    // Deleting a key whose value is empty still counts.
    expect(store.delete(b('b'))).toBe(true);
    expect(store.size).toBe(0);
    expect(store.bytes).toBe(0);
    expect(contents(store)).toEqual(new Map());
  });

  it('a deleted key can be set again, many times over', () => {
    const store = new ShardedStore(2);
    for (let round = 0; round < 2000; round++) {
      store.set(b('k'), b(`v${round}`));
      expect(str(store.get(b('k')))).toBe(`v${round}`);
      if (round % 3 === 0) expect(store.delete(b('k'))).toBe(true);
    }
    expect(store.size).toBe(1);
    expect(contents(store)).toEqual(new Map([['k', 'v1999']]));
  });

  it('get returns a view of the stored bytes, not of the caller’s buffer', () => {
    const store = new ShardedStore(1);
    const key = b('key');
    const value = b('value');
    store.set(key, value);
    key[0] = 0x4b; // 'Key'
    value.fill(0);
    expect(str(store.get(b('key')))).toBe('value');
    expect(store.get(key)).toBeUndefined();
  });

  it('binary keys and values round-trip, and differ from each other', () => {
    const store = new ShardedStore(8);
    const keys = ['', '\0', '\0\0', '\r\n', 'a\0b', '\xff', '\xfe\xff', String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i))];
    for (let seed = 0; seed < 50; seed++) keys.push(seededBytes(seed, 1 + (seed % 20)).toString('latin1'));
    // Keys of more than 32 bytes that differ only in their last byte (the long compare path).
    for (let i = 0; i < 4; i++) keys.push(`${'L'.repeat(40)}${String.fromCharCode(i)}`);
    const unique = [...new Set(keys)];
    unique.forEach((k, i) => store.set(b(k), b(`v${i}\0\xff`)));
    expect(store.size).toBe(unique.length);
    unique.forEach((k, i) => expect(str(store.get(b(k))), JSON.stringify(k)).toBe(`v${i}\0\xff`));
    expect(contents(store)).toEqual(new Map(unique.map((k, i) => [k, `v${i}\0\xff`])));
    // A key that is a prefix or an extension of a stored key is a different key.
    expect(store.has(b('a\0'))).toBe(false);
    expect(store.has(b('\0\0\0'))).toBe(false);
    expect(store.has(b('L'.repeat(40)))).toBe(false);
  });

  it('entries() and a scan per shard see every key once', () => {
    const store = new ShardedStore(4);
    for (let i = 0; i < 1000; i++) store.set(b(`k${i}`), b(String(i)));
    const expected = new Map(Array.from({ length: 1000 }, (_, i) => [`k${i}`, String(i)]));
    expect(contents(store)).toEqual(expected);
    const sizes = shardSizes(store);
    expect(sizes.reduce((a, n) => a + n, 0)).toBe(1000);
    for (const n of sizes) expect(n).toBeGreaterThan(0);
  });

  it('large values (more than an arena’s first 64 KiB) round-trip', () => {
    const store = new ShardedStore(1);
    const big = seededBytes(7, 300_000);
    store.set(b('small'), b('x'));
    store.set(b('big'), big);
    store.set(b('after'), b('y'));
    expect(store.get(b('big'))!.equals(big)).toBe(true);
    expect(str(store.get(b('small')))).toBe('x');
    expect(str(store.get(b('after')))).toBe('y');
    expect(store.bytes).toBe('small'.length + 1 + 'big'.length + big.length + 'after'.length + 1);
  });

  it('clear drops keys and tombstones', () => {
    const store = new ShardedStore();
    store.set(b('a'), b('1'));
    store.tombstone(b('b'));
    store.clear();
    expect(store.size).toBe(0);
    expect(store.tombstoneCount).toBe(0);
    expect(store.bytes).toBe(0);
    expect(store.has(b('a'))).toBe(false);
    expect(store.isTombstoned(b('b'))).toBe(false);
    expect(contents(store)).toEqual(new Map());
    store.set(b('a'), b('2'));
    expect(str(store.get(b('a')))).toBe('2');
  });

  it('reserve before a bulk load and trim after it keep the data', () => {
    const store = new ShardedStore(4);
    store.set(b('before'), b('1'));
    store.reserve(4 * 1024 * 1024);
    expect(store.arenaBytes).toBeGreaterThanOrEqual(4 * 1024 * 1024);
    for (let i = 0; i < 5000; i++) store.set(b(`k${i}`), seededBytes(i, i % 50));
    store.trim();
    // Trimmed arenas hold the entries with less than 64 KiB spare each.
    expect(store.arenaBytes).toBeLessThan(4 * 1024 * 1024);
    expect(str(store.get(b('before')))).toBe('1');
    for (let i = 0; i < 5000; i += 7) expect(store.get(b(`k${i}`))!.equals(seededBytes(i, i % 50))).toBe(true);
    expect(store.size).toBe(5001);
    // Writes after a trim grow the arenas again.
    for (let i = 0; i < 5000; i++) store.set(b(`again${i}`), b('x'.repeat(20)));
    expect(store.size).toBe(10_001);
    expect(str(store.get(b('again4999')))).toBe('x'.repeat(20));
    expect(str(store.get(b('before')))).toBe('1');
  });
});

describe('ShardedStore tombstones', () => {
  it('tombstone deletes the key and marks it', () => {
    const store = new ShardedStore();
    store.set(b('k'), b('v'));
    expect(store.tombstone(b('k'))).toBe(true);
    expect(store.has(b('k'))).toBe(false);
    expect(store.get(b('k'))).toBeUndefined();
    expect(store.size).toBe(0);
    expect(store.isTombstoned(b('k'))).toBe(true);
    expect(store.state(b('k'))).toBe(KeyState.Tombstoned);
    expect(store.tombstoneCount).toBe(1);
    // A tombstone holds its key's bytes in `bytes`.
    expect(store.bytes).toBe(1);
  });

  it('a tombstone on an absent key still marks it; a second tombstone changes nothing', () => {
    const store = new ShardedStore();
    expect(store.tombstone(b('ghost'))).toBe(false);
    expect(store.isTombstoned(b('ghost'))).toBe(true);
    expect(store.size).toBe(0);
    expect(store.tombstone(b('ghost'))).toBe(false);
    expect(store.tombstoneCount).toBe(1);
    expect(store.bytes).toBe(5);
  });

  it('set clears the mark; delete does not remove a tombstone nor add one', () => {
    const store = new ShardedStore();
    store.tombstone(b('k'));
    expect(store.delete(b('k'))).toBe(false);
    expect(store.isTombstoned(b('k'))).toBe(true);
    store.set(b('k'), b('new'));
    expect(store.isTombstoned(b('k'))).toBe(false);
    expect(store.tombstoneCount).toBe(0);
    expect(str(store.get(b('k')))).toBe('new');
    expect(store.delete(b('k'))).toBe(true);
    expect(store.isTombstoned(b('k'))).toBe(false);
    expect(store.state(b('k'))).toBe(KeyState.Absent);
  });

  it('clearTombstones forgets every mark without touching data; tombstones show in a scan only when asked', () => {
    const store = new ShardedStore(4);
    store.set(b('live'), b('1'));
    for (let i = 0; i < 300; i++) store.tombstone(b(`t${i}`));
    expect(store.tombstoneCount).toBe(300);
    const seen: [string, string | null][] = [];
    const cursor = store.newCursor();
    while (!store.scan(cursor, 50, (_h, k, v) => seen.push([k.toString('latin1'), v === null ? null : v.toString('latin1')]), true));
    expect(seen.filter(([, v]) => v === null).map(([k]) => k).sort()).toEqual(Array.from({ length: 300 }, (_, i) => `t${i}`).sort());
    expect(seen.filter(([, v]) => v !== null)).toEqual([['live', '1']]);
    expect(contents(store)).toEqual(new Map([['live', '1']]));

    store.clearTombstones();
    expect(store.tombstoneCount).toBe(0);
    for (let i = 0; i < 300; i++) expect(store.state(b(`t${i}`))).toBe(KeyState.Absent);
    expect(str(store.get(b('live')))).toBe('1');
    expect(store.size).toBe(1);
    expect(store.bytes).toBe(5);
    // A cleared key can be tombstoned or set again.
    store.tombstone(b('t1'));
    store.set(b('t2'), b('v'));
    expect(store.tombstoneCount).toBe(1);
    expect(store.size).toBe(2);
  });
});

describe('ShardedStore shards', () => {
  it('accepts only a power of two from 1 to 4096', () => {
    for (const ok of [1, 2, 4, 16, 1024, 4096]) expect(new ShardedStore(ok).shardCount).toBe(ok);
    for (const bad of [0, -1, 3, 6, 100, 4095, 8192, 1.5, Number.NaN]) {
      expect(() => new ShardedStore(bad), String(bad)).toThrow(RangeError);
    }
  });

  it('spreads keys over all shards', () => {
    for (const shardCount of [2, 16, 64]) {
      const store = new ShardedStore(shardCount);
      const n = 64_000;
      for (let i = 0; i < n; i++) store.set(b(`key:${i}`), b(''));
      const sizes = shardSizes(store);
      expect(sizes.reduce((a, x) => a + x, 0)).toBe(n);
      const mean = n / shardCount;
      expect(Math.min(...sizes), `${shardCount} shards: ${sizes.join(',')}`).toBeGreaterThan(0.8 * mean);
      expect(Math.max(...sizes), `${shardCount} shards: ${sizes.join(',')}`).toBeLessThan(1.2 * mean);
    }
  });

  it('a one-shard store works like a Map', () => {
    const store = new ShardedStore(1);
    for (let i = 0; i < 100; i++) store.set(b(String(i)), b(String(i * 2)));
    expect(shardSizes(store)).toEqual([100]);
    expect(str(store.get(b('42')))).toBe('84');
    expect(contents(store)).toEqual(new Map(Array.from({ length: 100 }, (_, i) => [String(i), String(i * 2)])));
  });

  // A single V8 Map throws RangeError past 2^24 entries; the store must hold more.
  it('holds more than 2^24 keys with 16 shards', { timeout: 300_000 }, () => {
    const store = new ShardedStore(16);
    const n = 2 ** 24 + 1000;
    const key = Buffer.alloc(4);
    const value = Buffer.alloc(1);
    for (let i = 0; i < n; i++) {
      key.writeUInt32LE(i);
      value[0] = i & 0xff;
      store.set(key, value);
    }
    expect(store.size).toBe(n);
    expect(store.bytes).toBe(5 * n);
    // A sample of gets, spread over the whole range (and its ends).
    const sample = [0, 1, 255, 256, 2 ** 24 - 1, 2 ** 24, n - 1];
    for (let i = 0; i < 2000; i++) sample.push(Math.floor((i * n) / 2000) + (i % 7));
    for (const i of sample) {
      key.writeUInt32LE(i);
      const got = store.get(key);
      if (got === undefined || got.length !== 1 || got[0] !== (i & 0xff)) throw new Error(`key ${i}: got ${got === undefined ? 'nothing' : got.toString('hex')}`);
    }
    for (const absent of [n, n + 1, 2 ** 31, 0xffffffff]) {
      key.writeUInt32LE(absent);
      expect(store.has(key), `key ${absent}`).toBe(false);
    }
    // A full walk sees every key once.
    const seen = new Uint8Array(Math.ceil(n / 8));
    let walked = 0;
    let strays = 0;
    const cursor = store.newCursor();
    while (
      !store.scan(cursor, 1 << 20, (_h, k) => {
        const i = k.length === 4 ? k.readUInt32LE(0) : n;
        if (i >= n || (seen[i >>> 3]! & (1 << (i & 7))) !== 0) strays++;
        else seen[i >>> 3]! |= 1 << (i & 7);
        walked++;
      })
    );
    expect(strays).toBe(0);
    expect(walked).toBe(n);
    store.clear();
    expect(store.size).toBe(0);
    key.writeUInt32LE(0);
    expect(store.has(key)).toBe(false);
  });
});

describe('ShardedStore.dropHashes (DROPRANGE)', () => {
  const TOP = 0xffffffff;

  /** A store of `n` keys plus a few tombstones, with `shards` shards. */
  function filled(n: number, shards: number): ShardedStore {
    const store = new ShardedStore(shards);
    for (let i = 0; i < n; i++) store.set(b(`key:${i}`), b(`value:${i}`));
    for (let i = 0; i < 40; i++) store.tombstone(b(`tomb:${i}`));
    return store;
  }

  it.each([1, 4, 16])('walked in calls of a few shards, drops exactly the live values in the ranges (%i shards)', (shards) => {
    const ranges = new HashIntervals([{ start: 100, end: 0x40000000 }, { start: 0xa0000000, end: 0xa8000000 }, { start: 0xf0000000, end: 5 }]);
    const store = filled(5000, shards);
    const before = contents(store);
    const tombs = [...Array(40).keys()].map((i) => `tomb:${i}`);
    const expected = new Map([...before].filter(([k]) => !ranges.has(hashBytes(b(k)))));
    let dropped = 0;
    let calls = 0;
    for (let from = 0; ; calls++) {
      const to = store.shardSpanEnd(from, 1);
      expect(to).toBeGreaterThanOrEqual(from);
      dropped += store.dropHashes(ranges.clip(from, to));
      if (to === TOP) break;
      from = to + 1;
    }
    expect(calls, 'a small budget takes one shard per call').toBe(shards - 1);
    expect(contents(store)).toEqual(expected);
    expect(dropped).toBe(before.size - expected.size);
    expect(store.size).toBe(expected.size);
    expect(tombs.filter((k) => store.isTombstoned(b(k))), 'tombstones are not values: they stay').toEqual(tombs);
    // A second pass finds nothing left to drop.
    expect(store.dropHashes(ranges)).toBe(0);
  });

  it('a budget larger than the store takes every shard in one call', () => {
    const store = filled(1000, 16);
    expect(store.shardSpanEnd(0, 1 << 30)).toBe(TOP);
    expect(store.shardSpanEnd(0x12345678, 1 << 30)).toBe(TOP);
    expect(store.shardSpanEnd(0x12345678, 1)).toBe(0x1fffffff); // the shard holding it, whole
  });

  it('undone with its epoch like any delete, and readers of a dropped key wait for that epoch', () => {
    const store = filled(2000, 8);
    const before = contents(store);
    const ranges = new HashIntervals([{ start: 0, end: 0x80000000 }]);
    const dropped = store.dropHashes(ranges, 7);
    expect(dropped).toBeGreaterThan(500);
    const gone = [...before.keys()].find((k) => ranges.has(hashBytes(b(k))))!;
    expect(store.get(b(gone))).toBeUndefined();
    expect(store.readDependency).toBe(7);
    expect(store.rollBack(7)).toBe(dropped);
    expect(contents(store)).toEqual(before);
  });
});
