// The in-memory data of a kv-server: several shards, the key's xxHash32 choosing the shard.
//
// Each shard is a small hash table of our own rather than a V8 Map, because a Map of strings
// costs three objects and ~150 bytes per key, loads at ~1 µs per insert (GC-bound), and tops out
// at 2^24 entries. Measured on 1M keys x 100 B: Map-of-strings replay 2.9 s / 330 MB RSS; this
// layout is several times faster to load and close to Redis's memory use (docs/performance.md).
//
//   arena   one Buffer per shard; entries are appended, never moved except by compaction:
//             u32 hash | u32 keyLen (+ DEAD, TOMB flags) | u32 valueLen | key | value
//   index   open addressing over Int32Arrays: slot -> arena offset + 1 (0 empty, -1 deleted),
//           with each slot's hash cached so most probes never touch the arena
//
// Overwrites append a new entry and mark the old one DEAD; a shard's arena is compacted when
// its dead bytes outgrow its live ones. Sharding keeps each arena small, so growth copies and
// compactions are short, and lifts the capacity far beyond one Map's 2^24.
//
// Changes made for a WAL group that is not yet durable are remembered (old and new entry) so a
// failed group can be rolled back, and so a read of such a key can wait for its group.
// Tombstones (a key deleted while a range migrates in; see docs/rebalancing.md) are entries
// with the TOMB flag and no value.
import { hashBytes } from '../common/hash.js';
import { Block, type HashIntervals } from './hash-intervals.js';

const HEADER = 12;
const DEAD = 0x80000000;
const TOMB = 0x40000000;
const LEN_MASK = 0x3fffffff;
const EMPTY = 0;
const DELETED = -1;
const MIN_CAPACITY = 1024;
const MAX_ARENA = 0x7fffffff - 1;
/** Compact an arena once its dead bytes exceed this and its live bytes. */
const COMPACT_MIN_GARBAGE = 1024 * 1024;
/** undoOld of an undo entry made by dropHashes: its undoNew is then a key of undoDrops. */
const DROPPED = -2;

/** What a key currently is in the store. */
export const enum KeyState {
  Absent = 0,
  Live = 1,
  Tombstoned = 2,
}

/** Copy small arrays by hand (TypedArray.set has a fixed cost that dominates for keys). */
function copyInto(target: Buffer, source: Uint8Array, at: number): void {
  const n = source.length;
  if (n > 32) {
    target.set(source, at);
    return;
  }
  for (let i = 0; i < n; i++) target[at + i] = source[i]!;
}

/**
 * A key's ring hash as the store works with it: the same 32 bits, read as a signed integer.
 * V8 keeps a signed 32-bit value as a small integer; half of all unsigned hashes are not one,
 * and code optimized while it had seen only small ones (a fresh target importing a source's
 * keys in hash order sees the low half first) is thrown away and compiled again when the
 * first large one arrives. Shard selection (`>>>`) and probing (`&`) give the same results.
 */
function hashOf(key: Uint8Array): number {
  return hashBytes(key) | 0;
}

/** The index size for `entries` keys at most half full: `from`, doubled as often as needed. */
function indexCapacity(entries: number, from: number): number {
  let capacity = from;
  while (entries * 10 > capacity * 5) capacity *= 2;
  return capacity;
}

class Shard {
  constructor(readonly index: number) {}
  private buf: Buffer = Buffer.allocUnsafe(64 * 1024);
  /** Typed view of the arena for header fields: much cheaper than Buffer's readUInt32LE. */
  private view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.length);
  get arena(): Buffer {
    return this.buf;
  }
  set arena(next: Buffer) {
    this.buf = next;
    this.view = new DataView(next.buffer, next.byteOffset, next.length);
  }
  u32(off: number): number {
    return this.view.getUint32(off, true);
  }
  /** The entry's hash as the index keeps it: signed 32 bits (see hashOf). */
  hashAt(off: number): number {
    return this.view.getInt32(off, true);
  }
  used = 0;
  garbage = 0;
  slots = new Int32Array(MIN_CAPACITY);
  hashes = new Int32Array(MIN_CAPACITY);
  /** Slots that are not EMPTY (live, tombstoned or DELETED markers). */
  filled = 0;
  /** Bumped when entries move (compaction), so arena cursors know to restart. */
  generation = 0;
  /** Bumped when the arena or the index is made bigger (see ShardedStore.growth). */
  grown = 0;
  /**
   * Entries written by groups that are not durable yet, as marks: from arena offset
   * markOff[i] on, entries were written by group markEpoch[i] (until the next mark). The arena
   * is appended in write order and groups in epoch order, so everything from the first mark on
   * is pending and a few marks describe it, whatever the number of entries.
   */
  private markOff: number[] = [];
  private markEpoch: number[] = [];

  /** The pending group that wrote the entry at `off`, or 0 if that entry is durable. */
  pendingEpoch(off: number): number {
    const offs = this.markOff;
    for (let i = offs.length - 1; i >= 0; i--) if (offs[i]! <= off) return this.markEpoch[i]!;
    return 0;
  }

  /** The entry just appended at `off` was written by group `epoch`. True if it is the first mark. */
  markPending(off: number, epoch: number): boolean {
    const n = this.markEpoch.length;
    if (n > 0 && this.markEpoch[n - 1] === epoch) return false;
    this.markOff.push(off);
    this.markEpoch.push(epoch);
    return n === 0;
  }

  /** Groups up to `epoch` are durable: their marks go. True if marks are left. */
  settleMarks(epoch: number): boolean {
    let n = 0;
    while (n < this.markEpoch.length && this.markEpoch[n]! <= epoch) n++;
    if (n > 0) {
      this.markOff.splice(0, n);
      this.markEpoch.splice(0, n);
    }
    return this.markEpoch.length > 0;
  }

  /** Groups up to `epoch` were undone: their marks, the newest, go. True if marks are left. */
  undoMarks(epoch: number): boolean {
    while (this.markEpoch.length > 0 && this.markEpoch[this.markEpoch.length - 1]! <= epoch) {
      this.markEpoch.pop();
      this.markOff.pop();
    }
    return this.markEpoch.length > 0;
  }

  // --- entry accessors -------------------------------------------------------------------
  flags(off: number): number {
    return this.u32(off + 4);
  }
  keyLen(off: number): number {
    return this.u32(off + 4) & LEN_MASK;
  }
  valueLen(off: number): number {
    return this.u32(off + 8);
  }
  size(off: number): number {
    return HEADER + this.keyLen(off) + this.valueLen(off);
  }
  key(off: number): Buffer {
    return this.arena.subarray(off + HEADER, off + HEADER + this.keyLen(off));
  }
  value(off: number): Buffer {
    const start = off + HEADER + this.keyLen(off);
    return this.arena.subarray(start, start + this.valueLen(off));
  }
  isTomb(off: number): boolean {
    return (this.u32(off + 4) & TOMB) !== 0;
  }
  isDead(off: number): boolean {
    return (this.u32(off + 4) & DEAD) !== 0;
  }
  setDead(off: number, dead: boolean): void {
    const f = this.u32(off + 4);
    this.view.setUint32(off + 4, dead ? (f | DEAD) >>> 0 : f & ~DEAD, true);
  }

  private keyEquals(off: number, key: Uint8Array): boolean {
    const len = key.length;
    if ((this.u32(off + 4) & LEN_MASK) !== len) return false;
    const arena = this.arena;
    const start = off + HEADER;
    if (len > 32) return arena.compare(key, 0, len, start, start + len) === 0;
    for (let i = 0; i < len; i++) if (arena[start + i] !== key[i]) return false;
    return true;
  }

  // --- index ------------------------------------------------------------------------------
  /** Slot holding `key`, or -1. */
  find(key: Uint8Array, hash: number): number {
    const slots = this.slots;
    const mask = slots.length - 1;
    const h = hash | 0;
    for (let i = hash & mask; ; i = (i + 1) & mask) {
      const s = slots[i]!;
      if (s === EMPTY) return -1;
      if (s > 0 && this.hashes[i] === h && this.keyEquals(s - 1, key)) return i;
    }
  }

  /** Slot where `key` (known to be absent) should go. */
  private freeSlot(hash: number): number {
    const slots = this.slots;
    const mask = slots.length - 1;
    for (let i = hash & mask; ; i = (i + 1) & mask) if (slots[i]! <= 0) return i;
  }

  /** Point `key`'s slot at `off` (inserting the key if absent). */
  place(key: Uint8Array, hash: number, off: number): void {
    const slot = this.find(key, hash);
    if (slot < 0) this.placeAbsent(hash, off);
    else {
      this.slots[slot] = off + 1;
      this.hashes[slot] = hash | 0;
    }
  }

  /** Insert an entry whose key the caller just found absent (saves a second probe). */
  placeAbsent(hash: number, off: number): void {
    if ((this.filled + 1) * 10 > this.slots.length * 7) this.rehash();
    const slot = this.freeSlot(hash);
    if (this.slots[slot] === EMPTY) this.filled++;
    this.slots[slot] = off + 1;
    this.hashes[slot] = hash | 0;
  }

  unplace(slot: number): void {
    this.slots[slot] = DELETED;
  }

  private rehash(): void {
    this.rebuild(indexCapacity(this.liveSlots() + 1, this.slots.length));
  }

  private liveSlots(): number {
    let live = 0;
    for (const s of this.slots) if (s > 0) live++;
    return live;
  }

  /** Size the index for `entries` more keys in one step, before a bulk load. */
  expectEntries(entries: number): void {
    const capacity = indexCapacity(this.filled + entries, this.slots.length);
    if (capacity > this.slots.length) this.rebuild(capacity);
  }

  /** Shrink an index left under a quarter full (expectEntries guessed too many). */
  trimIndex(): void {
    const live = this.liveSlots();
    if (this.slots.length <= MIN_CAPACITY || live * 4 >= this.slots.length) return;
    const capacity = indexCapacity(live, MIN_CAPACITY);
    if (capacity < this.slots.length) this.rebuild(capacity);
  }

  private rebuild(capacity: number): void {
    if (capacity > this.slots.length) this.grown++;
    const oldSlots = this.slots;
    const oldHashes = this.hashes;
    this.slots = new Int32Array(capacity);
    this.hashes = new Int32Array(capacity);
    this.filled = 0;
    const mask = capacity - 1;
    for (let j = 0; j < oldSlots.length; j++) {
      const s = oldSlots[j]!;
      if (s <= 0) continue;
      const h = oldHashes[j]!;
      let i = h & mask;
      while (this.slots[i] !== EMPTY) i = (i + 1) & mask;
      this.slots[i] = s;
      this.hashes[i] = h;
      this.filled++;
    }
  }

  // --- arena ------------------------------------------------------------------------------
  append(hash: number, key: Uint8Array, value: Uint8Array | null): number {
    const size = HEADER + key.length + (value === null ? 0 : value.length);
    if (this.used + size > this.arena.length) {
      // Offsets live in an Int32Array, so one shard's arena stops at 2 GiB.
      if (this.used + size > MAX_ARENA) throw new Error('shard is full (2 GiB); start the server with more --shards');
      // Doubled, not grown by half: each growth copies the arena into fresh pages, and fresh
      // pages are what filling a store costs here (growing by half copied 2.5x the data, and
      // took 576-624 ms against 387-434 ms for 252k inserts; performance.md). Room never
      // written costs no RSS, and MemoryTrim gives the rest back once the store is quiet.
      let cap = Math.max(this.arena.length, 64 * 1024);
      while (this.used + size > cap) cap *= 2;
      cap = Math.min(cap, MAX_ARENA);
      const bigger = Buffer.allocUnsafe(cap);
      this.arena.copy(bigger, 0, 0, this.used);
      this.arena = bigger;
      this.grown++;
    }
    const off = this.used;
    const arena = this.buf;
    const view = this.view;
    view.setInt32(off, hash, true);
    view.setUint32(off + 4, value === null ? (key.length | TOMB) >>> 0 : key.length, true);
    view.setUint32(off + 8, value === null ? 0 : value.length, true);
    copyInto(arena, key, off + HEADER);
    if (value !== null) copyInto(arena, value, off + HEADER + key.length);
    this.used += size;
    return off;
  }

  /** Make room for `bytes` more without growing (e.g. before a replay), in memory from `allocate`. */
  reserve(bytes: number, allocate: (size: number) => Buffer = Buffer.allocUnsafe): void {
    if (this.arena.length - this.used >= bytes) return;
    const bigger = allocate(this.used + bytes);
    this.arena.copy(bigger, 0, 0, this.used);
    this.arena = bigger;
    this.grown++;
  }

  /**
   * Give back the arena's spare room (after a bulk load such as a replay), keeping an eighth
   * as headroom: trimmed to the byte, the next write would double it at once, and a
   * server taking a few writes a second would trim and regrow every shard over and over.
   */
  trim(): void {
    const keep = this.used + Math.max(64 * 1024, Math.ceil(this.used / 8));
    if (this.arena.length - keep < Math.max(64 * 1024, this.arena.length / 8)) return; // not worth a copy
    const smaller = Buffer.allocUnsafe(keep);
    this.arena.copy(smaller, 0, 0, this.used);
    this.arena = smaller;
  }

  /**
   * Move every live entry (and every entry in `keep`) to a fresh arena; returns old -> new
   * offsets of the kept ones. Rebuilds the index.
   */
  compact(keep: Set<number>): Map<number, number> {
    // Size the new arena exactly: one pass to measure what survives, one to copy it.
    let needed = 0;
    for (let off = 0; off < this.used; ) {
      const size = this.size(off);
      if (!this.isDead(off) || keep.has(off)) needed += size;
      off += size;
    }
    const fresh = Buffer.allocUnsafe(Math.max(64 * 1024, Math.ceil(needed * 1.25)));
    const moved = new Map<number, number>();
    const marks = this.markOff;
    let mark = 0;
    let at = 0;
    for (let off = 0; off < this.used; ) {
      const size = this.size(off);
      if (!this.isDead(off) || keep.has(off)) {
        // A mark moves to the first entry kept at or after it (order is preserved).
        while (mark < marks.length && marks[mark]! <= off) marks[mark++] = at;
        this.arena.copy(fresh, at, off, off + size);
        moved.set(off, at);
        at += size;
      }
      off += size;
    }
    while (mark < marks.length) marks[mark++] = at;
    for (let i = 0; i < this.slots.length; i++) {
      const s = this.slots[i]!;
      if (s > 0) this.slots[i] = moved.get(s - 1)! + 1;
    }
    // Dead entries kept for undo count as garbage again in the new arena.
    let garbage = 0;
    for (const off of keep) {
      const to = moved.get(off);
      if (to !== undefined && this.isDeadIn(fresh, to)) garbage += this.sizeIn(fresh, to);
    }
    this.arena = fresh;
    this.used = at;
    this.garbage = garbage;
    this.generation++;
    this.rebuild(this.slots.length);
    return moved;
  }

  private isDeadIn(buf: Buffer, off: number): boolean {
    return (buf.readUInt32LE(off + 4) & DEAD) !== 0;
  }
  private sizeIn(buf: Buffer, off: number): number {
    return HEADER + (buf.readUInt32LE(off + 4) & LEN_MASK) + buf.readUInt32LE(off + 8);
  }
}

/** A position in a walk over every entry of a store (see `scan`). */
export interface StoreCursor {
  shard: number;
  offset: number;
  generation: number;
}

export class ShardedStore {
  private readonly shards: Shard[];
  private readonly shift: number;
  private liveKeys = 0;
  private tombstones = 0;
  /** Key + value bytes of live entries, plus key bytes of tombstones. */
  private liveBytes = 0;
  // Undo log of changes whose WAL group is not durable yet, oldest first: per write, the entry
  // it replaced (old, -1 if none) and the one it made (new, -1 for a plain delete). A dropHashes
  // call leaves one entry per shard instead of one per key: old is DROPPED, new an undoDrops id.
  private undoEpoch: number[] = [];
  private undoShard: number[] = [];
  private undoOld: number[] = [];
  private undoNew: number[] = [];
  private undoHead = 0;
  /** Shards with marks of pending writes (see Shard.markOff): settle() visits only these. */
  private marked: Shard[] = [];
  /** What each dropHashes undo entry removed from its shard, by the id in its undoNew. */
  private undoDrops = new Map<number, Int32Array>();
  private nextDropId = 0;
  /** Highest epoch of a delete that is not durable yet (reads of absent keys wait for it). */
  private deleteEpoch = 0;
  private settled = 0;

  constructor(shardCount = 16) {
    if (!Number.isInteger(shardCount) || shardCount < 1 || shardCount > 4096 || (shardCount & (shardCount - 1)) !== 0) {
      throw new RangeError(`shard count must be a power of two from 1 to 4096, got ${shardCount}`);
    }
    this.shards = Array.from({ length: shardCount }, (_s, i) => new Shard(i));
    this.shift = 32 - Math.log2(shardCount);
  }

  get shardCount(): number {
    return this.shards.length;
  }

  /** Number of live keys. */
  get size(): number {
    return this.liveKeys;
  }

  get tombstoneCount(): number {
    return this.tombstones;
  }

  /** Bytes of live keys and values (plus tombstoned keys): what a compacted log must hold. */
  get bytes(): number {
    return this.liveBytes;
  }

  /** Bytes held by the arenas, live or not (for INFO). */
  get arenaBytes(): number {
    let n = 0;
    for (const s of this.shards) n += s.arena.length;
    return n;
  }

  /** The index of the shard that holds `hash`: its top bits (`>>> 32` would be a no-op in JS). */
  private shardIndex(hash: number): number {
    return this.shift === 32 ? 0 : hash >>> this.shift;
  }

  private shardOf(hash: number): Shard {
    return this.shards[this.shardIndex(hash)]!;
  }

  // --- reads -------------------------------------------------------------------------------

  /**
   * After get() or state(): the epoch of the not-yet-durable WAL group that the answer rests on
   * (0: none). That is the group that wrote the key's entry, or for an absent key, the latest
   * pending delete. A reply built on the answer must not leave before that group is durable.
   */
  readDependency = 0;

  /** A view of the value (valid until the next write; copy it to keep it), or undefined. */
  get(key: Uint8Array): Buffer | undefined {
    const hash = hashOf(key);
    const shard = this.shardOf(hash);
    const slot = shard.find(key, hash);
    if (slot < 0) {
      this.readDependency = this.deleteEpoch > this.settled ? this.deleteEpoch : 0;
      return undefined;
    }
    const off = shard.slots[slot]! - 1;
    this.readDependency = shard.pendingEpoch(off);
    return shard.isTomb(off) ? undefined : shard.value(off);
  }

  state(key: Uint8Array): KeyState {
    const hash = hashOf(key);
    const shard = this.shardOf(hash);
    const slot = shard.find(key, hash);
    if (slot < 0) {
      this.readDependency = this.deleteEpoch > this.settled ? this.deleteEpoch : 0;
      return KeyState.Absent;
    }
    const off = shard.slots[slot]! - 1;
    this.readDependency = shard.pendingEpoch(off);
    return shard.isTomb(off) ? KeyState.Tombstoned : KeyState.Live;
  }

  has(key: Uint8Array): boolean {
    return this.state(key) === KeyState.Live;
  }

  isTombstoned(key: Uint8Array): boolean {
    return this.state(key) === KeyState.Tombstoned;
  }

  // --- writes: `epoch` 0 means "replaying, nothing to undo" -------------------------------

  /** Store a value. */
  set(key: Uint8Array, value: Uint8Array, epoch = 0): void {
    this.write(key, value, epoch);
  }

  /**
   * Store a value only if the key is absent (neither live nor tombstoned); true if stored. When
   * it is not stored, readDependency says which pending group the refusal rests on.
   */
  insertIfAbsent(key: Uint8Array, value: Uint8Array, epoch = 0): boolean {
    const hash = hashOf(key);
    const shard = this.shardOf(hash);
    const slot = shard.find(key, hash);
    if (slot >= 0) {
      this.readDependency = shard.pendingEpoch(shard.slots[slot]! - 1);
      return false;
    }
    const off = shard.append(hash, key, value);
    this.admit(shard, off);
    shard.placeAbsent(hash, off);
    if (epoch > 0) this.remember(epoch, shard, -1, off);
    return true;
  }

  /** Delete; true if a live value was there. */
  delete(key: Uint8Array, epoch = 0): boolean {
    const hash = hashOf(key);
    const shard = this.shardOf(hash);
    const slot = shard.find(key, hash);
    if (slot < 0) return false;
    const old = shard.slots[slot]! - 1;
    if (shard.isTomb(old)) return false;
    this.retire(shard, old);
    shard.unplace(slot);
    if (epoch > 0) {
      this.remember(epoch, shard, old, -1);
      if (epoch > this.deleteEpoch) this.deleteEpoch = epoch;
    }
    return true;
  }

  /** Delete and leave a tombstone; true if a live value was there. */
  tombstone(key: Uint8Array, epoch = 0): boolean {
    const had = this.state(key) === KeyState.Live;
    this.write(key, null, epoch);
    if (epoch > this.deleteEpoch) this.deleteEpoch = epoch;
    return had;
  }

  /** Replace `key`'s entry with a new one (value, or a tombstone for null). */
  private write(key: Uint8Array, value: Uint8Array | null, epoch: number): void {
    const hash = hashOf(key);
    const shard = this.shardOf(hash);
    const slot = shard.find(key, hash);
    const old = slot < 0 ? -1 : shard.slots[slot]! - 1;
    if (old >= 0) this.retire(shard, old);
    const off = shard.append(hash, key, value);
    this.admit(shard, off);
    if (slot >= 0) shard.slots[slot] = off + 1;
    else shard.placeAbsent(hash, off);
    if (epoch > 0) this.remember(epoch, shard, old, off);
  }

  /** Count an entry out of the live totals and mark it dead. */
  private retire(shard: Shard, off: number): void {
    const keyLen = shard.keyLen(off);
    if (shard.isTomb(off)) {
      this.tombstones--;
      this.liveBytes -= keyLen;
    } else {
      this.liveKeys--;
      this.liveBytes -= keyLen + shard.valueLen(off);
    }
    shard.setDead(off, true);
    shard.garbage += shard.size(off);
  }

  /** Count a (new or revived) entry into the live totals. */
  private admit(shard: Shard, off: number): void {
    const keyLen = shard.keyLen(off);
    if (shard.isTomb(off)) {
      this.tombstones++;
      this.liveBytes += keyLen;
    } else {
      this.liveKeys++;
      this.liveBytes += keyLen + shard.valueLen(off);
    }
  }

  private remember(epoch: number, shard: Shard, old: number, fresh: number): void {
    this.undoEpoch.push(epoch);
    this.undoShard.push(shard.index);
    this.undoOld.push(old);
    this.undoNew.push(fresh);
    if (fresh >= 0 && shard.markPending(fresh, epoch)) this.marked.push(shard);
  }

  /** One undo entry for every entry a drop removed from `shard` (`offsets`: their arena offsets). */
  private rememberDrop(epoch: number, shard: Shard, offsets: Int32Array): void {
    const id = this.nextDropId++;
    this.undoDrops.set(id, offsets);
    this.undoEpoch.push(epoch);
    this.undoShard.push(shard.index);
    this.undoOld.push(DROPPED);
    this.undoNew.push(id);
  }

  /**
   * Delete every live value whose hash `ranges` holds (tombstones stay): a source's copies of
   * the ranges it moved away (DROPRANGE). Only the shards the ranges overlap are visited, by
   * their indexes' cached hashes, so the arena is touched only for what is deleted. Undoable
   * like delete() when `epoch` is given. Returns how many values were deleted.
   */
  dropHashes(ranges: Pick<HashIntervals, 'bounds' | 'has' | 'blocks'>, epoch = 0): number {
    const bounds = ranges.bounds;
    if (bounds === undefined) return 0;
    const blocks = ranges.blocks();
    const last = this.shardIndex(bounds[1]);
    let dropped = 0;
    for (let i = this.shardIndex(bounds[0]); i <= last; i++) {
      const shard = this.shards[i]!;
      const { slots, hashes } = shard;
      // Offsets of what this shard loses, for the undo log: one entry per shard, not per key.
      // (`filled` counts every used slot, so it bounds the live entries.)
      const removed = epoch > 0 ? new Int32Array(shard.filled) : undefined;
      let n = 0;
      for (let slot = 0; slot < slots.length; slot++) {
        const s = slots[slot]!;
        if (s <= 0) continue;
        const hash = hashes[slot]! >>> 0;
        const block = blocks[hash >>> 16];
        if (block === Block.None || (block === Block.Some && !ranges.has(hash)) || shard.isTomb(s - 1)) continue;
        this.retire(shard, s - 1);
        shard.unplace(slot);
        if (removed !== undefined) removed[n] = s - 1;
        n++;
      }
      if (n > 0 && removed !== undefined) this.rememberDrop(epoch, shard, removed.subarray(0, n));
      dropped += n;
    }
    if (dropped > 0 && epoch > this.deleteEpoch) this.deleteEpoch = epoch;
    return dropped;
  }

  /**
   * Where a walk over the hashes from `from` on should stop so that it visits about `budget`
   * index slots: the last hash of the last whole shard it takes (at least one shard; 0xffffffff
   * at the end). Shards hold contiguous hash ranges (the top bits pick the shard).
   */
  shardSpanEnd(from: number, budget: number): number {
    let i = this.shardIndex(from);
    let slots = this.shards[i]!.slots.length;
    while (i + 1 < this.shards.length && slots + this.shards[i + 1]!.slots.length <= budget) slots += this.shards[++i]!.slots.length;
    return i + 1 === this.shards.length ? 0xffffffff : ((i + 1) * 2 ** this.shift - 1) >>> 0;
  }

  /** Forget every tombstone (not undoable: the move they guarded is over). */
  clearTombstones(): void {
    if (this.tombstones === 0) return;
    for (const shard of this.shards) {
      for (let i = 0; i < shard.slots.length; i++) {
        const s = shard.slots[i]!;
        if (s > 0 && shard.isTomb(s - 1)) {
          this.retire(shard, s - 1);
          shard.unplace(i);
        }
      }
    }
  }

  /** Drop everything (RESET). */
  clear(): void {
    for (let i = 0; i < this.shards.length; i++) this.shards[i] = new Shard(i);
    this.liveKeys = 0;
    this.tombstones = 0;
    this.liveBytes = 0;
    this.undoEpoch = [];
    this.undoShard = [];
    this.undoOld = [];
    this.undoNew = [];
    this.undoHead = 0;
    this.undoDrops.clear();
    this.marked = [];
  }

  // --- durability ------------------------------------------------------------------------

  /** Groups up to `epoch` are durable: forget how to undo them; compact arenas if worthwhile. */
  settle(epoch: number): void {
    this.settled = epoch;
    let head = this.undoHead;
    const n = this.undoEpoch.length;
    while (head < n && this.undoEpoch[head]! <= epoch) {
      if (this.undoOld[head] === DROPPED) this.undoDrops.delete(this.undoNew[head]!);
      head++;
    }
    if (this.marked.length > 0) this.marked = this.marked.filter((shard) => shard.settleMarks(epoch));
    if (head === n) {
      this.undoEpoch = [];
      this.undoShard = [];
      this.undoOld = [];
      this.undoNew = [];
      this.undoHead = 0;
      this.undoDrops.clear();
    } else if (head > 1024 && head * 2 > n) {
      // Under constant writes the log is never empty: drop the settled front now and then.
      this.undoEpoch = this.undoEpoch.slice(head);
      this.undoShard = this.undoShard.slice(head);
      this.undoOld = this.undoOld.slice(head);
      this.undoNew = this.undoNew.slice(head);
      this.undoHead = 0;
    } else {
      this.undoHead = head;
    }
    this.maybeCompact();
  }

  /** Groups up to `epoch` failed: undo their changes, newest first. Returns how many. */
  rollBack(epoch: number): number {
    let undone = 0;
    while (this.undoEpoch.length > this.undoHead && this.undoEpoch[this.undoEpoch.length - 1]! <= epoch) {
      this.undoEpoch.pop();
      const shard = this.shards[this.undoShard.pop()!]!;
      const old = this.undoOld.pop()!;
      const fresh = this.undoNew.pop()!;
      if (old === DROPPED) {
        const offsets = this.undoDrops.get(fresh)!;
        this.undoDrops.delete(fresh);
        for (let i = offsets.length - 1; i >= 0; i--) this.revive(shard, offsets[i]!);
        undone += offsets.length;
        continue;
      }
      // The new entry may already be gone (clearTombstones removed a pending tombstone).
      if (fresh >= 0 && !shard.isDead(fresh)) this.retire(shard, fresh);
      if (old >= 0) {
        this.revive(shard, old);
      } else {
        // The key was new in this group: take it out of the index again.
        const slot = shard.find(shard.key(fresh), shard.hashAt(fresh));
        if (slot >= 0) shard.unplace(slot);
      }
      undone++;
    }
    if (this.marked.length > 0) this.marked = this.marked.filter((shard) => shard.undoMarks(epoch));
    return undone;
  }

  /** Make the dead entry at `off` its key's live entry again (undoing what replaced or deleted it). */
  private revive(shard: Shard, off: number): void {
    shard.setDead(off, false);
    shard.garbage -= shard.size(off);
    this.admit(shard, off);
    shard.place(Buffer.from(shard.key(off)), shard.hashAt(off), off);
  }

  private maybeCompact(): void {
    for (let i = 0; i < this.shards.length; i++) {
      const shard = this.shards[i]!;
      if (shard.garbage < COMPACT_MIN_GARBAGE || shard.garbage < shard.used - shard.garbage) continue;
      // Entries still referenced by the undo log must survive, at their new offsets.
      const keep = new Set<number>();
      for (let u = this.undoHead; u < this.undoEpoch.length; u++) {
        if (this.undoShard[u] !== i) continue;
        if (this.undoOld[u] === DROPPED) {
          for (const off of this.undoDrops.get(this.undoNew[u]!)!) keep.add(off);
          continue;
        }
        if (this.undoOld[u]! >= 0) keep.add(this.undoOld[u]!);
        if (this.undoNew[u]! >= 0) keep.add(this.undoNew[u]!);
      }
      const moved = shard.compact(keep);
      for (let u = this.undoHead; u < this.undoEpoch.length; u++) {
        if (this.undoShard[u] !== i) continue;
        if (this.undoOld[u] === DROPPED) {
          const offsets = this.undoDrops.get(this.undoNew[u]!)!;
          for (let j = 0; j < offsets.length; j++) offsets[j] = moved.get(offsets[j]!)!;
          continue;
        }
        if (this.undoOld[u]! >= 0) this.undoOld[u] = moved.get(this.undoOld[u]!)!;
        if (this.undoNew[u]! >= 0) this.undoNew[u] = moved.get(this.undoNew[u]!)!;
      }
    }
  }

  /**
   * Before a bulk load of about `bytes` of entries (a replay: the WAL's size is an upper bound),
   * size the arenas once instead of growing them step by step; trim() gives back what is unused.
   * `allocate` makes the arenas (a Prefaulter's, so another thread can touch their pages first).
   */
  reserve(bytes: number, allocate?: (size: number) => Buffer): void {
    const each = Math.ceil((bytes * 1.05) / this.shards.length);
    for (const shard of this.shards) shard.reserve(each, allocate);
  }

  /**
   * Before a bulk load of about `entries` keys (a replay: estimated from the WAL), size the
   * indexes once instead of doubling them step by step (each doubling rehashes everything and
   * touches fresh pages). An estimate too high is given back by trim().
   */
  expectEntries(entries: number): void {
    const each = Math.ceil(entries / this.shards.length);
    for (const shard of this.shards) shard.expectEntries(each);
  }

  /** Release spare room once a bulk load is done: arenas (growth leaves up to half unused), indexes. */
  trim(): void {
    for (let i = 0; i < this.shards.length; i++) this.trimShard(i);
  }

  /** trim() for one shard, so a caller can spread the copies over several event-loop turns. */
  trimShard(i: number): void {
    const shard = this.shards[i]!;
    shard.trim();
    shard.trimIndex();
  }

  /**
   * Goes up each time an arena or an index is made bigger. A value that stopped moving means a
   * bulk load has settled, and its spare room can be given back (see MemoryTrim).
   */
  get growth(): number {
    let n = 0;
    for (const s of this.shards) n += s.grown;
    return n;
  }

  // --- walking the data ------------------------------------------------------------------

  newCursor(): StoreCursor {
    return { shard: 0, offset: 0, generation: this.shards[0]!.generation };
  }

  /**
   * Visit up to `budget` entries from `cursor` on (live values, and tombstones if asked),
   * calling `visit(hash, key, value)` with views (value null for a tombstone). Entries written
   * after the walk began may or may not be visited; an entry moved by compaction may be visited
   * twice (the walk restarts that shard). `visit` may return false to pause the walk after the
   * current entry. `want`, if given, sees each entry's hash first: entries it refuses cost no
   * views (a migration dump wants a quarter of the keys or less). Returns true when the walk is
   * complete. Afterwards readDependency is the newest pending group among the visited entries.
   */
  scan(cursor: StoreCursor, budget: number, visit: (hash: number, key: Buffer, value: Buffer | null) => unknown, tombstones = false, want?: (hash: number) => boolean): boolean {
    this.readDependency = 0;
    let seen = 0;
    while (cursor.shard < this.shards.length) {
      const shard = this.shards[cursor.shard]!;
      if (shard.generation !== cursor.generation) {
        cursor.offset = 0;
        cursor.generation = shard.generation;
      }
      while (cursor.offset < shard.used) {
        if (seen >= budget) return false;
        const off = cursor.offset;
        cursor.offset += shard.size(off);
        seen++;
        const flags = shard.flags(off);
        if ((flags & DEAD) !== 0) continue;
        const isTomb = (flags & TOMB) !== 0;
        if (isTomb && !tombstones) continue;
        // Decide from the stored hash before making the key and value views.
        const hash = shard.u32(off);
        if (want !== undefined && !want(hash)) continue;
        const epoch = shard.pendingEpoch(off);
        if (epoch > this.readDependency) this.readDependency = epoch;
        const more = visit(hash, shard.key(off), isTomb ? null : shard.value(off));
        if (more === false) return false; // the visitor has enough; resume after this entry
      }
      cursor.shard++;
      cursor.offset = 0;
      if (cursor.shard < this.shards.length) cursor.generation = this.shards[cursor.shard]!.generation;
    }
    return true;
  }

  /** Every live key and value (views), for tests and tools. */
  *entries(): IterableIterator<[Buffer, Buffer]> {
    const out: [Buffer, Buffer][] = [];
    const cursor = this.newCursor();
    for (let done = false; !done; ) {
      done = this.scan(cursor, 1 << 30, (_h, k, v) => {
        out.push([k, v!]);
      });
    }
    yield* out;
  }
}
