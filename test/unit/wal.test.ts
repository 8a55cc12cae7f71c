import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MAGIC, MAX_FIELD, Parse, RECORD_HEADER, RecordBatch, RecordType, encodeRecord, isAllZero, parseRecord, skipZeros, type ParsedRecord } from '../../src/server/wal-format.js';
import { WalCorruptionError, WriteAheadLog, estimateLog, scanLog, type ReplayStats, type WalEvents } from '../../src/server/wal.js';
import { repairLog } from '../../src/server/wal-repair.js';
import { DurableStore } from '../../src/server/durable-store.js';
import { ShardedStore } from '../../src/server/store.js';
import { HashIntervals } from '../../src/server/hash-intervals.js';
import { hashBytes } from '../../src/common/hash.js';
import { seededBytes } from './chunking.js';

type Rec = [RecordType, string, string];

const NO_EVENTS: WalEvents = { durable: () => {}, failed: () => {} };

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

let dir = '';
let file = '';
const opened: WriteAheadLog[] = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvstore-wal-'));
  file = path.join(dir, 'data.wal');
});

afterEach(async () => {
  for (const wal of opened.splice(0)) await wal.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Opened {
  wal: WriteAheadLog;
  stats: ReplayStats;
  records: Rec[];
  truncations: ReplayStats[];
}

/**
 * Open (and replay) the log. Nothing is written ahead of it unless `preallocate` says so, so
 * that most tests can read the file's layout byte for byte.
 */
function open(events: WalEvents = NO_EVENTS, preallocate = 0): Opened {
  const records: Rec[] = [];
  const truncations: ReplayStats[] = [];
  const { wal, stats } = WriteAheadLog.open(file, {
    events,
    preallocate,
    // The callback gets views into the read buffer: copy them out (as latin1 strings).
    apply: (type, key, value) => records.push([type, key.toString('latin1'), value.toString('latin1')]),
    onTruncated: (s) => truncations.push({ ...s }),
  });
  opened.push(wal);
  return { wal, stats, records, truncations };
}

async function close(wal: WriteAheadLog): Promise<void> {
  opened.splice(opened.indexOf(wal), 1);
  await wal.close();
}

/** Bytes up to the last non-zero one: what a replay counts as a dropped tail. */
function nonZeroLength(bytes: Buffer): number {
  let n = bytes.length;
  while (n > 0 && bytes[n - 1] === 0) n--;
  return n;
}

function recordSize([, key, value]: Rec): number {
  return RECORD_HEADER + key.length + value.length;
}

interface Layout {
  /** File offset just past each group's COMMIT. */
  groupEnds: number[];
  /** For each group, the file offset just past each of its (non-COMMIT) records. */
  recordEnds: number[][];
}

/** Append each group in its own event-loop turn, waiting for it to be durable. */
async function appendGroups(wal: WriteAheadLog, groups: readonly Rec[][]): Promise<Layout> {
  const layout: Layout = { groupEnds: [], recordEnds: [] };
  for (const group of groups) {
    const ends: number[] = [];
    let at = wal.size;
    for (const rec of group) {
      wal.append(rec[0], b(rec[1]), b(rec[2]));
      at += recordSize(rec);
      ends.push(at);
    }
    await wal.drain();
    expect(wal.size).toBe(at + RECORD_HEADER); // the group's COMMIT record
    layout.groupEnds.push(wal.size);
    layout.recordEnds.push(ends);
  }
  return layout;
}

async function writeLog(groups: readonly Rec[][]): Promise<Layout> {
  const { wal } = open();
  const layout = await appendGroups(wal, groups);
  await close(wal);
  return layout;
}

const BIN_KEY = seededBytes(1, 17).toString('latin1');
const BIN_VALUE = seededBytes(2, 300).toString('latin1');
const ALL_BYTES = String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i));

const G1: Rec[] = [
  [RecordType.Set, 'alpha', 'one'],
  [RecordType.Set, '\0bin\r\n', '\xff\x00\n'],
];
const G2: Rec[] = [
  [RecordType.Delete, 'alpha', ''],
  [RecordType.Tombstone, 'gone', ''],
  [RecordType.Set, 'empty', ''],
];
const G3: Rec[] = [
  [RecordType.Set, 'k3', 'v'.repeat(20)],
  [RecordType.Set, BIN_KEY, BIN_VALUE],
  [RecordType.ClearTombstones, '', ''],
];

describe('wal-format', () => {
  it('encodes crc32, type, key and value lengths, then key and value', () => {
    const rec = encodeRecord(RecordType.Set, 'key', 'value\0');
    expect(rec.length).toBe(RECORD_HEADER + 3 + 6);
    expect(rec[4]).toBe(RecordType.Set);
    expect(rec.readUInt32LE(5)).toBe(3);
    expect(rec.readUInt32LE(9)).toBe(6);
    expect(rec.subarray(13).toString('latin1')).toBe('keyvalue\0');
    expect(rec.readUInt32LE(0)).toBe(crc32(rec.subarray(4)));
  });

  it('parseRecord reads back what was encoded, including binary and empty fields', () => {
    const out: ParsedRecord = { type: RecordType.Commit, keyStart: 0, keyLen: 0, valueStart: 0, valueLen: 0, size: 0 };
    for (const [type, key, value] of [[RecordType.Set, ALL_BYTES, BIN_VALUE], [RecordType.Delete, 'k', ''], [RecordType.Commit, '', '']] as Rec[]) {
      const buf = Buffer.concat([Buffer.from('pad'), encodeRecord(type, key, value)]);
      expect(parseRecord(buf, 3, buf.length, out)).toBe(Parse.Ok);
      expect(out.type).toBe(type);
      expect(buf.toString('latin1', out.keyStart, out.keyStart + out.keyLen)).toBe(key);
      expect(buf.toString('latin1', out.valueStart, out.valueStart + out.valueLen)).toBe(value);
      expect(out.size).toBe(buf.length - 3);
    }
  });

  it('parseRecord says Short for every proper prefix', () => {
    const rec = encodeRecord(RecordType.Set, 'key', 'value');
    const out: ParsedRecord = { type: RecordType.Commit, keyStart: 0, keyLen: 0, valueStart: 0, valueLen: 0, size: 0 };
    for (let end = 0; end < rec.length; end++) expect(parseRecord(rec, 0, end, out), `end ${end}`).toBe(Parse.Short);
  });

  it('parseRecord says Bad for a wrong crc, an unknown type, a damaged body or an impossible length', () => {
    const out: ParsedRecord = { type: RecordType.Commit, keyStart: 0, keyLen: 0, valueStart: 0, valueLen: 0, size: 0 };
    const good = encodeRecord(RecordType.Set, 'key', 'value');
    const damage = (at: number, byte: number): Buffer => {
      const b = Buffer.from(good);
      b[at] = byte;
      return b;
    };
    expect(parseRecord(damage(0, good[0]! ^ 1), 0, good.length, out)).toBe(Parse.Bad);
    expect(parseRecord(damage(4, 9), 0, good.length, out)).toBe(Parse.Bad);
    expect(parseRecord(damage(14, 0x4b), 0, good.length, out)).toBe(Parse.Bad);
    // An impossible length is Bad from the header alone, even when the body is missing.
    const huge = Buffer.from(good.subarray(0, RECORD_HEADER));
    huge.writeUInt32LE(MAX_FIELD + 1, 5);
    expect(parseRecord(huge, 0, huge.length, out)).toBe(Parse.Bad);
  });

  it('skipZeros finds the first non-zero byte, across whole pages of zeros', () => {
    const buf = Buffer.alloc(3 * 4096 + 100);
    expect(skipZeros(buf, 0, buf.length)).toBe(buf.length);
    for (const at of [0, 5, 4095, 4096, 4097, 8191, 3 * 4096 + 99]) {
      buf.fill(0);
      buf[at] = 1;
      expect(skipZeros(buf, 0, buf.length), `non-zero at ${at}`).toBe(at);
      expect(skipZeros(buf, 3, buf.length), `from 3, non-zero at ${at}`).toBe(Math.max(at, 3) === at ? at : buf.length);
      expect(isAllZero(buf, 0, buf.length)).toBe(false);
      expect(isAllZero(buf, at + 1, buf.length)).toBe(true);
    }
  });

  it('RecordBatch grows past its initial buffer and resets', () => {
    const batch = new RecordBatch();
    const value = 'x'.repeat(50_000);
    for (let i = 0; i < 4; i++) batch.append(RecordType.Set, b(`k${i}`), b(value));
    expect(batch.records).toBe(4);
    expect(batch.length).toBe(4 * (RECORD_HEADER + 2 + 50_000));
    const bytes = Buffer.from(batch.bytes());
    expect(bytes.subarray(0, RECORD_HEADER + 2 + 50_000).equals(encodeRecord(RecordType.Set, 'k0', value))).toBe(true);
    batch.reset();
    expect(batch.records).toBe(0);
    expect(batch.bytes().length).toBe(0);
  });
});
describe('estimateLog', () => {
  it('estimates the data records of a log from its first MiB (COMMITs not counted), and its bytes before the zeros written ahead', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kv-estimate-'));
    const file = path.join(dir, 'wal_1.log');
    const batch = new RecordBatch();
    const chunks: Buffer[] = [MAGIC];
    for (let i = 0; i < 30_000; i++) {
      batch.append(RecordType.Set, Buffer.from(`key:${i}`), Buffer.alloc(40 + (i % 60), 1));
      if (i % 100 === 99) {
        batch.append(RecordType.Commit, null, null);
        chunks.push(Buffer.from(batch.bytes()));
        batch.reset();
      }
    }
    const log = Buffer.concat(chunks);
    // Zeros written ahead of the log (3 MiB: more than one backwards read) count for nothing.
    fs.writeFileSync(file, Buffer.concat([log, Buffer.alloc(3 * 1024 * 1024)]));
    const estimate = estimateLog(file);
    // The log ends in a COMMIT, whose lengths are zero bytes: those cannot be told from the zeros.
    expect(estimate.bytes).toBeLessThanOrEqual(log.length);
    expect(estimate.bytes).toBeGreaterThan(log.length - RECORD_HEADER);
    expect(estimate.records).toBeGreaterThan(30_000 * 0.9);
    expect(estimate.records).toBeLessThan(30_000 * 1.1);
    fs.writeFileSync(file, MAGIC);
    expect(estimateLog(file)).toEqual({ bytes: MAGIC.length, records: 0 });
    expect(estimateLog(path.join(dir, 'missing.log'))).toEqual({ bytes: 0, records: 0 });
    fs.writeFileSync(file, Buffer.concat([MAGIC, Buffer.alloc(100, 0xff)]));
    expect(estimateLog(file).records, 'garbage is no record').toBe(0);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});


describe('WriteAheadLog: append and replay', () => {
  it('a fresh log holds only the magic', () => {
    const { wal, stats, records } = open();
    expect(stats.records).toBe(0);
    expect(records).toEqual([]);
    expect(wal.size).toBe(MAGIC.length);
    expect(fs.readFileSync(file).equals(MAGIC)).toBe(true);
  });

  it('replays many records exactly, binary keys and values and empty values included', async () => {
    const groups: Rec[][] = [G1, G2, G3];
    const many: Rec[] = [];
    for (let i = 0; i < 500; i++) many.push([RecordType.Set, seededBytes(i, 1 + (i % 40)).toString('latin1'), seededBytes(i + 10_000, i % 7 === 0 ? 0 : i % 300).toString('latin1')]);
    groups.push(many, [[RecordType.Set, ALL_BYTES, ALL_BYTES], [RecordType.Set, '', 'empty key']]);
    const layout = await writeLog(groups);
    const { stats, records, truncations } = open();
    expect(records).toEqual(groups.flat());
    expect(stats.records).toBe(groups.flat().length);
    expect(stats.groups).toBe(groups.length);
    expect(stats.bytes).toBe(layout.groupEnds[layout.groupEnds.length - 1]);
    expect(stats.truncatedFrom).toBeUndefined();
    expect(stats.droppedRecords).toBe(0);
    expect(truncations).toEqual([]);
  });

  it('replays a record larger than the 8 MiB read chunk', async () => {
    const big = 'b'.repeat(9 * 1024 * 1024);
    await writeLog([[[RecordType.Set, 'small', '1']], [[RecordType.Set, 'big', big]], [[RecordType.Set, 'after', '2']]]);
    const { records } = open();
    expect(records.map(([t, k, v]) => [t, k, v.length])).toEqual([
      [RecordType.Set, 'small', 1],
      [RecordType.Set, 'big', big.length],
      [RecordType.Set, 'after', 1],
    ]);
    expect(records[1]![2] === big).toBe(true);
  });

  it('records appended in one event-loop turn share one group and one fsync', async () => {
    const durable: number[] = [];
    const { wal } = open({ durable: (e) => durable.push(e), failed: () => {} });
    expect(wal.fsyncs).toBe(0);
    const epochs = new Set<number>();
    for (let i = 0; i < 200; i++) epochs.add(wal.append(RecordType.Set, b(`key${i}`), b(`value${i}`)));
    expect(epochs.size).toBe(1);
    const [epoch] = [...epochs];
    expect(wal.idle).toBe(false);
    await wal.drain();
    expect(wal.fsyncs).toBe(1);
    expect(durable).toEqual([epoch]);
    expect(wal.idle).toBe(true);
    expect(wal.settledEpoch).toBe(epoch);

    // The next turn is the next group: one more fsync, the next epoch.
    const next = wal.append(RecordType.Delete, b('key0'), null);
    expect(next).toBe(epoch! + 1);
    await wal.drain();
    expect(wal.fsyncs).toBe(2);
    expect(durable).toEqual([epoch, next]);

    // Draining with nothing pending is immediate and costs no fsync.
    await wal.drain();
    expect(wal.fsyncs).toBe(2);
    await close(wal);

    const scan = scanLog(file, () => {});
    expect(scan.stats.groups).toBe(2);
    expect(scan.stats.records).toBe(201);
  });

  it('refuses appends after close', async () => {
    const { wal } = open();
    await close(wal);
    expect(() => wal.append(RecordType.Set, b('k'), b('v'))).toThrow('WAL is closed');
  });
});

describe('WriteAheadLog: rewrite', () => {
  it('writes what fill() adds, call by call, then what was appended meanwhile, in place of the old log', async () => {
    const { wal } = open();
    await appendGroups(wal, [G1, G2, G3]);
    const parts: Rec[][] = [
      [[RecordType.Set, 'alpha', 'A'], [RecordType.Tombstone, 'gone', '']],
      [[RecordType.Set, BIN_KEY, BIN_VALUE]],
      [],
      [[RecordType.Set, '', ''], [RecordType.Set, ALL_BYTES, ALL_BYTES]],
    ];
    const meanwhile: Rec[] = [[RecordType.Set, 'during', '1'], [RecordType.Delete, 'alpha', '']];
    let calls = 0;
    const result = await wal.rewrite((batch) => {
      const part = parts[calls]!;
      for (const [type, key, value] of part) batch.append(type, b(key), type === RecordType.Tombstone ? null : b(value));
      // Writes keep coming while the snapshot is written.
      const extra = meanwhile[calls];
      if (extra !== undefined) expect(wal.append(extra[0], b(extra[1]), b(extra[2]))).toBeGreaterThan(0);
      calls++;
      return calls === parts.length;
    });
    expect(result.ok).toBe(true);
    expect(calls).toBe(parts.length);
    // `after` is the size at the swap; a group held during the swap goes to the new file next.
    await wal.drain();
    expect(wal.size).toBe(fs.statSync(file).size);
    expect(result.after).toBeGreaterThan(MAGIC.length);
    expect(result.after).toBeLessThanOrEqual(wal.size);
    expect(fs.existsSync(`${file}.rewrite`)).toBe(false);
    // The log goes on after the swap.
    await appendGroups(wal, [[[RecordType.Set, 'after', 'swap']]]);
    await close(wal);
    const { records, truncations } = open();
    expect(records).toEqual([...parts.flat(), ...meanwhile, [RecordType.Set, 'after', 'swap']]);
    expect(truncations).toEqual([]);
  });

  it('a second rewrite while one runs is refused; an empty snapshot leaves only the magic', async () => {
    const { wal } = open();
    await appendGroups(wal, [G1]);
    let second: Promise<{ ok: boolean; reason?: string }> | undefined;
    const first = await wal.rewrite(() => {
      second ??= wal.rewrite(() => true);
      return true;
    });
    expect(first.ok).toBe(true);
    expect(await second).toMatchObject({ ok: false, reason: 'a rewrite is already running' });
    expect(fs.readFileSync(file).equals(MAGIC)).toBe(true);
    await close(wal);
    expect(open().records).toEqual([]);
  });
});

describe('WriteAheadLog: torn and garbage tails are cut back to the last complete group', () => {
  it('a tail torn at every byte offset inside the last group', async () => {
    const layout = await writeLog([G1, G2, G3]);
    const full = fs.readFileSync(file);
    const goodEnd = layout.groupEnds[1]!;
    const lastEnd = layout.groupEnds[2]!;
    expect(full.length).toBe(lastEnd);
    for (let cut = goodEnd + 1; cut < lastEnd; cut++) {
      fs.writeFileSync(file, full.subarray(0, cut));
      const { wal, stats, records, truncations } = open();
      const completeInTail = layout.recordEnds[2]!.filter((end) => end <= cut).length;
      const where = `cut at ${cut}`;
      expect(records, where).toEqual([...G1, ...G2]);
      expect(stats.records, where).toBe(G1.length + G2.length);
      expect(stats.groups, where).toBe(2);
      expect(stats.truncatedFrom, where).toBe(goodEnd);
      expect(stats.droppedBytes, where).toBe(nonZeroLength(full.subarray(goodEnd, cut)));
      expect(stats.droppedRecords, where).toBe(completeInTail);
      expect(truncations, where).toHaveLength(1);
      expect(truncations[0]!.truncatedFrom, where).toBe(goodEnd);
      expect(truncations[0]!.droppedRecords, where).toBe(completeInTail);
      expect(wal.size, where).toBe(goodEnd);
      expect(fs.statSync(file).size, where).toBe(goodEnd);
      await close(wal);
    }
  });

  it('a cut exactly at a group boundary is a clean log: nothing truncated', async () => {
    const layout = await writeLog([G1, G2, G3]);
    const full = fs.readFileSync(file);
    fs.writeFileSync(file, full.subarray(0, layout.groupEnds[1]));
    const { stats, records, truncations } = open();
    expect(records).toEqual([...G1, ...G2]);
    expect(stats.truncatedFrom).toBeUndefined();
    expect(truncations).toEqual([]);
  });

  it('a tail torn inside the first group leaves an empty, usable log', async () => {
    const layout = await writeLog([G1]);
    const full = fs.readFileSync(file);
    for (let cut = MAGIC.length + 1; cut < layout.groupEnds[0]!; cut += 3) {
      fs.writeFileSync(file, full.subarray(0, cut));
      const { wal, records, truncations } = open();
      expect(records).toEqual([]);
      expect(truncations[0]!.truncatedFrom).toBe(MAGIC.length);
      expect(fs.statSync(file).size).toBe(MAGIC.length);
      await close(wal);
    }
  });

  it('a file cut inside the magic is restored to an empty log', () => {
    fs.writeFileSync(file, MAGIC.subarray(0, 3));
    const { wal, records } = open();
    expect(records).toEqual([]);
    expect(wal.size).toBe(MAGIC.length);
    expect(fs.readFileSync(file).equals(MAGIC)).toBe(true);
  });

  for (const zeros of [1, RECORD_HEADER - 1, RECORD_HEADER, 4096, 100_000]) {
    it(`${zeros} zero byte(s) after the last group are space written ahead, not a tail: kept`, async () => {
      const layout = await writeLog([G1, G2]);
      fs.appendFileSync(file, Buffer.alloc(zeros));
      const { wal, stats, records, truncations } = open();
      expect(records).toEqual([...G1, ...G2]);
      expect(stats.truncatedFrom).toBeUndefined();
      expect(truncations).toEqual([]);
      expect(stats.bytes, 'the log ends where the zeros begin').toBe(layout.groupEnds[1]);
      expect(wal.size).toBe(layout.groupEnds[1]);
      expect(fs.statSync(file).size).toBe(layout.groupEnds[1]! + zeros);
    });
  }

  const garbage: { name: string; bytes: () => Buffer }[] = [
    { name: 'zeros, then a byte that is not zero', bytes: () => Buffer.concat([Buffer.alloc(5000), Buffer.from([7])]) },
    ...[1, 5, 12, 13, 14, 100, 777].map((n) => ({ name: `${n} random bytes`, bytes: () => seededBytes(n * 31, n) })),
    { name: 'a record claiming more bytes than follow', bytes: () => encodeRecord(RecordType.Set, 'k', 'x'.repeat(1000)).subarray(0, 40) },
    { name: 'complete records with no COMMIT (unfinished group)', bytes: () => Buffer.concat([encodeRecord(RecordType.Set, 'x', '1'), encodeRecord(RecordType.Delete, 'y')]) },
  ];
  for (const g of garbage) {
    it(`trailing garbage is cut back: ${g.name}`, async () => {
      const layout = await writeLog([G1, G2]);
      const goodEnd = layout.groupEnds[1]!;
      const tail = g.bytes();
      fs.appendFileSync(file, tail);
      const { stats, records, truncations } = open();
      expect(records).toEqual([...G1, ...G2]);
      expect(stats.truncatedFrom).toBe(goodEnd);
      expect(stats.droppedBytes).toBe(tail.length);
      expect(truncations).toHaveLength(1);
      expect(fs.statSync(file).size).toBe(goodEnd);
    });
  }

  it('random garbage of many seeds and sizes is always cut back', async () => {
    const layout = await writeLog([G1, G2]);
    const good = fs.readFileSync(file);
    for (let seed = 1; seed <= 40; seed++) {
      fs.writeFileSync(file, Buffer.concat([good, seededBytes(seed * 7, 1 + ((seed * 37) % 250))]));
      const { wal, records } = open();
      expect(records, `seed ${seed}`).toEqual([...G1, ...G2]);
      expect(fs.statSync(file).size, `seed ${seed}`).toBe(layout.groupEnds[1]);
      await close(wal);
    }
  });

  it('after a torn tail, new writes follow the last good group and survive another open', async () => {
    const layout = await writeLog([G1, G2, G3]);
    const full = fs.readFileSync(file);
    fs.writeFileSync(file, full.subarray(0, layout.recordEnds[2]![1]! - 5));
    const first = open();
    expect(first.records).toEqual([...G1, ...G2]);
    const G4: Rec[] = [[RecordType.Set, 'new', 'after crash']];
    const G5: Rec[] = [[RecordType.Delete, 'empty', ''], [RecordType.Set, BIN_KEY, 'replaced']];
    await appendGroups(first.wal, [G4, G5]);
    await close(first.wal);
    const second = open();
    expect(second.records).toEqual([...G1, ...G2, ...G4, ...G5]);
    expect(second.truncations).toEqual([]);
    expect(second.stats.groups).toBe(4);
  });
});

describe('WriteAheadLog: zeros written ahead (preallocation)', () => {
  const PIECE = 4096;
  /** `n` small groups (a few hundred bytes each, well under a quarter piece). */
  const smallGroups = (n: number): Rec[][] =>
    Array.from({ length: n }, (_, g) => Array.from({ length: 4 }, (_, i): Rec => [RecordType.Set, `key:${g}:${i}`, seededBytes(g * 10 + i, 40).toString('latin1')]));

  it('small groups land on zeros written ahead; the file is the log plus zeros; a reopen keeps them and replays exactly', async () => {
    const { wal } = open(NO_EVENTS, PIECE);
    expect(wal.preallocations, 'nothing is written before the first group').toBe(0);
    const groups = smallGroups(60);
    await appendGroups(wal, groups);
    expect(wal.preallocations, 'the log grew past the first piece').toBeGreaterThan(1);
    const bytes = fs.readFileSync(file);
    expect(bytes.length).toBe(wal.allocated);
    expect(wal.preallocatedBytes).toBe(wal.allocated - wal.size);
    expect(wal.preallocatedBytes).toBeGreaterThan(0);
    expect(isAllZero(bytes, wal.size, bytes.length), 'past the log: zeros').toBe(true);
    const size = wal.size;
    await close(wal);

    const again = open(NO_EVENTS, PIECE);
    expect(again.records).toEqual(groups.flat());
    expect(again.truncations).toEqual([]);
    expect(again.stats.bytes).toBe(size);
    expect(again.wal.size).toBe(size);
    expect(again.wal.preallocatedBytes, 'the zeros are known again after a reopen').toBe(bytes.length - size);
    expect(fs.statSync(file).size, 'nothing cut').toBe(bytes.length);
  });

  it('a log that grows fast gets larger pieces, at most 16 times the configured one', async () => {
    const { wal } = open(NO_EVENTS, PIECE);
    // ~100 KB in small groups, written as fast as their fdatasyncs allow: far more than a
    // piece per quarter second on any disk this runs on.
    let largest = 0;
    for (const group of smallGroups(400)) {
      await appendGroups(wal, [group]);
      largest = Math.max(largest, wal.preallocatedBytes);
    }
    // A piece is written once less than half a piece is ahead: with pieces of the configured
    // size, less than one and a half of them are ahead; with the largest, 1.5 x 16.
    expect(largest).toBeGreaterThan(1.5 * PIECE);
    expect(largest).toBeLessThan(1.5 * 16 * PIECE);
    const bytes = fs.readFileSync(file);
    expect(isAllZero(bytes, wal.size, bytes.length), 'past the log: zeros').toBe(true);
    const size = wal.size;
    await close(wal);
    const again = open(NO_EVENTS, PIECE);
    expect(again.records).toEqual(smallGroups(400).flat());
    expect(again.wal.size).toBe(size);
  });

  it('no zeros after a group larger than a quarter piece (a bulk load), nor with preallocation off', async () => {
    const { wal } = open(NO_EVENTS, PIECE);
    await appendGroups(wal, [[[RecordType.Set, 'big', 'b'.repeat(PIECE)]]]);
    expect(wal.preallocations).toBe(0);
    expect(fs.statSync(file).size).toBe(wal.size);
    await close(wal);
    fs.rmSync(file);
    const off = open(NO_EVENTS, 0);
    await appendGroups(off.wal, smallGroups(30));
    expect(off.wal.preallocations).toBe(0);
    expect(fs.statSync(file).size).toBe(off.wal.size);
  });

  it('a torn group inside the zeros is cut back; the groups written after it replay', async () => {
    const { wal } = open(NO_EVENTS, PIECE);
    await appendGroups(wal, [G1, G2]);
    expect(wal.preallocatedBytes).toBeGreaterThan(0);
    const good = wal.size;
    await close(wal);
    // A crash mid-append: part of the next group landed on the zeros.
    const torn = encodeRecord(RecordType.Set, 'half', 'written').subarray(0, 15);
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, torn, 0, torn.length, good);
    fs.closeSync(fd);

    const after = open(NO_EVENTS, PIECE);
    expect(after.records).toEqual([...G1, ...G2]);
    expect(after.stats.truncatedFrom).toBe(good);
    expect(after.stats.droppedBytes).toBe(nonZeroLength(torn));
    await appendGroups(after.wal, [G3]);
    await close(after.wal);
    const last = open();
    expect(last.records).toEqual([...G1, ...G2, ...G3]);
    expect(last.truncations).toEqual([]);
  });
});

describe('WriteAheadLog: damage in the middle is corruption', () => {
  const groups: Rec[][] = [G1, G2, G3, [[RecordType.Set, 'last', 'group']]];
  const firstRecordSize = recordSize(G1[0]!);

  function expectCorruptAt(offset: number, reason?: string): WalCorruptionError {
    let caught: unknown;
    try {
      open();
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(WalCorruptionError);
    const err = caught as WalCorruptionError;
    expect(err.file).toBe(file);
    expect(err.offset).toBe(offset);
    expect(err.message).toContain(file);
    expect(err.message).toContain(`byte offset ${offset}`);
    if (reason !== undefined) expect(err.reason).toContain(reason);
    return err;
  }

  it('a flipped byte inside an early record', async () => {
    await writeLog(groups);
    const bytes = fs.readFileSync(file);
    bytes[MAGIC.length + RECORD_HEADER + 1]! ^= 0x20; // inside the first record's key
    fs.writeFileSync(file, bytes);
    expectCorruptAt(MAGIC.length, 'CRC mismatch');
    // Refusing to start must not modify the file.
    expect(fs.readFileSync(file).equals(bytes)).toBe(true);
  });

  it('a flipped byte in a record of the second group names that record', async () => {
    const layout = await writeLog(groups);
    const bytes = fs.readFileSync(file);
    const second = layout.recordEnds[1]![0]!; // start of G2's second record
    bytes[second + RECORD_HEADER]! ^= 0x01;
    fs.writeFileSync(file, bytes);
    expectCorruptAt(second, 'CRC mismatch');
  });

  it('an impossible length', async () => {
    await writeLog(groups);
    const bytes = fs.readFileSync(file);
    const at = MAGIC.length + firstRecordSize; // the second record of the first group
    bytes.writeUInt32LE(0xfffffff0, at + 5);
    fs.writeFileSync(file, bytes);
    expectCorruptAt(at, 'impossible length');
  });

  it('an unknown record type', async () => {
    await writeLog(groups);
    const bytes = fs.readFileSync(file);
    bytes[MAGIC.length + 4] = 0x42;
    fs.writeFileSync(file, bytes);
    expectCorruptAt(MAGIC.length);
  });

  it('a single bit flip anywhere in the first record, followed by complete groups, is always corruption', async () => {
    // Including the length fields: a length bumped to a plausible size that points past the end
    // of the file must not pass for a torn tail when complete groups were written after it.
    await writeLog(groups);
    const good = fs.readFileSync(file);
    const missed: string[] = [];
    for (let at = MAGIC.length; at < MAGIC.length + firstRecordSize; at++) {
      for (const mask of [0x01, 0x80]) {
        const bytes = Buffer.from(good);
        bytes[at]! ^= mask;
        fs.writeFileSync(file, bytes);
        try {
          const { wal, records } = open();
          missed.push(`byte ${at} ^ 0x${mask.toString(16)}: opened with ${records.length} records, file cut to ${fs.statSync(file).size} of ${good.length} bytes`);
          await close(wal);
        } catch (err) {
          if (!(err instanceof WalCorruptionError) || err.offset !== MAGIC.length) missed.push(`byte ${at} ^ 0x${mask.toString(16)}: ${String(err)}`);
        }
      }
    }
    expect(missed).toEqual([]);
  });

  it('zeros where a group was (a write that never reached the disk), followed by complete groups, are corruption, not the end of the log', async () => {
    const layout = await writeLog(groups);
    const bytes = fs.readFileSync(file);
    bytes.fill(0, layout.groupEnds[0], layout.groupEnds[1]);
    fs.writeFileSync(file, bytes);
    expectCorruptAt(layout.groupEnds[0]!);
    // The same after a long run of zeros (skipped a page at a time when looking for later groups).
    fs.writeFileSync(file, Buffer.concat([bytes.subarray(0, layout.groupEnds[0]), Buffer.alloc(100_000), bytes.subarray(layout.groupEnds[1]!)]));
    expectCorruptAt(layout.groupEnds[0]!);
  });

  it('a file that is not a WAL is refused at offset 0', () => {
    fs.writeFileSync(file, 'hello world, not a log');
    expectCorruptAt(0, 'bad magic');
    fs.writeFileSync(file, 'KVX');
    expectCorruptAt(0, 'bad magic');
  });
});

describe('repairLog', () => {
  const groups: Rec[][] = [G1, G2, G3, [[RecordType.Set, 'last', 'group']]];

  it('keeps <file>.broken, truncates at the first bad record and reports what was dropped', async () => {
    const layout = await writeLog(groups);
    const bytes = fs.readFileSync(file);
    // Damage G2's second record: G1 survives; G2's first record (pending), the damaged one and
    // everything after it are dropped.
    const damagedAt = layout.recordEnds[1]![0]!;
    bytes[damagedAt + RECORD_HEADER + 1]! ^= 0xff;
    fs.writeFileSync(file, bytes);
    expect(() => open()).toThrow(WalCorruptionError);

    const report = repairLog(file);
    expect(report.ok).toBe(true);
    expect(report.backup).toBe(`${file}.broken`);
    expect(fs.readFileSync(`${file}.broken`).equals(bytes)).toBe(true);
    expect(report.droppedRecords).toBe(G2.length + G3.length + 1);
    expect(report.message).toContain(`byte offset ${damagedAt}`);
    expect(fs.statSync(file).size).toBe(layout.groupEnds[0]);

    const { records, truncations } = open();
    expect(records).toEqual(G1);
    expect(truncations).toEqual([]);
  });

  it('damage in the very first record leaves an empty log that opens', async () => {
    await writeLog(groups);
    const bytes = fs.readFileSync(file);
    bytes.writeUInt32LE(MAX_FIELD + 7, MAGIC.length + 9);
    fs.writeFileSync(file, bytes);
    const report = repairLog(file);
    expect(report.ok).toBe(true);
    expect(report.droppedRecords).toBe(groups.flat().length);
    expect(fs.statSync(file).size).toBe(MAGIC.length);
    expect(open().records).toEqual([]);
  });

  it('a clean log needs no repair and gets no backup', async () => {
    await writeLog([G1, G2]);
    const before = fs.readFileSync(file);
    const report = repairLog(file);
    expect(report).toMatchObject({ ok: true, droppedRecords: 0 });
    expect(report.backup).toBeUndefined();
    expect(fs.existsSync(`${file}.broken`)).toBe(false);
    expect(fs.readFileSync(file).equals(before)).toBe(true);
  });

  it('a torn tail is repaired too', async () => {
    const layout = await writeLog([G1, G2]);
    fs.appendFileSync(file, encodeRecord(RecordType.Set, 'half', 'written').subarray(0, 10));
    const report = repairLog(file);
    expect(report.ok).toBe(true);
    expect(fs.statSync(file).size).toBe(layout.groupEnds[1]);
  });

  it('a missing file or a non-WAL is reported, not thrown', () => {
    expect(repairLog(path.join(dir, 'nope.wal'))).toMatchObject({ ok: false, droppedRecords: 0 });
    fs.writeFileSync(file, 'not a wal at all');
    const report = repairLog(file);
    expect(report.ok).toBe(false);
    expect(report.message).toContain('bad magic');
  });
});

describe('DurableStore', () => {
  function snapshot(store: ShardedStore, probe: readonly string[]): { values: Map<string, string>; tombstoned: string[] } {
    const values = new Map<string, string>();
    for (const [k, v] of store.entries()) values.set(k.toString('latin1'), v.toString('latin1'));
    expect(values.size).toBe(store.size);
    return { values, tombstoned: probe.filter((k) => store.isTombstoned(b(k))) };
  }

  function openDurable(events?: (ds: DurableStore) => WalEvents): { ds: DurableStore; wal: WriteAheadLog; stats: ReplayStats } {
    const ds = new DurableStore(new ShardedStore(8));
    const { wal, stats } = WriteAheadLog.open(file, {
      events: events ? events(ds) : { durable: (e) => ds.settled(e), failed: (e) => ds.rollBack(e) },
      apply: (type, key, value) => ds.replay(type, key, value),
    });
    opened.push(wal);
    ds.wal = wal;
    return { ds, wal, stats };
  }

  it('replays every record type into the store', async () => {
    await writeLog([
      [[RecordType.Set, 'a', '1'], [RecordType.Set, 'b', '2'], [RecordType.Set, BIN_KEY, BIN_VALUE]],
      [[RecordType.Delete, 'a', ''], [RecordType.Tombstone, 'b', ''], [RecordType.Tombstone, 'never', '']],
      [[RecordType.Set, 'c', ''], [RecordType.ClearTombstones, '', ''], [RecordType.Tombstone, 'c', '']],
    ]);
    const { ds } = openDurable();
    expect(snapshot(ds.store, ['a', 'b', 'c', 'never'])).toEqual({ values: new Map([[BIN_KEY, BIN_VALUE]]), tombstoned: ['c'] });
  });

  it('set, delete, tombstone, importIfAbsent and clearTombstones are logged and survive a reopen', async () => {
    const first = openDurable();
    const { ds } = first;
    ds.set(b('a'), b('hello world'));
    ds.set(b('b'), b(''));
    ds.set(b(BIN_KEY), b(BIN_VALUE));
    expect(ds.delete(b('a'))).toBe(true);
    expect(ds.delete(b('absent'))).toBe(false);
    expect(ds.tombstone(b('b'))).toBe(true);
    expect(ds.tombstone(b('ghost'))).toBe(false);
    expect(ds.importIfAbsent(b('b'), b('stale'))).toBe(false); // tombstoned
    expect(ds.importIfAbsent(b(BIN_KEY), b('stale'))).toBe(false); // present
    expect(ds.importIfAbsent(b('fresh'), b('imported'))).toBe(true);
    await first.wal.drain();
    const before = snapshot(ds.store, ['a', 'b', 'ghost', 'fresh']);
    expect(before).toEqual({ values: new Map([[BIN_KEY, BIN_VALUE], ['fresh', 'imported']]), tombstoned: ['b', 'ghost'] });
    await close(first.wal);

    const second = openDurable();
    expect(snapshot(second.ds.store, ['a', 'b', 'ghost', 'fresh'])).toEqual(before);
    second.ds.clearTombstones();
    await second.wal.drain();
    await close(second.wal);

    const third = openDurable();
    expect(snapshot(third.ds.store, ['a', 'b', 'ghost', 'fresh'])).toEqual({ values: before.values, tombstoned: [] });
  });

  it('dropRanges is one record, however many keys it drops, and a reopen replays it', async () => {
    const first = openDurable();
    const { ds, wal } = first;
    for (let i = 0; i < 500; i++) ds.set(b(`key:${i}`), b(`value:${i}`));
    ds.tombstone(b('tomb'));
    await wal.drain();
    const ranges = new HashIntervals([{ start: 0x10000000, end: 0x90000000 }]);
    const kept = snapshot(ds.store, ['tomb']).values;
    for (const k of [...kept.keys()]) if (ranges.has(hashBytes(b(k)))) kept.delete(k);
    const epoch = wal.lastEpoch;
    const dropped = ds.dropRanges(ranges);
    expect(dropped).toBe(500 - kept.size);
    expect(dropped).toBeGreaterThan(100);
    expect(wal.lastEpoch, 'one new group').toBe(epoch + 1);
    expect(ds.dropRanges(new HashIntervals([])), 'no ranges: nothing logged').toBe(0);
    await wal.drain();
    const after = snapshot(ds.store, ['tomb']);
    expect(after).toEqual({ values: kept, tombstoned: ['tomb'] });
    await close(wal);

    const second = openDurable();
    expect(snapshot(second.ds.store, ['tomb'])).toEqual(after);
    // New values in the dropped ranges after the drop are not dropped again by the replay.
    const back = [...Array(500).keys()].map((i) => `key:${i}`).find((k) => ranges.has(hashBytes(b(k))))!;
    second.ds.set(b(back), b('written after the drop'));
    await second.wal.drain();
    await close(second.wal);
    const third = openDurable();
    expect(third.ds.store.get(b(back))?.toString('latin1')).toBe('written after the drop');
    expect(third.ds.store.size).toBe(kept.size + 1);
  });

  it('a delete of an absent key appends nothing', async () => {
    const { ds, wal } = openDurable();
    expect(ds.delete(b('nothing'))).toBe(false);
    expect(wal.lastEpoch).toBe(0);
    await wal.drain();
    expect(wal.fsyncs).toBe(0);
  });

  it('rollBack restores values, absence and tombstones after a failed group', async () => {
    // Settled state: a=a1, c=c1, d=d1, f tombstoned.
    const { ds, wal } = openDurable((d) => ({ durable: (e) => d.settled(e), failed: () => {} }));
    ds.set(b('a'), b('a1'));
    ds.set(b('c'), b('c1'));
    ds.set(b('d'), b('d1'));
    ds.tombstone(b('f'));
    await wal.drain();
    const probe = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
    const settled = snapshot(ds.store, probe);
    expect(settled.tombstoned).toEqual(['f']);
    const counts = (): number[] => [ds.store.size, ds.store.tombstoneCount, ds.store.bytes];
    const settledCounts = counts();
    expect(settledCounts).toEqual([3, 1, 3 * 3 + 1]);
    // Settled groups are never undone.
    expect(ds.rollBack(wal.settledEpoch)).toBe(0);
    expect(snapshot(ds.store, probe)).toEqual(settled);

    // One group that touches each case, some keys twice; then pretend its fsync failed.
    ds.set(b('a'), b('a2'));
    const epoch = wal.lastEpoch;
    expect(epoch).toBeGreaterThan(wal.settledEpoch);
    ds.set(b('b'), b('b1'));
    ds.delete(b('c'));
    ds.tombstone(b('d'));
    ds.tombstone(b('e'));
    ds.set(b('f'), b('f1'));
    ds.importIfAbsent(b('g'), b('g1'));
    ds.set(b('a'), b('a3'));
    ds.delete(b('b'));
    ds.tombstone(b('g'));
    expect(snapshot(ds.store, probe)).not.toEqual(settled);
    expect(ds.rollBack(epoch)).toBe(10);
    expect(snapshot(ds.store, probe)).toEqual(settled);
    expect(counts()).toEqual(settledCounts);
    // Undone entries are gone: a second rollBack has nothing left to do.
    expect(ds.rollBack(epoch)).toBe(0);
    expect(snapshot(ds.store, probe)).toEqual(settled);
    await wal.drain();
  });

  it('rollBack undoes every unsettled group up to the failed epoch', async () => {
    const { ds, wal } = openDurable(() => NO_EVENTS); // nothing is ever marked settled
    ds.set(b('k'), b('v1'));
    const first = wal.lastEpoch;
    await new Promise<void>((resolve) => setImmediate(resolve)); // the first group is flushing
    ds.set(b('k'), b('v2'));
    const second = wal.lastEpoch;
    ds.set(b('other'), b('x'));
    expect(second).toBeGreaterThan(first);
    expect(ds.rollBack(second)).toBe(3);
    expect(ds.store.has(b('k'))).toBe(false);
    expect(ds.store.has(b('other'))).toBe(false);
    await wal.drain();
  });

  it('reset empties the store and the log; writes after it survive a reopen', async () => {
    const first = openDurable();
    first.ds.set(b('old'), b('1'));
    await first.wal.drain();
    first.ds.reset();
    expect(first.ds.store.size).toBe(0);
    first.ds.set(b('new'), b('2'));
    await first.wal.drain();
    await close(first.wal);
    const second = openDurable();
    expect(snapshot(second.ds.store, [])).toEqual({ values: new Map([['new', '2']]), tombstoned: [] });
  });
});
