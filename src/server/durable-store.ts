// The store plus its WAL: every mutation is appended to the current WAL group and applied in
// memory, remembering how to undo it until the group is durable. This is the only way data
// changes on a server, so the WAL can never miss a write.
//
// `touched` collects, per command, the WAL epoch its reply depends on: a write's own group,
// or for a read, the pending group that last wrote what was read. The server holds the reply
// until that epoch is durable (ClientConnection.dependsOn).
import { KeyState, type ShardedStore } from './store.js';
import { HashIntervals } from './hash-intervals.js';
import { RecordType } from './wal-format.js';
import type { WriteAheadLog } from './wal.js';

export class DurableStore {
  touched = 0;
  wal!: WriteAheadLog;

  constructor(readonly store: ShardedStore) {}

  /** Replay one WAL record into memory (no WAL append, no undo). */
  replay(type: RecordType, key: Buffer, value: Buffer): void {
    const store = this.store;
    switch (type) {
      case RecordType.Set:
        store.set(key, value);
        return;
      case RecordType.Delete:
        store.delete(key);
        return;
      case RecordType.Tombstone:
        store.tombstone(key);
        return;
      case RecordType.ClearTombstones:
        store.clearTombstones();
        return;
      case RecordType.DropRanges:
        store.dropHashes(HashIntervals.decode(value));
        return;
      case RecordType.Commit:
        return;
    }
  }

  /** The reply being built depends on WAL group `epoch` (e.g. the newest that wrote a dumped entry). */
  depend(epoch: number): void {
    if (epoch > this.touched) this.touched = epoch;
  }

  get(key: Buffer): Buffer | undefined {
    const value = this.store.get(key);
    this.depend(this.store.readDependency);
    return value;
  }

  state(key: Buffer): KeyState {
    const state = this.store.state(key);
    this.depend(this.store.readDependency);
    return state;
  }

  has(key: Buffer): boolean {
    return this.state(key) === KeyState.Live;
  }

  isTombstoned(key: Buffer): boolean {
    return this.state(key) === KeyState.Tombstoned;
  }

  /** The reply depends on everything written so far (e.g. a key count). */
  readAll(): void {
    this.depend(this.wal.lastEpoch);
  }

  set(key: Buffer, value: Buffer): void {
    const epoch = this.wal.append(RecordType.Set, key, value);
    this.store.set(key, value, epoch);
    this.depend(epoch);
  }

  /** Returns true when the key existed. Only a real delete is logged. */
  delete(key: Buffer): boolean {
    if (this.state(key) !== KeyState.Live) return false; // may rest on a pending delete: state() noted it
    const epoch = this.wal.append(RecordType.Delete, key, null);
    this.store.delete(key, epoch);
    this.depend(epoch);
    return true;
  }

  /** Delete and leave a tombstone (always logged). Returns true when a live value was there. */
  tombstone(key: Buffer): boolean {
    const epoch = this.wal.append(RecordType.Tombstone, key, null);
    const had = this.store.tombstone(key, epoch);
    this.depend(epoch);
    return had;
  }

  /** Insert only if the key is absent and not tombstoned: a migrating copy never overwrites newer data. */
  importIfAbsent(key: Buffer, value: Buffer): boolean {
    const epoch = this.wal.fillingEpoch;
    if (!this.store.insertIfAbsent(key, value, epoch)) {
      // The refusal rests on what is there: if that write's group fails, so must this reply.
      this.depend(this.store.readDependency);
      return false;
    }
    try {
      this.wal.append(RecordType.Set, key, value);
    } catch (err) {
      this.store.delete(key); // the WAL refused it (closing): memory must not keep it either
      throw err;
    }
    this.depend(epoch);
    return true;
  }

  /**
   * Delete every live value in `ranges` (tombstones stay), with one WAL record however many
   * keys that is: a source dropping the ranges it moved away. Returns how many were deleted.
   */
  dropRanges(ranges: HashIntervals): number {
    if (ranges.count === 0) return 0;
    const epoch = this.wal.append(RecordType.DropRanges, null, ranges.encode());
    const dropped = this.store.dropHashes(ranges, epoch);
    this.depend(epoch);
    return dropped;
  }

  /** Forget all tombstones (not undoable: the move they guarded is over). */
  clearTombstones(): void {
    if (this.store.tombstoneCount === 0) return;
    this.store.clearTombstones();
    this.depend(this.wal.append(RecordType.ClearTombstones, null, null));
  }

  /** Drop all data and start an empty log. Not undoable; a failed reset reports ERR and is retried. */
  reset(): number {
    this.store.clear();
    const epoch = this.wal.reset();
    this.depend(epoch);
    return epoch;
  }

  /** Groups up to `epoch` are durable. */
  settled(epoch: number): void {
    this.store.settle(epoch);
  }

  /** Groups up to `epoch` failed to reach the disk: put memory back as it was before them. */
  rollBack(epoch: number): number {
    return this.store.rollBack(epoch);
  }
}
