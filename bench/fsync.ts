// npm run bench:fsync — what one group commit's write + fdatasync costs on this disk, when it
// grows the file (append) and when it overwrites blocks written before (what the WAL's zeros
// written ahead buy; docs/durability.md). Wall time and this process's CPU per sync, for
// ROUNDS alternating rounds of SYNCS syncs each, with a RECORD_BYTES write before each sync.
// The file lives in DIR (default: the current directory, i.e. the disk a WAL would use).
import fs from 'node:fs';
import path from 'node:path';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const SYNCS = Number(process.env.SYNCS ?? 2000);
const RECORD_BYTES = Number(process.env.RECORD_BYTES ?? 1300);
const DIR = process.env.DIR ?? process.cwd();

function run(overwrite: boolean): { wallUs: number; cpuUs: number } {
  const file = path.join(DIR, `kvstore-fsync-bench-${process.pid}.tmp`);
  const fd = fs.openSync(file, 'w');
  try {
    const span = SYNCS * RECORD_BYTES;
    if (overwrite) {
      // Written and synced beforehand, as the WAL's zeros are.
      const zeros = Buffer.alloc(1024 * 1024);
      for (let at = 0; at < span; at += zeros.length) fs.writeSync(fd, zeros, 0, Math.min(zeros.length, span - at), at);
      fs.fdatasyncSync(fd);
    }
    const record = Buffer.alloc(RECORD_BYTES, 0x61);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < SYNCS; i++) {
      fs.writeSync(fd, record, 0, record.length, i * RECORD_BYTES);
      fs.fdatasyncSync(fd);
    }
    const wall = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    return { wallUs: (wall * 1000) / SYNCS, cpuUs: (cpu.user + cpu.system) / SYNCS };
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
}

console.log(`${SYNCS} x (write ${RECORD_BYTES} B + fdatasync) in ${DIR}, ${ROUNDS} alternating rounds`);
for (let r = 1; r <= ROUNDS; r++) {
  for (const overwrite of [false, true]) {
    const { wallUs, cpuUs } = run(overwrite);
    console.log(`round ${r} ${overwrite ? 'overwrite' : 'append   '}: ${wallUs.toFixed(0)} us wall, ${cpuUs.toFixed(0)} us CPU per sync`);
  }
}
