// The text protocol as `nc` users drive it: many commands in one write, replies in order, one
// line each; and the real `nc` binary, against the proxy and against a server directly.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HOST, cleanup, lines, nodeAddress, requireTool, run, startCluster, startServer, tempDir, TextClient } from './harness.js';

afterAll(cleanup);

/** Write `payload` in one write, half-close like `nc` does, and read until the peer closes. */
function exchange(port: number, payload: string, timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = net.connect({ port, host: HOST });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close from port ${port} within ${timeoutMs} ms; got ${lines(Buffer.concat(chunks).toString('utf8')).length} lines`));
    }, timeoutMs);
    socket.on('connect', () => socket.end(payload));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
  });
}

/** Deterministic pseudo-random numbers, so a failure can be replayed. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 0x100000000;
  };
}

const MALFORMED_AT = 500;

/** 1000 commands over a small key space, and the reply each must get (from a model of the store). */
function script(count: number): { commands: string[]; expected: string[] } {
  const rand = lcg(0xc0ffee);
  const model = new Map<string, string>();
  const commands: string[] = [];
  const expected: string[] = [];
  for (let i = 0; i < count; i++) {
    const key = `k${Math.floor(rand() * 150)}`;
    const r = rand();
    if (i === MALFORMED_AT) {
      commands.push('SET only-a-key');
      expected.push('ERR'); // checked by pattern below
    } else if (r < 0.35) {
      const value = i % 7 === 0 ? `v${i} with spaces` : `v${i}`;
      model.set(key, value);
      commands.push(`SET ${key} ${value}`);
      expected.push('OK');
    } else if (r < 0.65) {
      const value = model.get(key);
      commands.push(`GET ${key}`);
      expected.push(value === undefined ? 'NOT_FOUND' : `VALUE ${value}`);
    } else if (r < 0.8) {
      commands.push(`DEL ${key}`);
      expected.push(model.delete(key) ? 'DELETED' : 'NOT_FOUND');
    } else if (r < 0.93) {
      commands.push(`EXISTS ${key}`);
      expected.push(model.has(key) ? '1' : '0');
    } else {
      commands.push('PING');
      expected.push('PONG');
    }
  }
  return { commands, expected };
}

interface Target {
  name: string;
  port: number;
}

const targets: Target[] = [];

beforeAll(async () => {
  const { proxy, servers } = await startCluster(2);
  const admin = await TextClient.connect(proxy.port);
  for (const s of servers) expect(await admin.send(`ADD ${nodeAddress(s)}`)).toMatch(/^OK added /);
  admin.close();
  targets.push({ name: 'the proxy', port: proxy.port });
  const lone = await startServer({ dir: tempDir('lone') });
  targets.push({ name: 'a server directly', port: lone.port });
});

describe.each(['the proxy', 'a server directly'])('text protocol against %s', (name) => {
  const target = (): Target => {
    const t = targets.find((x) => x.name === name);
    if (t === undefined) throw new Error(`no target ${name}`);
    return t;
  };

  it('answers 1000 commands sent in one write with 1000 lines, in order', async () => {
    const { port } = target();
    const { commands, expected } = script(1000);
    const output = await exchange(port, commands.map((c) => `${c}\n`).join(''));
    const got = lines(output);
    expect(got, 'one reply line per command').toHaveLength(1000);
    expect(got[MALFORMED_AT]).toMatch(/^ERR /);
    expected[MALFORMED_AT] = got[MALFORMED_AT]!;
    expect(got).toEqual(expected);
  });

  it('works with the real nc: printf ... | nc -q1', async () => {
    const nc = requireTool('nc', 'apt-get install -y netcat-openbsd');
    const { port } = target();
    const r = await run(nc, ['-q1', HOST, String(port)], { stdin: 'SET a hello world\nGET a\n', timeoutMs: 15_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('OK\nVALUE hello world\n');
  });
});
