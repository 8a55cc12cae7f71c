// Authentication on kv-server and kv-proxy (--password), the proxy's own password for the
// servers (--node-password), ADD/REMOVE argument checks, and the default listening address
// (loopback). docs/protocol.md, "Authentication".
import os from 'node:os';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HOST, cleanup, crash, nodeAddress, requireTool, run, startProxy, startServer, tempDir, type ProcHandle } from './harness.js';
import { askBlock, destroyRawConnections, RawConnection, TARGETS, type TargetKind } from './support-robustness.js';

const PW = 's3cret-pw';
const NOAUTH = 'NOAUTH Authentication required.';
const WRONGPASS = 'WRONGPASS invalid username-password pair or user is disabled.';
const INSTALL_REDIS_TOOLS = 'apt-get install -y redis-tools';

/** Direct target with --password, and a proxy with --password in front of servers with it. */
const targets = new Map<TargetKind, ProcHandle>();
let backends: ProcHandle[] = [];
const redisClients: Redis[] = [];

beforeAll(async () => {
  const [server, ...rest] = await Promise.all([0, 1, 2].map((i) => startServer({ dir: tempDir(`auth-${i}`), args: ['--password', PW] })));
  backends = rest;
  targets.set('kv-server', server!);
  // No --node-password: it defaults to --password.
  const proxy = await startProxy({ dir: tempDir('auth-proxy'), args: ['--password', PW] });
  const admin = await RawConnection.connect(proxy.port);
  expect(await admin.ask(`AUTH ${PW}`)).toEqual(['OK']);
  for (const b of backends) expect(await admin.ask(`ADD ${nodeAddress(b)}`)).toEqual([expect.stringMatching(/^OK added /)]);
  admin.destroy();
  targets.set('kv-proxy', proxy);
});

afterAll(async () => {
  for (const r of redisClients) r.disconnect();
  destroyRawConnections();
  await cleanup();
});

function target(kind: TargetKind): ProcHandle {
  const t = targets.get(kind);
  if (t === undefined) throw new Error(`${kind} did not start`);
  return t;
}

/** A connection that has sent AUTH with the right password. */
async function authed(port: number, password = PW): Promise<RawConnection> {
  const c = await RawConnection.connect(port);
  expect(await c.ask(`AUTH ${password}`)).toEqual(['OK']);
  return c;
}

describe.each(TARGETS)('%s --password', (kind) => {
  it('before AUTH only AUTH, PING, QUIT (and CLIENT, HELP) work; everything else gets NOAUTH, in text and in RESP', async () => {
    const t = target(kind);
    const c = await RawConnection.connect(t.port);
    expect(await c.ask('PING', 'PING hello', 'CLIENT SETNAME tester', 'CLIENT GETNAME')).toEqual(['PONG', 'hello', 'OK', 'tester']);
    const refused = ['GET auth:k', 'SET auth:k stolen', 'DEL auth:k', 'EXISTS auth:k', 'MGET auth:k auth:j', 'MSET auth:k 1 auth:j 2', 'DBSIZE', 'CONFIG GET *', 'COMMAND', 'SELECT 0'];
    const blocks = ['INFO', ...(kind === 'kv-proxy' ? ['NODES', 'MIGRATION'] : [])];
    // Commands only a server has: the ones the proxy uses to move data, RESET included.
    const internal = kind === 'kv-server' ? ['NODEINFO', 'XGET auth:k', 'IMPORT auth:k v', 'DELTOMB auth:k', 'CLEARTOMBS', 'RESET', 'RANGEPUSH WAIT t', 'DROPRANGE 0 0 0', 'BGREWRITEAOF'] : [];
    const admin = kind === 'kv-proxy' ? [`ADD 127.0.0.1:${backends[0]!.port}`, `REMOVE ${nodeAddress(backends[0]!)}`] : [];
    const all = [...refused, ...blocks, ...internal, ...admin];
    expect(await c.ask(...all)).toEqual(all.map(() => NOAUTH));
    // RESP requests get the same error in RESP.
    for (const args of [['GET', 'auth:k'], ['SET', 'auth:k', 'stolen'], ['DBSIZE'], ['INFO']]) expect(await c.askResp(...args), args.join(' ')).toBe(`-${NOAUTH}\r\n`);
    expect(await c.askResp('PING')).toBe('+PONG\r\n');
    // HELP is allowed (a block of lines).
    expect((await askBlock(t.port, 'HELP')).length).toBeGreaterThan(5);
    // QUIT answers OK and closes.
    c.socket.write('QUIT\n');
    expect(await c.line()).toBe('OK');
    await c.waitForClose();
    // Nothing that was refused took effect.
    const a = await authed(t.port);
    expect(await a.ask('GET auth:k', 'EXISTS auth:j')).toEqual(['NOT_FOUND', '0']);
    a.destroy();
  });

  it('a wrong password gets WRONGPASS and the connection stays open; the right one gets OK, then commands work', async () => {
    const t = target(kind);
    const c = await RawConnection.connect(t.port);
    expect(await c.ask('AUTH wrong-pw', 'GET auth:x', `AUTH ${PW}x`, `AUTH ${PW.slice(0, -1)}`)).toEqual([WRONGPASS, NOAUTH, WRONGPASS, WRONGPASS]);
    expect(await c.askResp('AUTH', 'wrong-pw')).toBe(`-${WRONGPASS}\r\n`);
    expect(await c.askResp('GET', 'auth:x')).toBe(`-${NOAUTH}\r\n`);
    expect(c.closed).toBe(false);
    expect(await c.ask('AUTH a b c')).toEqual(["ERR wrong number of arguments for 'auth' command"]);
    expect(await c.ask(`AUTH ${PW}`, 'SET auth:x 42', 'GET auth:x', 'DBSIZE')).toEqual(['OK', 'OK', 'VALUE 42', expect.stringMatching(/^\d+$/)]);
    // A wrong password later does not take the authentication away.
    expect(await c.ask('AUTH nope', 'GET auth:x')).toEqual([WRONGPASS, 'VALUE 42']);
    c.destroy();
    // RESP, and the Redis 6 form AUTH <username> <password> (the username is ignored).
    const r = await RawConnection.connect(t.port);
    expect(await r.askResp('AUTH', 'default', PW)).toBe('+OK\r\n');
    expect(await r.askResp('GET', 'auth:x')).toBe('$2\r\n42\r\n');
    r.destroy();
  });

  it('ioredis with the password option works', async () => {
    const t = target(kind);
    const redis = new Redis({ host: HOST, port: t.port, password: PW, maxRetriesPerRequest: 1, retryStrategy: () => null, lazyConnect: true });
    redisClients.push(redis);
    await redis.connect(); // resolves once AUTH and the INFO ready check are through
    expect(redis.status).toBe('ready');
    expect(await redis.set('auth:io', 'via ioredis')).toBe('OK');
    expect(await redis.get('auth:io')).toBe('via ioredis');
    expect(await redis.mset('auth:io1', 'a', 'auth:io2', 'b')).toBe('OK');
    expect(await redis.mget('auth:io1', 'auth:io2', 'auth:none')).toEqual(['a', 'b', null]);
    expect(await redis.quit()).toBe('OK');
  });

  it('redis-cli -a <password> works; without it, NOAUTH; with a wrong one, AUTH failed', async () => {
    const cli = requireTool('redis-cli', INSTALL_REDIS_TOOLS);
    const t = target(kind);
    const base = ['-h', HOST, '-p', String(t.port)];
    const set = await run(cli, [...base, '-a', PW, '--no-auth-warning', 'set', 'auth:cli', 'from redis-cli']);
    expect(set.stdout, set.stderr).toBe('OK\n');
    const get = await run(cli, [...base, '-a', PW, 'get', 'auth:cli']);
    expect(get.stdout, get.stderr).toBe('from redis-cli\n');
    const anonymous = await run(cli, [...base, 'get', 'auth:cli']);
    expect(anonymous.stdout + anonymous.stderr).toContain(NOAUTH);
    expect(anonymous.stdout).not.toContain('from redis-cli');
    const wrong = await run(cli, [...base, '-a', 'wrong-pw', '--no-auth-warning', 'get', 'auth:cli']);
    expect(wrong.stdout + wrong.stderr).toContain('WRONGPASS');
    expect(wrong.stdout).not.toContain('from redis-cli');
  });

  it('listens on 127.0.0.1 by default: not reachable on the machine\'s other addresses', async () => {
    const ssPath = requireTool('ss', 'apt-get install -y iproute2');
    const t = target(kind);
    const ss = await run(ssPath, ['-ltnpH']);
    expect(ss.code, ss.stderr).toBe(0);
    const mine = ss.stdout.split('\n').filter((l) => l.includes(`pid=${t.pid},`));
    expect(mine.length, `listening sockets of pid ${t.pid}:\n${ss.stdout}`).toBeGreaterThan(0);
    for (const line of mine) expect(line.split(/\s+/)[3], line).toBe(`127.0.0.1:${t.port}`);
    const c = await authed(t.port);
    expect(await c.ask('CONFIG GET bind')).toEqual(['bind 127.0.0.1']);
    c.destroy();
    // This machine's own non-loopback addresses, if it has any (link-local IPv6 needs a scope).
    const addresses = Object.values(os.networkInterfaces())
      .flat()
      .filter((a) => a !== undefined && !a.internal && !a.address.startsWith('fe80:'))
      .map((a) => a!.address);
    for (const address of addresses) {
      const err = await RawConnection.connect(t.port, { host: address, timeoutMs: 5000 }).then(
        (conn) => {
          conn.destroy();
          return undefined;
        },
        (e: NodeJS.ErrnoException) => e,
      );
      expect(err?.code, `connect to ${address}:${t.port}`).toBe('ECONNREFUSED');
    }
    console.log(`[auth] ${kind} listens on 127.0.0.1:${t.port} only; refused on ${addresses.join(', ') || '(no other addresses)'}`);
  });
});

describe('kv-proxy administration with a password', () => {
  it('ADD and REMOVE require an authenticated client', async () => {
    const proxy = target('kv-proxy');
    const before = await askBlock(proxy.port, 'NODES', HOST, [`AUTH ${PW}`]);
    const extra = await startServer({ dir: tempDir('auth-extra'), args: ['--password', PW] });
    const c = await RawConnection.connect(proxy.port);
    expect(await c.ask(`ADD ${nodeAddress(extra)}`, `REMOVE ${nodeAddress(backends[0]!)}`)).toEqual([NOAUTH, NOAUTH]);
    expect(await c.askResp('ADD', nodeAddress(extra))).toBe(`-${NOAUTH}\r\n`);
    expect(await askBlock(proxy.port, 'NODES', HOST, [`AUTH ${PW}`])).toEqual(before);
    c.destroy();
    await crash(extra);
  });

  it('ADD and REMOVE reject malformed addresses', async () => {
    const proxy = target('kv-proxy');
    const c = await authed(proxy.port);
    const before = await askBlock(proxy.port, 'NODES', HOST, [`AUTH ${PW}`]);
    const bad = ['127.0.0.1:0', '127.0.0.1:65536', '127.0.0.1', ':80', '127.0.0.1:80x', '127.0.0.1:-1', '127.0.0.1:080', '127.0.0.1:99999999999', 'host:', '-bad-host:80', 'a_b:80', '[::1]:80', '127.0.0.1:80:81'];
    for (const command of ['ADD', 'REMOVE']) {
      const replies = await c.ask(...bad.map((a) => `${command} ${a}`));
      expect(replies).toEqual(bad.map((a) => `ERR invalid node address '${a}': expected host:port with a port from 1 to 65535`));
    }
    expect(await c.ask('ADD a b', 'ADD', 'REMOVE a b')).toEqual(["ERR wrong number of arguments for 'add' command", "ERR wrong number of arguments for 'add' command", "ERR wrong number of arguments for 'remove' command"]);
    // An address with a line break inside, over RESP.
    expect(await c.askResp('ADD', '127.0.0.1:80\r\n')).toMatch(/^-ERR invalid node address /);
    expect(await askBlock(proxy.port, 'NODES', HOST, [`AUTH ${PW}`])).toEqual(before);
    c.destroy();
  });
});

describe('kv-proxy --node-password', () => {
  let p2Servers: ProcHandle[];
  let proxy: ProcHandle;

  beforeAll(async () => {
    p2Servers = await Promise.all([0, 1].map((i) => startServer({ dir: tempDir(`p2-${i}`), args: ['--password', 'p2'] })));
    proxy = await startProxy({ dir: tempDir('p1-proxy'), args: ['--password', 'p1', '--node-password', 'p2'] });
  });

  it('a proxy with --password p1 --node-password p2 works in front of servers with --password p2', async () => {
    const c = await RawConnection.connect(proxy.port);
    // Clients use the proxy's password, not the servers'.
    expect(await c.ask('AUTH p2', 'AUTH p1')).toEqual([WRONGPASS, 'OK']);
    for (const s of p2Servers) expect(await c.ask(`ADD ${nodeAddress(s)}`)).toEqual([expect.stringMatching(/^OK added /)]);
    const keys = Array.from({ length: 20 }, (_, i) => `np:${i}`);
    expect(await c.ask(...keys.map((k) => `SET ${k} value-${k}`))).toEqual(keys.map(() => 'OK'));
    expect(await c.ask(...keys.map((k) => `GET ${k}`))).toEqual(keys.map((k) => `VALUE value-${k}`));
    c.destroy();
    // The keys are on the servers, readable there with the servers' password.
    let found = 0;
    for (const s of p2Servers) {
      const d = await authed(s.port, 'p2');
      found += (await d.ask(...keys.map((k) => `EXISTS ${k}`))).filter((r) => r === '1').length;
      d.destroy();
    }
    expect(found).toBe(keys.length);
  });

  it('a proxy with the wrong node password gets errors for data commands, and ADD fails', async () => {
    // Same ring file (same --dir and port), restarted with a node password the servers refuse.
    await crash(proxy);
    const wrong = await startProxy({ port: proxy.port, dir: proxy.dir, args: ['--password', 'p1', '--node-password', 'not-p2'] });
    const c = await authed(wrong.port, 'p1');
    const refused = /^ERR node 127\.0\.0\.1:\d+ unavailable \(node refused our password: WRONGPASS/;
    const replies = await c.ask('GET np:1', 'SET np:2 x', 'GET np:3', 'DBSIZE');
    for (const r of replies) expect(r).toMatch(refused);
    expect(await c.askResp('GET', 'np:1')).toMatch(/^-ERR node 127\.0\.0\.1:\d+ unavailable \(node refused our password/);
    const third = await startServer({ dir: tempDir('p2-extra'), args: ['--password', 'p2'] });
    expect(await c.ask(`ADD ${nodeAddress(third)}`)).toEqual([expect.stringMatching(new RegExp(`^ERR node ${nodeAddress(third).replace(/\./g, '\\.')} unavailable \\(node refused our password`))]);
    const nodes = await askBlock(wrong.port, 'NODES', HOST, ['AUTH p1']);
    expect(nodes.map((l) => l.split(' ')[0]).sort()).toEqual(p2Servers.map(nodeAddress).sort());
    for (const line of nodes) expect(line).toMatch(/ down keys=unknown /);
    c.destroy();
    await crash(third);
  });
});
