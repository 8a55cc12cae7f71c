// ADD and REMOVE with data in the cluster: every key stays readable, nothing is duplicated or
// lost, the new node takes a fair share, and a removed node is emptied (RESET truncates its WAL).
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { HOST, cleanup, dbsize, freePort, nodeAddress, startCluster, TextClient, walBytes, wrongValues, type ProcHandle } from './harness.js';

afterEach(cleanup);

const KEYS = 5000;
const keys = Array.from({ length: KEYS }, (_, i) => `key:${i}`);
const valueOf = (i: number): string => `value-${i}-${'x'.repeat(i % 13)}`;


/** NODES as {address -> keys}. */
async function nodeKeys(admin: TextClient): Promise<Map<string, number>> {
  const text = await admin.send('NODES');
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^(\S+) \S+ keys=(\d+) /.exec(line);
    if (m === null) throw new Error(`unexpected NODES line ${JSON.stringify(line)} in:\n${text}`);
    out.set(m[1]!, Number(m[2]));
  }
  return out;
}

async function expectAllKeys(client: TextClient): Promise<void> {
  const wrong = await wrongValues(client, new Map(keys.map((k, i) => [k, valueOf(i)])));
  expect(wrong, `${wrong.length} of ${KEYS} keys read back wrong`).toEqual([]);
}

describe('rebalancing', () => {
  it('ADD moves a share of 5000 keys onto the new node, REMOVE evacuates one, nothing is lost', async () => {
    const { proxy, servers } = await startCluster(3);
    const [s1, s2, s3] = servers as [ProcHandle, ProcHandle, ProcHandle];
    const client = await TextClient.connect(proxy.port);
    expect(await client.send(`ADD ${nodeAddress(s1)}`)).toMatch(/^OK added /);
    expect(await client.send(`ADD ${nodeAddress(s2)}`)).toMatch(/^OK added /);

    const acks = await client.pipeline(keys.map((k, i) => `SET ${k} ${valueOf(i)}`));
    expect(acks.filter((r) => r !== 'OK'), 'SET replies other than OK').toEqual([]);
    expect(await client.send('DBSIZE')).toBe(String(KEYS));

    // ADD the third node.
    const added = await client.send(`ADD ${nodeAddress(s3)}`);
    const m = /^OK added (\S+) moved=(\d+) scanned=(\d+) ms=\d+$/.exec(added);
    expect(m, added).not.toBeNull();
    expect(m![1]).toBe(nodeAddress(s3));
    expect(Number(m![2])).toBeGreaterThan(0);
    await expectAllKeys(client);
    expect(await client.send('DBSIZE')).toBe(String(KEYS));
    const direct = await Promise.all(servers.map((s) => dbsize(s.port)));
    expect(direct.reduce((a, b) => a + b, 0), `per-node DBSIZE ${direct.join(' + ')}: every key on exactly one node`).toBe(KEYS);
    const afterAdd = await nodeKeys(client);
    expect([...afterAdd.keys()].sort()).toEqual(servers.map(nodeAddress).sort());
    const share = afterAdd.get(nodeAddress(s3))!;
    // A third of the ring, give or take: far from nothing and far from everything.
    expect(share, `new node holds ${share} of ${KEYS} keys`).toBeGreaterThan(KEYS * 0.15);
    expect(share, `new node holds ${share} of ${KEYS} keys`).toBeLessThan(KEYS * 0.55);
    expect(share).toBe(direct[2]);
    expect(Number(m![2]), 'moved= reports the keys now on the new node').toBe(share);

    // REMOVE the first node.
    const walBefore = await walBytes(s1.port);
    const s1Keys = direct[0]!;
    expect(s1Keys).toBeGreaterThan(0);
    const removed = await client.send(`REMOVE ${nodeAddress(s1)}`);
    expect(removed).toMatch(new RegExp(`^OK removed ${nodeAddress(s1).replace(/\./g, '\\.')} moved=${s1Keys} `));
    await expectAllKeys(client);
    expect(await client.send('DBSIZE')).toBe(String(KEYS));
    expect(await dbsize(s1.port), 'the removed server is empty').toBe(0);
    const walAfter = await walBytes(s1.port);
    expect(walAfter, `wal of the removed node: ${walBefore} bytes before REMOVE, ${walAfter} after`).toBeLessThan(walBefore);
    expect([...(await nodeKeys(client)).keys()].sort()).toEqual([nodeAddress(s2), nodeAddress(s3)].sort());
    expect((await dbsize(s2.port)) + (await dbsize(s3.port))).toBe(KEYS);
    client.close();
  });

  it('moves multi-megabyte binary values intact (batches are bounded in bytes, not only keys)', async () => {
    const { proxy, servers } = await startCluster(2);
    const [s1, s2] = servers as [ProcHandle, ProcHandle];
    const admin = await TextClient.connect(proxy.port);
    expect(await admin.send(`ADD ${nodeAddress(s1)}`)).toMatch(/^OK added /);
    const redis = new Redis({ host: HOST, port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
    await redis.connect();
    const big = (i: number): Buffer => {
      const v = Buffer.alloc(2 * 1024 * 1024 + i);
      for (let j = 0; j < v.length; j += 4096) v[j] = (i * 31 + j) & 0xff;
      v.write(`\r\n$${i}\r\n`, 100, 'latin1'); // RESP-looking bytes inside a value
      return v;
    };
    const N = 24;
    for (let i = 0; i < N; i++) expect(await redis.set(`big:${i}`, big(i))).toBe('OK');
    const added = await admin.send(`ADD ${nodeAddress(s2)}`);
    expect(added).toMatch(/^OK added \S+ moved=[1-9]\d* /);
    for (let i = 0; i < N; i++) expect((await redis.getBuffer(`big:${i}`))?.equals(big(i)), `big:${i}`).toBe(true);
    expect((await dbsize(s1.port)) + (await dbsize(s2.port)), 'every key on exactly one node').toBe(N);
    redis.disconnect();
    admin.close();
  });

  it('--migrate-rate holds a move to that many keys per second, and it still moves every key', async () => {
    const RATE = 2000;
    const { proxy, servers } = await startCluster(3, ['--migrate-rate', String(RATE), '--migrate-batch', '100']);
    const [s1, s2, s3] = servers as [ProcHandle, ProcHandle, ProcHandle];
    const client = await TextClient.connect(proxy.port);
    for (const s of [s1, s2]) expect(await client.send(`ADD ${nodeAddress(s)}`)).toMatch(/^OK added /);
    const acks = await client.pipeline(keys.map((k, i) => `SET ${k} ${valueOf(i)}`));
    expect(acks.filter((r) => r !== 'OK'), 'SET replies other than OK').toEqual([]);
    const added = await client.send(`ADD ${nodeAddress(s3)}`);
    const m = /^OK added \S+ moved=(\d+) scanned=\d+ ms=(\d+)$/.exec(added);
    expect(m, added).not.toBeNull();
    const [moved, ms] = [Number(m![1]), Number(m![2])];
    expect(moved, 'a third of the keys or so').toBeGreaterThan(KEYS * 0.15);
    // Each batch (at most 100 keys per target) may leave only once the keys before it are due.
    const floor = ((moved - 2 * 100) / RATE) * 1000;
    expect(ms, `moved ${moved} keys in ${ms} ms; at ${RATE} keys/s that takes at least ${Math.round(floor)} ms`).toBeGreaterThanOrEqual(floor);
    await expectAllKeys(client);
    expect((await dbsize(s1.port)) + (await dbsize(s2.port)) + (await dbsize(s3.port)), 'every key on exactly one node').toBe(KEYS);
    expect(await client.send('MIGRATION'), 'MIGRATION shows the limit').toMatch(new RegExp(`^migration_rate_limit:${RATE}$`, 'm'));
    client.close();
  });

  it('rejects ADD of a member, of a dead port and of bad addresses', async () => {
    const { proxy, servers } = await startCluster(1);
    const client = await TextClient.connect(proxy.port);
    const s1 = nodeAddress(servers[0]!);
    expect(await client.send(`ADD ${s1}`)).toMatch(/^OK added /);
    expect(await client.send(`ADD ${s1}`)).toMatch(/^OK already a member /);

    const nobody = await freePort();
    const started = Date.now();
    const dead = await client.send(`ADD 127.0.0.1:${nobody}`);
    const ms = Date.now() - started;
    expect(dead).toMatch(/^ERR /);
    expect(ms, `ADD of a dead port took ${ms} ms`).toBeLessThan(3000);

    for (const bad of ['foo', '1.2.3.4:0', '1.2.3.4:70000', ':8081', '127.0.0.1:', '127.0.0.1:80a']) {
      expect(await client.send(`ADD ${bad}`), `ADD ${bad}`).toMatch(/^ERR /);
    }
    // None of that changed the ring.
    expect([...(await nodeKeys(client)).keys()]).toEqual([s1]);
    expect(await client.send('SET still works')).toBe('OK');
    expect(await client.send('GET still')).toBe('VALUE works');
    client.close();
  });
});
