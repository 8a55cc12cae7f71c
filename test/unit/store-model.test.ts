// The byte-oriented ShardedStore against a plain Map model.
//
// Writes carry the epoch of their WAL group. settle(e) makes every group up to e durable;
// rollBack(e) undoes every write of a group up to e that is not durable yet, newest first
// (the WAL only ever fails every pending group at once, so rollBack always covers them all).
// The model keeps what the store must hold now, the state at the last settled point
// (a snapshot), and the pending writes, each with the entry it replaced.
//
// clearTombstones is not undoable by design: in the model it removes tombstones at once, and a
// rollBack puts back, write by write, what each pending write replaced. When no clearTombstones
// ran while writes were pending, that is exactly the snapshot, which the model checks too.
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { hashBytes } from '../../src/common/hash.js';
import { KeyState, ShardedStore, type StoreCursor } from '../../src/server/store.js';
import { HashIntervals } from '../../src/server/hash-intervals.js';
import { seededBytes } from './chunking.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const show = (key: string): string => JSON.stringify(key);

/** What a key holds in the model: a value, or a tombstone (null); `epoch` wrote it (0: replayed). */
interface Entry {
  value: Buffer | null;
  epoch: number;
}

interface Pending {
  epoch: number;
  key: string;
  prev: Entry | undefined;
  next: Entry | undefined;
  /** Deleted by a dropHashes call (which the store undoes as one entry per shard). */
  dropped?: boolean;
}

type Op =
  | { t: 'set'; key: Uint8Array; size: number; seed: number }
  /** insertIfAbsent: what IMPORT does. */
  | { t: 'insert'; key: Uint8Array; size: number; seed: number }
  | { t: 'delete'; key: Uint8Array }
  | { t: 'tombstone'; key: Uint8Array }
  | { t: 'clearTombstones' }
  /** dropHashes (DROPRANGE): delete the live values whose hash is in start..end (wrapping). */
  | { t: 'drop'; start: number; end: number }
  | { t: 'group' }
  | { t: 'settle'; part: number }
  | { t: 'rollBack'; beyond: number }
  /** Overwrite a key kept out of the checks with a big value and settle: makes its arena compact. */
  | { t: 'churn'; seed: number }
  /** Pre-size the indexes for n more keys, as before a replay (may guess far too many). */
  | { t: 'expect'; n: number }
  /** Give back spare arena and index room, as after a replay. */
  | { t: 'trim' };

interface HarnessOptions {
  /** Run clearTombstones while writes are pending (otherwise settle everything first). */
  clearWhilePending: boolean;
  /** Entries per scan() call when the checks walk the store. */
  budget: number;
}

function fail(message: string): never {
  throw new Error(message);
}

/** A value of `size` bytes that differs by seed (cheap for big sizes). */
function makeValue(size: number, seed: number): Buffer {
  if (size <= 4096) return seededBytes(seed, size);
  const v = Buffer.alloc(size, seed & 0xff);
  v.writeUInt32LE(seed >>> 0, 0);
  v.writeUInt32LE(size, size - 4);
  return v;
}

const CHURN_KEY = b('\u00ffchurn\u00ff');

class Harness {
  readonly store: ShardedStore;
  readonly model = new Map<string, Entry>();
  snapshot = new Map<string, Entry>();
  pending: Pending[] = [];
  clearedWhilePending = false;
  /** Epoch of the write that made a key absent (a delete, or the tombstone a clear removed). */
  readonly absentEpoch = new Map<string, number>();
  /** Epochs of every delete and tombstone so far (what an absent key may depend on). */
  readonly deleting = new Set<number>();
  /** Tombstones removed by clearTombstones since the last rollBack. */
  readonly clearedEntries = new Set<Entry>();
  epoch = 1;
  settled = 0;
  /** Every key used, probed after each step. */
  readonly keys = new Map<string, Buffer>([['never used', b('never used')]]);
  readonly maxGeneration: number[];
  compactions = 0;
  compactionsWithPending = 0;
  /** dropHashes calls that dropped something, and rollBacks that had to put such a drop back. */
  drops = 0;
  rollBacksOfDrops = 0;
  rollBacksOfDropsAfterCompaction = 0;
  rollBacksAfterCompaction = 0;
  /** RollBacks of pending tombstones that a clearTombstones had removed meanwhile. */
  rollBacksOfClearedTombstones = 0;
  private compactedSinceRollBack = false;

  constructor(
    shards: number,
    readonly options: HarnessOptions,
  ) {
    this.store = new ShardedStore(shards);
    this.maxGeneration = new Array<number>(shards).fill(0);
  }

  private use(key: Uint8Array): [string, Buffer] {
    const buf = Buffer.from(key);
    const k = buf.toString('latin1');
    if (!this.keys.has(k)) this.keys.set(k, buf);
    return [k, buf];
  }

  private record(key: string, prev: Entry | undefined, next: Entry | undefined, dropped = false): void {
    this.pending.push({ epoch: this.epoch, key, prev, next, dropped });
  }

  apply(op: Op): void {
    const store = this.store;
    switch (op.t) {
      case 'set': {
        const [k, key] = this.use(op.key);
        const value = makeValue(op.size, op.seed);
        const prev = this.model.get(k);
        store.set(key, value, this.epoch);
        const next: Entry = { value, epoch: this.epoch };
        this.model.set(k, next);
        this.record(k, prev, next);
        break;
      }
      case 'insert': {
        const [k, key] = this.use(op.key);
        const value = makeValue(op.size, op.seed);
        const prev = this.model.get(k);
        const got = store.insertIfAbsent(key, value, this.epoch);
        if (got !== (prev === undefined)) fail(`insertIfAbsent(${show(k)}) returned ${got} over ${prev === undefined ? 'nothing' : prev.value === null ? 'a tombstone' : 'a value'}`);
        // A refusal rests on what refused it, exactly like a read of the key.
        if (!got) this.checkDependency(k, prev, store.readDependency, 'insertIfAbsent');
        else {
          const next: Entry = { value, epoch: this.epoch };
          this.model.set(k, next);
          this.record(k, prev, next);
        }
        break;
      }
      case 'delete': {
        const [k, key] = this.use(op.key);
        const prev = this.model.get(k);
        const live = prev !== undefined && prev.value !== null;
        const got = store.delete(key, this.epoch);
        if (got !== live) fail(`delete(${show(k)}) returned ${got}, expected ${live}`);
        if (live) {
          this.model.delete(k);
          this.record(k, prev, undefined);
          this.absentEpoch.set(k, this.epoch);
          this.deleting.add(this.epoch);
        }
        break;
      }
      case 'tombstone': {
        const [k, key] = this.use(op.key);
        const prev = this.model.get(k);
        const live = prev !== undefined && prev.value !== null;
        const got = store.tombstone(key, this.epoch);
        if (got !== live) fail(`tombstone(${show(k)}) returned ${got}, expected ${live}`);
        const next: Entry = { value: null, epoch: this.epoch };
        this.model.set(k, next);
        this.record(k, prev, next);
        this.deleting.add(this.epoch);
        break;
      }
      case 'clearTombstones': {
        if (this.pending.length > 0 && !this.options.clearWhilePending) this.settleTo(this.epoch);
        if (this.pending.length > 0) this.clearedWhilePending = true;
        store.clearTombstones();
        for (const [k, e] of [...this.model]) {
          if (e.value !== null) continue;
          this.clearedEntries.add(e);
          this.model.delete(k);
          this.absentEpoch.set(k, e.epoch);
        }
        if (this.pending.length === 0) this.snapshot = new Map(this.model);
        break;
      }
      case 'drop': {
        const ranges = new HashIntervals([{ start: op.start, end: op.end }]);
        let expected = 0;
        for (const [k, e] of [...this.model]) {
          if (e.value === null || !ranges.has(hashOf(k))) continue;
          this.model.delete(k);
          this.record(k, e, undefined, true);
          this.absentEpoch.set(k, this.epoch);
          expected++;
        }
        const got = store.dropHashes(ranges, this.epoch);
        if (got !== expected) fail(`dropHashes(${op.start}..${op.end}) dropped ${got}, expected ${expected}`);
        if (got > 0) {
          this.deleting.add(this.epoch);
          this.drops++;
        }
        break;
      }
      case 'group':
        this.epoch++;
        break;
      case 'settle':
        this.settleTo(this.settled + Math.round(op.part * (this.epoch - this.settled)));
        break;
      case 'rollBack':
        this.rollBackTo(this.epoch + op.beyond);
        break;
      case 'expect':
        store.expectEntries(op.n);
        break;
      case 'trim':
        store.trim();
        break;
      case 'churn': {
        const value = makeValue(300 * 1024, op.seed);
        const k = CHURN_KEY.toString('latin1');
        const prev = this.model.get(k);
        store.set(CHURN_KEY, value, this.epoch);
        const next: Entry = { value, epoch: this.epoch };
        this.model.set(k, next);
        this.record(k, prev, next);
        this.settleTo(this.epoch);
        break;
      }
    }
  }

  settleTo(target: number): void {
    const before = this.observeGenerations();
    this.store.settle(target);
    this.settled = target;
    let n = 0;
    while (n < this.pending.length && this.pending[n]!.epoch <= target) {
      const p = this.pending[n++]!;
      if (p.next === undefined) this.snapshot.delete(p.key);
      else this.snapshot.set(p.key, p.next);
    }
    this.pending = this.pending.slice(n);
    if (this.pending.length === 0) {
      this.snapshot = new Map(this.model);
      this.clearedWhilePending = false;
    }
    // The group at `target` is closed: later writes belong to a later one.
    if (this.epoch <= target) this.epoch = target + 1;
    if (this.observeGenerations() > before) {
      this.compactions++;
      this.compactedSinceRollBack = true;
      if (this.pending.length > 0) this.compactionsWithPending++;
    }
  }

  rollBackTo(target: number): void {
    const undone = this.store.rollBack(target);
    if (undone !== this.pending.length) fail(`rollBack(${target}) undid ${undone} writes, expected ${this.pending.length}`);
    if (this.pending.some((p) => p.dropped === true)) {
      this.rollBacksOfDrops++;
      if (this.compactedSinceRollBack) this.rollBacksOfDropsAfterCompaction++;
    }
    for (let i = this.pending.length - 1; i >= 0; i--) {
      const p = this.pending[i]!;
      if (p.prev === undefined) this.model.delete(p.key);
      else this.model.set(p.key, p.prev);
    }
    if (!this.clearedWhilePending) {
      // The model checks itself: undoing every pending write gives the settled snapshot.
      expect(describeMap(this.model)).toEqual(describeMap(this.snapshot));
    }
    if (this.pending.length > 0 && this.compactedSinceRollBack) this.rollBacksAfterCompaction++;
    if (this.clearedWhilePending && this.pending.some((p) => p.next !== undefined && p.next.value === null && this.clearedEntries.has(p.next))) {
      this.rollBacksOfClearedTombstones++;
    }
    this.clearedEntries.clear();
    this.compactedSinceRollBack = false;
    this.pending = [];
    this.clearedWhilePending = false;
    this.snapshot = new Map(this.model);
    this.absentEpoch.clear();
    this.epoch = target + 1;
  }

  /** Sum over shards of the highest arena generation seen (compactions so far, as far as seen). */
  observeGenerations(): number {
    const cursor: StoreCursor = this.store.newCursor();
    this.maxGeneration[0] = Math.max(this.maxGeneration[0]!, cursor.generation);
    const max = this.maxGeneration;
    while (!this.store.scan(cursor, 1 << 20, () => (max[cursor.shard] = Math.max(max[cursor.shard]!, cursor.generation)), true));
    return max.reduce((a, g) => a + g, 0);
  }

  /** Compare everything observable with the model. */
  check(): void {
    const store = this.store;
    let live = 0;
    let tombs = 0;
    let bytes = 0;
    for (const [k, e] of this.model) {
      if (e.value === null) {
        tombs++;
        bytes += k.length;
      } else {
        live++;
        bytes += k.length + e.value.length;
      }
    }
    if (store.size !== live) fail(`size ${store.size}, expected ${live}`);
    if (store.tombstoneCount !== tombs) fail(`tombstoneCount ${store.tombstoneCount}, expected ${tombs}`);
    if (store.bytes !== bytes) fail(`bytes ${store.bytes}, expected ${bytes}`);

    for (const [k, key] of this.keys) {
      const e = this.model.get(k);
      const want = e === undefined ? KeyState.Absent : e.value === null ? KeyState.Tombstoned : KeyState.Live;
      const state = store.state(key);
      if (state !== want) fail(`state(${show(k)}) = ${state}, expected ${want}`);
      this.checkDependency(k, e, store.readDependency, 'state');
      const got = store.get(key);
      this.checkDependency(k, e, store.readDependency, 'get');
      if (want === KeyState.Live) {
        if (got === undefined || !got.equals(e!.value!)) fail(`get(${show(k)}) = ${got === undefined ? 'undefined' : `${got.length} bytes`}, expected ${e!.value!.length} other bytes`);
      } else if (got !== undefined) {
        fail(`get(${show(k)}) = ${got.length} bytes, expected undefined`);
      }
      if (store.has(key) !== (want === KeyState.Live)) fail(`has(${show(k)}) wrong`);
      if (store.isTombstoned(key) !== (want === KeyState.Tombstoned)) fail(`isTombstoned(${show(k)}) wrong`);
    }

    // entries(): the live entries, each once.
    const listed = new Map<string, Buffer>();
    for (const [k, v] of store.entries()) {
      const key = k.toString('latin1');
      if (listed.has(key)) fail(`entries() lists ${show(key)} twice`);
      listed.set(key, Buffer.from(v));
    }
    this.compareListing(listed, false, 'entries()');

    // scan() in small steps, with tombstones, then without.
    for (const withTombs of [true, false]) {
      const seen = new Map<string, Buffer | null>();
      const cursor = store.newCursor();
      for (let guard = 0; ; guard++) {
        if (guard > 1_000_000) fail('scan does not finish');
        let visits = 0;
        const done = store.scan(
          cursor,
          this.options.budget,
          (hash, k, v) => {
            visits++;
            const key = k.toString('latin1');
            if (seen.has(key)) fail(`scan visits ${show(key)} twice`);
            if (v === null && !withTombs) fail(`scan without tombstones visits the tombstone ${show(key)}`);
            if (hash !== hashOf(key)) fail(`scan gives ${show(key)} the hash ${hash}`);
            seen.set(key, v === null ? null : Buffer.from(v));
          },
          withTombs,
        );
        if (visits > this.options.budget) fail(`scan visited ${visits} entries with a budget of ${this.options.budget}`);
        if (done) break;
      }
      this.compareListing(seen, withTombs, `scan(tombstones: ${withTombs})`);
    }
  }

  private checkDependency(k: string, e: Entry | undefined, dep: number, how: string): void {
    if (e !== undefined) {
      const want = e.epoch > this.settled ? e.epoch : 0;
      if (dep !== want) fail(`${how}(${show(k)}): readDependency ${dep}, expected ${want} (written at ${e.epoch}, settled ${this.settled})`);
      return;
    }
    // An absent key rests on the write that made it absent while that is pending; the store may
    // answer with a later pending delete (conservative), but only ever with a delete's epoch.
    const made = this.absentEpoch.get(k) ?? 0;
    const need = made > this.settled ? made : 0;
    if (dep < need) fail(`${how}(${show(k)}): readDependency ${dep}, but its delete at ${need} is pending`);
    if (dep !== 0 && (!this.deleting.has(dep) || dep <= this.settled)) fail(`${how}(${show(k)}): readDependency ${dep} is no pending delete (settled ${this.settled})`);
  }

  private compareListing(got: Map<string, Buffer | null>, withTombs: boolean, what: string): void {
    let expected = 0;
    for (const [k, e] of this.model) {
      if (e.value === null && !withTombs) continue;
      expected++;
      if (!got.has(k)) fail(`${what} misses ${show(k)}`);
      const v = got.get(k)!;
      if (e.value === null ? v !== null : v === null || !v.equals(e.value)) fail(`${what} gives ${show(k)} the wrong value`);
    }
    if (got.size !== expected) fail(`${what} lists ${got.size} entries, expected ${expected}: extra ${[...got.keys()].filter((k) => !this.model.has(k)).map(show).join(', ')}`);
  }
}

function hashOf(key: string): number {
  return hashBytes(b(key));
}

function describeMap(m: Map<string, Entry>): string[] {
  return [...m].map(([k, e]) => `${show(k)}=${e.value === null ? 'tombstone' : e.value.toString('hex')}`).sort();
}

// --- arbitraries ---------------------------------------------------------------------------

const LONG_KEYS = [0, 1, 2].map((i) => new Uint8Array([...Buffer.from('L'.repeat(40)), i]));
/** Few distinct keys, so overwrites and collisions are the rule; some longer than 32 bytes. */
const arbKey = fc.oneof(
  { weight: 6, arbitrary: fc.uint8Array({ maxLength: 2, min: 0, max: 2 }) },
  { weight: 1, arbitrary: fc.constantFrom(...LONG_KEYS) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 5 }) },
);
const arbSmallSize = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 16 }), fc.integer({ min: 17, max: 3000 }));

type Weights = Record<Op['t'], number>;
const MIXED: Weights = { set: 30, insert: 8, delete: 12, tombstone: 8, clearTombstones: 2, drop: 2, group: 10, settle: 8, rollBack: 3, churn: 0, expect: 1, trim: 1 };

function arbOp(key: fc.Arbitrary<Uint8Array>, size: fc.Arbitrary<number>, weights: Weights = MIXED): fc.Arbitrary<Op> {
  const arbs: { weight: number; arbitrary: fc.Arbitrary<Op> }[] = [
    { weight: weights.set, arbitrary: fc.record({ t: fc.constant('set' as const), key, size, seed: fc.nat() }) },
    { weight: weights.insert, arbitrary: fc.record({ t: fc.constant('insert' as const), key, size, seed: fc.nat() }) },
    { weight: weights.delete, arbitrary: fc.record({ t: fc.constant('delete' as const), key }) },
    { weight: weights.tombstone, arbitrary: fc.record({ t: fc.constant('tombstone' as const), key }) },
    { weight: weights.clearTombstones, arbitrary: fc.constant<Op>({ t: 'clearTombstones' }) },
    { weight: weights.drop, arbitrary: fc.record({ t: fc.constant('drop' as const), start: fc.integer({ min: 0, max: 0xffffffff }), end: fc.integer({ min: 0, max: 0xffffffff }) }) },
    { weight: weights.group, arbitrary: fc.constant<Op>({ t: 'group' }) },
    { weight: weights.settle, arbitrary: fc.record({ t: fc.constant('settle' as const), part: fc.double({ min: 0, max: 1, noNaN: true }) }) },
    { weight: weights.rollBack, arbitrary: fc.record({ t: fc.constant('rollBack' as const), beyond: fc.integer({ min: 0, max: 2 }) }) },
    { weight: weights.churn, arbitrary: fc.record({ t: fc.constant('churn' as const), seed: fc.nat() }) },
    { weight: weights.expect, arbitrary: fc.record({ t: fc.constant('expect' as const), n: fc.integer({ min: 0, max: 100_000 }) }) },
    { weight: weights.trim, arbitrary: fc.constant<Op>({ t: 'trim' }) },
  ];
  return fc.oneof(...arbs.filter((a) => a.weight > 0));
}

const arbShards = fc.constantFrom(1, 2, 16);

function runModel(shards: number, ops: readonly Op[], options: HarnessOptions): Harness {
  const h = new Harness(shards, options);
  h.check();
  for (const op of ops) {
    h.apply(op);
    h.check();
  }
  return h;
}

// --- the model tests -------------------------------------------------------------------------

describe('ShardedStore against a Map model', () => {
  it('random writes, drops, settles and rollBacks (1, 2 and 16 shards)', () => {
    let dropsRolledBack = 0;
    fc.assert(
      fc.property(arbShards, fc.integer({ min: 1, max: 7 }), fc.array(arbOp(arbKey, arbSmallSize), { minLength: 1, maxLength: 120, size: 'max' }), (shards, budget, ops) => {
        dropsRolledBack += runModel(shards, ops, { clearWhilePending: false, budget }).rollBacksOfDrops;
      }),
      { numRuns: 1000 },
    );
    expect(dropsRolledBack, 'rollBacks that put a pending drop back').toBeGreaterThan(50);
  });

  it('clearTombstones while writes are pending, then a rollBack: counts and contents stay right', () => {
    let runs = 0;
    let rollBacksOfCleared = 0;
    fc.assert(
      fc.property(arbShards, fc.array(arbOp(arbKey, arbSmallSize), { minLength: 1, maxLength: 120, size: 'max' }), (shards, ops) => {
        const h = runModel(shards, ops, { clearWhilePending: true, budget: 3 });
        runs++;
        rollBacksOfCleared += h.rollBacksOfClearedTombstones;
      }),
      { numRuns: 300 },
    );
    // The case that matters happened often: a pending tombstone, cleared, then rolled back.
    expect(rollBacksOfCleared, `${rollBacksOfCleared} in ${runs} runs`).toBeGreaterThan(runs / 10);
  });

  it('arena compaction with pending writes keeps what rollBack needs (values of 10-60 KiB, few keys)', () => {
    const totals = { runs: 0, compactions: 0, withPending: 0, rollBacksAfter: 0, dropsRolledBackAfter: 0 };
    const arbBigKey = fc.oneof({ weight: 8, arbitrary: fc.constantFrom(...['a', 'b', 'c', 'd'].map((k) => new Uint8Array(b(k)))) }, { weight: 1, arbitrary: arbKey });
    const arbBigSize = fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 10 * 1024, max: 60 * 1024 }) }, { weight: 1, arbitrary: arbSmallSize });
    fc.assert(
      fc.property(fc.constantFrom(1, 2), fc.array(arbOp(arbBigKey, arbBigSize, { ...MIXED, set: 40, delete: 4, tombstone: 4, clearTombstones: 1, drop: 3 }), { minLength: 150, maxLength: 300, size: 'max' }), (shards, ops) => {
        const h = runModel(shards, ops, { clearWhilePending: false, budget: 2 });
        // Settle what is left and check again: the last compaction must not lose anything either.
        h.settleTo(h.epoch);
        h.check();
        totals.runs++;
        totals.compactions += h.compactions;
        totals.withPending += h.compactionsWithPending;
        totals.rollBacksAfter += h.rollBacksAfterCompaction;
        totals.dropsRolledBackAfter += h.rollBacksOfDropsAfterCompaction;
      }),
      { numRuns: 40 },
    );
    // The runs really compacted arenas, with writes pending at the time, and rolled back after.
    const seen = JSON.stringify(totals);
    expect(totals.compactions, seen).toBeGreaterThan(totals.runs);
    expect(totals.withPending, seen).toBeGreaterThan(totals.runs / 2);
    expect(totals.rollBacksAfter, seen).toBeGreaterThan(totals.runs / 4);
    // Among them, drops (one undo entry per shard) kept across a compaction and put back.
    expect(totals.dropsRolledBackAfter, seen).toBeGreaterThan(0);
  });
});

// --- focused cases -----------------------------------------------------------------------------

/** Arena generation of every shard that holds an entry (compactions so far). */
function generations(store: ShardedStore): number[] {
  const out = new Array<number>(store.shardCount).fill(0);
  const cursor = store.newCursor();
  out[0] = cursor.generation;
  while (!store.scan(cursor, 1 << 20, () => (out[cursor.shard] = cursor.generation), true));
  return out;
}

describe('ShardedStore arena compaction', () => {
  it('compacts once dead bytes pass 1 MiB and the live bytes, and rollBack still restores every pending write', () => {
    const store = new ShardedStore(1);
    // 400 live keys of 1 KiB (400 KiB live), replayed.
    for (let i = 0; i < 400; i++) store.set(b(`k${i}`), makeValue(1024, i));
    store.tombstone(b('tomb'));
    // A hot key overwritten with 40 KiB values, settled: 1.6 MiB of dead entries.
    let epoch = 0;
    for (let i = 0; i < 40; i++) store.set(b('hot'), makeValue(40 * 1024, 1000 + i), ++epoch);
    const settledHot = makeValue(40 * 1024, 1000 + 39);
    // Still pending at the compaction: an overwrite of the hot key, a delete, a tombstone, a new key.
    const pendingFrom = ++epoch;
    store.set(b('hot'), makeValue(40 * 1024, 5000), pendingFrom);
    expect(store.delete(b('k7'), pendingFrom)).toBe(true);
    expect(store.tombstone(b('k8'), pendingFrom)).toBe(true);
    store.set(b('new'), b('n'), pendingFrom);
    store.set(b('tomb'), b('revived'), pendingFrom);
    const arenaBefore = store.arenaBytes;
    expect(generations(store)).toEqual([0]);

    store.settle(pendingFrom - 1);
    expect(generations(store)).toEqual([1]);
    expect(store.arenaBytes).toBeLessThan(arenaBefore);
    // The pending writes are still visible after the move...
    expect(store.get(b('hot'))!.equals(makeValue(40 * 1024, 5000))).toBe(true);
    expect(store.readDependency).toBe(pendingFrom);
    expect(store.has(b('k7'))).toBe(false);
    expect(store.isTombstoned(b('k8'))).toBe(true);
    expect(store.readDependency).toBe(pendingFrom);
    expect(store.get(b('k9'))!.equals(makeValue(1024, 9))).toBe(true);
    expect(store.readDependency).toBe(0);
    // ...and undoing them puts back the settled state.
    expect(store.rollBack(pendingFrom)).toBe(5);
    expect(store.get(b('hot'))!.equals(settledHot)).toBe(true);
    expect(store.get(b('k7'))!.equals(makeValue(1024, 7))).toBe(true);
    expect(store.get(b('k8'))!.equals(makeValue(1024, 8))).toBe(true);
    expect(store.has(b('new'))).toBe(false);
    expect(store.isTombstoned(b('tomb'))).toBe(true);
    expect(store.size).toBe(401);
    expect(store.tombstoneCount).toBe(1);
    let bytes = 'hot'.length + 40 * 1024 + 'tomb'.length;
    for (let i = 0; i < 400; i++) bytes += `k${i}`.length + 1024;
    expect(store.bytes).toBe(bytes);
    const listed = new Map([...store.entries()].map(([k, v]) => [k.toString('latin1'), Buffer.from(v)]));
    expect(listed.size).toBe(401);
    for (let i = 0; i < 400; i++) expect(listed.get(`k${i}`)!.equals(makeValue(1024, i)), `k${i}`).toBe(true);
  });

  it('compaction with pending overwrites of big values (dead bytes kept for undo beyond a quarter of the live bytes)', () => {
    // Two keys with 60 KiB values: ~120 KiB live. Settled overwrites leave 2.4 MiB dead, then
    // pending overwrites keep 40 dead 60 KiB values alive for rollBack when the arena compacts.
    const store = new ShardedStore(1);
    let epoch = 0;
    for (let i = 0; i < 40; i++) store.set(b(`k${i % 2}`), makeValue(60 * 1024, i), ++epoch);
    const settled = epoch;
    for (let i = 0; i < 40; i++) store.set(b(`k${i % 2}`), makeValue(60 * 1024, 100 + i), ++epoch);
    store.settle(settled);
    expect(generations(store)).toEqual([1]);
    expect(store.get(b('k0'))!.equals(makeValue(60 * 1024, 138))).toBe(true);
    expect(store.get(b('k1'))!.equals(makeValue(60 * 1024, 139))).toBe(true);
    expect(store.rollBack(epoch)).toBe(40);
    expect(store.get(b('k0'))!.equals(makeValue(60 * 1024, 38))).toBe(true);
    expect(store.get(b('k1'))!.equals(makeValue(60 * 1024, 39))).toBe(true);
    expect(store.size).toBe(2);
    expect(store.bytes).toBe(2 * (2 + 60 * 1024));
  });
});

describe('ShardedStore compaction policy', () => {
  it('waits until the dead bytes pass both 1 MiB and the live bytes', () => {
    const store = new ShardedStore(1);
    // 2 MiB live.
    for (let i = 0; i < 32; i++) store.set(b(`live${i}`), makeValue(64 * 1024, i));
    // 1.5 MiB dead: more than 1 MiB, less than the live bytes.
    let epoch = 0;
    for (let i = 0; i < 25; i++) store.set(b('hot'), makeValue(64 * 1024, 100 + i), ++epoch);
    store.settle(epoch);
    expect(generations(store)).toEqual([0]);
    // Past the live bytes (now ~2.06 MiB with the hot key): compacted at the next settle.
    for (let i = 0; i < 10; i++) store.set(b('hot'), makeValue(64 * 1024, 200 + i), ++epoch);
    store.settle(epoch);
    expect(generations(store)).toEqual([1]);
    // Little dead data left: the next settle does not compact again.
    store.set(b('hot'), makeValue(64 * 1024, 300), ++epoch);
    store.settle(epoch);
    expect(generations(store)).toEqual([1]);
    expect(store.get(b('hot'))!.equals(makeValue(64 * 1024, 300))).toBe(true);
    for (let i = 0; i < 32; i++) expect(store.get(b(`live${i}`))!.equals(makeValue(64 * 1024, i))).toBe(true);
  });

  it('rolled-back overwrites leave only the undone entries dead: no compaction for live data put back', () => {
    const store = new ShardedStore(1);
    // 1.5 MiB live in one key; each overwrite with a small value is rolled back.
    const big = makeValue(1536 * 1024, 1);
    store.set(b('big'), big);
    let epoch = 0;
    for (let i = 0; i < 20; i++) {
      store.set(b('big'), b('small'), ++epoch);
      expect(store.rollBack(epoch)).toBe(1);
      store.settle(epoch);
    }
    // 20 small dead entries: far from 1 MiB, so the 1.5 MiB value was never copied around.
    expect(generations(store)).toEqual([0]);
    expect(store.get(b('big'))!.equals(big)).toBe(true);
    expect(store.bytes).toBe(3 + big.length);
  });
});

describe('ShardedStore keys with the same hash', () => {
  // Equal-length key pairs with the same xxHash32 (found by search): they share a shard and a
  // probe chain, so only the byte comparison tells them apart.
  const PAIRS: [string, string][] = [
    ['c07000065', 'c11744800'],
    [`${'long-key'.padEnd(34, '-')}01490804`, `${'long-key'.padEnd(34, '-')}10008050`],
  ];

  for (const [x, y] of PAIRS) {
    it(`${x.length}-byte keys ${show(x)} and ${show(y)}`, () => {
      expect(hashBytes(b(x))).toBe(hashBytes(b(y)));
      for (const shards of [1, 16]) {
        const store = new ShardedStore(shards);
        store.set(b(x), b('X'));
        expect(store.get(b(y))).toBeUndefined();
        store.set(b(y), b('Y'));
        expect(store.get(b(x))!.toString()).toBe('X');
        expect(store.get(b(y))!.toString()).toBe('Y');
        expect(store.size).toBe(2);
        expect(store.delete(b(x), 1)).toBe(true);
        expect(store.get(b(y))!.toString()).toBe('Y');
        expect(store.tombstone(b(y), 1)).toBe(true);
        expect(store.state(b(x))).toBe(KeyState.Absent);
        expect(store.state(b(y))).toBe(KeyState.Tombstoned);
        store.set(b(x), b('X2'), 2);
        expect(store.state(b(y))).toBe(KeyState.Tombstoned);
        expect(store.rollBack(2)).toBe(3);
        expect(store.get(b(x))!.toString()).toBe('X');
        expect(store.get(b(y))!.toString()).toBe('Y');
        expect(new Map([...store.entries()].map(([k, v]) => [k.toString('latin1'), v.toString('latin1')]))).toEqual(new Map([[x, 'X'], [y, 'Y']]));
      }
    });
  }
});

describe('ShardedStore readDependency', () => {
  it('a pending write makes reads of its key depend on its epoch until it settles', () => {
    const store = new ShardedStore(4);
    store.set(b('old'), b('replayed'));
    store.set(b('k'), b('v'), 5);
    expect(store.get(b('k'))!.toString()).toBe('v');
    expect(store.readDependency).toBe(5);
    expect(store.state(b('k'))).toBe(KeyState.Live);
    expect(store.readDependency).toBe(5);
    // Another key is independent of epoch 5.
    expect(store.get(b('old'))!.toString()).toBe('replayed');
    expect(store.readDependency).toBe(0);
    expect(store.has(b('k'))).toBe(true);
    expect(store.readDependency).toBe(5);
    store.settle(5);
    expect(store.get(b('k'))!.toString()).toBe('v');
    expect(store.readDependency).toBe(0);
    expect(store.state(b('k'))).toBe(KeyState.Live);
    expect(store.readDependency).toBe(0);
  });

  it('each key depends on the group that wrote it; a partial settle leaves the later ones', () => {
    const store = new ShardedStore(2);
    store.set(b('a'), b('1'), 3);
    store.set(b('b'), b('2'), 4);
    store.set(b('a'), b('3'), 6);
    store.get(b('a'));
    expect(store.readDependency).toBe(6);
    store.get(b('b'));
    expect(store.readDependency).toBe(4);
    store.settle(4);
    store.get(b('a'));
    expect(store.readDependency).toBe(6);
    store.get(b('b'));
    expect(store.readDependency).toBe(0);
    store.settle(6);
    store.get(b('a'));
    expect(store.readDependency).toBe(0);
  });

  it('an absent key whose delete is pending depends on that delete; so does a pending tombstone', () => {
    const store = new ShardedStore(4);
    store.set(b('k'), b('v'));
    store.set(b('t'), b('v'));
    expect(store.get(b('nothing'))).toBeUndefined();
    expect(store.readDependency).toBe(0);
    expect(store.delete(b('k'), 7)).toBe(true);
    expect(store.get(b('k'))).toBeUndefined();
    expect(store.readDependency).toBe(7);
    expect(store.state(b('k'))).toBe(KeyState.Absent);
    expect(store.readDependency).toBe(7);
    expect(store.has(b('k'))).toBe(false);
    expect(store.readDependency).toBe(7);
    expect(store.tombstone(b('t'), 8)).toBe(true);
    expect(store.state(b('t'))).toBe(KeyState.Tombstoned);
    expect(store.readDependency).toBe(8);
    expect(store.get(b('t'))).toBeUndefined();
    expect(store.readDependency).toBe(8);
    // The deleted key now depends on at least its delete (8 covers 7).
    store.get(b('k'));
    expect(store.readDependency).toBeGreaterThanOrEqual(7);
    store.settle(7);
    store.get(b('k'));
    expect(store.readDependency === 0 || store.readDependency === 8).toBe(true);
    store.get(b('t'));
    expect(store.readDependency).toBe(8);
    store.settle(8);
    for (const key of ['k', 't', 'nothing']) {
      store.get(b(key));
      expect(store.readDependency, key).toBe(0);
    }
  });

  it('a delete of an absent key or of a tombstone is no pending delete', () => {
    const store = new ShardedStore(1);
    store.tombstone(b('t'));
    expect(store.delete(b('ghost'), 3)).toBe(false);
    expect(store.delete(b('t'), 3)).toBe(false);
    store.get(b('ghost'));
    expect(store.readDependency).toBe(0);
    expect(store.rollBack(3)).toBe(0);
  });

  it('after a rollBack, the restored entries depend on no pending group', () => {
    const store = new ShardedStore(1);
    store.set(b('k'), b('v1'), 1);
    store.settle(1);
    store.set(b('k'), b('v2'), 2);
    store.set(b('n'), b('x'), 2);
    expect(store.rollBack(2)).toBe(2);
    expect(store.get(b('k'))!.toString()).toBe('v1');
    expect(store.readDependency).toBe(0);
  });
});

describe('ShardedStore scan', () => {
  const arbStore = fc.tuple(arbShards, fc.array(arbOp(arbKey, arbSmallSize, { ...MIXED, churn: 1 }), { maxLength: 150, size: 'max' }));

  it('with nothing changing, visits every live entry exactly once, and tombstones only when asked', () => {
    fc.assert(
      fc.property(arbStore, fc.integer({ min: 1, max: 50 }), ([shards, ops], budget) => {
        // Harness.check walks the store in steps of `budget` and compares with the model.
        runModel(shards, ops, { clearWhilePending: false, budget });
      }),
      { numRuns: 150 },
    );
  });

  it('with writes between its steps, visits every entry that was live from start to end at least once', () => {
    fc.assert(
      fc.property(
        arbStore,
        fc.array(arbOp(arbKey, arbSmallSize, { ...MIXED, churn: 2 }), { maxLength: 200, size: 'max' }),
        fc.integer({ min: 1, max: 6 }),
        fc.boolean(),
        ([shards, setup], during, budget, withTombs) => {
          const h = runModel(shards, setup, { clearWhilePending: false, budget: 5 });
          const store = h.store;
          // What was there at the start; keys written, deleted or restored meanwhile drop out.
          const atStart = new Map(h.model);
          const touched = new Set<string>();
          const pair = (k: string, v: Buffer | null): string => `${show(k)}=${v === null ? 'tombstone' : `${v.length}:${crc32(v)}`}`;
          const everThere = new Set<string>([...h.model].map(([k, e]) => pair(k, e.value)));
          const visited = new Set<string>();
          const cursor = store.newCursor();
          let step = 0;
          for (let guard = 0; ; guard++) {
            if (guard > 1_000_000) fail('scan does not finish');
            const done = store.scan(
              cursor,
              budget,
              (_hash, k, v) => {
                if (v === null && !withTombs) fail('a tombstone was visited without being asked for');
                const p = pair(k.toString('latin1'), v);
                if (!everThere.has(p)) fail(`scan visited ${p}, which never was in the store`);
                visited.add(p);
              },
              withTombs,
            );
            if (done) break;
            if (step < during.length) {
              const op = during[step++]!;
              const before = new Map(h.model);
              h.apply(op);
              // Entries are replaced, never changed in place: a changed key has a new entry object.
              for (const [k, e] of h.model) {
                if (before.get(k) === e) continue;
                touched.add(k);
                everThere.add(pair(k, e.value));
              }
              for (const k of before.keys()) if (!h.model.has(k)) touched.add(k);
            }
          }
          for (const [k, e] of atStart) {
            if (touched.has(k) || (e.value === null && !withTombs)) continue;
            if (!visited.has(pair(k, e.value))) fail(`scan missed ${show(k)}, live from start to end`);
          }
          h.check();
        },
      ),
      { numRuns: 150 },
    );
  });

  it('a visitor that returns false pauses the walk after that entry; the next call resumes with the next one', () => {
    const store = new ShardedStore(4);
    for (let i = 0; i < 500; i++) store.set(b(`k${i}`), b(`v${i}`));
    store.tombstone(b('t'));
    // Only `false` pauses: a visitor returning nothing (or a number) walks on.
    let all = 0;
    expect(store.scan(store.newCursor(), 10_000, () => void all++)).toBe(true);
    expect(all).toBe(500);
    let zeros = 0;
    expect(store.scan(store.newCursor(), 10_000, () => (zeros++, 0), true)).toBe(true);
    expect(zeros).toBe(501);

    const cursor = store.newCursor();
    const seen: string[] = [];
    let calls = 0;
    for (;;) {
      calls++;
      let taken = 0;
      const done = store.scan(
        cursor,
        10_000,
        (_h, k, v) => {
          seen.push(`${k.toString('latin1')}=${v === null ? 'tombstone' : v.toString('latin1')}`);
          return ++taken < 7;
        },
        true,
      );
      if (done) break;
      expect(taken).toBe(7);
    }
    expect(seen).toHaveLength(501);
    expect(new Set(seen)).toEqual(new Set([...Array.from({ length: 500 }, (_, i) => `k${i}=v${i}`), 't=tombstone']));
    expect(calls).toBeGreaterThanOrEqual(Math.ceil(501 / 7));
  });

  it('a walk across a compaction of the shard it is in restarts that shard and misses nothing', () => {
    const store = new ShardedStore(1);
    // Dead entries first (replayed overwrites), so the compaction moves everything after them.
    for (let i = 0; i < 20; i++) store.set(b('early'), makeValue(100 * 1024, i));
    for (let i = 0; i < 2000; i++) store.set(b(`k${i}`), b(`v${i}`));
    const cursor = store.newCursor();
    const seen = new Map<string, number>();
    const visit = (_h: number, k: Buffer): void => {
      const key = k.toString('latin1');
      seen.set(key, (seen.get(key) ?? 0) + 1);
    };
    expect(store.scan(cursor, 1000, visit)).toBe(false);
    // Big settled overwrites of another key: the arena compacts under the walk.
    for (let i = 0; i < 30; i++) store.set(b('churn'), makeValue(100 * 1024, i), i + 1);
    store.settle(30);
    expect(generations(store)).toEqual([1]);
    while (!store.scan(cursor, 1000, visit));
    for (let i = 0; i < 2000; i++) expect(seen.get(`k${i}`), `k${i}`).toBeGreaterThanOrEqual(1);
    expect(seen.get('churn')).toBe(1);
    expect(seen.get('early')).toBeGreaterThanOrEqual(1);
    expect([...seen.keys()].sort()).toEqual(['churn', 'early', ...Array.from({ length: 2000 }, (_, i) => `k${i}`)].sort());
  });
});

describe('ShardedStore undo log', () => {
  it('stays as small as the pending writes while a group is always pending', () => {
    // Under steady load the next group is already filling when one settles. What the store
    // keeps to undo writes must shrink with every settle, not grow with every write ever made.
    const store = new ShardedStore(16);
    const key = Buffer.alloc(4);
    const value = b('x');
    for (let epoch = 1; epoch <= 20_000; epoch++) {
      for (let i = 0; i < 10; i++) {
        key.writeUInt32LE((epoch * 10 + i) % 5000);
        store.set(key, value, epoch + 1);
      }
      store.settle(epoch);
    }
    const internals = store as unknown as { undoEpoch: readonly number[]; undoHead: number };
    expect(internals.undoEpoch.length - internals.undoHead).toBe(10);
    expect(internals.undoEpoch.length, 'undo log entries held for 10 pending writes').toBeLessThan(10_000);
  });
});

describe('ShardedStore clearTombstones with pending tombstones', () => {
  it('a rollBack after clearTombstones removed a pending tombstone keeps the counts right', () => {
    const store = new ShardedStore(1);
    store.set(b('live'), b('v'));
    expect(store.tombstone(b('j'), 1)).toBe(false);
    expect(store.tombstone(b('live'), 1)).toBe(true);
    store.clearTombstones();
    expect([store.size, store.tombstoneCount, store.bytes]).toEqual([0, 0, 0]);
    expect(store.rollBack(1)).toBe(2);
    // Undone: 'live' holds its value again, 'j' was never there.
    expect(store.get(b('live'))!.toString()).toBe('v');
    expect(store.state(b('j'))).toBe(KeyState.Absent);
    expect([store.size, store.tombstoneCount, store.bytes]).toEqual([1, 0, 5]);
  });
});
