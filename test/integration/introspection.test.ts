// INFO, NODES and DBSIZE as an operator reads them: Redis-style `# Section` / `key:value` text,
// the same content over RESP (one bulk string) and over the text protocol (lines, then `END`),
// section filtering, per-node health and ring share on the proxy, and counters that move.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ask, cleanup, crash, dbsize, nodeAddress, startProxy, startServer, tempDir, TextClient, waitFor, walPath, SetStream, type ProcHandle } from './harness.js';
import { cleanupOperator, info, infoField, PACKAGE_VERSION, parseInfo, respBulkText, respCall, textBlock, type InfoSections } from './support-operator.js';

const SERVER_SECTIONS = ['Server', 'Clients', 'Memory', 'Persistence', 'Stats', 'Keyspace'];
const PROXY_SECTIONS = ['Server', 'Clients', 'Memory', 'Persistence', 'Stats', 'Cluster', 'Migration', 'Keyspace'];
/** Fields every INFO (server or proxy) must carry, each a whole number unless noted. */
const COMMON_NUMERIC = ['uptime_in_seconds', 'connected_clients', 'instantaneous_ops_per_sec', 'total_commands_processed', 'used_memory'];

let servers: ProcHandle[] = [];
let proxy: ProcHandle;
let startedAt: number;
const KEYS = 60;

beforeAll(async () => {
  startedAt = Date.now();
  // The third server runs another fsync policy, so INFO must report the flag, not a constant.
  servers = await Promise.all([
    startServer({ dir: tempDir('s1') }),
    startServer({ dir: tempDir('s2') }),
    startServer({ dir: tempDir('s3'), args: ['--fsync', 'everysec'] }),
  ]);
  proxy = await startProxy({ dir: tempDir('proxy') });
  for (const s of servers) expect(await ask(proxy.port, `ADD ${nodeAddress(s)}`)).toMatch(/^OK added /);
  const c = await TextClient.connect(proxy.port);
  const replies = await c.pipeline(Array.from({ length: KEYS }, (_, i) => `SET info-key-${i} value-${i}`));
  c.close();
  expect(new Set(replies)).toEqual(new Set(['OK']));
});

afterAll(async () => {
  await cleanupOperator();
  await cleanup();
});

function sectionNames(info: InfoSections): string[] {
  return [...info.keys()];
}

function expectWholeNumber(info: InfoSections, key: string): number {
  const v = infoField(info, key);
  expect(v, `INFO ${key}`).toMatch(/^\d+$/);
  return Number(v);
}

/** `keys=N` out of `db0:keys=N,expires=0,avg_ttl=0`. */
function keyspaceKeys(info: InfoSections): number {
  const db0 = info.get('Keyspace')?.get('db0');
  const m = /^keys=(\d+)(,|$)/.exec(db0 ?? '');
  if (!m) throw new Error(`Keyspace db0 is not keys=N,...: ${JSON.stringify(db0)}`);
  return Number(m[1]);
}

/** The proxy's NODES lines as rows. */
function parseNodesText(text: string): { address: string; health: string; keys: string; share: number }[] {
  return text
    .split(/\r?\n/)
    .filter((l) => l !== '')
    .map((line) => {
      const m = /^(\S+:\d+) (up|down|connecting) keys=(\d+|unknown) share=(\d+\.\d+)%$/.exec(line);
      if (!m) throw new Error(`NODES line not in the documented form '<host:port> <health> keys=<n> share=<p>%': ${JSON.stringify(line)}`);
      return { address: m[1]!, health: m[2]!, keys: m[3]!, share: Number(m[4]) };
    });
}

describe('INFO on a server', () => {
  it('is Redis-style text: a RESP bulk string with CRLF lines, and the same lines then END over text', async () => {
    const s = servers[0]!;
    const reply = await respCall(s.port, ['INFO']);
    expect(reply.type, JSON.stringify(reply)).toBe('bulk');
    const resp = (reply as { value: Buffer }).value.toString('utf8');
    expect(resp.startsWith('# Server\r\n'), resp).toBe(true);
    // Every line ends in CRLF, as Redis sends it.
    expect(resp.endsWith('\r\n')).toBe(true);
    expect(resp.replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
    const viaResp = parseInfo(resp);
    expect(sectionNames(viaResp)).toEqual(SERVER_SECTIONS);

    const text = await textBlock(s.port, 'INFO');
    expect(text.endsWith('\nEND\n'), text).toBe(true);
    expect(text).not.toMatch(/\r/);
    const body = text.slice(0, -'END\n'.length);
    const viaText = parseInfo(body);
    // Same sections and same fields in both framings (values such as uptime may move).
    expect(sectionNames(viaText)).toEqual(SERVER_SECTIONS);
    for (const name of SERVER_SECTIONS) expect([...viaText.get(name)!.keys()], name).toEqual([...viaResp.get(name)!.keys()]);
    expect(viaText.get('Server')!.get('process_id')).toBe(viaResp.get('Server')!.get('process_id'));
  });

  it('reports version, uptime, clients, load, memory, keys and the WAL state', async () => {
    const s = servers[0]!;
    const i = await info(s.port);
    expect(infoField(i, 'loading')).toBe('0');
    expect(infoField(i, 'kvstore_version')).toBe(PACKAGE_VERSION);
    expect(infoField(i, 'role')).toBe('kv-server');
    expect(infoField(i, 'tcp_port')).toBe(String(s.port));
    expect(Number(infoField(i, 'process_id'))).toBe(s.pid);
    for (const key of COMMON_NUMERIC) expectWholeNumber(i, key);
    expect(expectWholeNumber(i, 'uptime_in_seconds')).toBeLessThanOrEqual(Math.ceil((Date.now() - startedAt) / 1000) + 1);
    // Our connection plus the proxy's.
    expect(expectWholeNumber(i, 'connected_clients')).toBeGreaterThanOrEqual(2);
    // Client sockets read into the shared buffer (a Node that no longer allows it falls back to streams).
    expect(infoField(i, 'client_reads')).toBe('shared_buffer');
    expect(expectWholeNumber(i, 'used_memory')).toBeGreaterThan(0);

    // Keyspace agrees with DBSIZE, and this server holds some of the keys written through the proxy.
    const keys = keyspaceKeys(i);
    expect(keys).toBe(await dbsize(s.port));
    expect(keys).toBeGreaterThan(0);

    // The WAL: its size as on disk (every acknowledged write is fsynced) and the zeros written
    // ahead of it, a recent fsync, the policy.
    const walBytes = expectWholeNumber(i, 'wal_size_bytes');
    const ahead = expectWholeNumber(i, 'wal_preallocated_bytes');
    const onDisk = fs.readFileSync(walPath(s));
    expect(walBytes + ahead).toBeLessThanOrEqual(onDisk.length);
    expect(onDisk.subarray(walBytes).every((byte) => byte === 0), 'past the log: only zeros').toBe(true);
    const lastFsync = expectWholeNumber(i, 'wal_last_fsync_unix_ms');
    expect(lastFsync).toBeGreaterThanOrEqual(startedAt - 1000);
    expect(lastFsync).toBeLessThanOrEqual(Date.now() + 1000);
    expect(infoField(i, 'fsync_policy')).toBe('always');
  });

  it('reports the --fsync policy the server was started with', async () => {
    const i = await info(servers[2]!.port, 'persistence');
    expect(infoField(i, 'fsync_policy')).toBe('everysec');
  });

  it('INFO <section> returns only that section, case-insensitively, in both framings', async () => {
    const s = servers[1]!;
    const persistence = await info(s.port, 'persistence');
    expect(sectionNames(persistence)).toEqual(['Persistence']);
    expect(infoField(persistence, 'wal_size_bytes')).toMatch(/^\d+$/);

    const keyspace = await info(s.port, 'KEYSPACE');
    expect(sectionNames(keyspace)).toEqual(['Keyspace']);
    expect(keyspaceKeys(keyspace)).toBe(await dbsize(s.port));

    const stats = await textBlock(s.port, 'INFO Stats');
    expect(stats.endsWith('\nEND\n'), stats).toBe(true);
    expect(sectionNames(parseInfo(stats.slice(0, -'END\n'.length)))).toEqual(['Stats']);

    expect(sectionNames(await info(s.port, 'all'))).toEqual(SERVER_SECTIONS);
  });
});

describe('INFO on the proxy', () => {
  it('is a RESP bulk string, and the same lines then END over text', async () => {
    const viaResp = parseInfo(await respBulkText(proxy.port, ['INFO']));
    expect(sectionNames(viaResp)).toEqual(PROXY_SECTIONS);
    const text = await textBlock(proxy.port, 'INFO');
    expect(text.endsWith('\nEND\n'), text).toBe(true);
    const viaText = parseInfo(text.slice(0, -'END\n'.length));
    expect(sectionNames(viaText)).toEqual(PROXY_SECTIONS);
    for (const name of PROXY_SECTIONS) expect([...viaText.get(name)!.keys()], name).toEqual([...viaResp.get(name)!.keys()]);
  });

  it('reports version, uptime, clients, load, each node with health, keys and ring share, and the migration state', async () => {
    const i = await info(proxy.port);
    expect(infoField(i, 'loading')).toBe('0');
    expect(infoField(i, 'kvstore_version')).toBe(PACKAGE_VERSION);
    expect(infoField(i, 'role')).toBe('kv-proxy');
    expect(Number(infoField(i, 'process_id'))).toBe(proxy.pid);
    for (const key of COMMON_NUMERIC) expectWholeNumber(i, key);
    expect(expectWholeNumber(i, 'connected_clients')).toBeGreaterThanOrEqual(1);
    expect(infoField(i, 'client_reads')).toBe('shared_buffer');

    const cluster = i.get('Cluster')!;
    expect(cluster.get('nodes')).toBe('3');
    const nodeLines = [...cluster].filter(([k]) => /^node\d+$/.test(k)).map(([, v]) => v);
    expect(nodeLines).toHaveLength(3);
    const rows = nodeLines.map((line) => {
      const m = /^(\S+:\d+),health=(\w+),keys=(\d+|unknown),share=(\d+\.\d+)$/.exec(line);
      if (!m) throw new Error(`INFO cluster node line not 'host:port,health=...,keys=N,share=P': ${line}`);
      return { address: m[1]!, health: m[2]!, keys: m[3]!, share: Number(m[4]) };
    });
    expect(rows.map((r) => r.address).sort()).toEqual(servers.map(nodeAddress).sort());
    for (const r of rows) {
      expect(r.health, r.address).toBe('up');
      const server = servers.find((s) => nodeAddress(s) === r.address)!;
      expect(Number(r.keys), r.address).toBe(await dbsize(server.port));
      expect(r.share, r.address).toBeGreaterThan(0);
    }
    expect(rows.reduce((sum, r) => sum + r.share, 0)).toBeCloseTo(100, 0);
    expect(keyspaceKeys(i)).toBe(KEYS);

    const migration = i.get('Migration')!;
    // The last change was the third ADD, finished before its reply.
    expect(migration.get('migration_state')).toBe('done');
    expect(migration.get('migration_kind')).toBe('add');
    expect(migration.get('migration_node')).toBe(nodeAddress(servers[2]!));
    expect(migration.get('migration_error')).toBe('none');
  });

  it('INFO <section> returns only that section', async () => {
    const cluster = await info(proxy.port, 'cluster');
    expect(sectionNames(cluster)).toEqual(['Cluster']);
    const migration = await info(proxy.port, 'Migration');
    expect(sectionNames(migration)).toEqual(['Migration']);
    const text = await textBlock(proxy.port, 'INFO keyspace');
    expect(text).toBe(`# Keyspace\ndb0:keys=${KEYS},expires=0,avg_ttl=0\nEND\n`);
  });
});

describe('NODES and DBSIZE on the proxy', () => {
  it('NODES lists every member as host:port with health, key count and ring share summing to 100%', async () => {
    const text = await textBlock(proxy.port, 'NODES');
    expect(text.endsWith('\nEND\n'), text).toBe(true);
    const rows = parseNodesText(text.slice(0, -'END\n'.length));
    expect(rows.map((r) => r.address).sort()).toEqual(servers.map(nodeAddress).sort());
    for (const r of rows) {
      expect(r.health, r.address).toBe('up');
      const server = servers.find((s) => nodeAddress(s) === r.address)!;
      expect(r.keys, r.address).toBe(String(await dbsize(server.port)));
    }
    const total = rows.reduce((sum, r) => sum + r.share, 0);
    expect(Math.abs(total - 100), `shares sum to ${total}`).toBeLessThan(0.05);

    // Over RESP: one bulk string with the same rows.
    const viaResp = parseNodesText(await respBulkText(proxy.port, ['NODES']));
    expect(viaResp).toEqual(rows);
  });

  it('DBSIZE through the proxy is the sum of the servers', async () => {
    const sizes = await Promise.all(servers.map((s) => dbsize(s.port)));
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(KEYS);
    expect(await dbsize(proxy.port)).toBe(KEYS);
    expect(await respCall(proxy.port, ['DBSIZE'])).toEqual({ type: 'int', value: KEYS });
  });
});

describe('counters move', () => {
  it('total_commands_processed grows by at least the commands sent, on the proxy and on the server', async () => {
    const target = servers[0]!;
    const beforeProxy = Number(infoField(await info(proxy.port, 'stats'), 'total_commands_processed'));
    const beforeServer = Number(infoField(await info(target.port, 'stats'), 'total_commands_processed'));
    const N = 50;
    const c = await TextClient.connect(proxy.port);
    const d = await TextClient.connect(target.port);
    expect(new Set(await c.pipeline(Array.from({ length: N }, () => 'PING')))).toEqual(new Set(['PONG']));
    expect(new Set(await d.pipeline(Array.from({ length: N }, (_, i) => `GET counter-${i}`)))).toEqual(new Set(['NOT_FOUND']));
    c.close();
    d.close();
    const afterProxy = Number(infoField(await info(proxy.port, 'stats'), 'total_commands_processed'));
    const afterServer = Number(infoField(await info(target.port, 'stats'), 'total_commands_processed'));
    expect(afterProxy - beforeProxy).toBeGreaterThanOrEqual(N);
    expect(afterServer - beforeServer).toBeGreaterThanOrEqual(N);
  });

  it('connected_clients follows connections opening and closing', async () => {
    // A server of its own: no proxy connection, so every client is ours.
    const s = await startServer({ dir: tempDir('alone') });
    const clients = await Promise.all([1, 2, 3].map(() => TextClient.connect(s.port)));
    // The kernel completes a connect before the server's accept loop sees it, so poll: the
    // count must reach exactly three (never more: nobody else connects to this server).
    const counts: string[] = [];
    await waitFor('connected_clients to reach 3', 20_000, async () => {
      counts.push(infoField(parseInfo(await clients[0]!.send('INFO clients')), 'connected_clients'));
      return counts[counts.length - 1] === '3' ? true : undefined;
    });
    expect(counts.every((c) => Number(c) >= 1 && Number(c) <= 3), counts.join(',')).toBe(true);
    clients[1]!.socket.destroy();
    clients[2]!.socket.destroy();
    await waitFor('connected_clients to drop to 1', 20_000, async () => {
      const i = parseInfo(await clients[0]!.send('INFO clients'));
      return infoField(i, 'connected_clients') === '1' ? true : undefined;
    });
    clients[0]!.close();
  });

  it('instantaneous_ops_per_sec rises above 0 under load, on the server and the proxy', async () => {
    const writer = new SetStream(proxy.port, { prefix: 'ops-', value: (i) => `v${i}`, window: 32 });
    try {
      await waitFor('instantaneous_ops_per_sec > 0 on the proxy and on every server', 30_000, async () => {
        const rates = await Promise.all([proxy, ...servers].map(async (p) => Number(infoField(await info(p.port, 'stats'), 'instantaneous_ops_per_sec'))));
        return rates.every((r) => r > 0) ? rates : undefined;
      }, 100);
    } finally {
      writer.stop();
      await writer.closed;
    }
    expect(writer.failures).toEqual([]);
  });
});

describe('a node that is down', () => {
  // Last in this file: it kills a member.
  it('shows as not up in NODES and INFO cluster, with its key count unknown', async () => {
    const victim = servers[1]!;
    await crash(victim);
    const row = await waitFor(`NODES to report ${nodeAddress(victim)} as not up`, 30_000, async () => {
      const rows = parseNodesText(await respBulkText(proxy.port, ['NODES']));
      const r = rows.find((x) => x.address === nodeAddress(victim));
      return r !== undefined && r.health !== 'up' ? r : undefined;
    });
    expect(['down', 'connecting']).toContain(row.health);
    expect(row.keys).toBe('unknown');
    const cluster = await info(proxy.port, 'cluster');
    const line = [...cluster.get('Cluster')!.values()].find((v) => v.startsWith(`${nodeAddress(victim)},`));
    expect(line).toMatch(/,health=(down|connecting),keys=unknown,/);
    // The other members still answer.
    const healthy = parseNodesText(await respBulkText(proxy.port, ['NODES'])).filter((r) => r.address !== nodeAddress(victim));
    expect(healthy.map((r) => r.health)).toEqual(['up', 'up']);
  });
});
