// Servers on other hosts: each kv-server runs in its own network namespace, reachable from the
// proxy (in the root namespace) only over a veth pair on a private test subnet. Taking a
// host's link down must turn requests for its keys into fast ERR replies, never hangs, while
// the other host keeps serving; bringing it up again must be enough for the proxy to recover.
//
// Needs root and iproute2 (CI runs as root); without them it fails and says why.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, startProxy, tempDir, waitFor, type ProcHandle } from './harness.js';
import { askBlock, destroyRawConnections, keysByOwner, NamespaceLab, RawConnection, requireNetnsSupport, timed, type NamespaceHost, type NsProcess } from './support-robustness.js';

let lab: NamespaceLab | undefined;
let hosts: NamespaceHost[] = [];
let servers: NsProcess[] = [];
let proxy: ProcHandle;
let owned: string[][] = [];

const address = (s: NsProcess): string => `${s.host}:${s.port}`;

beforeAll(async () => {
  const ip = requireNetnsSupport();
  lab = new NamespaceLab(ip);
  hosts = [lab.addHost(), lab.addHost()];
  // Each namespace has its own ports, so any port is free there.
  const port = 20_000 + Math.floor(Math.random() * 40_000);
  servers = await Promise.all(hosts.map((h) => lab!.startServer(h, port)));
  proxy = await startProxy({ dir: tempDir('multihost-proxy'), args: ['--connect-timeout', '1000', '--request-timeout', '1000'] });
  const admin = await RawConnection.connect(proxy.port);
  for (const s of servers) expect(await admin.ask(`ADD ${address(s)}`)).toEqual([expect.stringMatching(/^OK added /)]);
  admin.destroy();
}, 120_000);

afterAll(async () => {
  destroyRawConnections();
  try {
    // The servers in the namespaces first (by pid), then the namespaces and links.
    await lab?.destroy();
  } finally {
    await cleanup();
  }
  if (lab !== undefined) expect(lab.leftovers(), 'namespaces and links left behind').toEqual([]);
});

/** GET on a fresh proxy connection: the reply and how long it took. */
async function timedGet(key: string): Promise<{ value: string; ms: number }> {
  const c = await RawConnection.connect(proxy.port);
  try {
    return await timed(async () => (await c.ask(`GET ${key}`))[0]!);
  } finally {
    c.destroy();
  }
}

describe('kv-servers on other hosts (network namespaces)', () => {
  it('run inside their namespaces, on their own addresses', () => {
    for (const [i, s] of servers.entries()) {
      // `ip netns exec` execs kv-server itself, so the pid we hold (and kill) is the server's.
      expect(fs.readFileSync(`/proc/${s.pid}/comm`, 'utf8').trim()).toBe('node');
      expect(fs.readlinkSync(`/proc/${s.pid}/ns/net`)).not.toBe(fs.readlinkSync('/proc/self/ns/net'));
      expect(s.host).toBe(hosts[i]!.address);
      // Packets for the host go over our veth, never the default route off this machine.
      expect(lab!.routeTo(s.host)).toContain(`dev ${hosts[i]!.rootIf}`);
    }
  });

  it('the proxy reaches them: SET/GET through the proxy for keys on each host', async () => {
    owned = await keysByOwner(proxy.port, servers, 'mh:', 60);
    for (const [i, keys] of owned.entries()) expect(keys.length, `keys on ${address(servers[i]!)}`).toBeGreaterThan(2);
    const c = await RawConnection.connect(proxy.port);
    for (const keys of owned) {
      expect(await c.ask(`SET ${keys[0]} updated`, `GET ${keys[0]}`, `GET ${keys[1]}`)).toEqual(['OK', 'VALUE updated', `VALUE v-${keys[1]}`]);
    }
    c.destroy();
    const nodes = await askBlock(proxy.port, 'NODES');
    for (const s of servers) expect(nodes.find((l) => l.startsWith(`${address(s)} `))).toMatch(/ up keys=\d+ /);
  });

  it('a host whose link is down costs its keys a fast ERR (< 2.5 s each), not a hang; the other host keeps serving', async () => {
    const [down, up] = servers as [NsProcess, NsProcess];
    const [downKeys, upKeys] = owned as [string[], string[]];
    expect(downKeys, 'the previous test found the keys of each host').toBeDefined();
    lab!.setLink(hosts[0]!, 'down');
    expect(lab!.routeTo(down.host)).toContain(`dev ${hosts[0]!.rootIf}`);
    const unavailable = new RegExp(`^ERR node ${down.host.replace(/\./g, '\\.')}:${down.port} unavailable\\b`);
    const errTimes: number[] = [];
    const okTimes: number[] = [];
    const reasons = new Set<string>();
    // Keep asking until both ways of failing were seen: the request already sent on the open
    // connection (dropped after --request-timeout), and new connection attempts (given up after
    // --connect-timeout); requests in between fail at once while the proxy backs off.
    const deadline = performance.now() + 30_000;
    for (let i = 0; i < 8 || ![...reasons].some((r) => r.startsWith('connect timeout')); i++) {
      expect(performance.now() < deadline, `no connect timeout seen among ${[...reasons].join('; ')}`).toBe(true);
      const key = downKeys[i % downKeys.length]!;
      // While a request for the unreachable host waits, the other host answers.
      const pending = timedGet(key);
      const upKey = upKeys[i % upKeys.length]!;
      const other = await timedGet(upKey);
      expect(other.value).toBe(`VALUE ${upKey === upKeys[0] ? 'updated' : `v-${upKey}`}`);
      okTimes.push(other.ms);
      const { value, ms } = await pending;
      expect(value, `GET ${key} with the link down`).toMatch(unavailable);
      reasons.add(/\((.*)\)$/.exec(value)?.[1] ?? value);
      errTimes.push(ms);
    }
    console.log(`[multihost] link down: ${address(down)}'s keys answered ERR in ${errTimes.join(', ')} ms (${[...reasons].join('; ')}); ${address(up)}'s keys meanwhile in ${okTimes.join(', ')} ms`);
    for (const ms of errTimes) expect(ms).toBeLessThan(2500);
    for (const ms of okTimes) expect(ms).toBeLessThan(1000);
    const line = await waitFor('NODES to show the host down', 10_000, async () => {
      const l = (await askBlock(proxy.port, 'NODES')).find((x) => x.startsWith(`${address(down)} `));
      return l !== undefined && / (down|connecting) /.test(l) ? l : undefined;
    });
    expect(line).toMatch(/ keys=unknown /);
  });

  it('bringing the link up again is enough: the proxy serves that host\'s keys again', async () => {
    const [back] = servers as [NsProcess, NsProcess];
    const [backKeys] = owned as [string[], string[]];
    lab!.setLink(hosts[0]!, 'up');
    const started = performance.now();
    const key = backKeys[1]!;
    await waitFor(`GET ${key} to be served again`, 20_000, async () => ((await timedGet(key)).value === `VALUE v-${key}` ? true : undefined), 100);
    console.log(`[multihost] link up: ${address(back)} served again after ${Math.round(performance.now() - started)} ms`);
    const c = await RawConnection.connect(proxy.port);
    expect(await c.ask(...backKeys.slice(1, 6).map((k) => `GET ${k}`))).toEqual(backKeys.slice(1, 6).map((k) => `VALUE v-${k}`));
    expect(await c.ask(`SET ${backKeys[0]} after-outage`, `GET ${backKeys[0]}`)).toEqual(['OK', 'VALUE after-outage']);
    c.destroy();
  });
});
