// Restarts: a proxy killed with SIGKILL comes back with the same ring from its state file, and
// a server stopped with SIGTERM finishes its pending writes before it exits.
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, crash, dbsize, nodeAddress, restart, SetStream, startCluster, startServer, tempDir, TextClient, waitFor, wrongValues } from './harness.js';

afterEach(cleanup);

const KEYS = 2000;
const keys = Array.from({ length: KEYS }, (_, i) => `restart:${i}`);
const valueOf = (i: number): string => `v${i}`;
const expected = new Map(keys.map((k, i) => [k, valueOf(i)]));

describe('kv-proxy restart', () => {
  it('comes back after kill -9 with the same members, and every key reads back', async () => {
    const { proxy, servers } = await startCluster(2);
    let client = await TextClient.connect(proxy.port);
    for (const s of servers) expect(await client.send(`ADD ${nodeAddress(s)}`)).toMatch(/^OK added /);
    const acks = await client.pipeline(keys.map((k, i) => `SET ${k} ${valueOf(i)}`));
    expect(acks.filter((r) => r !== 'OK')).toEqual([]);
    const membersBefore = (await client.send('NODES')).split('\n').map((l) => l.split(' ')[0]);
    expect(membersBefore.sort()).toEqual(servers.map(nodeAddress).sort());

    await crash(proxy);
    const again = await restart(proxy);
    expect(again.port).toBe(proxy.port);
    client = await TextClient.connect(again.port);
    const membersAfter = (await client.send('NODES')).split('\n').map((l) => l.split(' ')[0]);
    expect(membersAfter.sort()).toEqual(membersBefore);
    expect(await wrongValues(client, expected), 'keys that did not read back after the proxy restart').toEqual([]);
    expect(await client.send('DBSIZE')).toBe(String(KEYS));
    // And it still routes writes the same way: a new key lands on exactly one server.
    expect(await client.send('SET after-restart yes')).toBe('OK');
    const holders = await Promise.all(servers.map(async (s) => (await TextClient.connect(s.port)).send('EXISTS after-restart')));
    expect(holders.sort()).toEqual(['0', '1']);
  });
});

describe('kv-server SIGTERM', () => {
  it('loses nothing it stored: restart it and every key reads back through the proxy', async () => {
    const { proxy, servers } = await startCluster(2);
    const client = await TextClient.connect(proxy.port);
    for (const s of servers) expect(await client.send(`ADD ${nodeAddress(s)}`)).toMatch(/^OK added /);
    expect((await client.pipeline(keys.map((k, i) => `SET ${k} ${valueOf(i)}`))).filter((r) => r !== 'OK')).toEqual([]);

    const victim = servers[0]!;
    const held = await dbsize(victim.port);
    expect(held).toBeGreaterThan(0);
    victim.kill('SIGTERM');
    expect(await victim.waitForExit(), victim.tail()).toEqual({ code: 0, signal: null });
    servers[0] = await restart(victim);
    expect(await dbsize(victim.port)).toBe(held);

    // The proxy reconnects on its own; poll until it does, then check every key.
    let wrong: string[] = [];
    await waitFor('every key to read back through the proxy', 10_000, async () => {
      wrong = await wrongValues(client, expected);
      return wrong.length === 0 ? true : undefined;
    }).catch((err: Error) => {
      throw new Error(`${err.message}; ${wrong.length} keys wrong, e.g. ${wrong.slice(0, 5).join('; ')}`);
    });
  });

  it('answers or drops in-flight writes, but every acknowledged one survives', async () => {
    const server = await startServer({ dir: tempDir('term') });
    const stream = new SetStream(server.port, { prefix: 'term:', value: (i) => `value ${i}`, window: 100 });
    await waitFor('some writes to be acknowledged', 15_000, () => (stream.acked.length >= 300 ? true : undefined));
    server.kill('SIGTERM');
    expect(await server.waitForExit(), server.tail()).toEqual({ code: 0, signal: null });
    await stream.closed;
    expect(stream.failures).toEqual([]);

    await restart(server);
    const client = await TextClient.connect(server.port);
    const lost = await wrongValues(client, new Map(stream.acked.map((i) => [`term:${i}`, `value ${i}`])));
    expect(lost, `${stream.acked.length} acknowledged writes checked after SIGTERM`).toEqual([]);
    const size = Number(await client.send('DBSIZE'));
    expect(size).toBeGreaterThanOrEqual(stream.acked.length);
    expect(size).toBeLessThanOrEqual(stream.sent);
  });
});
