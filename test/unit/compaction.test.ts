// Online WAL compaction (BGREWRITEAOF and the automatic rewrite), in-process:
//  - writes that arrive while a rewrite runs are in the new log;
//  - a rewrite abandoned by RESET or by a failed write leaves a log that loads;
//  - a crash at any step of a rewrite leaves files that load with every acknowledged write,
//    and a leftover wal_<port>.log.rewrite is removed at the next start.
//
// "A crash at step X" is an image of the data directory taken at that instant (the bytes a
// kill -9 leaves: the page cache survives a process crash), started as a new server. To stop
// the rewrite at each step, the fs calls it makes on its temp file are intercepted: async writes
// to it are held until the test lets them go, and sync calls (the final write, fsync, rename)
// take an image before (and, for rename, after) they run.
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import type { ServerHandle } from '../../src/server/server.js';
import { TextClient, cleanup } from '../integration/harness.js';
import {
  closeInProcess,
  closeInProcessServer,
  dumpDiff,
  dumpKeys,
  imageOf,
  inProcessDir,
  liveCount,
  startInProcessServer,
  startOnImage,
  waitUntil,
  type DirImage,
} from '../integration/support-durability.js';

const NO_AUTO = { minBytes: 1024 ** 3, ratio: 1000 };
const STARTED = 'Background append only file rewriting started';

type Model = Map<string, string | undefined>;

/** Intercepts the fs calls a rewrite makes on `<wal>.rewrite`. */
class RewriteProbe {
  /** fd of the temp file while it is open. */
  fd: number | undefined;
  holdWrites = false;
  /** Async writes to the temp file seen so far (held or not). */
  writes = 0;
  /** Called synchronously at the sync steps, with a label. */
  onStep: ((label: string) => void) | undefined;
  private held: (() => void)[] = [];
  private readonly real = {
    openSync: fs.openSync,
    closeSync: fs.closeSync,
    write: fs.write,
    writeSync: fs.writeSync,
    fsyncSync: fs.fsyncSync,
    renameSync: fs.renameSync,
  };

  install(): void {
    const real = this.real;
    const probe = this;
    fs.openSync = function (this: unknown, ...args: unknown[]) {
      const fd = (real.openSync as (...a: unknown[]) => number).apply(fs, args);
      if (typeof args[0] === 'string' && args[0].endsWith('.rewrite') && args[1] === 'w') probe.fd = fd;
      return fd;
    } as typeof fs.openSync;
    fs.closeSync = function (fd: number) {
      if (fd === probe.fd) {
        probe.onStep?.('close of the temp file');
        probe.fd = undefined;
      }
      real.closeSync(fd);
    } as typeof fs.closeSync;
    fs.write = function (this: unknown, ...args: unknown[]) {
      const go = (): void => void (real.write as (...a: unknown[]) => void).apply(fs, args);
      if (args[0] === probe.fd && probe.fd !== undefined) {
        probe.writes++;
        if (probe.holdWrites) return void probe.held.push(go);
      }
      go();
    } as typeof fs.write;
    fs.writeSync = function (this: unknown, ...args: unknown[]) {
      if (args[0] === probe.fd && probe.fd !== undefined) probe.onStep?.('final write of the tail (sync)');
      return (real.writeSync as (...a: unknown[]) => number).apply(fs, args);
    } as typeof fs.writeSync;
    fs.fsyncSync = function (fd: number) {
      if (fd === probe.fd && probe.fd !== undefined) probe.onStep?.('fsync of the temp file');
      real.fsyncSync(fd);
    } as typeof fs.fsyncSync;
    fs.renameSync = function (from: fs.PathLike, to: fs.PathLike) {
      const ours = String(from).endsWith('.rewrite');
      if (ours) probe.onStep?.('rename over the log (before)');
      real.renameSync(from, to);
      if (ours) probe.onStep?.('rename over the log (after, before the directory fsync)');
    } as typeof fs.renameSync;
  }

  get heldCount(): number {
    return this.held.length;
  }

  /** Let the oldest held write run. */
  releaseOne(): void {
    this.held.shift()?.();
  }

  restore(): void {
    this.holdWrites = false;
    for (const go of this.held.splice(0)) go();
    Object.assign(fs, this.real);
  }
}

let probe: RewriteProbe | undefined;

afterEach(async () => {
  probe?.restore();
  probe = undefined;
  await closeInProcess();
  await cleanup();
});

function installProbe(): RewriteProbe {
  probe = new RewriteProbe();
  probe.install();
  return probe;
}

/** SET every pair on one pipeline; records them in the model once acknowledged. */
async function setAll(client: TextClient, model: Model, pairs: readonly [string, string][]): Promise<void> {
  const replies = await client.pipeline(pairs.map(([k, v]) => `SET ${k} ${v}`), 60_000);
  replies.forEach((r, i) => {
    if (r !== 'OK') throw new Error(`SET ${pairs[i]![0]}: ${r}`);
    model.set(pairs[i]![0], pairs[i]![1]);
  });
}

async function delAll(client: TextClient, model: Model, keys: readonly string[]): Promise<void> {
  const replies = await client.pipeline(keys.map((k) => `DEL ${k}`), 60_000);
  replies.forEach((r, i) => {
    if (r !== 'DELETED' && r !== 'NOT_FOUND') throw new Error(`DEL ${keys[i]}: ${r}`);
    model.set(keys[i]!, undefined);
  });
}

const pairs = (prefix: string, n: number, value: (i: number) => string): [string, string][] => Array.from({ length: n }, (_, i) => [`${prefix}${i}`, value(i)]);

interface Snapshot {
  label: string;
  image: DirImage;
  expected: Model;
}

/** Start a server on the image; assert no temp file survives the start and the data is exactly `expected`. */
async function verifyImage(snap: Snapshot, port: number): Promise<{ hadRewriteFile: boolean }> {
  const { handle, dir, hadRewriteFile } = await startOnImage(snap.image, port);
  expect(fs.readdirSync(dir).filter((f) => f.endsWith('.rewrite')), `${snap.label}: the temp file is removed at start`).toEqual([]);
  const client = await TextClient.connect(handle.port);
  try {
    const got = await dumpKeys(client, [...snap.expected.keys()]);
    expect(dumpDiff(snap.expected, got), `${snap.label}: data after a crash here`).toEqual([]);
    expect(await client.send('DBSIZE'), `${snap.label}: no keys beyond the acknowledged ones`).toBe(String(liveCount(snap.expected)));
  } finally {
    client.close();
    await closeInProcessServer(handle);
  }
  return { hadRewriteFile };
}

function rewrites(server: ServerHandle): number {
  return server.state.data.wal.rewrites;
}

describe('compaction', () => {
  it('keeps every write that arrives while a rewrite runs (BGREWRITEAOF and automatic rewrites)', async () => {
    const dir = inProcessDir('compact-load');
    // Small thresholds: automatic rewrites happen too, between the explicit ones.
    const server = await startInProcessServer({ port: 0, dir, compaction: { minBytes: 64 * 1024, ratio: 1.5 } });
    const p = installProbe();
    const model: Model = new Map();
    const admin = await TextClient.connect(server.port);
    const writers = await Promise.all([0, 1, 2].map(() => TextClient.connect(server.port)));
    await setAll(writers[0]!, model, pairs('pre:', 5000, (i) => `seed-${i}-${'s'.repeat(60)}`));

    // One rewrite is held at its first temp-file write until the writers are well ahead, so
    // writes during a rewrite are certain, not just likely. Nothing else runs yet: the log is
    // no bigger than the live data, so no automatic rewrite is due.
    p.holdWrites = true;
    const before = rewrites(server);
    expect(await admin.send('BGREWRITEAOF')).toBe(STARTED);
    await waitUntil('the rewrite to reach its temp file', 10_000, () => p.heldCount > 0);

    // Each writer owns its keys: w<w>:* and the pre: keys with index % 3 === w.
    let stop = false;
    let batches = 0;
    let duringRewrite = 0;
    const loops = writers.map(async (client, w) => {
      for (let round = 0; !stop; round++) {
        const inRewrite = server.state.data.wal.rewriteInProgress;
        const batch = Array.from({ length: 200 }, (_, i): [string, string] => [
          i % 3 === 0 ? `w${w}:${(round * 13 + i) % 300}` : `pre:${(((round * 7 + i) % 1666) * 3 + w) % 5000}`,
          `${w}.${round}.${i}.${'x'.repeat(80)}`,
        ]);
        await setAll(client, model, batch);
        await delAll(client, model, [`pre:${((round % 1666) * 3 + w) % 5000}`, `w${w}:${(round * 5) % 300}`]);
        if (inRewrite) duringRewrite += batch.length + 2;
        batches++;
      }
    });
    await waitUntil('writers to get 10 batches ahead while the rewrite is held', 30_000, () => batches >= 10);
    p.holdWrites = false;
    while (p.heldCount > 0) p.releaseOne();
    await waitUntil('the held rewrite to finish', 30_000, () => rewrites(server) > before);

    // Then several more while the writers keep going (automatic ones may run in between).
    for (let round = 0; round < 4; round++) {
      const n = rewrites(server);
      const reply = await admin.send('BGREWRITEAOF');
      expect([STARTED, 'Background append only file rewriting already in progress']).toContain(reply);
      await waitUntil(`rewrite #${n + 1} to finish`, 30_000, () => rewrites(server) > n);
    }
    stop = true;
    await Promise.all(loops);
    expect(duringRewrite, 'writes acknowledged while a rewrite was in progress').toBeGreaterThan(0);
    expect(rewrites(server)).toBeGreaterThanOrEqual(5);

    // A crash now, and a clean restart: both must hold every acknowledged value, latest first.
    const crashImage = imageOf(dir);
    expect(dumpDiff(model, await dumpKeys(admin, [...model.keys()])), 'live server').toEqual([]);
    const port = server.port;
    admin.close();
    for (const w of writers) w.close();
    await closeInProcessServer(server);
    p.restore();
    await verifyImage({ label: 'kill -9 after the writers stopped', image: crashImage, expected: model }, port);
    await verifyImage({ label: 'restart after a clean close', image: imageOf(dir), expected: model }, port);
  });

  it('leaves loadable files after a crash at every step of a rewrite', async () => {
    const dir = inProcessDir('compact-steps');
    const server = await startInProcessServer({ port: 0, dir, compaction: NO_AUTO });
    const client = await TextClient.connect(server.port);
    const model: Model = new Map();
    // Enough keys for the snapshot to take several chunks, and overwritten/deleted ones so the
    // rewrite has something to drop.
    await setAll(client, model, pairs('k', 25_000, (i) => `first-${i}`));
    await setAll(client, model, pairs('k', 25_000, (i) => `second-${i}`));
    await setAll(client, model, pairs('k', 10_000, (i) => `third-${i}`));
    await delAll(client, model, Array.from({ length: 2000 }, (_, i) => `k${i * 5}`));

    const p = installProbe();
    const snaps: Snapshot[] = [];
    const take = (label: string): void => void snaps.push({ label, image: imageOf(dir), expected: new Map(model) });
    let oldLogAtSwap = 0;
    p.onStep = (label) => {
      if (label.startsWith('rename over the log (before)')) oldLogAtSwap = fs.statSync(server.walFile).size;
      take(`crash at: ${label}`);
    };
    p.holdWrites = true;
    const before = rewrites(server);
    expect(await client.send('BGREWRITEAOF')).toBe(STARTED);

    // Step through every write to the temp file. At each, write more (acknowledged), take the
    // crash image, then let the write go. The first holds write > 256 KiB so the rewrite also
    // has a big tail to copy.
    let step = 0;
    for (;;) {
      await waitUntil(`rewrite step ${step + 1}`, 30_000, () => p.heldCount > 0 || !server.state.compactor.inProgress);
      if (p.heldCount === 0) break;
      step++;
      if (step <= 2) await setAll(client, model, pairs(`during${step}:`, 3000, (i) => `${step}-${i}-${'t'.repeat(90)}`));
      else await setAll(client, model, pairs(`during${step}:`, 5, (i) => `${step}-${i}`));
      await delAll(client, model, [`k${step}`, `during1:${step}`]);
      take(`crash before temp-file write #${p.writes} (step ${step})`);
      p.releaseOne();
    }
    expect(rewrites(server), 'the rewrite completed').toBe(before + 1);
    take('crash after the rewrite finished');
    p.restore();
    expect(fs.statSync(server.walFile).size, 'the rewritten log is smaller than the log it replaced').toBeLessThan(oldLogAtSwap);

    const labels = snaps.map((s) => s.label);
    expect(step, `temp-file writes stepped through (${labels.join('; ')})`).toBeGreaterThanOrEqual(3);
    for (const must of ['fsync of the temp file', 'rename over the log (before)', 'rename over the log (after']) {
      expect(labels.some((l) => l.includes(must)), `a crash image at "${must}"`).toBe(true);
    }
    let withTempFile = 0;
    console.log(`compaction steps: ${step} temp-file writes, ${snaps.length} crash images: ${labels.join('; ')}`);
    for (const snap of snaps) if ((await verifyImage(snap, server.port)).hadRewriteFile) withTempFile++;
    expect(withTempFile, 'crash images with a leftover wal_<port>.log.rewrite (each was removed and the old log loaded)').toBeGreaterThanOrEqual(3);
  });

  it('a rewrite abandoned by RESET leaves a loadable log with only the data written after the RESET', async () => {
    const dir = inProcessDir('compact-reset');
    const server = await startInProcessServer({ port: 0, dir, compaction: NO_AUTO });
    const client = await TextClient.connect(server.port);
    const model: Model = new Map();
    await setAll(client, model, pairs('old:', 30_000, (i) => `old-${i}`));
    const p = installProbe();
    p.holdWrites = true;
    expect(await client.send('BGREWRITEAOF')).toBe(STARTED);
    await waitUntil('the rewrite to reach its temp file', 10_000, () => p.heldCount > 0);

    expect(await client.send('RESET')).toBe('OK');
    for (const k of model.keys()) model.set(k, undefined);
    await setAll(client, model, pairs('new:', 100, (i) => `new-${i}`));
    const midImage = imageOf(dir);
    expect([...midImage.keys()].some((f) => f.endsWith('.rewrite')), 'the abandoned temp file is still there').toBe(true);

    p.holdWrites = false;
    while (p.heldCount > 0) p.releaseOne();
    await waitUntil('the abandoned rewrite to give up', 10_000, () => !server.state.compactor.inProgress);
    expect(rewrites(server), 'RESET abandoned the rewrite').toBe(0);
    expect(fs.readdirSync(dir).filter((f) => f.endsWith('.rewrite')), 'the abandoned temp file is removed').toEqual([]);
    await setAll(client, model, pairs('after:', 10, (i) => `after-${i}`));
    p.restore();

    await verifyImage({ label: 'crash while the abandoned rewrite was held', image: midImage, expected: new Map([...model].filter(([k]) => !k.startsWith('after:'))) }, server.port);
    await verifyImage({ label: 'crash after the rewrite was abandoned', image: imageOf(dir), expected: model }, server.port);

    // The next rewrite works normally.
    expect(await client.send('BGREWRITEAOF')).toBe(STARTED);
    await waitUntil('a rewrite after the abandoned one', 10_000, () => rewrites(server) === 1 && !server.state.compactor.inProgress);
    await verifyImage({ label: 'crash after the next rewrite', image: imageOf(dir), expected: model }, server.port);
  });

  it('a rewrite abandoned by a failed write leaves a loadable log without the failed write', async () => {
    const dir = inProcessDir('compact-fail');
    const server = await startInProcessServer({ port: 0, dir, compaction: NO_AUTO, walSyncWrites: false }); // so fdatasync can be made to fail
    const client = await TextClient.connect(server.port);
    const model: Model = new Map();
    await setAll(client, model, pairs('base:', 30_000, (i) => `base-${i}`));
    const p = installProbe();
    p.holdWrites = true;
    expect(await client.send('BGREWRITEAOF')).toBe(STARTED);
    await waitUntil('the rewrite to reach its temp file', 10_000, () => p.heldCount > 0);
    await setAll(client, model, pairs('during:', 100, (i) => `during-${i}`));

    // The next group's fdatasync fails (EIO).
    const realFdatasync = fs.fdatasync;
    let failures = 0;
    fs.fdatasync = ((_fd: number, callback: fs.NoParamCallback) => {
      fs.fdatasync = realFdatasync;
      failures++;
      setImmediate(() => callback(Object.assign(new Error('EIO: injected'), { code: 'EIO' })));
    }) as typeof fs.fdatasync;
    try {
      expect(await client.send('SET doomed x')).toMatch(/^ERR disk write failed \(EIO\)/);
    } finally {
      fs.fdatasync = realFdatasync;
    }
    expect(failures).toBe(1);
    model.set('doomed', undefined);
    expect(await client.send('GET doomed')).toBe('NOT_FOUND');

    p.holdWrites = false;
    while (p.heldCount > 0) p.releaseOne();
    await waitUntil('the abandoned rewrite to give up', 10_000, () => !server.state.compactor.inProgress);
    expect(rewrites(server), 'the failed write abandoned the rewrite').toBe(0);
    expect(fs.readdirSync(dir).filter((f) => f.endsWith('.rewrite')), 'the abandoned temp file is removed').toEqual([]);
    await setAll(client, model, pairs('after:', 100, (i) => `after-${i}`));
    p.restore();
    await verifyImage({ label: 'crash after the failed write and the abandoned rewrite', image: imageOf(dir), expected: model }, server.port);

    expect(await client.send('BGREWRITEAOF')).toBe(STARTED);
    await waitUntil('a rewrite after the abandoned one', 10_000, () => rewrites(server) === 1 && !server.state.compactor.inProgress);
    await verifyImage({ label: 'crash after the next rewrite', image: imageOf(dir), expected: model }, server.port);
  });
});
