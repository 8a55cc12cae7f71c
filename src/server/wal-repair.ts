// `kv-server <port> --repair`: the way out after the server refused to start on a damaged
// log. Like etcd's repair, it keeps the original as `<file>.broken`, truncates at the first
// damaged record, and says exactly what was dropped.
import fs from 'node:fs';
import { countRecordsAfterDamage, scanLog } from './wal.js';
import { fsyncDirectory } from '../common/durable-file.js';
import path from 'node:path';

export interface RepairReport {
  ok: boolean;
  message: string;
  droppedRecords: number;
  backup?: string;
}

export function repairLog(file: string): RepairReport {
  if (!fs.existsSync(file)) return { ok: false, message: `${file}: no such WAL`, droppedRecords: 0 };
  let scan;
  try {
    scan = scanLog(file, () => {}, { allowCorruption: true });
  } catch (err) {
    return { ok: false, message: (err as Error).message, droppedRecords: 0 };
  }
  if (scan.badAt === undefined) {
    return { ok: true, message: `${file}: no damage found (${scan.stats.records} records in ${scan.stats.groups} groups); nothing to repair.`, droppedRecords: 0 };
  }
  const size = fs.statSync(file).size;
  const rest = Buffer.alloc(size - scan.badAt);
  const fd = fs.openSync(file, 'r+');
  try {
    fs.readSync(fd, rest, 0, rest.length, scan.badAt);
    const after = countRecordsAfterDamage(rest);
    const dropped = scan.stats.droppedRecords + after.records + 1;
    const backup = `${file}.broken`;
    fs.copyFileSync(file, backup);
    const bfd = fs.openSync(backup, 'r');
    fs.fsyncSync(bfd);
    fs.closeSync(bfd);
    fs.ftruncateSync(fd, scan.goodEnd);
    fs.fsyncSync(fd);
    fsyncDirectory(path.dirname(file));
    return {
      ok: true,
      backup,
      droppedRecords: dropped,
      message:
        `${file}: damage at byte offset ${scan.badAt} (${scan.badReason}). Kept ${scan.stats.records} records; ` +
        `dropped ${dropped} record(s) (${size - scan.goodEnd} bytes) from offset ${scan.goodEnd}. Backup: ${backup}`,
    };
  } finally {
    fs.closeSync(fd);
  }
}
