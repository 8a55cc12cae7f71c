// Durability of a kv-server across kill -9: every write it acknowledged is in its WAL, and a
// torn tail left by an interrupted append is cut back at boot instead of stopping the server.
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { ask, cleanup, crash, dbsize, restart, SetStream, startServer, tempDir, TextClient, waitFor, walBytes, walPath, wrongValues } from './harness.js';

afterEach(cleanup);

/** GET each key on `port`; returns the keys whose reply differs from `VALUE <expected>`. */
async function mismatches(port: number, expected: ReadonlyMap<string, string>): Promise<string[]> {
  const client = await TextClient.connect(port);
  try {
    return await wrongValues(client, expected);
  } finally {
    client.close();
  }
}

describe('kv-server crash', () => {
  it('keeps every acknowledged write when killed with SIGKILL mid-stream', async () => {
    const server = await startServer({ dir: tempDir('crash') });
    const value = (i: number): string => `value-${i}-${'#'.repeat(i % 50)}`;
    const stream = new SetStream(server.port, { prefix: 'k', value, window: 128 });
    // Let a good number of writes through, then pull the plug while more are in flight.
    await waitFor('2000 acknowledged writes', 30_000, () => (stream.acked.length >= 2000 ? true : undefined));
    await crash(server);
    await stream.closed;
    expect(stream.failures).toEqual([]);
    const inFlight = stream.sent - stream.acked.length;
    expect(inFlight, 'writes were still in flight when the server died').toBeGreaterThan(0);

    await restart(server);
    const expected = new Map(stream.acked.map((i) => [`k${i}`, value(i)]));
    const lost = await mismatches(server.port, expected);
    expect(lost, `${expected.size} acknowledged keys checked after kill -9 (${inFlight} unacknowledged)`).toEqual([]);
    // Unacknowledged writes may or may not have made it, but nothing beyond what was sent.
    const size = await dbsize(server.port);
    expect(size).toBeGreaterThanOrEqual(expected.size);
    expect(size).toBeLessThanOrEqual(stream.sent);
  });

  it('restarts from a log big enough for the prefault thread (over 16 MiB) with every key, and keeps serving writes, deletes and a rewrite after it', { timeout: 120_000 }, async () => {
    const server = await startServer({ dir: tempDir('big-restart') });
    const keys = 45_000;
    const value = (i: number): string => `v${i}-`.padEnd(400, String.fromCharCode(97 + (i % 26)));
    const stream = new SetStream(server.port, { prefix: 'big:', value, window: 512, limit: keys });
    await stream.closed;
    expect(stream.failures).toEqual([]);
    expect(stream.acked.length).toBe(keys);
    expect(await walBytes(server.port), 'a log whose arenas take more than 16 MiB').toBeGreaterThan(17 * 1024 * 1024);
    await crash(server);

    const again = await restart(server);
    const expected = new Map(Array.from({ length: keys }, (_, i) => [`big:${i}`, value(i)]));
    expect(await dbsize(again.port)).toBe(keys);
    expect(await mismatches(again.port, expected)).toEqual([]);

    // The restarted store (arenas in shared memory) takes new writes, deletes and a rewrite.
    const client = await TextClient.connect(again.port);
    const changes = Array.from({ length: 2000 }, (_, i) => (i % 2 === 0 ? `SET big:${i} changed ${i}` : `DEL big:${i}`));
    expect(new Set(await client.pipeline(changes))).toEqual(new Set(['OK', 'DELETED']));
    for (let i = 0; i < 2000; i++) {
      if (i % 2 === 0) expected.set(`big:${i}`, `changed ${i}`);
      else expected.delete(`big:${i}`);
    }
    expect(await client.send('BGREWRITEAOF')).toMatch(/rewriting started/);
    await waitFor('the rewrite to finish', 60_000, async () => (/^wal_rewrite_in_progress:0$/m.test(await ask(again.port, 'INFO persistence')) ? true : undefined));
    client.close();
    await crash(again);
    const third = await restart(again);
    expect(await dbsize(third.port)).toBe(expected.size);
    expect(await mismatches(third.port, expected)).toEqual([]);
  });

  const tails: [string, Buffer][] = [
    ['a few garbage bytes', Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x00, 0x13, 0x37])],
    // A SET record header that promises a 100-byte value, followed by only part of it.
    ['half of a record', Buffer.concat([Buffer.from([0, 0, 0, 0, 1, 5, 0, 0, 0, 100, 0, 0, 0]), Buffer.from('hello'), Buffer.alloc(20, 0x61)])],
  ];

  it.each(tails)('cuts a torn tail (%s) back at boot and serves the old data', async (_name, garbage) => {
    const server = await startServer({ dir: tempDir('torn') });
    const expected = new Map(Array.from({ length: 200 }, (_, i) => [`torn:${i}`, `old value ${i}`]));
    const client = await TextClient.connect(server.port);
    const acks = await client.pipeline([...expected].map(([k, v]) => `SET ${k} ${v}`));
    expect(acks.filter((r) => r !== 'OK')).toEqual([]);
    const goodSize = await walBytes(server.port);
    await crash(server);

    // The torn append lands where the next group would have gone: on the zeros written ahead
    // of the log, or past the end of the file.
    const file = walPath(server);
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, garbage, 0, garbage.length, goodSize);
    fs.closeSync(fd);

    const again = await restart(server);
    expect(await walBytes(again.port), 'the WAL is cut back to its last complete group').toBe(goodSize);
    const onDisk = fs.readFileSync(walPath(again));
    expect(onDisk.subarray(goodSize).every((byte) => byte === 0), 'nothing of the torn tail is left').toBe(true);
    expect(await mismatches(again.port, expected)).toEqual([]);

    // New appends go after the cut: they survive another crash along with the old data.
    const c2 = await TextClient.connect(again.port);
    expect(await c2.send('SET torn:new fresh')).toBe('OK');
    await crash(again);
    const third = await restart(again);
    expect(await mismatches(third.port, new Map([...expected, ['torn:new', 'fresh']]))).toEqual([]);
  });
});
