// Disk full: a kv-server whose --dir is a 2 MiB tmpfs. Once a filler file and big SETs use up
// the space, writes get `ERR disk write failed (ENOSPC)` and are not applied, reads keep being
// served; when the filler is deleted, writes succeed again; after kill -9 and a restart every
// acknowledged write is there and none of the failed ones.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanup, crash, restart, startServer, TextClient } from './harness.js';
import { dumpDiff, dumpKeys, freeBytes, liveCount, mountTmpfs, persistenceInfo, unmountTmpfs, type Dump } from './support-durability.js';

let mounted: string | undefined;

afterAll(async () => {
  // Kill the server before unmounting: it holds its WAL open.
  await cleanup();
  if (mounted !== undefined) unmountTmpfs(mounted);
  mounted = undefined;
});

const BIG = 40 * 1024; // under the 64 KiB text line limit

describe('disk full', () => {
  it('answers ERR for writes that do not fit, keeps serving reads, recovers when space returns, and keeps exactly the acknowledged writes', async () => {
    mounted = mountTmpfs('2m');
    const dir = mounted;
    // No compaction while the disk is full: its temp file would compete for the same space.
    const server = await startServer({ dir, args: ['--compact-min', '1gb'] });
    const client = await TextClient.connect(server.port);
    const model: Dump = new Map();
    const bigValue = (name: string): string => `${name}:`.padEnd(BIG, name.slice(-1));

    for (let i = 0; i < 50; i++) {
      expect(await client.send(`SET early:${i} small-${i}`)).toBe('OK');
      model.set(`early:${i}`, `small-${i}`);
    }

    // Leave about 200 KiB free, then fill it with big SETs until one fails.
    const filler = path.join(dir, 'filler.bin');
    fs.writeFileSync(filler, Buffer.alloc(Math.max(0, freeBytes(dir) - 200 * 1024), 0x66));
    const failed: string[] = [];
    let failure = '';
    for (let i = 0; i < 40 && failed.length === 0; i++) {
      const key = `big:${i}`;
      const reply = await client.send(`SET ${key} ${bigValue(key)}`);
      if (reply === 'OK') model.set(key, bigValue(key));
      else {
        failure = reply;
        failed.push(key);
      }
    }
    expect(failed, 'a big SET failed once the disk was full').toHaveLength(1);
    expect(failure).toMatch(/^ERR disk write failed \(ENOSPC\)/);
    expect([...model.keys()].filter((k) => k.startsWith('big:')).length, 'some big SETs fit before the disk filled up').toBeGreaterThan(0);

    // The disk is still full: more writes fail too, and each is undone. (Cutting the failed
    // group off also gives back the zeros written ahead of the log, so a few may fit first:
    // those are acknowledged and must be kept.)
    let failedInARow = 0;
    for (let i = 0; i < 60 && failedInARow < 5; i++) {
      const key = `full:${i}`;
      const reply = await client.send(`SET ${key} ${bigValue(key)}`);
      if (reply === 'OK') {
        model.set(key, bigValue(key));
        failedInARow = 0;
        continue;
      }
      expect(reply).toMatch(/^ERR disk write failed \(ENOSPC\)/);
      failed.push(key);
      failedInARow++;
    }
    expect(failedInARow, 'writes keep failing while the disk is full').toBe(5);
    expect((await persistenceInfo(client)).get('wal_last_error')).toMatch(/ENOSPC/);

    // Reads keep being served, and nothing that got ERR is there.
    for (const key of failed) model.set(key, undefined);
    expect(dumpDiff(model, await dumpKeys(client, [...model.keys()])), 'reads while the disk is full').toEqual([]);
    expect(await client.send('DBSIZE')).toBe(String(liveCount(model)));

    // Space returns: writes succeed again.
    fs.rmSync(filler);
    for (let i = 0; i < 5; i++) {
      const key = `after:${i}`;
      expect(await client.send(`SET ${key} ${bigValue(key)}`), 'a write once there is room again').toBe('OK');
      model.set(key, bigValue(key));
    }
    expect(await client.send('DEL early:0')).toBe('DELETED');
    model.set('early:0', undefined);
    expect(dumpDiff(model, await dumpKeys(client, [...model.keys()])), 'after space returned').toEqual([]);
    client.close();

    await crash(server);
    const again = await restart(server);
    const c2 = await TextClient.connect(again.port);
    expect(dumpDiff(model, await dumpKeys(c2, [...model.keys()])), 'after kill -9 and restart: every acknowledged write, none of the failed ones').toEqual([]);
    expect(await c2.send('DBSIZE')).toBe(String(liveCount(model)));
    c2.close();
  });
});
