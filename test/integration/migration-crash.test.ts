// kill -9 in the middle of a move (docs/rebalancing.md, guarantees 5 and 6, failure matrix):
//  - the proxy, mid-ADD and mid-REMOVE: restarted on the same --dir and port, it resumes the
//    planned move by itself; a repeated ADD is harmless; every key reads back, and the servers'
//    DBSIZE adds up to the key count (nothing copied twice, nothing left behind);
//  - the target, mid-ADD: ADD answers ERR promptly, keys the target does not own stay readable,
//    nothing acknowledged is lost; after a restart the repeated ADD completes;
//  - a source, mid-ADD: the same.
// Each cluster holds 100,000 keys of ~100 bytes, so an ADD copies ~33,000 keys in 400-key
// batches and runs for a second or more. The proxy sees progress ten times a second at most
// (RANGEPUSH WAIT), so the first keys count as moved well into the move; with fewer keys the
// rest of it could finish before a kill sent at that point lands. The kill lands while keys are
// being copied, and each test checks that it did.
//
// The proxy runs with --request-timeout 15000: the default 2 s turns one slow fsync on a loaded
// CI machine into a spurious "interrupted" move. A kill -9 is noticed by the connection closing,
// not by that timeout, so the ERR still comes at once.
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, crash, dbsize, nodeAddress, restart, SetStream, startCluster, TextClient, waitFor, type ProcHandle } from './harness.js';
import { bulkValue, getAll, members, migration, nodes, preload, readBackWrong, serverSizes, sum, waitForMigration, type MigrationStatus } from './support-rebalance.js';

afterEach(cleanup);

const KEYS = 100_000;
const keys = Array.from({ length: KEYS }, (_, i) => `mc:${i}`);
const expected = new Map(keys.map((k, i) => [k, bulkValue('mc', i)]));

const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

interface Loaded {
  proxy: ProcHandle;
  servers: [ProcHandle, ProcHandle, ProcHandle];
}

/** Three servers, the first `memberCount` of them in the ring, holding every key of `expected`. */
async function loadedCluster(memberCount: 2 | 3): Promise<Loaded> {
  const { proxy, servers } = await startCluster(3, ['--request-timeout', '15000']);
  const admin = await TextClient.connect(proxy.port);
  for (const s of servers.slice(0, memberCount)) expect(await admin.send(`ADD ${nodeAddress(s)}`)).toMatch(/^OK added /);
  await preload(proxy.port, expected);
  expect(await admin.send('DBSIZE')).toBe(String(KEYS));
  admin.close();
  return { proxy, servers: servers as Loaded['servers'] };
}

/** Send `line` on a fresh connection; `reply` is its reply, or `!<why>` if the connection died first. */
async function sendAndCatch(port: number, line: string, timeoutMs: number): Promise<{ reply: Promise<string> }> {
  const client = await TextClient.connect(port);
  return { reply: client.send(line, timeoutMs).catch((err: Error) => `!${err.message}`) };
}

/**
 * Poll MIGRATION on a second connection until the move named `node` has copied some keys. Fails
 * at once, rather than at the deadline, if the move ends before it is seen copying.
 */
async function waitUntilCopying(port: number, node: string): Promise<MigrationStatus> {
  const monitor = await TextClient.connect(port);
  try {
    const m = await waitForMigration(monitor, `the move of ${node} to copy keys`, 30_000, (m) => m.node === node && ((m.state === 'running' && m.moved > 0) || /^(done|failed|interrupted)$/.test(m.state)));
    if (m.state !== 'running') throw new Error(`the move of ${node} ended before keys were seen moving: too little data to crash it midway?\n${m.text}`);
    return m;
  } finally {
    monitor.close();
  }
}

/**
 * Start `ADD target`, kill -9 `victim` (the target or a source) once keys are moving, and check
 * that ADD answers "interrupted ... repeat the command" within 10 s of the kill. Returns the
 * migration status seen just before the kill.
 */
async function addAndKillMidCopy(proxyPort: number, target: string, victim: ProcHandle, role: 'target' | 'source'): Promise<MigrationStatus> {
  const add = await sendAndCatch(proxyPort, `ADD ${target}`, 30_000);
  const atKill = await waitUntilCopying(proxyPort, target);
  await crash(victim);
  const killedAt = Date.now();
  const reply = await add.reply;
  const waited = Date.now() - killedAt;
  expect(reply).toMatch(new RegExp(`^ERR ADD ${escape(target)} interrupted: .*repeat the command to finish the move$`));
  expect(waited, `ADD answered ${waited} ms after the ${role} died`).toBeLessThan(10_000);
  return atKill;
}

/** Poll NODES until the proxy has a connection to `server` again (after its restart). */
async function waitUntilReachable(client: TextClient, server: ProcHandle): Promise<void> {
  await waitFor(`the proxy to reach ${nodeAddress(server)} again`, 20_000, async () => {
    const row = (await nodes(client)).find((r) => r.address === nodeAddress(server));
    return row !== undefined && row.keys !== undefined ? true : undefined;
  }, 50);
}

/** Every key reads back through the proxy; DBSIZE through the proxy and summed over the servers both equal `total`. */
async function expectEveryKeyOnce(proxyPort: number, servers: readonly ProcHandle[], want: ReadonlyMap<string, string>, total: number): Promise<void> {
  const wrong = await readBackWrong(proxyPort, want);
  expect(wrong.slice(0, 10), `${wrong.length} of ${want.size} keys did not read back`).toEqual([]);
  expect(await dbsize(proxyPort), 'DBSIZE through the proxy').toBe(total);
  const sizes = await serverSizes(servers);
  expect(sum(sizes), `per-server DBSIZE ${sizes.join(' + ')}: each key on exactly one server`).toBe(total);
}

describe('kill -9 of the proxy during a move', () => {
  // One cluster for both moves: ADD the third node, then REMOVE the first, killing the proxy in
  // the middle of each. (One preload instead of two keeps the file within its time budget.)
  it('mid-ADD and mid-REMOVE: the restarted proxy resumes the copy by itself, repeating the command is harmless, every key reads back once', async () => {
    const { proxy, servers } = await loadedCluster(2);
    const [s1, s2, s3] = servers;
    const port = proxy.port;
    let current = proxy;

    /** Send `command`, SIGKILL the proxy once keys are being copied, restart it; returns a client. */
    const killMidMove = async (command: string, node: string, before: number): Promise<TextClient> => {
      const sent = await sendAndCatch(port, command, 60_000);
      const atKill = await waitUntilCopying(port, node);
      await crash(current);
      expect(await sent.reply, `${command} got no reply: the proxy died mid-move`).toMatch(/^!/);
      expect(atKill.moved, `killed after ${atKill.moved} of ~${before} keys were moved`).toBeLessThan(before);
      current = await restart(current); // same port and --dir
      expect(current.port).toBe(port);
      const client = await TextClient.connect(port);
      // A restart with a planned move on disk resumes it at once (a fresh proxy would say idle).
      const resumed = await migration(client);
      expect(resumed.state, `MIGRATION right after the restart:\n${resumed.text}`).toMatch(/^(running|done)$/);
      expect([resumed.kind, resumed.node]).toEqual([command.split(' ')[0]!.toLowerCase(), node]);
      return client;
    };

    // --- ADD
    const added = nodeAddress(s3);
    let client = await killMidMove(`ADD ${added}`, added, Math.round(KEYS / 3));
    // The same ADD again, while the resumed move runs or after it: never a second move.
    expect(await client.send(`ADD ${added}`, 60_000)).toMatch(new RegExp(`^(ERR membership change in progress|OK already a member ${escape(added)})$`));
    await waitForMigration(client, 'the resumed ADD to finish', 30_000, (m) => m.state === 'done');
    expect(await members(client)).toEqual(servers.map(nodeAddress).sort());
    expect(await client.send(`ADD ${added}`)).toBe(`OK already a member ${added}`);
    await expectEveryKeyOnce(port, servers, expected, KEYS);
    expect(await dbsize(s3.port), 'the new node took its share').toBeGreaterThan(KEYS * 0.15);
    client.close();

    // --- REMOVE
    const leaving = nodeAddress(s1);
    client = await killMidMove(`REMOVE ${leaving}`, leaving, await dbsize(s1.port));
    expect(await client.send(`REMOVE ${leaving}`, 60_000)).toMatch(new RegExp(`^(ERR membership change in progress|ERR ${escape(leaving)} is not a member of the ring)$`));
    await waitForMigration(client, 'the resumed REMOVE to finish', 30_000, (m) => m.state === 'done');
    expect(await members(client)).toEqual([s2, s3].map(nodeAddress).sort());
    // The cleanup (RESET of the removed node) runs right after the commit.
    await waitFor('the removed node to be reset', 10_000, async () => ((await dbsize(s1.port)) === 0 ? true : undefined));
    await expectEveryKeyOnce(port, servers, expected, KEYS);
    client.close();
  });
});

describe('writes during a move, and a proxy restart', () => {
  // During a move the proxy reads a moving key from its source first unless it wrote that key
  // since the move began (docs/rebalancing.md, "Serving a moving key"). A restarted proxy does not
  // know what its predecessor wrote, so it must read every moving key from its target first.
  it('keys overwritten mid-ADD read back new after a kill -9 of the proxy, while the resumed move still runs', async () => {
    const count = 6000;
    const old = new Map(Array.from({ length: count }, (_, i) => [`wr:${i}`, bulkValue('wr-old', i)] as const));
    const fresh = new Map([...old.keys()].map((k, i) => [k, bulkValue('wr-new', i)] as const));
    // About 2,000 keys move at 1,000 keys/s: the move runs for a few seconds, before and after the restart.
    const { proxy, servers } = await startCluster(3, ['--request-timeout', '15000', '--migrate-rate', '1000']);
    const [s1, s2, s3] = servers;
    const admin = await TextClient.connect(proxy.port);
    for (const s of [s1!, s2!]) expect(await admin.send(`ADD ${nodeAddress(s)}`)).toMatch(/^OK added /);
    await preload(proxy.port, old);
    admin.close();
    const added = nodeAddress(s3!);
    const add = await sendAndCatch(proxy.port, `ADD ${added}`, 60_000);
    await waitUntilCopying(proxy.port, added);
    // Every key overwritten while the copy runs: the moving ones now differ on source and target.
    await preload(proxy.port, fresh);
    await crash(proxy);
    expect(await add.reply).toMatch(/^!/);
    const restarted = await restart(proxy);
    const wrong = await readBackWrong(restarted.port, fresh);
    const client = await TextClient.connect(restarted.port);
    const after = await migration(client);
    expect(after.state, `the resumed move was still running when the keys were read:\n${after.text}`).toBe('running');
    expect(wrong.slice(0, 10), `${wrong.length} of ${count} keys read an old value after the restart`).toEqual([]);
    await waitForMigration(client, 'the resumed ADD to finish', 60_000, (m) => m.state === 'done');
    expect(await readBackWrong(restarted.port, fresh)).toEqual([]);
    client.close();
  });
});

describe('kill -9 of a server during ADD', () => {
  it('target: ADD answers ERR at once, keys it does not own stay readable, the repeated ADD completes and nothing acknowledged is lost', async () => {
    const { proxy, servers } = await loadedCluster(2);
    const [, , s3] = servers;
    const target = nodeAddress(s3);
    const client = await TextClient.connect(proxy.port);
    // Writes keep flowing through the kill; the acknowledged ones must all survive.
    const stream = new SetStream(proxy.port, { prefix: 'during:', value: (i) => `d${i}`, window: 16 });
    await addAndKillMidCopy(proxy.port, target, s3, 'target');
    const interrupted = await migration(client);
    expect(interrupted.state, interrupted.text).toBe('interrupted');
    // Writes go on while the target is down: those to keys it does not own are acknowledged.
    const ackedAtKill = stream.acked.length;
    await waitFor('50 more acknowledged writes with the target down', 20_000, () => (stream.acked.length >= ackedAtKill + 50 ? true : undefined));
    stream.stop();
    await stream.closed;

    // While the target is down and the move is still planned: a key reads its value, or (if it is
    // moving to the dead target) `ERR node <target> unavailable`; never NOT_FOUND or a wrong value.
    const replies = await getAll(proxy.port, keys);
    const refused: string[] = [];
    const bad: string[] = [];
    replies.forEach((r, i) => {
      if (r === `VALUE ${expected.get(keys[i]!)}`) return;
      if (r.startsWith(`ERR node ${target} unavailable`)) refused.push(keys[i]!);
      else bad.push(`${keys[i]}: ${r.slice(0, 100)}`);
    });
    expect(bad.slice(0, 10), `${bad.length} of ${KEYS} keys read wrong while the target was down`).toEqual([]);
    expect(KEYS - refused.length, `${refused.length} keys refused while the target was down`).toBeGreaterThan(KEYS / 2);
    const acked = new Map(stream.acked.map((i) => [`during:${i}`, `d${i}`]));
    expect(acked.size, 'writes acknowledged around the kill').toBeGreaterThan(0);
    expect(stream.failures.filter((f) => !f.includes(`ERR node ${target} unavailable`)), 'SET failures other than the dead target').toEqual([]);

    await restart(s3);
    await waitUntilReachable(client, s3);
    expect(await client.send(`ADD ${target}`, 60_000)).toMatch(new RegExp(`^OK added ${escape(target)} moved=\\d+ `));
    expect((await migration(client)).state).toBe('done');

    // Only keys the target owns were refused: each of them is on the target now.
    const notOnTarget = await readBackWrong(s3.port, new Map(refused.map((k) => [k, expected.get(k)!])));
    expect(notOnTarget.slice(0, 10), `${notOnTarget.length} of ${refused.length} keys refused during the outage are not on the target`).toEqual([]);

    // SETs that got an error may or may not have been applied: the total lies in between.
    const total = await dbsize(proxy.port);
    expect(total, `DBSIZE: ${KEYS} preloaded + ${acked.size} acked of ${stream.sent} sent around the kill`).toBeGreaterThanOrEqual(KEYS + acked.size);
    expect(total).toBeLessThanOrEqual(KEYS + stream.sent);
    await expectEveryKeyOnce(proxy.port, servers, new Map([...expected, ...acked]), total);
    client.close();
  });

  it('source: ADD answers ERR at once; after a restart the repeated ADD completes and every key reads back once', async () => {
    const { proxy, servers } = await loadedCluster(2);
    const [s1, , s3] = servers;
    const target = nodeAddress(s3);
    const client = await TextClient.connect(proxy.port);
    const atKill = await addAndKillMidCopy(proxy.port, target, s1, 'source');
    expect(atKill.sources, 'the killed server was a source of the move').toContain(nodeAddress(s1));

    await restart(s1);
    await waitUntilReachable(client, s1);
    expect(await client.send(`ADD ${target}`, 60_000)).toMatch(new RegExp(`^OK added ${escape(target)} moved=\\d+ `));
    expect((await migration(client)).state).toBe('done');
    expect(await members(client)).toEqual(servers.map(nodeAddress).sort());
    await expectEveryKeyOnce(proxy.port, servers, expected, KEYS);
    client.close();
  });
});
