// Crash-safe file updates, used for the proxy's state file (and later WAL compaction).
import fs from 'node:fs';
import path from 'node:path';

/** fsync a directory so that a created or renamed entry in it is durable. */
export function fsyncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // Some filesystems refuse fsync on directories; the file's own fsync still holds.
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Replace `file` atomically: write a temp file, fsync it, rename it over, fsync the directory. */
export function writeFileAtomic(file: string, data: string | Buffer): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w', 0o644);
  try {
    fs.writeSync(fd, typeof data === "string" ? Buffer.from(data) : data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  fsyncDirectory(dir);
}
