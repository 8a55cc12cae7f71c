import { describe, expect, it } from 'vitest';
import { encodeDumpFrames, RangeDumps } from '../../src/server/range-dump.js';
import { Decode, RequestDecoder } from '../../src/common/protocol/request-decoder.js';
import { ShardedStore } from '../../src/server/store.js';
import { HashRing, inRange, type HashRange } from '../../src/common/ring.js';
import { hashBytes } from '../../src/common/hash.js';
import { seededBytes } from './chunking.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

/** Decode one RESP request into latin1 strings. */
function decodeRequest(bytes: Buffer): string[] {
  const decoder = new RequestDecoder();
  decoder.push(bytes);
  expect(decoder.next()).toBe(Decode.Request);
  const args = decoder.args.map((a) => a.toString('latin1'));
  expect(decoder.next(), 'exactly one request').toBe(Decode.NeedMore);
  return args;
}

describe('encodeDumpFrames', () => {
  it('per target an IMPORT of exactly its keys, binary-safe', () => {
    const keys = [b('a'), b('bb'), b('\r\n$3\r\n'), Buffer.from([0, 255, 13, 10]), b('e')];
    const values = [b('1'), b(''), b('x\r\ny'), Buffer.alloc(300, 7), b('*2\r\n')];
    const labels = [1, 0, 1, 1, 0];
    const imports = encodeDumpFrames({ targets: 3, keys, values, labels });
    const str = (x: Buffer): string => x.toString('latin1');
    expect(imports).toHaveLength(3);
    expect(decodeRequest(imports[0]!)).toEqual(['IMPORT', 'bb', '', 'e', '*2\r\n']);
    expect(decodeRequest(imports[1]!)).toEqual(['IMPORT', 'a', '1', str(keys[2]!), 'x\r\ny', str(keys[3]!), str(values[3]!)]);
    expect(imports[2]!.length, 'a target with no key gets nothing to send').toBe(0);
  });

  it('an empty batch encodes to nothing at all', () => {
    const imports = encodeDumpFrames({ targets: 2, keys: [], values: [], labels: [] });
    expect(imports.map((f) => f.length)).toEqual([0, 0]);
  });
});

function fillStore(n: number, shards = 16): ShardedStore {
  const store = new ShardedStore(shards);
  for (let i = 0; i < n; i++) store.set(b(`key:${i}`), b(`value:${i}`));
  // A few binary keys, so bytes >= 0x80 and NUL are hashed too.
  for (let i = 0; i < 50; i++) store.set(seededBytes(i + 1, 1 + (i % 12)), b(`bin:${i}`));
  return store;
}

/** Every live entry whose key's ring hash is in `ranges`, as latin1 strings. */
function expectedIn(store: ShardedStore, ranges: readonly HashRange[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of store.entries()) {
    if (ranges.some((r) => inRange(hashBytes(k), r))) out.set(k.toString('latin1'), v.toString('latin1'));
  }
  return out;
}

/** A batch with its keys and values copied out of the store (they are views until the next write). */
interface Batch {
  done: boolean;
  scanned: number;
  keys: string[];
  values: string[];
}

function copy(batch: { done: boolean; scanned: number; keys: Buffer[]; values: Buffer[] } | undefined): Batch | undefined {
  if (batch === undefined) return undefined;
  expect(batch.values).toHaveLength(batch.keys.length);
  return { done: batch.done, scanned: batch.scanned, keys: batch.keys.map((k) => k.toString('latin1')), values: batch.values.map((v) => v.toString('latin1')) };
}

/** Run a dump to completion; returns every batch. */
function drain(dumps: RangeDumps, token: string, count: number, ranges: readonly HashRange[], between?: (batch: Batch) => void): Batch[] {
  const batches: Batch[] = [];
  let batch = copy(dumps.next(token, count, ranges));
  for (let guard = 0; batch !== undefined; guard++) {
    if (guard > 100_000) throw new Error('dump does not finish');
    batches.push(batch);
    if (batch.done) break;
    between?.(batch);
    batch = copy(dumps.next(token, count, undefined));
  }
  return batches;
}

function collect(batches: readonly Batch[]): { keys: string[]; pairs: Map<string, string> } {
  const keys = batches.flatMap((x) => x.keys);
  const pairs = new Map<string, string>();
  for (const x of batches) x.keys.forEach((k, i) => pairs.set(k, x.values[i]!));
  return { keys, pairs };
}

describe('RangeDumps', () => {
  const ring = new HashRing(['10.0.0.1:7000', '10.0.0.1:7001', '10.0.0.1:7002']);

  it('returns every key in the ranges exactly once across batches, with its value', () => {
    const store = fillStore(20_000);
    const dumps = new RangeDumps(store);
    const ranges = ring.rangesOf('10.0.0.1:7001');
    const expected = expectedIn(store, ranges);
    expect(expected.size).toBeGreaterThan(4000);
    const batches = drain(dumps, 'token-1', 500, ranges);
    for (const b of batches) expect(b.keys.length).toBeLessThanOrEqual(500);
    expect(batches[batches.length - 1]!.done).toBe(true);
    expect(batches.length).toBeGreaterThan(expected.size / 500);
    const { keys, pairs } = collect(batches);
    expect(keys.length).toBe(new Set(keys).size);
    expect(pairs).toEqual(expected);
    // Scanning looked at every key of the store once.
    expect(batches.reduce((n, b) => n + b.scanned, 0)).toBe(store.size);
    // A finished dump forgets its token.
    expect(dumps.active).toBe(0);
    expect(dumps.next('token-1', 10, undefined)).toBeUndefined();
  });

  it('a batch never holds more than `count` pairs, however small `count` is', () => {
    const store = fillStore(3000, 4);
    for (const count of [1, 10, 500]) {
      const batches = drain(new RangeDumps(store), `count-${count}`, count, [{ start: 5, end: 5 }]);
      const sizes = batches.map((x) => x.keys.length);
      expect(Math.max(...sizes), `count ${count}: batch sizes ${sizes.slice(0, 5).join(',')}...`).toBeLessThanOrEqual(count);
      expect(collect(batches).keys).toHaveLength(store.size);
    }
  });

  it('a whole-ring range (start === end) returns the whole store, including the binary keys', () => {
    const store = fillStore(3000, 4);
    const batches = drain(new RangeDumps(store), 't', 1000, [{ start: 99, end: 99 }]);
    const { keys, pairs } = collect(batches);
    expect(keys).toHaveLength(store.size);
    expect(pairs).toEqual(new Map([...store.entries()].map(([k, v]) => [k.toString('latin1'), v.toString('latin1')])));
    for (let i = 0; i < 50; i++) expect(pairs.get(seededBytes(i + 1, 1 + (i % 12)).toString('latin1'))).toBe(`bin:${i}`);
  });

  it('wrapping ranges are honoured', () => {
    const store = fillStore(5000);
    const ranges: HashRange[] = [{ start: 0xf0000000, end: 0x10000000 }, { start: 0x70000000, end: 0x80000000 }];
    const { pairs } = collect(drain(new RangeDumps(store), 'w', 300, ranges));
    expect(pairs).toEqual(expectedIn(store, ranges));
    expect(pairs.size).toBeGreaterThan(0);
  });

  it('keys deleted mid-dump are not returned; the rest still come exactly once', () => {
    const store = fillStore(20_000);
    const ranges = ring.rangesOf('10.0.0.1:7000');
    const expected = expectedIn(store, ranges);
    const deleted = new Set<string>();
    const seen = new Set<string>();
    let round = 0;
    const batches = drain(new RangeDumps(store), 'del', 700, ranges, (batch) => {
      // Like the proxy: delete what was just moved, and some keys the dump has not reached yet.
      for (const k of batch.keys) {
        seen.add(k);
        expect(store.delete(b(k))).toBe(true);
      }
      let i = 0;
      for (const k of expected.keys()) {
        if (seen.has(k) || deleted.has(k)) continue;
        if (i++ % 5 === round % 5) {
          expect(store.delete(b(k))).toBe(true);
          deleted.add(k);
        }
      }
      round++;
    });
    const { keys, pairs } = collect(batches);
    expect(deleted.size).toBeGreaterThan(100);
    expect(keys.length).toBe(new Set(keys).size);
    for (const k of keys) if (deleted.has(k)) throw new Error(`deleted key ${JSON.stringify(k)} was returned`);
    const survivors = new Map([...expected].filter(([k]) => !deleted.has(k)));
    expect(pairs).toEqual(survivors);
  });

  it('tokens continue independently; unknown and ended tokens give undefined', () => {
    const store = fillStore(4000);
    const dumps = new RangeDumps(store);
    const a = ring.rangesOf('10.0.0.1:7000');
    const bRanges = ring.rangesOf('10.0.0.1:7002');
    const fromA: Batch[] = [];
    const fromB: Batch[] = [];
    let batchA = copy(dumps.next('A', 100, a))!;
    let batchB = copy(dumps.next('B', 100, bRanges))!;
    expect(dumps.active).toBe(2);
    fromA.push(batchA);
    fromB.push(batchB);
    while (!batchA.done || !batchB.done) {
      if (!batchA.done) fromA.push((batchA = copy(dumps.next('A', 100, undefined))!));
      if (!batchB.done) fromB.push((batchB = copy(dumps.next('B', 100, []))!)); // no ranges: continue
    }
    expect(collect(fromA).pairs).toEqual(expectedIn(store, a));
    expect(collect(fromB).pairs).toEqual(expectedIn(store, bRanges));

    expect(dumps.next('never-started', 10, undefined)).toBeUndefined();
    dumps.next('C', 1, a);
    dumps.end('C');
    expect(dumps.next('C', 10, undefined)).toBeUndefined();
    dumps.next('D', 1, a);
    dumps.clear();
    expect(dumps.active).toBe(0);
    expect(dumps.next('D', 10, undefined)).toBeUndefined();
  });

  it('a batch also stops at a byte budget, so big values never make a giant reply', () => {
    const store = new ShardedStore(4);
    const big = (i: number): Buffer => Buffer.alloc(300_000 + i, i % 251);
    for (let i = 0; i < 60; i++) store.set(b(`big:${i}`), big(i));
    store.set(b('huge'), Buffer.alloc(2_000_000, 7)); // bigger than the budget on its own
    const dumps = new RangeDumps(store);
    const whole = [{ start: 0, end: 0 }];
    const budget = 1_000_000;
    const batches: Batch[] = [];
    let batch = copy(dumps.next('bytes', 1000, whole, Date.now(), budget))!;
    for (batches.push(batch); !batch.done; batches.push(batch)) batch = copy(dumps.next('bytes', 1000, undefined, Date.now(), budget))!;
    for (const x of batches) {
      const bytes = x.keys.reduce((n, k, i) => n + k.length + x.values[i]!.length, 0);
      const last = x.keys.length === 0 ? 0 : x.keys[x.keys.length - 1]!.length + x.values[x.values.length - 1]!.length;
      // Under the budget before its last entry: at most one entry overshoots it.
      expect(bytes - last, `batch of ${x.keys.length} keys, ${bytes} bytes`).toBeLessThan(budget);
    }
    expect(batches.filter((x) => x.keys.length > 0).length).toBeGreaterThan(15);
    const { pairs } = collect(batches);
    expect(pairs.size).toBe(61);
    expect(pairs.get('huge')!.length).toBe(2_000_000);
    expect(pairs.get('big:7')).toBe(big(7).toString('latin1'));
  });

  it('new ranges under an existing token restart the dump', () => {
    const store = fillStore(2000);
    const dumps = new RangeDumps(store);
    const ranges = ring.rangesOf('10.0.0.1:7001');
    dumps.next('T', 50, ranges);
    dumps.next('T', 50, undefined);
    const restarted = drain(dumps, 'T', 100_000, ranges);
    expect(collect(restarted).pairs).toEqual(expectedIn(store, ranges));
  });

  it('an idle dump expires after five minutes', () => {
    const store = fillStore(1000);
    const dumps = new RangeDumps(store);
    const t0 = 1_000_000;
    dumps.next('idle', 1, [{ start: 0, end: 0 }], t0);
    expect(dumps.next('idle', 1, undefined, t0 + 5 * 60_000)).toBeDefined();
    expect(dumps.next('idle', 1, undefined, t0 + 10 * 60_000 + 1)).toBeUndefined();
  });

  it('one call scans a bounded number of keys, so a sparse range needs several calls', () => {
    // The budget per call is 100,000 entries examined.
    const budget = 100_000;
    const store = fillStore(250_000, 16);
    const dumps = new RangeDumps(store);
    const narrow: HashRange[] = [{ start: 0, end: 1000 }];
    const first = copy(dumps.next('sparse', 1_000_000, narrow))!;
    expect(first.done).toBe(false);
    expect(first.scanned).toBeLessThanOrEqual(budget);
    const batches = [first];
    while (!batches[batches.length - 1]!.done) {
      const next = copy(dumps.next('sparse', 1_000_000, undefined));
      if (next === undefined) throw new Error('token lost before the dump finished');
      expect(next.scanned).toBeLessThanOrEqual(budget);
      batches.push(next);
    }
    expect(batches.length).toBeGreaterThanOrEqual(3);
    expect(batches[batches.length - 1]!.done).toBe(true);
    expect(batches.reduce((n, x) => n + x.scanned, 0)).toBe(store.size);
    const expected = new Map([...store.entries()].filter(([k]) => hashBytes(k) > 0 && hashBytes(k) <= 1000).map(([k, v]) => [k.toString('latin1'), v.toString('latin1')]));
    expect(collect(batches).pairs).toEqual(expected);
  });

  it('dead entries (overwritten or deleted keys) are skipped and do not count as scanned', () => {
    const store = fillStore(5000, 4);
    for (let i = 0; i < 5000; i += 2) store.set(b(`key:${i}`), b(`new:${i}`));
    for (let i = 1; i < 5000; i += 4) store.delete(b(`key:${i}`));
    store.tombstone(b('key:3'));
    store.tombstone(b('never-set'));
    const batches = drain(new RangeDumps(store), 'dead', 333, [{ start: 7, end: 7 }]);
    const { keys, pairs } = collect(batches);
    expect(keys.length).toBe(new Set(keys).size);
    expect(pairs).toEqual(expectedIn(store, [{ start: 7, end: 7 }]));
    expect(pairs.get('key:0')).toBe('new:0');
    expect(pairs.has('key:1')).toBe(false);
    expect(pairs.has('key:3')).toBe(false);
    expect(pairs.has('never-set')).toBe(false);
    expect(batches.reduce((n, x) => n + x.scanned, 0)).toBe(store.size);
  });

  it('a dump across arena compaction returns every untouched key in the ranges, with its value', () => {
    // Big overwrites of one key between the first batches, settled, make its shard's arena
    // compact mid-dump (one shard here, so the dump is inside it); the walk then restarts the
    // shard, so a key may come twice but none is missed.
    const store = fillStore(20_000, 1);
    const ranges = ring.rangesOf('10.0.0.1:7002');
    const expected = expectedIn(store, ranges);
    const big = Buffer.alloc(300 * 1024, 0x61);
    let epoch = 0;
    let round = 0;
    const generations = new Set<number>([store.newCursor().generation]);
    const batches = drain(new RangeDumps(store), 'compact', 400, ranges, () => {
      if (round++ >= 3) return;
      for (let i = 0; i < 8; i++) store.set(b('churn'), big, ++epoch);
      store.settle(epoch);
      generations.add(store.newCursor().generation);
    });
    // The shard's generation moved: its arena was compacted during the dump.
    expect(generations.size).toBeGreaterThan(1);
    const { pairs } = collect(batches);
    for (const [k, v] of expected) expect(pairs.get(k), k).toBe(v);
    for (const k of pairs.keys()) expect(k === 'churn' || expected.has(k), k).toBe(true);
  });
});
