// A stock Redis client library (ioredis, default options including its INFO ready check)
// talking RESP to the proxy: data commands, fan-out commands, binary-safe values.
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HOST, cleanup, dbsize, nodeAddress, startCluster, TextClient, type Cluster } from './harness.js';

let cluster: Cluster;
let redis: Redis;

beforeAll(async () => {
  cluster = await startCluster(2);
  const admin = await TextClient.connect(cluster.proxy.port);
  for (const s of cluster.servers) expect(await admin.send(`ADD ${nodeAddress(s)}`)).toMatch(/^OK added /);
  admin.close();
  // Defaults: enableReadyCheck is on, so ioredis sends INFO and waits for `loading:0`.
  redis = new Redis({ host: HOST, port: cluster.proxy.port, maxRetriesPerRequest: 1, retryStrategy: () => null });
  await new Promise<void>((resolve, reject) => {
    redis.once('ready', () => resolve());
    redis.once('error', reject);
  });
});

afterAll(async () => {
  if (redis !== undefined && redis.status === 'ready') expect(await redis.quit()).toBe('OK');
  await cleanup();
});

describe('ioredis through the proxy', () => {
  it('becomes ready (INFO shows loading:0) and answers PING', async () => {
    expect(redis.status).toBe('ready');
    expect(await redis.ping()).toBe('PONG');
    expect(await redis.ping('hello')).toBe('hello');
    const info = await redis.info();
    expect(info).toMatch(/^loading:0\r?$/m);
  });

  it('SET, GET, DEL and EXISTS over keys spread across the nodes', async () => {
    const keys = Array.from({ length: 50 }, (_, i) => `io:${i}`);
    for (const k of keys) expect(await redis.set(k, `value of ${k}`)).toBe('OK');
    for (const k of keys) expect(await redis.get(k)).toBe(`value of ${k}`);
    expect(await redis.exists(...keys)).toBe(keys.length);
    expect(await redis.exists('io:0', 'io:missing', 'io:1')).toBe(2);
    expect(await redis.del('io:0', 'io:1', 'io:2', 'io:missing')).toBe(3);
    expect(await redis.get('io:0')).toBeNull();
    expect(await redis.exists('io:0', 'io:1', 'io:2')).toBe(0);
    expect(await redis.del(...keys)).toBe(keys.length - 3);
    expect(await redis.get('io:49')).toBeNull();
  });

  it('MSET and MGET split across nodes and merge in order', async () => {
    const pairs: string[] = [];
    for (let i = 0; i < 40; i++) pairs.push(`m:${i}`, `mv ${i}`);
    expect(await redis.mset(...pairs)).toBe('OK');
    const keys = Array.from({ length: 40 }, (_, i) => `m:${i}`);
    const values = await redis.mget(...keys.slice(0, 20), 'm:missing', ...keys.slice(20));
    expect(values).toEqual([...keys.slice(0, 20).map((_, i) => `mv ${i}`), null, ...keys.slice(20).map((_, i) => `mv ${i + 20}`)]);
    // Both nodes were involved: each holds some of the 40 keys.
    const perNode = await Promise.all(
      cluster.servers.map(async (s) => {
        const c = await TextClient.connect(s.port);
        const r = await c.pipeline(keys.map((k) => `EXISTS ${k}`));
        c.close();
        return r.filter((x) => x === '1').length;
      }),
    );
    expect(perNode.reduce((a, b) => a + b, 0)).toBe(40);
    for (const n of perNode) expect(n).toBeGreaterThan(0);
    expect(await redis.del(...keys)).toBe(40);
  });

  it('DBSIZE is the sum over the nodes', async () => {
    const pairs: string[] = [];
    for (let i = 0; i < 100; i++) pairs.push(`size:${i}`, String(i));
    await redis.mset(...pairs);
    const total = await redis.dbsize();
    const direct = await Promise.all(cluster.servers.map((s) => dbsize(s.port)));
    expect(direct.every((n) => n > 0), `per-node sizes ${direct.join(', ')}`).toBe(true);
    expect(total).toBe(direct.reduce((a, b) => a + b, 0));
    expect(total).toBeGreaterThanOrEqual(100);
  });

  it('keeps binary values intact: CR LF, NUL, 0xff', async () => {
    const values: Buffer[] = [
      Buffer.from('line one\r\nline two\r\n'),
      Buffer.from([0x00, 0x01, 0x00, 0xff, 0xfe, 0x0d, 0x0a, 0x00]),
      Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
      Buffer.from([0xff]),
      Buffer.alloc(0),
    ];
    for (let i = 0; i < values.length; i++) expect(await redis.set(`bin:${i}`, values[i]!)).toBe('OK');
    for (let i = 0; i < values.length; i++) {
      const got = await redis.getBuffer(`bin:${i}`);
      expect(got, `bin:${i}`).not.toBeNull();
      expect(got!.equals(values[i]!), `bin:${i} round trip: ${got!.toString('hex')}`).toBe(true);
    }
    // A binary key too.
    const key = Buffer.from([0x6b, 0x00, 0xff, 0x0d, 0x0a]);
    expect(await redis.set(key, values[1]!)).toBe('OK');
    expect((await redis.getBuffer(key))!.equals(values[1]!)).toBe(true);
    const many = await redis.mgetBuffer('bin:0', 'bin:1', 'bin:2');
    many.forEach((v, i) => expect(v!.equals(values[i]!), `mgetBuffer item ${i}`).toBe(true));
  });

  it('stores and returns a 1 MiB value', async () => {
    const big = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
    expect(await redis.set('big', big)).toBe('OK');
    const got = await redis.getBuffer('big');
    expect(got?.length).toBe(big.length);
    expect(got!.equals(big)).toBe(true);
    expect(await redis.del('big')).toBe(1);
  });
});
