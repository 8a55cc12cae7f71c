// Crash-safe file updates, used for the proxy's state file (and later WAL compaction).
import fs from 'node:fs';
import path from 'node:path';

/**
 * `mkdir -p`: create `dir` and any missing parents. Not fs.mkdirSync's recursive mode: on
 * Node 20 that loops forever, at full CPU, where a parent cannot hold directories (a path
 * under /proc); here it is an error naming the directory that could not be made.
 */
export function makeDirectory(dir: string): void {
  try {
    makeParents(path.resolve(dir));
  } catch (err) {
    throw new Error(`cannot create the directory ${dir}: ${(err as Error).message}`);
  }
}

function makeParents(abs: string): void {
  if (isDirectory(abs)) return;
  const parent = path.dirname(abs);
  if (parent !== abs) makeParents(parent);
  try {
    fs.mkdirSync(abs);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !isDirectory(abs)) throw err;
  }
}

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

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
  makeDirectory(dir);
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
