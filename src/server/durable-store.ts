// The store plus its WAL: every mutation is applied in memory, appended to the current group,
// and remembered for undo until its group is durable. This is the only way data changes on a
// server, so the WAL can never miss a write.
import { ShardedStore } from './store.js';
import { RecordType } from './wal-format.js';
import type { WriteAheadLog } from './wal.js';

/** What a record did to one key, so a failed group can be rolled back in reverse order. */
interface UndoEntry {
  epoch: number;
  key: string;
  before: string | undefined;
  wasTombstoned: boolean;
}

export class DurableStore {
  private undo: UndoEntry[] = [];
  private undoHead = 0;
  /**
   * Keys written by a group that is not durable yet, with that group's epoch. A read of such a
   * key must not be answered before the group is durable, or a reader could see a value that a
   * crash then takes back. Reads of other keys are answered at once.
   */
  private readonly dirty = new Map<string, number>();
  /**
   * The epoch the current command's reply depends on: set by every method below, reset by
   * the caller before each command (see ServerExecutor).
   */
  touched = 0;
  wal!: WriteAheadLog;

  constructor(readonly store: ShardedStore) {}

  /** Replay one WAL record into memory (no WAL append, no undo). */
  replay(type: RecordType, key: string, value: string): void {
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
      case RecordType.Commit:
        return;
    }
  }

  private remember(epoch: number, key: string, before: string | undefined, wasTombstoned: boolean): void {
    this.undo.push({ epoch, key, before, wasTombstoned });
    this.dirty.set(key, epoch);
    if (epoch > this.touched) this.touched = epoch;
  }

  /** The reply depends on everything written so far (e.g. a key count). */
  readAll(): void {
    if (this.wal.lastEpoch > this.touched) this.touched = this.wal.lastEpoch;
  }

  /** Note that the reply depends on `key` as it is now. */
  read(key: string): void {
    if (this.dirty.size === 0) return;
    const epoch = this.dirty.get(key);
    if (epoch !== undefined && epoch > this.touched) this.touched = epoch;
  }

  get(key: string): string | undefined {
    this.read(key);
    return this.store.get(key);
  }

  has(key: string): boolean {
    this.read(key);
    return this.store.has(key);
  }

  isTombstoned(key: string): boolean {
    this.read(key);
    return this.store.isTombstoned(key);
  }

  set(key: string, value: string): number {
    const wasTombstoned = this.store.isTombstoned(key);
    const before = this.store.set(key, value);
    const epoch = this.wal.append(RecordType.Set, key, value);
    this.remember(epoch, key, before, wasTombstoned);
    return epoch;
  }

  /** Returns true when the key existed. */
  delete(key: string): boolean {
    const before = this.store.delete(key);
    if (before === undefined) {
      this.read(key); // "not found" may rest on a delete that is not durable yet
      return false;
    }
    const epoch = this.wal.append(RecordType.Delete, key);
    this.remember(epoch, key, before, false);
    return true;
  }

  /** Delete and leave a tombstone (always logged, even when the key was absent). */
  tombstone(key: string): boolean {
    const wasTombstoned = this.store.isTombstoned(key);
    const before = this.store.tombstone(key);
    const epoch = this.wal.append(RecordType.Tombstone, key);
    this.remember(epoch, key, before, wasTombstoned);
    return before !== undefined;
  }

  /** Insert only if the key is absent and not tombstoned: a migrating copy never overwrites newer data. */
  importIfAbsent(key: string, value: string): boolean {
    if (this.store.has(key) || this.store.isTombstoned(key)) {
      this.read(key);
      return false;
    }
    this.set(key, value);
    return true;
  }

  clearTombstones(): void {
    if (this.store.tombstoneCount === 0) return;
    this.store.clearTombstones();
    this.touched = Math.max(this.touched, this.wal.append(RecordType.ClearTombstones, ''));
    // Not undoable: tombstones only block stale imports, and the move they guarded is over.
  }

  /** Drop all data and start an empty log. Not undoable; a failed reset reports ERR and is retried. */
  reset(): number {
    this.store.clear();
    this.undo = [];
    this.undoHead = 0;
    this.dirty.clear();
    const epoch = this.wal.reset();
    this.touched = Math.max(this.touched, epoch);
    return epoch;
  }

  /** Called when groups up to `epoch` are durable: their undo entries are no longer needed. */
  settled(epoch: number): void {
    const undo = this.undo;
    const dirty = this.dirty;
    let head = this.undoHead;
    while (head < undo.length && undo[head]!.epoch <= epoch) {
      const key = undo[head]!.key;
      if ((dirty.get(key) ?? Infinity) <= epoch) dirty.delete(key);
      head++;
    }
    if (head === undo.length) {
      this.undo = [];
      this.undoHead = 0;
    } else if (head > 4096 && head > undo.length / 2) {
      this.undo = undo.slice(head);
      this.undoHead = 0;
    } else {
      this.undoHead = head;
    }
  }

  /** Groups up to `epoch` failed to reach the disk: put memory back as it was before them. */
  rollBack(epoch: number): number {
    const undo = this.undo;
    let undone = 0;
    while (undo.length > this.undoHead) {
      const entry = undo[undo.length - 1]!;
      if (entry.epoch > epoch) break;
      undo.pop();
      this.dirty.delete(entry.key);
      if (entry.before !== undefined) {
        this.store.set(entry.key, entry.before); // a live key is never tombstoned
      } else if (entry.wasTombstoned) {
        this.store.tombstone(entry.key);
      } else {
        this.store.delete(entry.key);
        this.store.untombstone(entry.key);
      }
      undone++;
    }
    return undone;
  }
}
