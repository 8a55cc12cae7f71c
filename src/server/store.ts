// The in-memory data: several Maps ("shards"), the key's hash choosing the Map.
//
// Why shards: a single V8 Map tops out at 2^24 entries, so one server could not hold more than
// ~16.7M keys. With 16 shards the ceiling is ~268M. Node is single-threaded, so unlike the
// original C++ design the shards need no mutexes: they exist for capacity, not concurrency.
//
// Keys and values are latin1 strings: one char per byte, so any byte sequence round-trips, and
// V8 stores them as compact one-byte strings (no Buffer object and backing store per value).
//
// Tombstones are the other half of online migration: while a range moves, a DEL on the new
// owner leaves a tombstone so that a stale copy arriving from the old owner cannot bring the
// key back (see docs/rebalancing.md). They are cleared when the move completes.

export class ShardedStore {
  private readonly shards: Map<string, string>[];
  private readonly mask: number;
  private readonly tombstones = new Set<string>();
  private count = 0;
  /** Bytes of live keys and values (plus tombstoned keys): what a compacted log must hold. */
  private liveBytes = 0;

  constructor(shardCount = 16) {
    if (!Number.isInteger(shardCount) || shardCount < 1 || shardCount > 4096 || (shardCount & (shardCount - 1)) !== 0) {
      throw new RangeError(`shard count must be a power of two from 1 to 4096, got ${shardCount}`);
    }
    this.mask = shardCount - 1;
    this.shards = Array.from({ length: shardCount }, () => new Map<string, string>());
  }

  get shardCount(): number {
    return this.shards.length;
  }

  get size(): number {
    return this.count;
  }

  get bytes(): number {
    return this.liveBytes;
  }

  get tombstoneCount(): number {
    return this.tombstones.size;
  }

  /** FNV-1a over the key's bytes: cheap, inline, and spreads keys evenly over the shards. */
  private shard(key: string): Map<string, string> {
    let h = 0x811c9dc5;
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
    return this.shards[(h >>> 0) & this.mask]!;
  }

  get(key: string): string | undefined {
    return this.shard(key).get(key);
  }

  has(key: string): boolean {
    return this.shard(key).has(key);
  }

  isTombstoned(key: string): boolean {
    return this.tombstones.size > 0 && this.tombstones.has(key);
  }

  /** Returns the previous value (for undo on a failed fsync). */
  set(key: string, value: string): string | undefined {
    const shard = this.shard(key);
    const before = shard.get(key);
    shard.set(key, value);
    if (before === undefined) {
      this.count++;
      this.liveBytes += key.length + value.length;
    } else {
      this.liveBytes += value.length - before.length;
    }
    if (this.tombstones.size > 0 && this.tombstones.delete(key)) this.liveBytes -= key.length;
    return before;
  }

  /** Returns the removed value, if any. */
  delete(key: string): string | undefined {
    const shard = this.shard(key);
    const before = shard.get(key);
    if (before !== undefined) {
      shard.delete(key);
      this.count--;
      this.liveBytes -= key.length + before.length;
    }
    return before;
  }

  /** Delete and remember that the key was deleted, so a migrating copy cannot revive it. */
  tombstone(key: string): string | undefined {
    if (!this.tombstones.has(key)) {
      this.tombstones.add(key);
      this.liveBytes += key.length;
    }
    return this.delete(key);
  }

  untombstone(key: string): void {
    if (this.tombstones.delete(key)) this.liveBytes -= key.length;
  }

  clearTombstones(): void {
    for (const key of this.tombstones) this.liveBytes -= key.length;
    this.tombstones.clear();
  }

  tombstoned(): IterableIterator<string> {
    return this.tombstones.values();
  }

  clear(): void {
    for (const shard of this.shards) shard.clear();
    this.tombstones.clear();
    this.count = 0;
    this.liveBytes = 0;
  }

  /** Live iterators over each shard; Map iterators tolerate deletes while they run. */
  shardEntries(index: number): IterableIterator<[string, string]> {
    return this.shards[index]!.entries();
  }

  *keys(): IterableIterator<string> {
    for (const shard of this.shards) yield* shard.keys();
  }
}
