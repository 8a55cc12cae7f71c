// Giving memory back once a bulk load has settled.
//
// A bulk load (say `redis-cli --pipe` of 1M SETs) leaves spare room that nothing ever returns,
// because an idle server does no work that would return it:
//
// - V8's young generation. Under a stream of requests V8 grows its two semi-spaces to 16 MiB
//   each, and shrinks them only at a GC that sees a low allocation rate. An idle server
//   allocates nothing, so that GC never comes. This was most of the excess: after loading
//   1M x 100 B, RSS stayed at 247-254 MB; with this, it is 206-209 MB from ~8 s after the load
//   on (redis-server: 190-194 MB).
// - Arenas and indexes doubled as they grow: up to half unused. Pages never written cost no
//   RSS, so this is little (measured with 1.5x arena growth: after the 1M load, ~14 MB spare
//   of which ~4 MB resident),
//   but trimming is cheap and leaves the store as a replay leaves it.
//
// What stays: glibc keeps ~15 MB of freed early arenas and indexes in its brk heap (free but
// resident; each growth frees an mmapped arena, which raises glibc's mmap threshold, so
// later mid-size allocations come from the brk heap). Only malloc_trim() or a fixed threshold
// (GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072: ~8 MB less here) would return it.
//
// So once the store has stopped growing and the server is quiet: trim the shards (one per
// event-loop turn, so no single copy blocks for long), run a full GC (frees the old arenas and
// closes V8's current allocation sample), then, once V8's 5 s throughput window has passed
// quietly, a second one: with the allocation rate now measured as low, V8 shrinks the
// semi-spaces. The first alone is not enough, because a GC right after a load still counts the
// load's allocations in its rate and keeps the semi-spaces at full size. Each is a full GC of a
// heap that holds little (the data lives in arenas outside it): about 5-20 ms, once per load.
//
// Under traffic this stays out of the way: V8 collects on its own then, and a low but steady
// rate lets it shrink the young generation by itself at its next scavenge.
import v8 from 'node:v8';
import vm from 'node:vm';
import type { ShardedStore } from './store.js';

/** How often to look for a settled load. */
const CHECK_MS = 1000;
/** Fewer commands than this per second count as quiet (a health-check PING is no load). */
const QUIET_COMMANDS_PER_SECOND = 100;
/** Past V8's allocation-throughput window (5 s), so the second GC sees a low rate. */
const SECOND_GC_DELAY_MS = 6000;

/** Runs a full GC. */
export type GarbageCollector = () => void;

let hiddenGc: NodeJS.GCFunction | undefined;

/**
 * V8's gc(). Node hides it unless started with --expose-gc; a context created while the flag is
 * set gets it (jest's leak detector reaches it the same way). Undefined if that fails.
 */
export function v8GarbageCollector(): GarbageCollector | undefined {
  let gc = globalThis.gc ?? hiddenGc;
  if (gc === undefined) {
    try {
      v8.setFlagsFromString('--expose-gc');
      gc = hiddenGc = vm.runInNewContext('gc') as NodeJS.GCFunction | undefined;
    } catch {
      gc = undefined;
    } finally {
      v8.setFlagsFromString('--no-expose-gc');
    }
  }
  if (typeof gc !== 'function') return undefined;
  const collect = gc;
  return () => collect();
}

export class MemoryTrim {
  private readonly timer: NodeJS.Timeout;
  private secondGc: NodeJS.Timeout | undefined;
  private lastGrowth: number;
  private lastCommands: number;
  /** The store grew since the last trim. */
  private pending = false;
  private trimming = false;
  private stopped = false;

  /** `commands`: how many commands the server has served so far (only differences matter). */
  constructor(
    private readonly store: ShardedStore,
    private readonly commands: () => number,
    private readonly collect: GarbageCollector | undefined = v8GarbageCollector(),
    private readonly checkMs = CHECK_MS,
  ) {
    this.lastGrowth = store.growth;
    this.lastCommands = commands();
    this.timer = setInterval(() => this.check(), checkMs).unref();
  }

  /** Start even without growth (e.g. after a replay, whose allocations filled the young generation). */
  expectSettling(): void {
    this.pending = true;
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    if (this.secondGc !== undefined) clearTimeout(this.secondGc);
  }

  private quietSince(before: number, ms: number): boolean {
    return this.commands() - before < (QUIET_COMMANDS_PER_SECOND * ms) / 1000;
  }

  private check(): void {
    const growth = this.store.growth;
    const commands = this.lastCommands;
    this.lastCommands = this.commands();
    if (growth !== this.lastGrowth) {
      this.lastGrowth = growth;
      this.pending = true;
      return;
    }
    if (!this.pending || this.trimming || !this.quietSince(commands, this.checkMs)) return;
    this.pending = false;
    this.trimming = true;
    if (this.secondGc !== undefined) clearTimeout(this.secondGc);
    this.trimFrom(0);
  }

  private trimFrom(shard: number): void {
    if (this.stopped) return;
    if (shard < this.store.shardCount) {
      this.store.trimShard(shard);
      setImmediate(() => this.trimFrom(shard + 1));
      return;
    }
    this.trimming = false;
    if (this.collect === undefined) return;
    this.collect();
    const before = this.commands();
    this.secondGc = setTimeout(() => {
      this.secondGc = undefined;
      if (this.quietSince(before, SECOND_GC_DELAY_MS)) this.collect?.();
    }, SECOND_GC_DELAY_MS).unref();
  }
}
