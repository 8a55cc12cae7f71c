// A Jepsen-style test of online rebalancing (docs/rebalancing.md, guarantees 1-4 and 7).
//
// Three servers and a proxy; two servers are members and hold 50,000 "stable" keys (~100 bytes
// each). Then, through the proxy, on their own sockets and all at once:
//  - WRITERS clients, each owning a disjoint set of keys, loop SET <key> <unique value> / DEL <key>
//    at random (one operation at a time per key), recording every operation as acked (OK,
//    DELETED, NOT_FOUND) or unknown (an error reply, a timeout, a dropped connection);
//  - READERS clients GET random stable keys (which never change) and random writer keys;
//  - as soon as each move is seen running, DELETERS clients delete 400 keys written before the
//    load, once each (a delete that beats the copy of its key must not be undone by it).
// While they run, the third server is ADDed and one of the original two REMOVEd. Afterwards a
// checker replays the histories:
//  1. every writer key's final value is the effect of its last acked operation (a SET's value, or
//     absent after a DEL), or of an unknown operation that came after it: nothing else;
//  2. so no deleted key comes back, and no acked write is lost or overwritten by a stale copy;
//  3. every stable-key GET answered exactly its value (no NOT_FOUND, no wrong value, no error);
//  4. no read of a writer key went back in time: it returned the effect of the last operation
//     acked before the read was sent, or of a later one already sent;
//  5. every DEL's reply (DELETED / NOT_FOUND) agrees with the key's history.
// During each move, MIGRATION must report it running (kind, node, sources, targets, keys
// moved/total), and a second ADD/REMOVE on another connection must be refused with
// `ERR membership change in progress`. The p99 latency of client operations during the moves is
// measured and printed.
//
// A second, deterministic test pins down one history the checker can only catch by chance: a
// key deleted while it moves must read as deleted, and a second DEL of it must answer NOT_FOUND.
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, dbsize, nodeAddress, startCluster, TextClient, waitFor, type ProcHandle } from './harness.js';
import { bulkValue, getAll, migration, percentile, preload, serverSizes, sum, type MigrationStatus } from './support-rebalance.js';
import { seededRandom as seeded } from '../support/seeded-random.js';

afterEach(cleanup);

const STABLE_KEYS = 50_000;
const WRITERS = 8;
const KEYS_PER_WRITER = 40;
const READERS = 4;
/** A reply slower than this is an unknown outcome (the connection is dropped and the key retired). */
const OP_TIMEOUT_MS = 10_000;
/**
 * Bound on the p99 latency of client requests during the moves. It only catches a hang: the
 * 50 ms target is measured by `npm run bench:rebalance` on a quiet machine, not asserted here,
 * where other suites share the 2 cores. Migration batches travel on their own connections (server
 * to server) and each source has one IMPORT in flight; with this file run alone, the p99 during
 * the moves was 76 ms for SET/DEL and 147 ms for 8-GET pipelines (with 2,000-key batches on the
 * clients' connections, an early design: 0.4-1.9 s). Every run prints the figures.
 */
const P99_BOUND_MS = 5_000;

const stableKey = (i: number): string => `stable:${i}`;
const stable = new Map(Array.from({ length: STABLE_KEYS }, (_, i) => [stableKey(i), bulkValue('stable', i)]));


interface Op {
  key: string;
  /** Position in the key's history (operations on one key are strictly sequential). */
  index: number;
  kind: 'set' | 'del';
  /** For a SET: the unique value written. */
  value: string;
  invokedAt: number;
  completedAt: number;
  outcome: 'ack' | 'unknown';
  reply: string;
}

interface Read {
  key: string;
  invokedAt: number;
  completedAt: number;
  reply: string;
}

/** What the cluster is doing, shared by every client loop. */
interface Load {
  running: boolean;
  /** One sample per writer request (a SET or DEL), and per reader pipeline of READ_BATCH GETs. */
  writeLatencies: Sample[];
  readLatencies: Sample[];
}

interface Sample {
  /** When the request was sent (performance.now()). */
  at: number;
  ms: number;
}

/** Send one request; any failure to get a reply in time is returned as a string starting with `!`. */
async function request(client: TextClient, line: string): Promise<string> {
  try {
    return await client.send(line, OP_TIMEOUT_MS);
  } catch (err) {
    return `!${(err as Error).message}`;
  }
}

/** Operations a writer keeps in flight on its connection, each on its own subset of its keys. */
const LANES = 4;

/**
 * One client connection and its own keys. The keys are split into LANES subsets; each lane
 * sends one operation at a time on its subset, so the operations on any one key are strictly
 * sequential (what the checker relies on) while the connection carries up to LANES at once.
 */
class Writer {
  readonly history = new Map<string, Op[]>();
  /** Keys no longer written after an operation whose request may still be in flight. */
  readonly retired = new Set<string>();
  acked = 0;
  private seq = 0;
  private client: Promise<TextClient>;

  constructor(
    readonly id: number,
    readonly keys: readonly string[],
    private readonly port: number,
    private readonly random: () => number,
  ) {
    for (const k of keys) this.history.set(k, []);
    this.client = TextClient.connect(port);
  }

  async run(load: Load): Promise<void> {
    const lanes = Array.from({ length: LANES }, (_, lane) => this.keys.filter((_, i) => i % LANES === lane));
    await Promise.all(lanes.map((keys) => this.lane(keys, load)));
    (await this.client).close();
  }

  private async lane(keys: readonly string[], load: Load): Promise<void> {
    while (load.running) {
      const live = keys.filter((k) => !this.retired.has(k));
      if (live.length === 0) return;
      const key = live[Math.floor(this.random() * live.length)]!;
      const ops = this.history.get(key)!;
      const kind = this.random() < 0.7 ? 'set' : 'del';
      const value = `w${this.id}.${key}.s${this.seq++}`;
      const client = await this.client;
      const invokedAt = performance.now();
      const reply = await request(client, kind === 'set' ? `SET ${key} ${value}` : `DEL ${key}`);
      const completedAt = performance.now();
      const acked = kind === 'set' ? reply === 'OK' : reply === 'DELETED' || reply === 'NOT_FOUND';
      ops.push({ key, index: ops.length, kind, value: kind === 'set' ? value : '', invokedAt, completedAt, outcome: acked ? 'ack' : 'unknown', reply });
      load.writeLatencies.push({ at: invokedAt, ms: completedAt - invokedAt });
      if (acked) this.acked++;
      if (reply.startsWith('!')) {
        // No reply: the request may still be applied later, after anything we send next, so
        // this key's history ends here; the checker allows its effect as a possible final state.
        this.retired.add(key);
        client.socket.destroy();
        if ((await this.client) === client) this.client = TextClient.connect(this.port);
      }
    }
  }
}

/** Keys written before the load and deleted, once each, while one move runs. */
const DOOMED_PER_MOVE = 400;
const DELETERS = 4;
/** DELs a deleter pipelines per round trip. */
const DEL_BATCH = 10;

const doomedKeys = (move: string): string[] => Array.from({ length: DOOMED_PER_MOVE }, (_, i) => `jd${move}:${i}`);
const doomedValue = (key: string): string => bulkValue(key, 0);

/**
 * Deletes keys that were written (acked) before the load, starting the moment a move is seen
 * running. Every one that moves and is deleted before its batch is copied must stay deleted:
 * the tombstone has to stop the copy (guarantee 2). Its history is [SET (the preload), DEL].
 */
class Deleter {
  readonly history = new Map<string, Op[]>();

  constructor(
    readonly keys: readonly string[],
    private readonly port: number,
    preloadedAt: number,
  ) {
    for (const key of keys) {
      this.history.set(key, [{ key, index: 0, kind: 'set', value: doomedValue(key), invokedAt: 0, completedAt: preloadedAt, outcome: 'ack', reply: 'OK' }]);
    }
  }

  async run(): Promise<void> {
    const client = await TextClient.connect(this.port);
    for (let i = 0; i < this.keys.length; i += DEL_BATCH) {
      const chunk = this.keys.slice(i, i + DEL_BATCH);
      const invokedAt = performance.now();
      let replies: string[];
      try {
        replies = await client.pipeline(chunk.map((k) => `DEL ${k}`), OP_TIMEOUT_MS);
      } catch (err) {
        replies = chunk.map(() => `!${(err as Error).message}`);
      }
      const completedAt = performance.now();
      chunk.forEach((key, j) => {
        const reply = replies[j]!;
        const acked = reply === 'DELETED' || reply === 'NOT_FOUND';
        this.history.get(key)!.push({ key, index: 1, kind: 'del', value: '', invokedAt, completedAt, outcome: acked ? 'ack' : 'unknown', reply });
      });
      if (replies[0]!.startsWith('!')) break; // the rest keep their preloaded value, and are checked for it
    }
    client.close();
  }
}

/** GETs a reader pipelines per round trip. */
const READ_BATCH = 8;

class Reader {
  stableReads = 0;
  readonly stableWrong: string[] = [];
  readonly writerReads: Read[] = [];

  constructor(
    private readonly port: number,
    private readonly writerKeys: readonly string[],
    private readonly random: () => number,
  ) {}

  async run(load: Load): Promise<void> {
    let client = await TextClient.connect(this.port);
    while (load.running) {
      const keys = Array.from({ length: READ_BATCH }, () =>
        this.random() < 0.3 ? this.writerKeys[Math.floor(this.random() * this.writerKeys.length)]! : stableKey(Math.floor(this.random() * STABLE_KEYS)),
      );
      const invokedAt = performance.now();
      let replies: string[];
      try {
        replies = await client.pipeline(keys.map((k) => `GET ${k}`), OP_TIMEOUT_MS);
      } catch (err) {
        replies = keys.map(() => `!${(err as Error).message}`);
      }
      // Each GET of the pipeline was sent no earlier and answered no later than these bounds.
      const completedAt = performance.now();
      load.readLatencies.push({ at: invokedAt, ms: completedAt - invokedAt });
      keys.forEach((key, i) => {
        const reply = replies[i]!;
        if (key.startsWith('jw')) this.writerReads.push({ key, invokedAt, completedAt, reply });
        else {
          this.stableReads++;
          if (reply !== `VALUE ${stable.get(key)}`) this.stableWrong.push(`GET ${key} -> ${reply.slice(0, 120)} at ${Math.round(invokedAt)} ms`);
        }
      });
      if (replies[0]!.startsWith('!')) {
        client.socket.destroy();
        client = await TextClient.connect(this.port);
      }
    }
    client.close();
  }
}

/** The state a GET should show after `op`: `VALUE <v>` or `NOT_FOUND`. */
const effect = (op: Op | undefined): string => (op === undefined || op.kind === 'del' ? 'NOT_FOUND' : `VALUE ${op.value}`);

/** Check 1: the final reply for a key against its history; returns a complaint or undefined. */
function checkFinal(ops: readonly Op[], final: string): string | undefined {
  let last = -1;
  for (const op of ops) if (op.outcome === 'ack') last = op.index;
  const allowed = new Set([effect(last >= 0 ? ops[last] : undefined)]);
  for (const op of ops.slice(last + 1)) allowed.add(effect(op)); // all unknown by construction
  if (allowed.has(final)) return undefined;
  const tail = ops.slice(Math.max(0, last - 2)).map((o) => `#${o.index} ${o.kind.toUpperCase()}${o.kind === 'set' ? ` ${o.value}` : ''} -> ${o.outcome} (${o.reply.slice(0, 60)})`);
  return `final ${final.slice(0, 80)}; allowed ${[...allowed].join(' | ')}; history tail: ${tail.join('; ')}`;
}

/**
 * Check 4 for one read of a writer key: the result must come from the last operation acked
 * before the read was sent (or the initial absence, if none), or from a later one sent before
 * the read's reply arrived.
 */
function checkRead(ops: readonly Op[], read: Read, byValue: ReadonlyMap<string, Op>): string | undefined {
  if (read.reply.startsWith('!') || read.reply.startsWith('ERR')) return `GET ${read.key} failed: ${read.reply.slice(0, 120)}`;
  let floor = -1; // index of the last op acked before the read was sent
  for (const op of ops) if (op.outcome === 'ack' && op.completedAt < read.invokedAt) floor = Math.max(floor, op.index);
  if (read.reply.startsWith('VALUE ')) {
    const op = byValue.get(read.reply.slice(6));
    if (op === undefined || op.key !== read.key) return `GET ${read.key} -> ${read.reply}: no SET of this key wrote that value`;
    if (op.index < floor) return `GET ${read.key} -> stale ${read.reply} from #${op.index}; #${floor} (${ops[floor]!.kind}) was acked before the read was sent`;
    if (op.invokedAt > read.completedAt) return `GET ${read.key} -> ${read.reply} before its SET was sent`;
    return undefined;
  }
  if (read.reply === 'NOT_FOUND') {
    if (floor < 0) return undefined; // nothing acked yet: still absent is fine
    const ok = ops.some((op) => op.kind === 'del' && op.index >= floor && op.invokedAt < read.completedAt);
    return ok ? undefined : `GET ${read.key} -> NOT_FOUND, but #${floor} (SET ${ops[floor]!.value}) was acked before the read and no DEL was sent since`;
  }
  return `GET ${read.key} -> unexpected ${read.reply.slice(0, 120)}`;
}

/** Check 5: a DEL's reply says whether the key existed, which its acked history determines. */
function checkDelReplies(ops: readonly Op[]): string[] {
  const out: string[] = [];
  let known = true; // is `exists` certain? (not after an unknown operation)
  let exists = false;
  for (const op of ops) {
    if (op.outcome !== 'ack') {
      known = false;
      continue;
    }
    if (op.kind === 'del') {
      if (known && op.reply !== (exists ? 'DELETED' : 'NOT_FOUND')) {
        const before = ops.slice(Math.max(0, op.index - 3), op.index).map((o) => `#${o.index} ${o.kind.toUpperCase()} -> ${o.reply} (${Math.round(o.invokedAt)}-${Math.round(o.completedAt)} ms)`);
        out.push(`${op.key} #${op.index}: DEL replied ${op.reply} at ${Math.round(op.invokedAt)}-${Math.round(op.completedAt)} ms, but the key ${exists ? 'existed' : 'did not exist'}; before: ${before.join('; ')}`);
      }
      exists = false;
    } else exists = true;
    known = true;
  }
  return out;
}

interface MoveReport {
  reply: string;
  /** MIGRATION replies that said this move was running, in order. */
  running: MigrationStatus[];
  /** Replies to a second ADD and REMOVE sent on another connection while it ran. */
  refusals: string[];
  after: MigrationStatus;
}

/**
 * Run ADD/REMOVE `command` on `admin` while a monitor connection polls MIGRATION until the
 * reply arrives. The first time MIGRATION says the move is running, `second` (another ADD and
 * REMOVE) goes out on a third connection, and `onRunning` is called. Returns what was seen; the
 * caller asserts.
 */
async function moveWhileWatching(proxyPort: number, admin: TextClient, command: string, second: readonly string[], onRunning: () => void): Promise<MoveReport> {
  const monitor = await TextClient.connect(proxyPort);
  const other = await TextClient.connect(proxyPort);
  const node = command.split(' ')[1]!;
  let replied = false;
  const replyP = admin.send(command, 60_000).finally(() => (replied = true));
  replyP.catch(() => {}); // awaited below; a rejection must not go unhandled meanwhile
  const running: MigrationStatus[] = [];
  let refusals: Promise<string[]> | undefined;
  while (!replied) {
    const m = await migration(monitor);
    if (m.state === 'running' && m.node === node) {
      running.push(m);
      if (refusals === undefined) {
        refusals = other.pipeline(second, 10_000);
        onRunning();
      }
    }
    await new Promise((r) => setTimeout(r, 10)); // poll pacing, not a wait for a condition
  }
  const reply = await replyP;
  const after = await migration(monitor);
  monitor.close();
  other.close();
  return { reply, running, refusals: refusals === undefined ? ['(the move was never seen running)'] : await refusals, after };
}

describe('rebalancing under a Jepsen-style workload', () => {
  it('ADD then REMOVE with concurrent writers and readers loses no acked write, revives no delete, misses no read', async () => {
    // --request-timeout 10000: with the default 2 s, one slow fsync on a loaded 2-core machine
    // drops a backend connection, which turns into unknown outcomes and an interrupted move.
    const { proxy, servers } = await startCluster(3, ['--request-timeout', '10000']);
    const [s1, s2, s3] = servers as [ProcHandle, ProcHandle, ProcHandle];
    const admin = await TextClient.connect(proxy.port);
    expect(await admin.send(`ADD ${nodeAddress(s1)}`)).toMatch(/^OK added /);
    expect(await admin.send(`ADD ${nodeAddress(s2)}`)).toMatch(/^OK added /);
    const doomed = { add: doomedKeys('A'), remove: doomedKeys('R') };
    await preload(proxy.port, new Map([...stable, ...[...doomed.add, ...doomed.remove].map((k) => [k, doomedValue(k)] as const)]));
    const preloadedAt = performance.now();
    expect(await admin.send('DBSIZE')).toBe(String(STABLE_KEYS + 2 * DOOMED_PER_MOVE));

    const seed = Date.now() >>> 0;
    console.log(`jepsen-rebalance: seed ${seed}`);
    const random = seeded(seed);
    const writers = Array.from({ length: WRITERS }, (_, w) => new Writer(w, Array.from({ length: KEYS_PER_WRITER }, (_, j) => `jw${w}:k${j}`), proxy.port, seeded(Math.floor(random() * 2 ** 32))));
    const writerKeys = writers.flatMap((w) => w.keys);
    const readers = Array.from({ length: READERS }, () => new Reader(proxy.port, writerKeys, seeded(Math.floor(random() * 2 ** 32))));
    const deleters = (keys: readonly string[]): Deleter[] => Array.from({ length: DELETERS }, (_, d) => new Deleter(keys.filter((_, i) => i % DELETERS === d), proxy.port, preloadedAt));
    const addDeleters = deleters(doomed.add);
    const removeDeleters = deleters(doomed.remove);
    const load: Load = { running: true, writeLatencies: [], readLatencies: [] };
    const loops = [...writers.map((w) => w.run(load)), ...readers.map((r) => r.run(load))];
    const stopLoad = async (): Promise<void> => {
      load.running = false;
      await Promise.all(loops);
    };
    /** Start `group` deleting (once the move is seen running); its runs join `loops`. */
    const startDeleting = (group: readonly Deleter[]) => () => loops.push(...group.map((d) => d.run()));

    let moveStart = 0;
    let moveEnd = 0;
    const windows: string[] = []; // when each move ran, for failure messages
    let add: MoveReport;
    let remove: MoveReport;
    try {
      const everyWriterAcked = (n: number) => () => (writers.every((w) => w.acked >= n) ? true : undefined);
      await waitFor('every writer to get 30 acks before the moves', 20_000, everyWriterAcked(30));

      moveStart = performance.now();
      add = await moveWhileWatching(proxy.port, admin, `ADD ${nodeAddress(s3)}`, [`REMOVE ${nodeAddress(s2)}`, `ADD ${nodeAddress(s3)}`], startDeleting(addDeleters));
      windows.push(`ADD ${Math.round(moveStart)}-${Math.round(performance.now())} ms`);
      const base = Math.min(...writers.map((w) => w.acked));
      await waitFor('every writer to get 20 more acks between the moves', 20_000, everyWriterAcked(base + 20));
      const removeStart = performance.now();
      remove = await moveWhileWatching(proxy.port, admin, `REMOVE ${nodeAddress(s1)}`, [`ADD ${nodeAddress(s1)}`, `REMOVE ${nodeAddress(s2)}`], startDeleting(removeDeleters));
      moveEnd = performance.now();
      windows.push(`REMOVE ${Math.round(removeStart)}-${Math.round(moveEnd)} ms`);
      const after = Math.min(...writers.map((w) => w.acked));
      await waitFor('every writer to get 20 more acks after the moves', 20_000, everyWriterAcked(after + 20));
    } finally {
      await stopLoad();
    }

    // --- The moves themselves
    expect(add.reply).toMatch(new RegExp(`^OK added ${nodeAddress(s3).replace(/\./g, '\\.')} moved=[1-9]\\d* `));
    expect(remove.reply).toMatch(new RegExp(`^OK removed ${nodeAddress(s1).replace(/\./g, '\\.')} moved=[1-9]\\d* `));
    for (const [name, m, sources, targets] of [
      ['ADD', add, [s1, s2], [s3]],
      ['REMOVE', remove, [s1], [s2, s3]],
    ] as const) {
      const seen = m.running.map((r) => `moved=${r.moved} scanned=${r.scanned} total=${r.total}`).join('; ');
      expect.soft(m.running.length, `${name}: MIGRATION said running at least once while it ran`).toBeGreaterThan(0);
      for (const d of m.running) {
        expect.soft([d.kind, d.sources, d.targets], `${name}: MIGRATION while running\n${d.text}`).toEqual([name.toLowerCase(), sources.map(nodeAddress).sort(), targets.map(nodeAddress).sort()]);
        expect.soft(d.moved, `${name}: moved <= total\n${d.text}`).toBeLessThanOrEqual(d.total);
        // keys_total is the sources' DBSIZE when the move started; writer keys created since on
        // a source may be scanned too, so scanned can exceed it by at most that many.
        expect.soft(d.scanned, `${name}: scanned <= total + writer keys\n${d.text}`).toBeLessThanOrEqual(d.total + WRITERS * KEYS_PER_WRITER);
      }
      if (name === 'ADD') expect.soft(m.running.at(-1)?.total, `ADD: migration_keys_total counts the sources' keys`).toBeGreaterThanOrEqual(STABLE_KEYS);
      const moved = m.running.map((r) => r.moved);
      expect.soft(moved, `${name}: keys moved only grows (${seen})`).toEqual([...moved].sort((x, y) => x - y));
      expect.soft(m.refusals, `${name}: a second ADD and REMOVE on another connection while it ran`).toEqual(['ERR membership change in progress', 'ERR membership change in progress']);
      expect.soft([m.after.state, m.after.kind, m.after.node], `${name}: MIGRATION after the reply\n${m.after.text}`).toEqual(['done', name.toLowerCase(), name === 'ADD' ? nodeAddress(s3) : nodeAddress(s1)]);
      expect.soft(`moved=${m.after.moved}`, `${name}: MIGRATION keys moved agrees with the reply`).toBe(/moved=(\d+)/.exec(m.reply)?.[0]);
      console.log(`jepsen-rebalance: ${name} seen running ${m.running.length} times, moved from ${moved[0]} to ${moved.at(-1)} of ${m.after.moved}`);
    }

    // --- The checker
    const histories = new Map<string, Op[]>([...writers, ...addDeleters, ...removeDeleters].flatMap((w) => [...w.history]));
    const ops = [...histories.values()].flat().filter((o) => o.invokedAt > 0); // not the preload
    const byValue = new Map(ops.filter((o) => o.kind === 'set').map((o) => [o.value, o]));
    const ackedOps = ops.filter((o) => o.outcome === 'ack').length;
    const unknownOps = ops.length - ackedOps;
    const retired = writers.reduce((n, w) => n + w.retired.size, 0);
    const doomedDeleted = [...addDeleters, ...removeDeleters].reduce((n, d) => n + [...d.history.values()].filter((h) => h.length === 2).length, 0);

    const allKeys = [...histories.keys()];
    const finals = await getAll(proxy.port, allKeys);
    const lost: string[] = [];
    let present = 0;
    allKeys.forEach((key, i) => {
      if (finals[i]!.startsWith('VALUE ')) present++;
      const complaint = checkFinal(histories.get(key)!, finals[i]!);
      if (complaint !== undefined) lost.push(`${key}: ${complaint}`);
    });
    expect(
      lost.slice(0, 20),
      `${lost.length} wrong final states among ${allKeys.length} keys (${writerKeys.length} writer keys, ${doomedDeleted} preloaded keys deleted during the moves) checked against ${ackedOps} acked and ${unknownOps} unknown client writes (${retired} keys retired after a timeout)`,
    ).toEqual([]);

    const delComplaints = [...histories.values()].flatMap(checkDelReplies);
    // Soft, so that the checks below still run and report: a DEL of a moving key that was already
    // deleted during the move can answer DELETED (see 'a key deleted while it moves' below).
    expect.soft(delComplaints.slice(0, 20), `DEL replies checked against the history (${ops.filter((o) => o.kind === 'del' && o.outcome === 'ack').length} acked DELs; ${windows.join(', ')})`).toEqual([]);

    const stableReads = sum(readers.map((r) => r.stableReads));
    const stableWrong = readers.flatMap((r) => r.stableWrong);
    expect(stableWrong.slice(0, 20), `${stableWrong.length} of ${stableReads} GETs of stable keys answered something other than their value`).toEqual([]);

    const writerReads = readers.flatMap((r) => r.writerReads);
    const stale = writerReads.flatMap((r) => checkRead(histories.get(r.key)!, r, byValue) ?? []);
    expect(stale.slice(0, 20), `${stale.length} of ${writerReads.length} GETs of writer keys went back in time or failed`).toEqual([]);

    // Every key is on exactly one server, and the removed one is empty.
    const sizes = await serverSizes(servers);
    expect(await dbsize(proxy.port), 'DBSIZE through the proxy').toBe(STABLE_KEYS + present);
    expect(sizes[0], 'the removed server holds nothing').toBe(0);
    expect(sum(sizes), `per-server DBSIZE ${sizes.join(' + ')}: no key left behind twice`).toBe(STABLE_KEYS + present);

    // --- Latency during the moves
    const stats = (samples: readonly Sample[], from: number, to: number): { n: number; p50: number; p99: number; max: number } => {
      const ms = samples.filter((l) => l.at >= from && l.at <= to).map((l) => l.ms);
      return { n: ms.length, p50: percentile(ms, 50), p99: percentile(ms, 99), max: percentile(ms, 100) };
    };
    const show = (x: { n: number; p50: number; p99: number; max: number }): string => `${x.n} requests, p50 ${x.p50.toFixed(1)} ms, p99 ${x.p99.toFixed(1)} ms, max ${x.max.toFixed(1)} ms`;
    const writesBefore = stats(load.writeLatencies, 0, moveStart);
    const writesDuring = stats(load.writeLatencies, moveStart, moveEnd);
    const readsDuring = stats(load.readLatencies, moveStart, moveEnd);
    console.log(
      `jepsen-rebalance: ${ops.length} writes (${ackedOps} acked, ${unknownOps} unknown; ${doomedDeleted} of them DELs of preloaded keys), ${stableReads} stable reads, ${writerReads.length} writer-key reads; ` +
        `ADD: ${add.reply}; REMOVE: ${remove.reply}; moves took ${Math.round(moveEnd - moveStart)} ms\n` +
        `  SET/DEL before the moves: ${show(writesBefore)}\n  SET/DEL during the moves: ${show(writesDuring)}\n  ${READ_BATCH}-GET pipelines during the moves: ${show(readsDuring)}`,
    );
    expect(writesDuring.n, 'writes sent during the moves').toBeGreaterThan(100);
    expect(writesDuring.p99, `p99 of SET/DEL during the moves (${show(writesDuring)})`).toBeLessThan(P99_BOUND_MS);
    expect(readsDuring.p99, `p99 of GET pipelines during the moves (${show(readsDuring)})`).toBeLessThan(P99_BOUND_MS);
    admin.close();
  });
});

describe('a key deleted while it moves', () => {
  it('stays deleted for GET, EXISTS and a second DEL, during and after the move', async () => {
    const { proxy, servers } = await startCluster(3, ['--request-timeout', '10000']);
    const [s1, s2, s3] = servers as [ProcHandle, ProcHandle, ProcHandle];
    const admin = await TextClient.connect(proxy.port);
    expect(await admin.send(`ADD ${nodeAddress(s1)}`)).toMatch(/^OK added /);
    expect(await admin.send(`ADD ${nodeAddress(s2)}`)).toMatch(/^OK added /);
    const VICTIMS = 60;
    const CONNECTIONS = 12;
    const FILLER = 150_000;
    const victims = Array.from({ length: VICTIMS }, (_, i) => `victim:${i}`);
    // Enough data that most batches are still to be copied when the deletes are done (a batch
    // that was already copied and removed from its source cannot show the problem).
    const filler = new Map(Array.from({ length: FILLER }, (_, i) => [`filler:${i}`, bulkValue('filler', i)]));
    await preload(proxy.port, new Map([...filler, ...victims.map((k) => [k, doomedValue(k)] as const)]));

    // As soon as the move is seen running, each victim gets DEL, GET, EXISTS, DEL (12
    // connections, 5 victims each, pipelined). The first victims on each connection are deleted
    // while most batches are still to be copied: such a moving victim has a tombstone on the
    // target and its stale copy still on the source. It is deleted, and every answer must say so.
    const monitor = await TextClient.connect(proxy.port);
    let replied = false;
    const addReply = admin.send(`ADD ${nodeAddress(s3)}`, 60_000).finally(() => (replied = true));
    addReply.catch(() => {}); // awaited below
    await waitFor('the ADD to start', 30_000, async () => ((await migration(monitor)).state === 'running' || replied ? true : undefined), 5);
    const sequence = (k: string): string[] => [`DEL ${k}`, `GET ${k}`, `EXISTS ${k}`, `DEL ${k}`];
    const during = await Promise.all(
      Array.from({ length: CONNECTIONS }, async (_, part) => {
        const c = await TextClient.connect(proxy.port);
        const mine = victims.filter((_, i) => i % CONNECTIONS === part);
        const replies = await c.pipeline(mine.flatMap(sequence), 30_000);
        c.close();
        return mine.map((k, i) => [k, replies.slice(i * 4, i * 4 + 4)] as const);
      }),
    );
    const afterDeletes = await migration(monitor);
    expect(await addReply).toMatch(/^OK added /);

    const wrong = during.flat().filter(([, r]) => r.join(' | ') !== 'DELETED | NOT_FOUND | 0 | NOT_FOUND');
    expect(
      wrong.map(([k, r]) => `${k}: ${r.join(' | ')}`),
      `${wrong.length} of ${VICTIMS} victims: DEL, GET, EXISTS, DEL during the move should answer DELETED | NOT_FOUND | 0 | NOT_FOUND ` +
        `(when the deletes were done, MIGRATION said ${afterDeletes.state}, moved=${afterDeletes.moved})`,
    ).toEqual([]);
    expect((await getAll(proxy.port, victims)).filter((r) => r !== 'NOT_FOUND'), 'GET of each victim after the move').toEqual([]);
    expect((await admin.pipeline(victims.map((k) => `DEL ${k}`))).filter((r) => r !== 'NOT_FOUND'), 'DEL of each victim after the move').toEqual([]);
    expect(await dbsize(proxy.port)).toBe(FILLER);
    expect(sum(await serverSizes(servers))).toBe(FILLER);
    monitor.close();
    admin.close();
  });
});
