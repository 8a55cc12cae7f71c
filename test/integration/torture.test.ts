// kill -9 torture: three kv-servers behind a proxy, compacting constantly (--compact-min 64kb),
// several writers through the proxy each owning its keys (SET with unique values, and DEL),
// while a chaos loop SIGKILLs a random server and restarts it on the same port and dir, some of
// the time exactly while that server is rewriting its WAL. At the end every key must hold what
// its last acknowledged operation left, or what a later operation with an unknown outcome left;
// never a value nobody wrote, never a deleted key back.
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, nodeAddress, restart, startProxy, startServer, tempDir, TextClient, walPath, type ProcHandle } from './harness.js';
import { History, TortureWriter, checkHistory, persistenceInfo, seededRandom, waitUntil } from './support-durability.js';

const SERVERS = 3;
const WRITERS = 4;
const KEYS_PER_WRITER = 400;
/** How long the chaos loop runs; the whole test stays around 40 s. */
const CHAOS_MS = 22_000;

const writers: TortureWriter[] = [];

afterEach(async () => {
  for (const w of writers.splice(0)) w.destroy();
  await cleanup();
});

/**
 * Poll INFO persistence on `port` until it reports a rewrite in progress; true if seen before
 * the deadline. Polls as fast as the round trip allows: a rewrite lasts milliseconds.
 */
async function catchRewrite(port: number, timeoutMs: number): Promise<boolean> {
  const client = await TextClient.connect(port);
  try {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if ((await persistenceInfo(client)).get('wal_rewrite_in_progress') === '1') return true;
    }
    return false;
  } finally {
    client.socket.destroy();
  }
}

/** GET every key through the proxy, retrying keys whose server is not reachable yet. */
async function readAll(port: number, keys: readonly string[], timeoutMs: number): Promise<Map<string, string | undefined>> {
  const final = new Map<string, string | undefined>();
  let left = [...keys];
  const client = await TextClient.connect(port);
  try {
    await waitUntil(`every key to be readable through the proxy (${left.length} left)`, timeoutMs, async () => {
      const replies = await client.pipeline(left.map((k) => `GET ${k}`), 30_000);
      const retry: string[] = [];
      replies.forEach((r, i) => {
        const key = left[i]!;
        if (r === 'NOT_FOUND') final.set(key, undefined);
        else if (r.startsWith('VALUE ')) final.set(key, r.slice(6));
        else if (/^ERR node \S+ unavailable/.test(r)) retry.push(key);
        else throw new Error(`GET ${key}: ${r}`);
      });
      left = retry;
      return left.length === 0;
    }, 100);
  } finally {
    client.close();
  }
  return final;
}

describe('kill -9 torture', () => {
  it('loses no acknowledged write and invents no value while servers crash, also mid-compaction', { timeout: 120_000 }, async () => {
    const seed = Number(process.env['TORTURE_SEED'] ?? Date.now() % 1_000_000);
    const random = seededRandom(seed);
    const servers: ProcHandle[] = await Promise.all(
      Array.from({ length: SERVERS }, (_, i) => startServer({ dir: tempDir(`torture-s${i}`), args: ['--compact-min', '64kb'] })),
    );
    const proxy = await startProxy({ dir: tempDir('torture-proxy') });
    const admin = await TextClient.connect(proxy.port);
    for (const s of servers) expect(await admin.send(`ADD ${nodeAddress(s)}`)).toMatch(/^OK added /);
    admin.close();

    const history = new History();
    const allKeys: string[] = [];
    for (let w = 0; w < WRITERS; w++) {
      const keys = Array.from({ length: KEYS_PER_WRITER }, (_, i) => `t${w}:${i}`);
      allKeys.push(...keys);
      const writer = new TortureWriter(proxy.port, history, { id: w, keys, window: 16, delShare: 0.2, valueBytes: 200, random: seededRandom(seed * 31 + w) });
      writers.push(writer);
      writer.start();
    }
    const acked = (): number => writers.reduce((n, w) => n + w.acked, 0);

    let kills = 0;
    let killsDuringRewrite = 0;
    let killsWithTempFile = 0;
    const chaosEnd = Date.now() + CHAOS_MS;
    while (Date.now() < chaosEnd) {
      const i = Math.floor(random() * SERVERS);
      const victim = servers[i]!;
      // Let the writers get somewhere between crashes (and after the last restart).
      const target = acked() + 1500;
      await waitUntil('writers to make progress between crashes', 30_000, () => acked() >= target, 20);
      // Every other crash aims at a rewrite in progress.
      const aim = kills % 2 === 0;
      const caught = aim ? await catchRewrite(victim.port, 4000) : false;
      victim.kill('SIGKILL');
      await victim.waitForExit();
      kills++;
      if (caught) killsDuringRewrite++;
      if (fs.existsSync(`${walPath(victim)}.rewrite`)) killsWithTempFile++;
      const again = await restart(victim);
      if (fs.existsSync(`${walPath(again)}.rewrite`)) {
        // Either a leftover the start failed to remove, or a rewrite the new process began at
        // once (its log is over --compact-min and the writers go on): only the second shows in INFO.
        const client = await TextClient.connect(again.port);
        const persistence = await persistenceInfo(client).finally(() => client.close());
        const began = persistence.get('wal_rewrite_in_progress') === '1' || Number(persistence.get('wal_rewrites')) > 0;
        expect(began, 'a leftover temp file is removed at start').toBe(true);
      }
      servers[i] = again;
    }

    await Promise.all(writers.map((w) => w.stop()));
    const unexpected = writers.flatMap((w) => w.unexpected);
    const final = await readAll(proxy.port, allKeys, 30_000);
    const report = checkHistory(history, final);
    const dbsize = await TextClient.connect(proxy.port).then(async (c) => {
      try {
        return await c.send('DBSIZE');
      } finally {
        c.close();
      }
    });
    const present = [...final.values()].filter((v) => v !== undefined).length;
    const summary =
      `seed ${seed}: ${report.acked} acknowledged operations checked over ${report.keys} keys ` +
      `(${report.unknown} with unknown outcome, ${report.resolvedByUnknown} keys ended on an unknown one); ` +
      `${kills} kill -9s, ${killsDuringRewrite} while INFO said a rewrite was in progress, ${killsWithTempFile} left a .rewrite temp file`;
    console.log(`[torture] ${summary}`);

    expect(report.violations, summary).toEqual([]);
    expect(unexpected.slice(0, 10), `unexpected replies (${summary})`).toEqual([]);
    expect(dbsize, `DBSIZE through the proxy counts exactly the keys read back (${summary})`).toBe(String(present));
    expect(report.acked, summary).toBeGreaterThan(10_000);
    expect(kills, summary).toBeGreaterThanOrEqual(6);
    expect(killsDuringRewrite, `a kill -9 landed while a rewrite was in progress (${summary})`).toBeGreaterThanOrEqual(1);
  });
});
