// WarmUp (server/warm-up.ts) in-process: it imports its keys into a scratch instance (a real
// in-process kv-server) and removes that instance's directory; it skips a node holding data,
// gives way to real traffic, reports a failing scratch instance, and removes a directory left by
// a crash.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { startServer } from '../../src/server/server.js';
import { WarmUp, type ScratchServer, type WarmUpOptions } from '../../src/server/warm-up.js';
import { silentLogger } from '../../src/common/logger.js';
import { cleanup, tempDir } from '../integration/harness.js';

afterAll(cleanup);

/** A scratch instance that records how many keys it held when it was closed. */
function recordingScratch(record: { keys: number; started: number }): WarmUpOptions['startScratch'] {
  return async (dir, password): Promise<ScratchServer> => {
    record.started++;
    const handle = await startServer({ port: 0, host: '127.0.0.1', dir, password, warmupKeys: 0 });
    return {
      port: handle.port,
      close: async () => {
        record.keys = handle.state.data.store.size;
        await handle.close();
      },
    };
  };
}

/** A WarmUp that starts at once, and a promise for its end. */
function warmUp(overrides: Partial<WarmUpOptions>, record = { keys: -1, started: 0 }) {
  let ended!: () => void;
  const end = new Promise<void>((resolve) => (ended = resolve));
  const w = new WarmUp({
    keys: 2000,
    dir: path.join(tempDir('warm-up'), 'warmup_1.tmp'),
    startScratch: recordingScratch(record),
    commands: () => 0,
    isEmpty: () => true,
    log: silentLogger(),
    onEnd: ended,
    idleMs: 1,
    ...overrides,
  });
  return { w, end, record };
}

describe('WarmUp', () => {
  it('imports its keys into a scratch instance, then deletes the instance and its directory', async () => {
    const dataDir = tempDir('warm-up-done');
    const dir = path.join(dataDir, 'warmup_1.tmp');
    const { w, end, record } = warmUp({ keys: 2500, dir });
    await end;
    expect(w.state).toBe('done');
    expect(record).toEqual({ keys: 2500, started: 1 });
    expect(w.millis).toBeGreaterThan(0);
    expect(fs.readdirSync(dataDir)).toEqual([]);
  });

  it('skips a node that holds data, starting nothing', async () => {
    const { w, record } = warmUp({ isEmpty: () => false });
    await vi.waitFor(() => expect(w.state).not.toBe('waiting'));
    expect(w.state).toBe('skipped');
    expect(record.started).toBe(0);
  });

  it('skips a disk with too little room left, starting nothing', async () => {
    const asked: string[] = [];
    const dataDir = tempDir('warm-up-full');
    const { w, record } = warmUp({
      keys: 100_000,
      dir: path.join(dataDir, 'warmup_4.tmp'),
      // 100,000 keys need ~25.6 MB plus the 64 MiB kept for the server: one byte short.
      freeBytes: (dir) => {
        asked.push(dir);
        return 100_000 * 256 + 64 * 1024 * 1024 - 1;
      },
    });
    await vi.waitFor(() => expect(w.state).not.toBe('waiting'));
    expect(w.state).toBe('skipped');
    expect(record.started).toBe(0);
    expect(asked).toEqual([dataDir]);
  });

  it('gives way to real traffic: it stops before its next request', async () => {
    let commands = 0;
    const record = { keys: -1, started: 0 };
    const scratch = recordingScratch(record);
    const { w, end } = warmUp(
      {
        keys: 1_000_000,
        commands: () => commands,
        // Real clients arrive while the scratch instance starts.
        startScratch: async (dir, password) => {
          const s = await scratch(dir, password);
          commands += 11;
          return s;
        },
      },
      record,
    );
    await end;
    expect(w.state).toBe('stopped');
    expect(record.keys).toBe(0);
  });

  it('reports a scratch instance that fails, and still removes its directory', async () => {
    const dir = path.join(tempDir('warm-up-fail'), 'warmup_2.tmp');
    const { w, end } = warmUp({
      dir,
      startScratch: async (scratchDir) => {
        fs.mkdirSync(scratchDir);
        throw new Error('no room');
      },
    });
    await end;
    expect(w.state).toBe('failed');
    expect(fs.existsSync(dir)).toBe(false);
  });

  it('removes a scratch directory left by a crash, even when turned off', () => {
    const dir = path.join(tempDir('warm-up-stale'), 'warmup_3.tmp');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'wal_40000.log'), 'left by a kill -9');
    const w = new WarmUp({ keys: 0, dir, startScratch: () => Promise.reject(new Error('not called')), commands: () => 0, isEmpty: () => true, log: silentLogger() });
    expect(w.state).toBe('off');
    expect(fs.existsSync(dir)).toBe(false);
  });

  it('close() before the idle time is up starts nothing', async () => {
    const { w, record } = warmUp({ idleMs: 60_000 });
    await w.close();
    expect(w.state).toBe('waiting');
    expect(record.started).toBe(0);
  });
});
