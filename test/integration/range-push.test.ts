// RANGEPUSH: a source server pushing ring ranges straight to target servers (server/range-push.ts),
// driven by hand the way the proxy drives it during ADD and REMOVE. What it moves, what it
// leaves, how it fails when a target dies, that a new push stops the one before it, and that
// servers with a password push to each other. The moves through the proxy are tested in
// rebalance, migration-crash and jepsen-rebalance.
import { afterAll, describe, expect, it } from 'vitest';
import { hashString } from '../../src/common/hash.js';
import { cleanup, crash, startServer, tempDir, waitFor, type ProcHandle } from './harness.js';
import { destroyRawConnections, RawConnection } from './support-robustness.js';

afterAll(async () => {
  destroyRawConnections();
  await cleanup();
});

/** The upper half of the ring: hashes in (2^31 - 1, 2^32 - 1]. */
const HALF = ['2147483647', '4294967295'];
const inHalf = (key: string): boolean => hashString(key) > 2147483647;

async function loaded(label: string, keys: readonly string[], args: readonly string[] = [], password?: string): Promise<{ server: ProcHandle; c: RawConnection }> {
  const server = await startServer({ dir: tempDir(label), args });
  const c = await RawConnection.connect(server.port);
  if (password !== undefined) expect(await c.ask(`AUTH ${password}`)).toEqual(['OK']);
  expect(await c.ask(...keys.map((k) => `SET ${k} v-${k}`))).toEqual(keys.map(() => 'OK'));
  return { server, c };
}

interface PushState {
  done: boolean;
  scanned: number;
  moved: number;
}

/** One RANGEPUSH WAIT: the push's state, or its error line. */
async function waitOnce(c: RawConnection, token: string): Promise<PushState | string> {
  const reply = await c.askResp('RANGEPUSH', 'WAIT', token);
  const m = /^\*3\r\n:(\d+)\r\n:(\d+)\r\n:(\d+)\r\n$/.exec(reply);
  if (m === null) return reply.trimEnd();
  return { done: m[1] === '1', scanned: Number(m[2]), moved: Number(m[3]) };
}

/** WAIT until the push is done (or fails: its error line). */
async function untilDone(c: RawConnection, token: string): Promise<PushState | string> {
  return waitFor(`push ${token} to finish`, 30_000, async () => {
    const state = await waitOnce(c, token);
    return typeof state === 'string' || state.done ? state : undefined;
  }, 0);
}

/** RANGEPUSH START of the upper half of the ring to `target`. */
const start = (c: RawConnection, token: string, count: number, rate: number, target: ProcHandle): Promise<string> =>
  c.askResp('RANGEPUSH', 'START', token, String(count), String(rate), '1', `127.0.0.1:${target.port}`, ...HALF, '0');

describe('RANGEPUSH', () => {
  it('copies exactly the keys of the range to the target, and leaves the source as it was', async () => {
    const keys = Array.from({ length: 2000 }, (_, i) => `push:${i}`);
    const { c } = await loaded('push-src', keys);
    const target = await startServer({ dir: tempDir('push-dst') });
    const t = await RawConnection.connect(target.port);
    const moving = keys.filter(inHalf);
    expect(moving.length).toBeGreaterThan(800);
    // A newer value already on the target (a client's SET during a move) is never overwritten.
    expect(await t.ask(`SET ${moving[0]} newer`)).toEqual(['OK']);
    expect(await start(c, 'p1', 100, 0, target)).toBe('+OK\r\n');
    expect(await untilDone(c, 'p1')).toEqual({ done: true, scanned: keys.length, moved: moving.length });
    // The target holds the moving keys, nothing else; the source keeps all of them.
    expect(await t.ask('DBSIZE')).toEqual([String(moving.length)]);
    expect(await t.ask(...moving.map((k) => `GET ${k}`))).toEqual(moving.map((k, i) => (i === 0 ? 'VALUE newer' : `VALUE v-${k}`)));
    expect(await t.ask(...keys.filter((k) => !inHalf(k)).slice(0, 50).map((k) => `EXISTS ${k}`))).toEqual(Array(50).fill('0'));
    expect(await c.ask('DBSIZE')).toEqual([String(keys.length)]);
    // A finished push keeps answering WAIT; STOP of it is harmless.
    expect(await waitOnce(c, 'p1')).toEqual({ done: true, scanned: keys.length, moved: moving.length });
    expect(await c.askResp('RANGEPUSH', 'STOP', 'p1')).toBe('+OK\r\n');
  });

  it('fails with ERR when its target is killed mid-push; STOP then returns; the source keeps serving', async () => {
    const keys = Array.from({ length: 3000 }, (_, i) => `dies:${i}`);
    const { c } = await loaded('dies-src', keys);
    const target = await startServer({ dir: tempDir('dies-dst') });
    // 500 keys/s: the push takes about 3 s, time enough to kill the target in the middle.
    expect(await start(c, 'd1', 50, 500, target)).toBe('+OK\r\n');
    await waitFor('the push to move some keys', 10_000, async () => {
      const s = await waitOnce(c, 'd1');
      return typeof s !== 'string' && s.moved > 0 ? s : undefined;
    });
    await crash(target);
    const end = await untilDone(c, 'd1');
    expect(end).toMatch(new RegExp(`^-ERR push failed: IMPORT on 127\\.0\\.0\\.1:${target.port}: ERR node 127\\.0\\.0\\.1:${target.port} unavailable`));
    expect(await c.askResp('RANGEPUSH', 'STOP', 'd1')).toBe('+OK\r\n');
    expect(await c.ask('DBSIZE', 'GET dies:1')).toEqual([String(keys.length), 'VALUE v-dies:1']);
    expect(await c.askResp('INFO', 'stats')).toMatch(/migration_pushes_active:0\r\n/);
  });

  it('a new START stops the push before it: once it answers OK, the old push sends nothing more', async () => {
    const keys = Array.from({ length: 2000 }, (_, i) => `again:${i}`);
    const { c } = await loaded('again-src', keys);
    const [first, second] = await Promise.all([startServer({ dir: tempDir('again-a') }), startServer({ dir: tempDir('again-b') })]);
    const a = await RawConnection.connect(first!.port);
    expect(await start(c, 'slow', 20, 200, first!)).toBe('+OK\r\n');
    await waitFor('the slow push to reach its target', 10_000, async () => ((await a.ask('DBSIZE'))[0] !== '0' ? true : undefined));
    expect(await start(c, 'fast', 250, 0, second!)).toBe('+OK\r\n');
    const [left] = await a.ask('DBSIZE');
    expect(await waitOnce(c, 'slow')).toBe("-ERR no such push 'slow'");
    const moving = keys.filter(inHalf);
    expect(await untilDone(c, 'fast')).toEqual({ done: true, scanned: keys.length, moved: moving.length });
    const b = await RawConnection.connect(second!.port);
    expect(await b.ask('DBSIZE')).toEqual([String(moving.length)]);
    // The slow push would have gone on at 200 keys/s: its target must not grow any more.
    expect(Number(left)).toBeLessThan(moving.length);
    const until = Date.now() + 400;
    while (Date.now() < until) expect(await a.ask('DBSIZE')).toEqual([left]);
  });

  it('two STARTs at once: the one that runs first is stopped by the other, so one push runs', async () => {
    const keys = Array.from({ length: 2000 }, (_, i) => `race:${i}`);
    const { server, c } = await loaded('race-src', keys);
    const [a, b, t] = await Promise.all([startServer({ dir: tempDir('race-a') }), startServer({ dir: tempDir('race-b') }), startServer({ dir: tempDir('race-t') })]);
    expect(await start(c, 'first', 20, 200, a!)).toBe('+OK\r\n');
    // Both wait for 'first' to stop; only one of them may be left running afterwards.
    const other = await RawConnection.connect(server.port);
    const [one, two] = await Promise.all([start(c, 'one', 20, 200, b!), start(other, 'two', 20, 200, t!)]);
    expect([one, two]).toEqual(['+OK\r\n', '+OK\r\n']);
    const [cb, ct] = await Promise.all([RawConnection.connect(b!.port), RawConnection.connect(t!.port)]);
    const sizes = async (): Promise<string[]> => [...(await cb.ask('DBSIZE')), ...(await ct.ask('DBSIZE'))];
    const [bBefore, tBefore] = await sizes();
    await waitFor('the surviving push to send more keys', 10_000, async () => {
      const [bNow, tNow] = await sizes();
      return bNow !== bBefore || tNow !== tBefore ? true : undefined;
    });
    // One target keeps growing; the other must not grow any more.
    const [bMid, tMid] = await sizes();
    const until = Date.now() + 400;
    let grew = { b: false, t: false };
    while (Date.now() < until) {
      const [bNow, tNow] = await sizes();
      grew = { b: grew.b || bNow !== bMid, t: grew.t || tNow !== tMid };
    }
    expect(grew.b && grew.t, `both pushes kept sending (to ${b!.port} and ${t!.port})`).toBe(false);
    expect(await c.askResp('INFO', 'stats')).toMatch(/migration_pushes_active:1\r\n/);
  });

  it('splits the ranges between several targets by label', async () => {
    const keys = Array.from({ length: 1000 }, (_, i) => `split:${i}`);
    const { c } = await loaded('split-src', keys);
    const [a, b] = await Promise.all([startServer({ dir: tempDir('split-a') }), startServer({ dir: tempDir('split-b') })]);
    // Lower half to a (label 0), upper half to b (label 1).
    const reply = await c.askResp('RANGEPUSH', 'START', 's', '100', '0', '2', `127.0.0.1:${a!.port}`, `127.0.0.1:${b!.port}`, '4294967295', '2147483647', '0', ...HALF, '1');
    expect(reply).toBe('+OK\r\n');
    expect(await untilDone(c, 's')).toEqual({ done: true, scanned: keys.length, moved: keys.length });
    const upper = keys.filter(inHalf);
    const ta = await RawConnection.connect(a!.port);
    const tb = await RawConnection.connect(b!.port);
    expect(await ta.ask('DBSIZE')).toEqual([String(keys.length - upper.length)]);
    expect(await tb.ask('DBSIZE')).toEqual([String(upper.length)]);
    expect(await tb.ask(...upper.slice(0, 100).map((k) => `GET ${k}`))).toEqual(upper.slice(0, 100).map((k) => `VALUE v-${k}`));
  });

  it('servers with --password push to each other with it', async () => {
    const keys = Array.from({ length: 500 }, (_, i) => `pw:${i}`);
    const { c } = await loaded('pw-src', keys, ['--password', 'shared'], 'shared');
    const target = await startServer({ dir: tempDir('pw-dst'), args: ['--password', 'shared'] });
    expect(await start(c, 'pw', 100, 0, target)).toBe('+OK\r\n');
    const moving = keys.filter(inHalf);
    expect(await untilDone(c, 'pw')).toEqual({ done: true, scanned: keys.length, moved: moving.length });
    const t = await RawConnection.connect(target.port);
    expect(await t.ask('AUTH shared', 'DBSIZE')).toEqual(['OK', String(moving.length)]);
  });
});
