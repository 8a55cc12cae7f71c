// kv-server's warm-up (server/warm-up.ts) as an operator meets it, on the real binary: a fresh
// server left idle imports scratch keys into a throwaway instance of itself and keeps nothing
// (no key, no WAL byte, no file); a kill -9 in the middle leaves a scratch directory that the
// next start removes, and no key; real traffic stops it; a server holding data, or on a disk with
// little room left, never warms up.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanup, crash, dbsize, startServer, tempDir, TextClient, waitFor, type ProcHandle } from './harness.js';
import { info, infoField } from './support-operator.js';
import { mountTmpfs, unmountTmpfs } from './support-durability.js';

let mounted: string | undefined;

afterAll(async () => {
  // Kill the servers before unmounting: they hold their WALs open.
  await cleanup();
  if (mounted !== undefined) unmountTmpfs(mounted);
});

/** The harness starts servers at --log-level warn; the warm-up's end is logged at info. */
const LOG_INFO = ['--log-level', 'info'];

const scratchDir = (s: ProcHandle): string => path.join(s.dir, `warmup_${s.port}.tmp`);

/** The server's log line for its warm-up's end, parsed (the server logs JSON lines to stdout). */
function warmUpLogged(s: ProcHandle): Promise<{ state: string; keys: number }> {
  return waitFor('the warm-up to end', 30_000, () => {
    const line = s.stdout.find((l) => l.includes('warm-up of the import path'));
    return line === undefined ? undefined : (JSON.parse(line) as { state: string; keys: number });
  });
}

/** The warm-up's state once it is no longer waiting (INFO polled slowly: each poll is a command). */
function warmUpDecision(s: ProcHandle): Promise<string> {
  return waitFor('the warm-up decision', 10_000, async () => {
    const state = infoField(await info(s.port, 'stats'), 'warmup_state');
    return state === 'waiting' ? undefined : state;
  }, 200);
}

/** Until the scratch instance has written to its WAL (the warm-up is importing). */
function warmUpRunning(s: ProcHandle): Promise<true> {
  return waitFor('the warm-up to import', 20_000, () => {
    const wal = path.join(scratchDir(s), fs.existsSync(scratchDir(s)) ? (fs.readdirSync(scratchDir(s))[0] ?? '') : '');
    return fs.existsSync(wal) && fs.statSync(wal).isFile() && fs.statSync(wal).size > 100_000 ? true : undefined;
  });
}

describe('warm-up of a fresh kv-server', () => {
  it('an idle empty server warms up and keeps nothing: no key, no WAL byte, no file, also after a kill -9', async () => {
    const dir = tempDir('warm-done');
    const s = await startServer({ dir, args: ['--warmup-keys', '20000', ...LOG_INFO] });
    // The log's header only (one command: far from what stops a warm-up).
    const emptyLog = infoField(await info(s.port, 'persistence'), 'wal_size_bytes');
    expect(await warmUpLogged(s)).toMatchObject({ state: 'done', keys: 20000 });
    const stats = await info(s.port);
    expect(infoField(stats, 'warmup_state')).toBe('done');
    expect(Number(infoField(stats, 'warmup_ms'))).toBeGreaterThan(0);
    expect(infoField(stats, 'wal_size_bytes')).toBe(emptyLog);
    expect(await dbsize(s.port)).toBe(0);
    expect(fs.readdirSync(dir)).toEqual([`wal_${s.port}.log`]);
    await crash(s);
    const again = await startServer({ port: s.port, dir, args: ['--warmup-keys', '0'] });
    expect(await dbsize(again.port)).toBe(0);
    expect(infoField(await info(again.port), 'replay_records')).toBe('0');
  });

  it('kill -9 in the middle of a warm-up: the next start removes the scratch directory, and no key appears', async () => {
    const dir = tempDir('warm-crash');
    const s = await startServer({ dir, args: ['--warmup-keys', '1000000'] });
    await warmUpRunning(s);
    await crash(s);
    expect(fs.existsSync(scratchDir(s))).toBe(true);
    const again = await startServer({ port: s.port, dir, args: ['--warmup-keys', '0'] });
    expect(fs.existsSync(scratchDir(again))).toBe(false);
    expect(fs.readdirSync(dir)).toEqual([`wal_${s.port}.log`]);
    expect(await dbsize(again.port)).toBe(0);
    expect(infoField(await info(again.port), 'warmup_state')).toBe('off');
  });

  it('real traffic stops a warm-up in progress, and the clients see only their own keys', async () => {
    const dir = tempDir('warm-traffic');
    const s = await startServer({ dir, args: ['--warmup-keys', '1000000', ...LOG_INFO] });
    await warmUpRunning(s);
    const c = await TextClient.connect(s.port);
    const replies = await c.pipeline(Array.from({ length: 20 }, (_, i) => `SET client-${i} v${i}`));
    expect(new Set(replies)).toEqual(new Set(['OK']));
    expect(await warmUpLogged(s)).toMatchObject({ state: 'stopped' });
    expect(fs.existsSync(scratchDir(s))).toBe(false);
    expect(await c.send('GET client-7')).toBe('VALUE v7');
    expect(await c.send('GET warmup:7')).toBe('NOT_FOUND');
    c.close();
    expect(await dbsize(s.port)).toBe(20);
  });

  it('a server that holds data does not warm up', async () => {
    const dir = tempDir('warm-data');
    const first = await startServer({ dir, args: ['--warmup-keys', '0'] });
    const c = await TextClient.connect(first.port);
    expect(await c.send('SET kept value')).toBe('OK');
    c.close();
    await crash(first);
    const s = await startServer({ port: first.port, dir });
    const state = await warmUpDecision(s);
    expect(state).toBe('skipped');
    expect(fs.readdirSync(dir)).toEqual([`wal_${s.port}.log`]);
    expect(await dbsize(s.port)).toBe(1);
  });

  it('a server on a disk with little room left does not warm up, and its own writes still fit', async () => {
    mounted = mountTmpfs('8m');
    const s = await startServer({ dir: mounted });
    const state = await warmUpDecision(s);
    expect(state).toBe('skipped');
    expect(fs.readdirSync(mounted)).toEqual([`wal_${s.port}.log`]);
    const c = await TextClient.connect(s.port);
    expect(await c.send(`SET after ${'x'.repeat(30_000)}`)).toBe('OK');
    c.close();
  });
});
