// Giving memory back after a bulk load: ShardedStore.growth, trimShard, and MemoryTrim's timing
// (trim once the store stopped growing and the server is quiet, then a full GC, then another once
// V8's allocation-throughput window has passed).
import vm from 'node:vm';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ShardedStore } from '../../src/server/store.js';
import { MemoryTrim, v8GarbageCollector, type GarbageCollector } from '../../src/server/memory-trim.js';

const HEADER = 12;
const value = Buffer.alloc(100, 0x61);

/** Write keys until every arena has grown and growth left at least a quarter of them unused. */
function loadWithSpare(store: ShardedStore): { keys: number; used: number } {
  const initial = store.arenaBytes;
  let keys = 0;
  let used = 0;
  for (;;) {
    const key = Buffer.from(`key:${keys++}`);
    store.set(key, value);
    used += HEADER + key.length + value.length;
    if (store.arenaBytes >= initial * 32 && store.arenaBytes - used >= store.arenaBytes / 4) return { keys, used };
  }
}

describe('ShardedStore growth and trimShard', () => {
  it('growth moves when an arena or an index grows, and not on writes that fit', () => {
    const store = new ShardedStore(1);
    const start = store.growth;
    store.set(Buffer.from('a'), value);
    expect(store.growth).toBe(start);
    loadWithSpare(store);
    const grown = store.growth;
    expect(grown).toBeGreaterThan(start);
    store.set(Buffer.from('a'), value); // an overwrite that fits in the spare room
    expect(store.growth).toBe(grown);
    store.trim();
    expect(store.growth).toBe(grown); // shrinking is not growth
  });

  it('trimShard gives back one shard’s spare room down to an eighth of headroom, and keeps the data', () => {
    const store = new ShardedStore(1);
    const { keys, used } = loadWithSpare(store);
    expect(store.arenaBytes).toBeGreaterThan(used * 1.25);
    store.trimShard(0);
    expect(store.arenaBytes).toBe(used + Math.max(64 * 1024, Math.ceil(used / 8)));
    expect(store.size).toBe(keys);
    expect(store.get(Buffer.from('key:0'))).toEqual(value);
    expect(store.get(Buffer.from(`key:${keys - 1}`))).toEqual(value);
    // A second trim has nothing worth a copy to give back.
    const trimmed = store.arenaBytes;
    store.trimShard(0);
    expect(store.arenaBytes).toBe(trimmed);
  });

  it('a trimmed shard takes a few more writes without growing again (no trim/regrow churn under light traffic)', () => {
    const store = new ShardedStore(1);
    const { keys, used } = loadWithSpare(store);
    store.trimShard(0);
    const growth = store.growth;
    // 5% more data: within the headroom.
    for (let i = 0; i < Math.ceil(keys * 0.05); i++) store.set(Buffer.from(`more:${i}`), value);
    expect(store.growth, `after ${used} bytes, trimmed, then 5% more`).toBe(growth);
  });
});

describe('MemoryTrim', () => {
  const CHECK_MS = 1000;
  let commands = 0;
  let collected = 0;
  const collect: GarbageCollector = () => {
    collected++;
  };
  const trims: MemoryTrim[] = [];
  /** Advance the clock, then run the chain of setImmediates (one per shard) a timer may have begun. */
  const wait = (ms: number): void => {
    vi.advanceTimersByTime(ms);
    for (let turn = 0; turn < 8; turn++) vi.advanceTimersByTime(1);
  };
  const start = (store: ShardedStore): MemoryTrim => {
    const trim = new MemoryTrim(store, () => commands, collect, CHECK_MS);
    trims.push(trim);
    return trim;
  };

  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'setTimeout', 'clearTimeout', 'setImmediate', 'clearImmediate'] });
    commands = 0;
    collected = 0;
  });
  afterEach(() => {
    for (const t of trims.splice(0)) t.stop();
    vi.useRealTimers();
  });

  it('trims every shard and collects twice once a load has settled and the server is quiet', () => {
    const store = new ShardedStore(4);
    start(store);
    const { used } = loadWithSpare(store);
    commands += 5000;
    const loaded = store.arenaBytes;
    expect(loaded).toBeGreaterThan(used * 1.1);

    wait(CHECK_MS); // sees the growth: the load may still be going on
    expect(store.arenaBytes).toBe(loaded);
    wait(CHECK_MS); // a quiet check without growth: trim, one shard per turn
    // Each shard is now exact, or was left alone with less than 1/8 of its arena spare.
    expect(store.arenaBytes).toBeLessThan(loaded);
    expect(store.arenaBytes).toBeLessThanOrEqual((used * 8) / 7);
    expect(collected).toBe(1);
    wait(6000);
    expect(collected).toBe(2);

    // Nothing more to do until the store grows again.
    wait(10 * CHECK_MS);
    expect(collected).toBe(2);
  });

  it('waits while commands keep coming, and skips the second GC if traffic resumed', () => {
    const store = new ShardedStore(1);
    start(store);
    loadWithSpare(store);
    const loaded = store.arenaBytes;
    for (let i = 0; i < 5; i++) {
      commands += 1000; // reads: no growth, but not quiet
      wait(CHECK_MS);
    }
    expect(store.arenaBytes).toBe(loaded);
    expect(collected).toBe(0);
    wait(CHECK_MS);
    expect(store.arenaBytes).toBeLessThan(loaded);
    expect(collected).toBe(1);
    commands += 10_000;
    wait(6000);
    expect(collected).toBe(1);
  });

  it('expectSettling starts a trim without growth (after a replay)', () => {
    const store = new ShardedStore(1);
    start(store).expectSettling();
    wait(CHECK_MS);
    expect(collected).toBe(1);
  });
});

describe('v8GarbageCollector', () => {
  it('reaches V8’s gc() without --expose-gc and leaves the flag off', () => {
    const gc = v8GarbageCollector();
    expect(gc).toBeTypeOf('function');
    gc!();
    expect(vm.runInNewContext('typeof gc')).toBe('undefined');
  });
});
