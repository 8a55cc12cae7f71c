// `npm start` (bin/kv-demo): three servers and a proxy with every node added, in one
// terminal. Ctrl-C (SIGINT) stops all of it cleanly, and a second start on the same data
// directory resumes the same cluster with its data.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ask, cleanup, tempDir, TextClient, waitFor } from './harness.js';
import { cleanupOperator, pidGone, reportedPid, startDemo, trackPid, type DemoRun } from './support-operator.js';

afterEach(async () => {
  await cleanupOperator();
  await cleanup();
});

const KEYS = 40;

/** NODES through the demo's proxy, as `host:port` → its line. */
async function members(run: DemoRun): Promise<Map<string, string>> {
  const text = await ask(run.proxyPort, 'NODES');
  return new Map(text.split('\n').filter(Boolean).map((line) => [line.split(' ')[0]!, line]));
}

/** The pids of the demo's proxy and servers, as each reports in INFO server. */
async function childPids(run: DemoRun): Promise<number[]> {
  const pids = await Promise.all([run.proxyPort, ...run.serverPorts].map((p) => reportedPid(p)));
  for (const pid of pids) trackPid(pid); // killed by cleanupOperator() if the test fails midway
  return pids;
}

/** SIGINT, as Ctrl-C in the terminal; the demo must exit 0 after all its children are gone. */
async function interrupt(run: DemoRun, pids: number[]): Promise<void> {
  run.demo.signal('SIGINT');
  const status = await run.demo.waitForExit(60_000);
  expect(status, run.demo.tail()).toEqual({ code: 0, signal: null });
  expect(run.demo.stdout.some((l) => l.startsWith('Stopped. Data is kept in')), run.demo.tail()).toBe(true);
  // The demo waits for each child's exit before its own, so they are gone already; poll
  // briefly anyway, since /proc can lag a reaped process by a moment.
  await waitFor(`demo children ${pids.join(', ')} to be gone`, 10_000, () => (pids.every(pidGone) ? true : undefined));
  expect(run.demo.stderr.filter((l) => l.trim() !== ''), run.demo.tail()).toEqual([]);
}

describe('npm start (kv-demo)', () => {
  it('starts a 3-node cluster, serves, stops cleanly on SIGINT, and resumes from the same dir', async () => {
    const cwd = tempDir('demo-cwd');
    const dir = path.join(cwd, 'data');

    // First start: an empty directory.
    const first = await startDemo(dir, cwd);
    const addresses = first.serverPorts.map((p) => `127.0.0.1:${p}`);
    for (const a of addresses) expect(first.demo.stdout, first.demo.tail()).toContain(`[Proxy] Node Added: ${a}`);
    expect(first.demo.stdout).toContain(`--- KV Proxy/Gateway running on Port ${first.proxyPort} ---`);
    for (const p of first.serverPorts) expect(first.demo.stdout).toContain(`--- Persistent Server Port ${p} (WAL: wal_${p}.log) ---`);

    const nodes = await members(first);
    expect([...nodes.keys()].sort()).toEqual([...addresses].sort());
    for (const line of nodes.values()) expect(line).toMatch(/ up keys=\d+ share=\d+\.\d\d%$/);

    const c = await TextClient.connect(first.proxyPort);
    const writes = await c.pipeline(Array.from({ length: KEYS }, (_, i) => `SET demo-${i} value ${i}`));
    expect(new Set(writes)).toEqual(new Set(['OK']));
    expect(await c.send('GET demo-7')).toBe('VALUE value 7');
    c.close();
    // Every server took part.
    for (const line of (await members(first)).values()) expect(line).not.toMatch(/ keys=0 /);

    // Its state lives in the data dir, nowhere else.
    const files = fs.readdirSync(dir).sort();
    expect(files).toEqual(expect.arrayContaining([`ring_${first.proxyPort}.json`, ...first.serverPorts.map((p) => `wal_${p}.log`)]));
    expect(fs.readdirSync(cwd)).toEqual(['data']);

    const pids = await childPids(first);
    expect(new Set(pids).size).toBe(4);
    await interrupt(first, pids);

    // Second start, same directory and ports: the nodes are already members, the data is there.
    const second = await startDemo(dir, cwd, { proxyPort: first.proxyPort, serverPorts: first.serverPorts });
    for (const a of addresses) {
      expect(second.demo.stdout.some((l) => l.startsWith(`[Proxy] ${a} is already a member`)), second.demo.tail()).toBe(true);
    }
    expect(second.demo.stdout.filter((l) => l.startsWith('[Proxy] Node Added'))).toEqual([]);
    expect([...(await members(second)).keys()].sort()).toEqual([...addresses].sort());
    const d = await TextClient.connect(second.proxyPort);
    const reads = await d.pipeline(Array.from({ length: KEYS }, (_, i) => `GET demo-${i}`));
    d.close();
    expect(reads).toEqual(Array.from({ length: KEYS }, (_, i) => `VALUE value ${i}`));
    expect(await ask(second.proxyPort, 'DBSIZE')).toBe(String(KEYS));

    await interrupt(second, await childPids(second));
  });
});
