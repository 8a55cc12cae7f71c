// When to rewrite the WAL, and what goes into the rewrite.
//
// An append-only log grows with every write, live or not. Once it is larger than `minBytes`
// and more than `ratio` times what the live data would take as records, it is rewritten online
// (WriteAheadLog.rewrite) as one SET per live key and one TOMBSTONE per tombstone. The check
// runs after each durable group and costs two comparisons.
//
// The default floor is small (512 KiB, where Redis uses 64 MiB for its fork-based rewrite):
// our rewrite needs no fork and copies only the live data, so a small floor keeps the log
// within a few times the live data even for small datasets, at a cost proportional to them.
import type { Logger } from '../common/logger.js';
import type { ShardedStore } from './store.js';
import type { WriteAheadLog } from './wal.js';
import { RECORD_HEADER, RecordType } from './wal-format.js';

export interface CompactionPolicy {
  /** Never rewrite a log smaller than this. */
  minBytes: number;
  /** Rewrite when the log is more than this many times the live data. */
  ratio: number;
}

export const DEFAULT_COMPACTION: CompactionPolicy = { minBytes: 512 * 1024, ratio: 2 };

/** Entries copied into the rewrite per step: a few milliseconds of work. */
const SNAPSHOT_STEP = 20_000;

export class Compactor {
  private running: Promise<void> | undefined;

  constructor(
    private readonly wal: WriteAheadLog,
    private readonly store: ShardedStore,
    private readonly policy: CompactionPolicy,
    private readonly log: Logger,
  ) {}

  /** Size the live data would take as log records. */
  liveLogBytes(): number {
    return this.store.bytes + RECORD_HEADER * (this.store.size + this.store.tombstoneCount);
  }

  shouldRun(): boolean {
    const size = this.wal.size;
    return size > this.policy.minBytes && size > this.policy.ratio * this.liveLogBytes();
  }

  /** Start a rewrite if the policy says so and none is running. */
  maybeStart(): void {
    if (this.running === undefined && this.shouldRun()) this.start();
  }

  /** Start a rewrite now (also used by the BGREWRITEAOF command); resolves when it ends. */
  start(): Promise<void> {
    this.running ??= this.run().finally(() => (this.running = undefined));
    return this.running;
  }

  get inProgress(): boolean {
    return this.running !== undefined;
  }

  private async run(): Promise<void> {
    const store = this.store;
    const cursor = store.newCursor();
    // Each call adds up to SNAPSHOT_STEP entries: one SET per live key, one TOMBSTONE per tombstone.
    const result = await this.wal.rewrite((batch) =>
      store.scan(cursor, SNAPSHOT_STEP, (_hash, key, value) => batch.append(value === null ? RecordType.Tombstone : RecordType.Set, key, value), true),
    );
    if (result.ok) {
      this.log.info({ file: this.wal.file, before: result.before, after: result.after, ms: this.wal.lastRewriteMs }, 'WAL compacted');
    } else {
      this.log.warn({ file: this.wal.file, reason: result.reason }, 'WAL compaction abandoned; the log is unchanged and it will be tried again');
    }
  }
}
