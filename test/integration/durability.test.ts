// Durability of the real kv-server binary (docs/durability.md):
//  (a) an overwrite-heavy workload keeps the WAL within 10x the live data, and survives kill -9;
//  (b) BGREWRITEAOF under write load: the data before kill -9 and after restart are identical;
//  (c) corruption in the middle of the log: refuse to start, --repair, then serve what preceded it;
//  (d) --fsync everysec and no: serve, stop with SIGTERM (and kill -9), lose nothing.
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { BIN, cleanup, crash, restart, run, startServer, tempDir, TextClient, walPath, waitFor, type ProcHandle } from './harness.js';
import { dumpDiff, dumpKeys, liveCount, persistenceInfo, persistenceNumber, waitForRewriteIdle, waitUntil, walRecords, type Dump } from './support-durability.js';
import { RecordType } from '../../src/server/wal-format.js';

afterEach(cleanup);

/** Connect, run `body`, always close. */
async function withClient<T>(port: number, body: (c: TextClient) => Promise<T>): Promise<T> {
  const client = await TextClient.connect(port);
  try {
    return await body(client);
  } finally {
    client.close();
  }
}

function expectAllOk(replies: readonly string[], what: string): void {
  const bad = replies.filter((r) => r !== 'OK');
  expect(bad.slice(0, 5), `${what}: ${bad.length} of ${replies.length} replies were not OK`).toEqual([]);
}

describe('WAL size under overwrites (acceptance)', () => {
  it('overwriting 1000 keys 200 times leaves a WAL under 10x the live data, and kill -9 loses nothing', async () => {
    const server = await startServer({ dir: tempDir('overwrite') });
    const KEYS = 1000;
    const ROUNDS = 200;
    const CONNECTIONS = 4;
    const keys = Array.from({ length: KEYS }, (_, i) => `key:${String(i).padStart(4, '0')}`);
    // ~100-byte values, different in every round.
    const valueOf = (key: string, round: number): string => `${key}.r${String(round).padStart(3, '0')}.`.padEnd(100, 'v');
    const clients = await Promise.all(Array.from({ length: CONNECTIONS }, () => TextClient.connect(server.port)));
    // Each connection owns a quarter of the keys, so every key's writes stay in order.
    await Promise.all(
      clients.map(async (client, c) => {
        const mine = keys.filter((_, i) => i % CONNECTIONS === c);
        for (let round = 0; round < ROUNDS; round++) {
          expectAllOk(await client.pipeline(mine.map((k) => `SET ${k} ${valueOf(k, round)}`), 60_000), `round ${round}`);
        }
      }),
    );
    const admin = clients[0]!;
    await waitForRewriteIdle(admin, 60_000);
    const info = await persistenceInfo(admin);
    const walBytes = Number(info.get('wal_size_bytes'));
    const live = keys.reduce((sum, k) => sum + k.length + valueOf(k, ROUNDS - 1).length, 0);
    const ratio = walBytes / live;
    const measured = `WAL ${walBytes} bytes (and ${info.get('wal_preallocated_bytes')} written ahead) after ${KEYS * ROUNDS} SETs; live data ${live} bytes (key+value); ratio ${ratio.toFixed(2)}x; rewrites ${info.get('wal_rewrites')}`;
    console.log(`[durability] ${measured}`);
    expect(ratio, measured).toBeLessThan(10);
    expect(Number(info.get('wal_rewrites')), `compaction ran (${measured})`).toBeGreaterThan(0);

    for (const c of clients) c.close();
    await crash(server);
    const again = await restart(server);
    const expected: Dump = new Map(keys.map((k) => [k, valueOf(k, ROUNDS - 1)]));
    await withClient(again.port, async (c) => {
      expect(dumpDiff(expected, await dumpKeys(c, keys)), 'every key has its latest value after kill -9').toEqual([]);
      expect(await c.send('DBSIZE')).toBe(String(KEYS));
    });
  });
});

describe('BGREWRITEAOF under write load', () => {
  it('keeps the dataset identical across kill -9 after several rewrites during writes', async () => {
    const server = await startServer({ dir: tempDir('rewrite-load') });
    const WRITERS = 3;
    const KEYS_PER_WRITER = 1500;
    const keysOf = (w: number): string[] => Array.from({ length: KEYS_PER_WRITER }, (_, i) => `w${w}:${i}`);
    const model: Dump = new Map();
    let stop = false;
    let ops = 0;
    const writers = await Promise.all(Array.from({ length: WRITERS }, () => TextClient.connect(server.port)));
    const loops = writers.map(async (client, w) => {
      const keys = keysOf(w);
      for (let round = 0; !stop; round++) {
        // 300 operations per pipeline: mostly SETs with unique values, every 7th a DEL.
        const batch = Array.from({ length: 300 }, (_, i) => {
          const key = keys[(round * 311 + i * 17) % keys.length]!;
          return i % 7 === 3 ? { key, line: `DEL ${key}`, value: undefined } : { key, line: `SET ${key} ${w}.${round}.${i}.${'d'.repeat(60)}`, value: `${w}.${round}.${i}.${'d'.repeat(60)}` };
        });
        const replies = await client.pipeline(
          batch.map((b) => b.line),
          60_000,
        );
        replies.forEach((r, i) => {
          const op = batch[i]!;
          const ok = op.value === undefined ? r === 'DELETED' || r === 'NOT_FOUND' : r === 'OK';
          if (!ok) throw new Error(`${op.line.slice(0, 30)}: ${r}`);
          model.set(op.key, op.value);
        });
        ops += batch.length;
      }
    });

    const admin = await TextClient.connect(server.port);
    const REWRITES = 5;
    for (let i = 0; i < REWRITES; i++) {
      const done = await persistenceNumber(admin, 'wal_rewrites');
      const opsBefore = ops;
      await waitUntil('writers to make progress before the next rewrite', 30_000, () => ops >= opsBefore + 3000);
      expect(await admin.send('BGREWRITEAOF')).toMatch(/^Background append only file rewriting (started|already in progress)$/);
      await waitFor(`rewrite #${done + 1} to finish`, 60_000, async () => ((await persistenceNumber(admin, 'wal_rewrites')) > done ? true : undefined), 20);
    }
    stop = true;
    await Promise.all(loops);
    await waitForRewriteIdle(admin);
    expect(await persistenceNumber(admin, 'wal_rewrites')).toBeGreaterThanOrEqual(REWRITES);

    const allKeys = Array.from({ length: WRITERS }, (_, w) => keysOf(w)).flat();
    const before = await dumpKeys(admin, allKeys);
    expect(dumpDiff(model, before), 'the live dataset matches every acknowledged operation').toEqual([]);
    const sizeBefore = await admin.send('DBSIZE');
    expect(sizeBefore).toBe(String(liveCount(model)));
    admin.close();
    for (const w of writers) w.close();

    await crash(server);
    const again = await restart(server);
    await withClient(again.port, async (c) => {
      const after = await dumpKeys(c, allKeys);
      expect(dumpDiff(before, after), `dataset after kill -9 vs before (${ops} operations, ${allKeys.length} keys)`).toEqual([]);
      expect(await c.send('DBSIZE')).toBe(sizeBefore);
    });
  });
});

describe('zeros written ahead of the WAL (--wal-preallocate)', () => {
  for (const [label, args] of [
    ['by default', []],
    ['--wal-preallocate 0 (off)', ['--wal-preallocate', '0']],
  ] as const) {
    it(`${label}: the file is the log plus only zeros, and every acknowledged write survives kill -9`, async () => {
      const server = await startServer({ dir: tempDir('prealloc'), args: [...args] });
      const expected: Dump = new Map(Array.from({ length: 300 }, (_, i) => [`pre:${i}`, `value ${i} ${'p'.repeat(i % 50)}`]));
      const { logBytes, ahead } = await withClient(server.port, async (c) => {
        expect((await c.pipeline([...expected].map(([k, v]) => `SET ${k} ${v}`))).filter((r) => r !== 'OK')).toEqual([]);
        // The zeros are written in the background after a group: wait until they are there.
        const ahead = await waitFor('the zeros written ahead to settle', 10_000, async () => {
          const n = await persistenceNumber(c, 'wal_preallocated_bytes');
          return args.length > 0 || n > 0 ? n : undefined;
        });
        if (args.length > 0) expect(ahead, 'off: nothing written ahead').toBe(0);
        else expect(ahead, 'default: zeros ahead').toBeGreaterThan(0);
        return { logBytes: await persistenceNumber(c, 'wal_size_bytes'), ahead };
      });
      const file = fs.readFileSync(walPath(server));
      if (args.length > 0) expect(file.length, 'off: the file is exactly the log').toBe(logBytes);
      else expect(file.length).toBeGreaterThanOrEqual(logBytes + ahead);
      expect(file.subarray(logBytes).every((byte) => byte === 0), 'past the log: only zeros').toBe(true);
      await crash(server);
      const again = await restart(server);
      await withClient(again.port, async (c) => {
        expect(dumpDiff(expected, await dumpKeys(c, [...expected.keys()]))).toEqual([]);
        expect(await persistenceNumber(c, 'wal_size_bytes'), 'nothing cut at the restart').toBe(logBytes);
      });
    });
  }
});

describe('mid-log corruption', () => {
  it('refuses to start naming the file and offset; --repair keeps a .broken copy and drops the damaged part', async () => {
    const server = await startServer({ dir: tempDir('corrupt') });
    const GROUPS = 6;
    const PER_GROUP = 10;
    const groupKeys = (g: number): string[] => Array.from({ length: PER_GROUP }, (_, i) => `g${g}:k${i}`);
    const valueOf = (key: string): string => `value-of-${key}-${'z'.repeat(30)}`;
    await withClient(server.port, async (c) => {
      // One MSET per group: its records are appended together and committed as one group.
      for (let g = 0; g < GROUPS; g++) expect(await c.send(`MSET ${groupKeys(g).map((k) => `${k} ${valueOf(k)}`).join(' ')}`)).toBe('OK');
    });
    server.kill('SIGTERM');
    expect(await server.waitForExit(), server.tail()).toEqual({ code: 0, signal: null });

    const file = walPath(server);
    const records = walRecords(file);
    expect(records.filter((r) => r.type === RecordType.Commit)).toHaveLength(GROUPS);
    // Flip a byte in the value of the first record of the second group.
    const firstCommit = records.findIndex((r) => r.type === RecordType.Commit);
    const target = records[firstCommit + 1]!;
    expect(target.key).toBe('g1:k0');
    const bytes = fs.readFileSync(file);
    const flipAt = target.offset + 13 + target.key.length + 5;
    bytes[flipAt] = bytes[flipAt]! ^ 0x20;
    fs.writeFileSync(file, bytes);
    const corrupted = Buffer.from(bytes);

    const refused = await run(process.execPath, [BIN.server, String(server.port), '--dir', server.dir, '--log-level', 'warn'], { timeoutMs: 30_000 });
    expect(refused.code, `the server must refuse to start\nstdout: ${refused.stdout}\nstderr: ${refused.stderr}`).not.toBe(0);
    expect(refused.signal).toBeNull();
    expect(refused.stderr, 'stderr names the file').toContain(file);
    expect(refused.stderr, 'stderr names the byte offset of the damaged record').toContain(`byte offset ${target.offset}`);
    expect(fs.readFileSync(file).equals(corrupted), 'a refused start leaves the log untouched').toBe(true);

    const repaired = await run(process.execPath, [BIN.server, String(server.port), '--dir', server.dir, '--repair'], { timeoutMs: 30_000 });
    const report = repaired.stdout + repaired.stderr;
    expect(repaired.code, report).toBe(0);
    const droppedRecords = records.slice(firstCommit + 1).filter((r) => r.type !== RecordType.Commit).length;
    expect(droppedRecords).toBe((GROUPS - 1) * PER_GROUP);
    expect(report, 'the repair report says how many records were dropped').toMatch(new RegExp(`dropped ${droppedRecords} record`));
    expect(fs.readFileSync(`${file}.broken`).equals(corrupted), 'wal_<port>.log.broken is the damaged log as it was').toBe(true);
    expect(fs.statSync(file).size, 'the log is cut at the damaged record').toBe(target.offset);

    const again = await restart(server);
    await withClient(again.port, async (c) => {
      const keys = Array.from({ length: GROUPS }, (_, g) => groupKeys(g)).flat();
      const expected: Dump = new Map(keys.map((k) => [k, k.startsWith('g0:') ? valueOf(k) : undefined]));
      expect(dumpDiff(expected, await dumpKeys(c, keys)), 'the group before the damage is served, nothing from it on').toEqual([]);
      expect(await c.send('DBSIZE')).toBe(String(PER_GROUP));
      expect(await c.send('SET after:repair yes')).toBe('OK');
    });
  });
});

describe('--fsync everysec and no', () => {
  async function writeAndCheck(server: ProcHandle, prefix: string, n: number, model: Dump): Promise<void> {
    await withClient(server.port, async (c) => {
      const keys = Array.from({ length: n }, (_, i) => `${prefix}${i}`);
      expectAllOk(await c.pipeline(keys.map((k, i) => `SET ${k} ${prefix}-value-${i}`)), prefix);
      for (const [i, k] of keys.entries()) model.set(k, `${prefix}-value-${i}`);
      expect(await c.send(`DEL ${keys[0]}`)).toBe('DELETED');
      model.set(keys[0]!, undefined);
      expect(dumpDiff(model, await dumpKeys(c, [...model.keys()])), 'served while running').toEqual([]);
    });
  }

  it.each(['everysec', 'no'] as const)('--fsync %s serves, and survives SIGTERM and kill -9 with all data', async (policy) => {
    const server = await startServer({ dir: tempDir(`fsync-${policy}`), args: ['--fsync', policy] });
    await withClient(server.port, async (c) => {
      expect((await persistenceInfo(c)).get('fsync_policy')).toBe(policy);
      expect(await c.send('CONFIG GET appendfsync')).toBe(`appendfsync ${policy}`);
    });
    const model: Dump = new Map();
    await writeAndCheck(server, 'first:', 3000, model);

    server.kill('SIGTERM');
    expect(await server.waitForExit(), server.tail()).toEqual({ code: 0, signal: null });
    const second = await restart(server);
    await withClient(second.port, async (c) => {
      expect(dumpDiff(model, await dumpKeys(c, [...model.keys()])), `after SIGTERM with --fsync ${policy}`).toEqual([]);
    });

    // A process crash loses nothing acknowledged either: the data is in the kernel's page cache.
    await writeAndCheck(second, 'second:', 3000, model);
    await crash(second);
    const third = await restart(second);
    await withClient(third.port, async (c) => {
      expect(dumpDiff(model, await dumpKeys(c, [...model.keys()])), `after kill -9 with --fsync ${policy}`).toEqual([]);
      expect(await c.send('DBSIZE')).toBe(String(liveCount(model)));
    });
  });
});
