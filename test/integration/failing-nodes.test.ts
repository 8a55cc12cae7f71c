// The proxy in front of servers that fail: a server killed with kill -9, a server that stops
// answering (SIGSTOP), and ADD of addresses where no kv-server answers. A failed node must cost
// its own keys a fast `ERR node <host:port> unavailable`, never a hang, and never disturb the
// keys of the other nodes; when the node comes back, the proxy uses it again by itself.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, crash, freePort, nodeAddress, restart, startProxy, startServer, tempDir, waitFor, type ProcHandle } from './harness.js';
import { askBlock, closeFakeServers, destroyRawConnections, info, keysByOwner, RawConnection, startFakeServer, timed } from './support-robustness.js';

afterAll(async () => {
  destroyRawConnections();
  await closeFakeServers();
  await cleanup(); // SIGKILL also ends a process left stopped by a failed test
});

/** Two servers behind a proxy started with `proxyArgs`; returns the keys each server owns. */
async function twoNodeCluster(label: string, proxyArgs: readonly string[]): Promise<{ proxy: ProcHandle; servers: ProcHandle[]; owned: string[][] }> {
  const servers = await Promise.all([startServer({ dir: tempDir(`${label}-a`) }), startServer({ dir: tempDir(`${label}-b`) })]);
  const proxy = await startProxy({ dir: tempDir(`${label}-proxy`), args: proxyArgs });
  const admin = await RawConnection.connect(proxy.port);
  for (const s of servers) expect(await admin.ask(`ADD ${nodeAddress(s)}`)).toEqual([expect.stringMatching(/^OK added /)]);
  admin.destroy();
  const owned = await keysByOwner(proxy.port, servers, `${label}:`, 60);
  for (const o of owned) expect(o.length).toBeGreaterThan(2);
  return { proxy, servers, owned };
}

/** GET through a fresh connection: the reply line and how long it took. */
async function timedGet(port: number, key: string): Promise<{ value: string; ms: number }> {
  const c = await RawConnection.connect(port);
  try {
    return await timed(async () => (await c.ask(`GET ${key}`))[0]!);
  } finally {
    c.destroy();
  }
}

/** The NODES line for `address` (`<host:port> <health> keys=<n> share=<p>%`). */
async function nodesLine(proxyPort: number, address: string): Promise<string> {
  const line = (await askBlock(proxyPort, 'NODES')).find((l) => l.startsWith(`${address} `));
  if (line === undefined) throw new Error(`${address} is not listed by NODES`);
  return line;
}

/** The INFO cluster `nodeN` value for `address` (`<host:port>,health=...,keys=...,share=...`). */
async function infoNode(proxyPort: number, address: string): Promise<string> {
  const fields = await info(proxyPort, 'cluster');
  const value = [...fields.values()].find((v) => v.startsWith(`${address},`));
  if (value === undefined) throw new Error(`${address} is not in INFO cluster: ${JSON.stringify([...fields])}`);
  return value;
}

describe('a server killed with kill -9', () => {
  let proxy: ProcHandle;
  let dead: ProcHandle;
  let alive: ProcHandle;
  let deadKeys: string[];
  let aliveKeys: string[];

  beforeAll(async () => {
    const c = await twoNodeCluster('killed', []);
    proxy = c.proxy;
    [dead, alive] = c.servers as [ProcHandle, ProcHandle];
    [deadKeys, aliveKeys] = c.owned as [string[], string[]];
  });

  it('its keys get ERR node <host:port> unavailable within the connect timeout; the other node serves normally', async () => {
    expect((await timedGet(proxy.port, deadKeys[0]!)).value).toBe(`VALUE v-${deadKeys[0]}`);
    await crash(dead);
    const unavailable = new RegExp(`^ERR node 127\\.0\\.0\\.1:${dead.port} unavailable\\b`);
    const times: number[] = [];
    for (const key of deadKeys.slice(0, 8)) {
      const { value, ms } = await timedGet(proxy.port, key);
      expect(value, `GET ${key}`).toMatch(unavailable);
      times.push(ms);
    }
    // RESP clients get the same error as a RESP error reply.
    const c = await RawConnection.connect(proxy.port);
    expect(await c.askResp('GET', deadKeys[1]!)).toMatch(new RegExp(`^-ERR node 127\\.0\\.0\\.1:${dead.port} unavailable\\b.*\\r\\n$`));
    expect(await c.askResp('SET', deadKeys[1]!, 'x')).toMatch(new RegExp(`^-ERR node 127\\.0\\.0\\.1:${dead.port} unavailable\\b`));
    // The connection stays usable, and the other node's keys are served as usual.
    for (const key of aliveKeys.slice(0, 8)) expect(await c.ask(`GET ${key}`)).toEqual([`VALUE v-${key}`]);
    expect(await c.ask(`SET ${aliveKeys[0]} updated`, `GET ${aliveKeys[0]}`)).toEqual(['OK', 'VALUE updated']);
    c.destroy();
    console.log(`[failing-nodes] GET for a killed node's keys answered ERR in ${times.join(', ')} ms (connect timeout 1000 ms)`);
    for (const ms of times) expect(ms).toBeLessThan(1000);
  });

  it('NODES and INFO show the dead node as down', async () => {
    const address = nodeAddress(dead);
    const line = await waitFor(`NODES to show ${address} down`, 10_000, async () => {
      const l = await nodesLine(proxy.port, address);
      return / down keys=unknown /.test(l) ? l : undefined;
    });
    expect(line).toMatch(new RegExp(`^127\\.0\\.0\\.1:${dead.port} down keys=unknown share=\\d+\\.\\d+%$`));
    expect(await nodesLine(proxy.port, nodeAddress(alive))).toMatch(/ up keys=\d+ /);
    const value = await waitFor(`INFO cluster to show ${address} down`, 10_000, async () => {
      const v = await infoNode(proxy.port, address);
      return v.includes(',health=down,') ? v : undefined;
    });
    expect(value).toMatch(/,health=down,keys=unknown,/);
    expect(await infoNode(proxy.port, nodeAddress(alive))).toMatch(/,health=up,keys=\d+,/);
  });

  it('after a restart on the same port, the proxy reconnects by itself and serves its keys again', async () => {
    dead = await restart(dead);
    const started = performance.now();
    const key = deadKeys[2]!;
    await waitFor(`GET ${key} to be served again`, 15_000, async () => ((await timedGet(proxy.port, key)).value === `VALUE v-${key}` ? true : undefined), 50);
    console.log(`[failing-nodes] keys of the restarted node served again ${Math.round(performance.now() - started)} ms after it was back`);
    for (const k of deadKeys.slice(0, 8)) expect((await timedGet(proxy.port, k)).value).toBe(`VALUE v-${k}`);
    expect(await nodesLine(proxy.port, nodeAddress(dead))).toMatch(/ up keys=\d+ /);
  });
});

describe('a server that stops answering (SIGSTOP)', () => {
  let proxy: ProcHandle;
  let hung: ProcHandle;
  let hungKeys: string[];
  let otherKeys: string[];

  beforeAll(async () => {
    const c = await twoNodeCluster('hung', ['--request-timeout', '500']);
    proxy = c.proxy;
    hung = c.servers[0]!;
    [hungKeys, otherKeys] = c.owned as [string[], string[]];
  });

  afterAll(() => hung?.kill('SIGCONT'));

  it('its keys get ERR within --request-timeout 500, the other keys are served meanwhile, and it recovers after SIGCONT', async () => {
    const client = await RawConnection.connect(proxy.port);
    expect(await client.ask(`GET ${hungKeys[0]}`)).toEqual([`VALUE v-${hungKeys[0]}`]);
    hung.kill('SIGSTOP');
    try {
      const unavailable = new RegExp(`^ERR node 127\\.0\\.0\\.1:${hung.port} unavailable\\b`);
      // A request for the hung node, and while it waits, requests for the other node on
      // another connection: those must not queue behind it.
      const pending = timed(async () => (await client.ask(`GET ${hungKeys[1]}`))[0]!);
      const other = await RawConnection.connect(proxy.port);
      const otherTimes: number[] = [];
      for (const key of otherKeys.slice(0, 5)) {
        const { value, ms } = await timed(async () => (await other.ask(`GET ${key}`))[0]!);
        expect(value).toBe(`VALUE v-${key}`);
        otherTimes.push(ms);
      }
      const first = await pending;
      expect(first.value).toMatch(unavailable);
      expect(first.value).toMatch(/no reply within 500 ms/);
      // Later requests: failed fast while backing off, or after another 500 ms timeout.
      const times = [first.ms];
      for (const key of hungKeys.slice(2, 7)) {
        const { value, ms } = await timedGet(proxy.port, key);
        expect(value, `GET ${key}`).toMatch(unavailable);
        times.push(ms);
      }
      console.log(`[failing-nodes] SIGSTOPped node, --request-timeout 500: its keys answered ERR in ${times.join(', ')} ms; the other node's keys meanwhile in ${otherTimes.join(', ')} ms`);
      // The timeout is checked every 250 ms, so an ERR takes 500-750 ms plus scheduling.
      for (const ms of times) expect(ms).toBeLessThan(1500);
      for (const ms of otherTimes) expect(ms).toBeLessThan(500);
      other.destroy();
    } finally {
      hung.kill('SIGCONT');
    }
    const resumed = performance.now();
    const key = hungKeys[1]!;
    await waitFor(`GET ${key} to be served after SIGCONT`, 15_000, async () => ((await timedGet(proxy.port, key)).value === `VALUE v-${key}` ? true : undefined), 50);
    console.log(`[failing-nodes] SIGCONTed node served again after ${Math.round(performance.now() - resumed)} ms`);
    for (const k of hungKeys.slice(0, 8)) expect((await timedGet(proxy.port, k)).value).toBe(`VALUE v-${k}`);
    expect(await client.ask(`GET ${otherKeys[0]}`)).toEqual([`VALUE v-${otherKeys[0]}`]);
    client.destroy();
  });
});

describe('ADD of an address where no kv-server answers', () => {
  let proxy: ProcHandle;
  let server: ProcHandle;
  let admin: RawConnection;

  beforeAll(async () => {
    server = await startServer({ dir: tempDir('add-good') });
    proxy = await startProxy({ dir: tempDir('add-proxy') });
    admin = await RawConnection.connect(proxy.port);
    expect(await admin.ask(`ADD ${nodeAddress(server)}`)).toEqual([expect.stringMatching(/^OK added /)]);
    expect(await admin.ask('SET add:key before')).toEqual(['OK']);
  });

  /** The proxy still serves, and its ring is still just the one good node. */
  async function expectProxyUnchanged(): Promise<void> {
    expect(await admin.ask('GET add:key', 'SET add:key2 v', 'GET add:key2')).toEqual(['VALUE before', 'OK', 'VALUE v']);
    const nodes = await askBlock(proxy.port, 'NODES');
    expect(nodes.map((l) => l.split(' ')[0])).toEqual([nodeAddress(server)]);
  }

  it('nobody listening: ERR node ... unavailable, at once', async () => {
    const port = await freePort();
    const { value, ms } = await timed(async () => (await admin.ask(`ADD 127.0.0.1:${port}`))[0]!);
    console.log(`[failing-nodes] ADD of a closed port answered in ${ms} ms: ${value}`);
    expect(value).toMatch(new RegExp(`^ERR node 127\\.0\\.0\\.1:${port} unavailable\\b`));
    expect(ms).toBeLessThan(1000);
    await expectProxyUnchanged();
  });

  it('an HTTP server: ERR, and the proxy keeps working', async () => {
    const http = await startFakeServer((socket) => {
      socket.once('data', () => socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'));
    });
    const { value, ms } = await timed(async () => (await admin.ask(`ADD 127.0.0.1:${http.port}`))[0]!);
    console.log(`[failing-nodes] ADD of an HTTP server answered in ${ms} ms: ${value}`);
    expect(http.accepted).toBeGreaterThan(0);
    expect(value).toMatch(new RegExp(`^ERR .*127\\.0\\.0\\.1:${http.port}`));
    expect(ms).toBeLessThan(2000);
    await expectProxyUnchanged();
    await http.close();
  });

  it('a server answering +PONG to everything: ERR ... is not a kv-server, and the proxy keeps working', async () => {
    const pong = await startFakeServer((socket) => socket.on('data', () => socket.write('+PONG\r\n')));
    const { value, ms } = await timed(async () => (await admin.ask(`ADD 127.0.0.1:${pong.port}`))[0]!);
    console.log(`[failing-nodes] ADD of a +PONG server answered in ${ms} ms: ${value}`);
    expect(value).toBe(`ERR 127.0.0.1:${pong.port} is not a kv-server`);
    await expectProxyUnchanged();
    await pong.close();
  });

  it('a server that accepts and never answers: ERR within the request timeout (2000 ms by default)', async () => {
    const silent = await startFakeServer((socket) => socket.on('data', () => undefined));
    const { value, ms } = await timed(async () => (await admin.ask(`ADD 127.0.0.1:${silent.port}`))[0]!);
    console.log(`[failing-nodes] ADD of a silent server answered in ${ms} ms: ${value}`);
    expect(value).toMatch(new RegExp(`^ERR node 127\\.0\\.0\\.1:${silent.port} unavailable \\(no reply within 2000 ms\\)`));
    expect(ms).toBeLessThan(4000);
    await expectProxyUnchanged();
    await silent.close();
  });

  it('an HTTP server is reported as "is not a kv-server", as docs/protocol.md says for something else answering', async () => {
    const http = await startFakeServer((socket) => {
      socket.once('data', () => socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'));
    });
    const [value] = await admin.ask(`ADD 127.0.0.1:${http.port}`);
    // docs/protocol.md, ADD and REMOVE errors: `ERR node <node> unavailable` is for "nothing
    // answers there", `ERR <node> is not a kv-server` for "something else answers there".
    expect(value).toMatch(new RegExp(`^ERR 127\\.0\\.0\\.1:${http.port} is not a kv-server\\b`));
    await http.close();
  });
});
