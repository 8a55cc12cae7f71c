// "fsync always barrier" (after Redis's test of the same name): with --fsync always no reply
// byte leaves before the group's fdatasync has completed. fdatasync is made slow and observable
// by replacing fs.fdatasync on node:fs's default export, which is the object the WAL calls it
// through: each call is recorded and its callback held until the test releases it.
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import type { ServerHandle } from '../../src/server/server.js';
import type { FsyncPolicy } from '../../src/server/wal.js';
import { TextClient, cleanup, startServer, tempDir } from '../integration/harness.js';
import {
  RawSocket,
  closeInProcess,
  closeInProcessServer,
  closeRawSockets,
  dumpDiff,
  dumpKeys,
  imageOf,
  inProcessDir,
  startInProcessServer,
  startOnImage,
  waitUntil,
} from '../integration/support-durability.js';
import { resp } from '../integration/support-robustness.js';

type SyncCallback = (err: NodeJS.ErrnoException | null) => void;

/** Stands in for fs.fdatasync: counts calls, holds them while `holding`, can fail the next one. */
class FdatasyncGate {
  calls = 0;
  completed = 0;
  holding = false;
  failNext: string | undefined;
  private held: { fd: number; callback: SyncCallback }[] = [];
  private readonly real = fs.fdatasync;

  install(): void {
    const fake = (fd: number, callback: SyncCallback): void => {
      this.calls++;
      if (this.failNext !== undefined) {
        const code = this.failNext;
        this.failNext = undefined;
        setImmediate(() => callback(Object.assign(new Error(`${code}: injected fdatasync failure`), { code })));
        return;
      }
      if (this.holding) this.held.push({ fd, callback });
      else this.pass(fd, callback);
    };
    fs.fdatasync = fake as typeof fs.fdatasync;
  }

  get heldCount(): number {
    return this.held.length;
  }

  /** Let every held call go through (new calls are still held while `holding`). */
  release(): void {
    for (const { fd, callback } of this.held.splice(0)) this.pass(fd, callback);
  }

  restore(): void {
    this.holding = false;
    this.release();
    fs.fdatasync = this.real;
  }

  private pass(fd: number, callback: SyncCallback): void {
    this.real(fd, (err) => {
      this.completed++;
      callback(err);
    });
  }
}

let gate = new FdatasyncGate();

afterEach(async () => {
  // Release held syncs before closing: close() drains the WAL, which waits for them.
  gate.restore();
  gate = new FdatasyncGate();
  closeRawSockets();
  await closeInProcess();
  await cleanup();
});

async function start(fsync: FsyncPolicy): Promise<ServerHandle> {
  // walSyncWrites: false so the test can hold fdatasync open (the default syncs on the event loop).
  const handle = await startInProcessServer({ port: 0, dir: inProcessDir(`fsync-${fsync}`), fsync, walSyncWrites: false });
  gate.install();
  return handle;
}

/** Wait until `n` fdatasync calls are being held. */
function heldSyncs(n: number): Promise<true> {
  return waitUntil(`${n} fdatasync call(s) to be made and held`, 10_000, () => gate.heldCount >= n, 2);
}

describe('fsync always barrier', () => {
  it('sends no reply byte for a SET until its fdatasync completes', async () => {
    const server = await start('always');
    const a = await RawSocket.connect(server.port);
    gate.holding = true;
    a.write('SET barrier:key v1\n');
    await heldSyncs(1);
    await a.expectSilence('reply to a SET whose fdatasync is held', 200);
    expect(gate.completed).toBe(0);
    gate.release();
    await a.expectNext('OK\n');
    expect(gate.calls).toBe(1);
  });

  it('holds a GET of the key that group wrote, and replies at once to a GET of another key', async () => {
    const server = await start('always');
    const writer = await RawSocket.connect(server.port);
    const reader = await RawSocket.connect(server.port);
    const other = await RawSocket.connect(server.port);
    writer.write('SET unrelated calm\n');
    await writer.expectNext('OK\n');

    gate.holding = true;
    // A PING after the SET on the same connection: replies leave in request order, so it waits too.
    writer.write('SET hot v2\nPING\n');
    await heldSyncs(1);
    reader.write('GET hot\n');
    other.write('GET unrelated\n');
    await other.expectNext('VALUE calm\n', 5000);
    expect(gate.heldCount, 'the GET of another key was answered while the fdatasync was still held').toBe(1);
    await reader.expectSilence('GET of a key whose group is not durable', 200);
    await writer.expectSilence('SET (and the PING queued behind it) whose fdatasync is held', 0);
    gate.release();
    await writer.expectNext('OK\nPONG\n');
    await reader.expectNext('VALUE v2\n');
  });

  it('a push sends no value to its target before the group that wrote it is durable', async () => {
    const server = await start('always');
    const target = await startServer({ dir: tempDir('fsync-push-target') });
    const targetClient = await RawSocket.connect(target.port);
    const writer = await RawSocket.connect(server.port);
    writer.write('SET calm v1\n');
    await writer.expectNext('OK\n');
    const control = await RawSocket.connect(server.port);
    // Whole ring, one target, in RESP so the replies' framing is exact: WAIT is [done, scanned, moved].
    const push = (token: string): void => control.write(resp('RANGEPUSH', 'START', token, '10', '0', '1', `127.0.0.1:${target.port}`, '0', '4294967295', '0').toString('latin1'));
    const wait = (token: string): void => control.write(resp('RANGEPUSH', 'WAIT', token).toString('latin1'));
    push('t1');
    await control.expectNext('+OK\r\n', 5000);
    wait('t1');
    await control.expectNext('*3\r\n:1\r\n:1\r\n:1\r\n', 5000);

    gate.holding = true;
    writer.write('SET hot v2\n');
    await heldSyncs(1);
    push('t2');
    await control.expectNext('+OK\r\n', 5000);
    // WAIT answers after a moment while the push runs: both keys scanned, none moved yet.
    wait('t2');
    await control.expectNext('*3\r\n:0\r\n:2\r\n:0\r\n', 5000);
    targetClient.write('GET hot\n');
    await targetClient.expectNext('NOT_FOUND\n', 5000);
    gate.release();
    await writer.expectNext('OK\n');
    wait('t2');
    // calm was already there (IMPORT does not overwrite), so the batch inserted one key; moved counts both.
    await control.expectNext('*3\r\n:1\r\n:2\r\n:2\r\n', 5000);
    targetClient.write('GET hot\nGET calm\n');
    await targetClient.expectNext('VALUE v2\nVALUE v1\n', 5000);
  });

  it('holds a DROPRANGE reply until its record is durable, and a GET of a dropped key until then too', async () => {
    const server = await start('always');
    const writer = await RawSocket.connect(server.port);
    writer.write('SET gone v1\n');
    await writer.expectNext('OK\n');
    gate.holding = true;
    const dropper = await RawSocket.connect(server.port);
    // The whole ring from hash 0 on; with the default 16 small shards one call covers them all.
    dropper.write(resp('DROPRANGE', '0', '0', '0').toString('latin1'));
    await heldSyncs(1);
    const reader = await RawSocket.connect(server.port);
    reader.write('GET gone\n');
    await dropper.expectSilence('a DROPRANGE whose record is not durable', 200);
    await reader.expectSilence('GET of a key dropped by a record that is not durable', 0);
    gate.release();
    await dropper.expectNext('*3\r\n:1\r\n:0\r\n:1\r\n', 5000);
    await reader.expectNext('NOT_FOUND\n');
  });

  it.each(['everysec', 'no'] as const)('with --fsync %s, replies without waiting for fdatasync', async (policy) => {
    const server = await start(policy);
    const a = await RawSocket.connect(server.port);
    gate.holding = true;
    a.write('SET lazy:key v1\nGET lazy:key\n');
    await a.expectNext('OK\nVALUE v1\n', 5000);
    expect(gate.completed, 'no fdatasync completed before the reply').toBe(0);
    if (policy === 'no') {
      expect(gate.calls, '--fsync no never calls fdatasync on the write path').toBe(0);
    } else {
      // everysec syncs in the background about once a second, without holding anyone.
      await waitUntil('the background fdatasync of --fsync everysec', 10_000, () => gate.calls >= 1, 20);
      a.write('SET lazy:other v2\n');
      await a.expectNext('OK\n', 5000);
      expect(gate.completed, 'the reply did not wait for the held background fdatasync').toBe(0);
    }
  });
});

describe('group commit', () => {
  async function connectAll(server: ServerHandle, n: number): Promise<RawSocket[]> {
    const clients = await Promise.all(Array.from({ length: n }, () => RawSocket.connect(server.port)));
    await waitUntil(`${n} connections accepted`, 10_000, () => server.state.listener.clients.size === n);
    // A round trip on each makes sure every socket is being read before the real test.
    for (const c of clients) c.write('PING\n');
    for (const c of clients) await c.expectNext('PONG\n');
    return clients;
  }

  it('50 clients sending one SET each in the same turn share exactly one fdatasync', async () => {
    const server = await start('always');
    const clients = await connectAll(server, 50);
    const before = gate.calls;
    clients.forEach((c, i) => c.write(`SET group:${i} v${i}\n`));
    for (const c of clients) await c.expectNext('OK\n');
    expect(gate.calls - before, 'fdatasync calls for 50 SETs sent in one turn').toBe(1);
  });

  it('writes arriving while a group is syncing all join the next group: one more fdatasync', async () => {
    const server = await start('always');
    const clients = await connectAll(server, 51);
    const [first, ...rest] = clients;
    const before = gate.calls;
    const commandsBefore = server.state.listener.totalCommands;
    gate.holding = true;
    first!.write('SET first v\n');
    await heldSyncs(1);
    rest.forEach((c, i) => c.write(`SET next:${i} v${i}\n`));
    // The 50 SETs are applied and wait in the next group; nothing is synced until the first is.
    await waitUntil('the 50 SETs to be executed', 10_000, () => server.state.listener.totalCommands >= commandsBefore + 51);
    await first!.expectSilence('the first SET', 50);
    gate.holding = false;
    gate.release();
    await first!.expectNext('OK\n');
    for (const c of rest) await c.expectNext('OK\n');
    expect(gate.calls - before, 'fdatasync calls: the held group, then one for all 50 that queued behind it').toBe(2);
  });
});

describe('a failed fdatasync', () => {
  it('answers ERR, and the write is not in the log a crash right afterwards leaves', async () => {
    const server = await start('always');
    const dir = server.state.options.dir;
    const client = await TextClient.connect(server.port);
    expect(await client.send('SET kept 1')).toBe('OK');
    gate.failNext = 'EIO';
    expect(await client.send('SET doomed 2')).toMatch(/^ERR disk write failed \(EIO\)/);
    expect(await client.send('GET doomed'), 'the failed write was undone in memory').toBe('NOT_FOUND');

    // kill -9 now: the data directory is what the next start replays.
    const crashImage = imageOf(dir);
    // And after one more (successful) write, which is when the failed group is cut off the file.
    expect(await client.send('SET later 3')).toBe('OK');
    const laterImage = imageOf(dir);

    const expected = new Map<string, string | undefined>([
      ['kept', '1'],
      ['doomed', undefined],
    ]);
    const after = await startOnImage(laterImage, server.port);
    const c2 = await TextClient.connect(after.handle.port);
    expect(dumpDiff(new Map([...expected, ['later', '3']]), await dumpKeys(c2, ['kept', 'doomed', 'later'])), 'restart after a later successful write').toEqual([]);

    const crashed = await startOnImage(crashImage, server.port);
    const c3 = await TextClient.connect(crashed.handle.port);
    expect(
      dumpDiff(expected, await dumpKeys(c3, ['kept', 'doomed'])),
      'restart from a kill -9 right after the ERR reply: a write answered "ERR disk write failed ... not applied" must not come back',
    ).toEqual([]);
  });

  it('answers ERR, and the write is not replayed after a clean shutdown right afterwards', async () => {
    const server = await start('always');
    const dir = server.state.options.dir;
    const client = await TextClient.connect(server.port);
    expect(await client.send('SET kept 1')).toBe('OK');
    gate.failNext = 'EIO';
    expect(await client.send('SET doomed 2')).toMatch(/^ERR disk write failed \(EIO\)/);
    client.close();
    await closeInProcessServer(server);
    const restarted = await startOnImage(imageOf(dir), server.port);
    const c2 = await TextClient.connect(restarted.handle.port);
    expect(dumpDiff(new Map([['kept', '1'], ['doomed', undefined]]), await dumpKeys(c2, ['kept', 'doomed'])), 'restart after close() that followed the ERR').toEqual([]);
  });
});
