// The proxy's durable state: ring membership and the membership change in progress, if any.
// Saved atomically (temp file, fsync, rename, fsync the directory), so a crash at any moment
// leaves either the old state or the new one, never a torn file.
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../common/durable-file.js';

export interface PendingMove {
  kind: 'add' | 'remove';
  /** The node being added or removed. */
  node: string;
  /** Ring members before and after the change. */
  from: string[];
  to: string[];
  startedAt: number;
}

export interface ProxyState {
  version: 1;
  vnodes: number;
  members: string[];
  /** Set from the moment a move starts until its new ring is committed. */
  move: PendingMove | null;
  /** Idempotent follow-ups of a committed move, retried until they succeed. */
  cleanup: { reset: string[]; clearTombstones: string[] };
}

export function emptyState(vnodes: number): ProxyState {
  return { version: 1, vnodes, members: [], move: null, cleanup: { reset: [], clearTombstones: [] } };
}

export class StateFile {
  constructor(readonly file: string) {}

  static forPort(dir: string, port: number): StateFile {
    return new StateFile(path.join(path.resolve(dir), `ring_${port}.json`));
  }

  load(): ProxyState | undefined {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    const parsed = JSON.parse(text) as Partial<ProxyState>;
    if (parsed.version !== 1 || !Array.isArray(parsed.members) || typeof parsed.vnodes !== 'number') {
      throw new Error(`${this.file}: not a kv-proxy state file (version ${String(parsed.version)})`);
    }
    return {
      version: 1,
      vnodes: parsed.vnodes,
      members: parsed.members,
      move: parsed.move ?? null,
      cleanup: { reset: parsed.cleanup?.reset ?? [], clearTombstones: parsed.cleanup?.clearTombstones ?? [] },
    };
  }

  save(state: ProxyState): void {
    writeFileAtomic(this.file, JSON.stringify(state, null, 2) + '\n');
  }
}
