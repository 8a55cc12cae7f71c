// Helpers shared by the rebalancing tests (jepsen-rebalance, migration-crash): bulk preloading,
// reading every key back in chunks, and parsers for the proxy's MIGRATION and NODES replies.
// Everything here talks to real processes through harness.ts; nothing imports src/.
import { dbsize, TextClient, waitFor, wrongValues, type ProcHandle } from './harness.js';

/**
 * A value of about 100 bytes with no blanks (text MSET splits on blanks), different per key, so
 * a key that reads back another key's value is caught.
 */
export function bulkValue(prefix: string, i: number): string {
  const head = `${prefix}-${i}-`;
  return head + 'abcdefghijklmnopqrstuvwxyz0123456789'.repeat(3).slice(0, 100 - head.length);
}

/** `items` dealt round-robin into `n` lists. */
function deal<T>(items: readonly T[], n: number): T[][] {
  const out = Array.from({ length: n }, (): T[] => []);
  items.forEach((item, i) => out[i % n]!.push(item));
  return out.filter((part) => part.length > 0);
}

/**
 * MSET every key of `expected` through `connections` text connections in parallel (fsync groups
 * fill up better than with one): `perLine` pairs per MSET, `perWrite` MSET lines per socket
 * write. Throws on any reply but OK (a preload must not half-succeed).
 */
export async function preload(port: number, expected: ReadonlyMap<string, string>, connections = 4, perLine = 250, perWrite = 10): Promise<void> {
  const pairs = [...expected];
  const lines: string[] = [];
  for (let i = 0; i < pairs.length; i += perLine) {
    lines.push('MSET ' + pairs.slice(i, i + perLine).map(([k, v]) => `${k} ${v}`).join(' '));
  }
  await Promise.all(
    deal(lines, connections).map(async (mine) => {
      const client = await TextClient.connect(port);
      try {
        for (let i = 0; i < mine.length; i += perWrite) {
          const replies = await client.pipeline(mine.slice(i, i + perWrite), 60_000);
          const bad = replies.filter((r) => r !== 'OK');
          if (bad.length > 0) throw new Error(`preload: MSET replied ${JSON.stringify(bad.slice(0, 3))}`);
        }
      } finally {
        client.close();
      }
    }),
  );
}

/**
 * Read every key of `expected` back through `port` and return `key: reply` for each one that is
 * wrong. Uses MGET, `perMget` keys a request, on `connections` connections in parallel. A text
 * MGET reply separates values by blanks, so this needs values without blanks; a chunk with such
 * a value falls back to one GET per key.
 */
export async function readBackWrong(port: number, expected: ReadonlyMap<string, string>, connections = 4, perMget = 500): Promise<string[]> {
  const entries = [...expected];
  const chunks: (readonly [string, string])[][] = [];
  for (let i = 0; i < entries.length; i += perMget) chunks.push(entries.slice(i, i + perMget));
  const wrong: string[] = [];
  await Promise.all(
    deal(chunks, connections).map(async (mine) => {
      const client = await TextClient.connect(port);
      try {
        for (let c = 0; c < mine.length; c += 10) {
          const batch = mine.slice(c, c + 10);
          const plain = batch.filter((chunk) => chunk.every(([, v]) => !/[ \t]/.test(v)));
          const replies = await client.pipeline(plain.map((chunk) => `MGET ${chunk.map(([k]) => k).join(' ')}`), 60_000);
          for (let i = 0; i < plain.length; i++) {
            const chunk = plain[i]!;
            const values = replies[i]!.split(' ');
            if (values.length !== chunk.length) {
              wrong.push(`MGET of ${chunk.length} keys from ${chunk[0]![0]}: ${replies[i]!.slice(0, 120)}`);
              continue;
            }
            chunk.forEach(([k, v], j) => {
              if (values[j] !== v) wrong.push(`${k}: ${values[j]}`);
            });
          }
          for (const chunk of batch.filter((ch) => !plain.includes(ch))) wrong.push(...(await wrongValues(client, new Map(chunk))));
        }
      } finally {
        client.close();
      }
    }),
  );
  return wrong;
}

/** `GET` replies for `keys`, in order: `chunk` GETs per pipeline on each of `connections` connections. */
export async function getAll(port: number, keys: readonly string[], connections = 4, chunk = 2000): Promise<string[]> {
  const out = new Array<string>(keys.length);
  const starts: number[] = [];
  for (let i = 0; i < keys.length; i += chunk) starts.push(i);
  await Promise.all(
    deal(starts, connections).map(async (mine) => {
      const client = await TextClient.connect(port);
      try {
        for (const start of mine) {
          const replies = await client.pipeline(keys.slice(start, start + chunk).map((k) => `GET ${k}`), 60_000);
          replies.forEach((r, j) => (out[start + j] = r));
        }
      } finally {
        client.close();
      }
    }),
  );
  return out;
}

/** DBSIZE of each server asked directly, in order. */
export function serverSizes(servers: readonly ProcHandle[]): Promise<number[]> {
  return Promise.all(servers.map((s) => dbsize(s.port)));
}

export const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);

// ---------------------------------------------------------------------------------------------
// MIGRATION and NODES

export interface MigrationStatus {
  state: string;
  kind: string;
  node: string;
  sources: string[];
  targets: string[];
  moved: number;
  scanned: number;
  total: number;
  error: string;
  /** The reply as received, for failure messages. */
  text: string;
}

const list = (field: string | undefined): string[] => (field === undefined || field === '' ? [] : field.split(',').sort());

/** `MIGRATION` (text protocol: `# Migration`, `key:value` lines, `END`) parsed. */
export async function migration(client: TextClient): Promise<MigrationStatus> {
  const text = await client.send('MIGRATION', 10_000);
  if (!text.startsWith('# Migration')) throw new Error(`MIGRATION replied ${JSON.stringify(text)}`);
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) fields.set(line.slice(0, i), line.slice(i + 1));
  }
  const num = (name: string): number => {
    const v = fields.get(name);
    if (v === undefined || !/^\d+$/.test(v)) throw new Error(`MIGRATION field ${name} is ${JSON.stringify(v)} in:\n${text}`);
    return Number(v);
  };
  return {
    state: fields.get('migration_state') ?? '',
    kind: fields.get('migration_kind') ?? '',
    node: fields.get('migration_node') ?? '',
    sources: list(fields.get('migration_sources')),
    targets: list(fields.get('migration_targets')),
    moved: num('migration_keys_moved'),
    scanned: num('migration_keys_scanned'),
    total: num('migration_keys_total'),
    error: fields.get('migration_error') ?? '',
    text,
  };
}

/** Poll MIGRATION (every 10 ms) until `accept` holds; fails with the last reply at the deadline. */
export async function waitForMigration(client: TextClient, what: string, timeoutMs: number, accept: (m: MigrationStatus) => boolean): Promise<MigrationStatus> {
  let last: MigrationStatus | undefined;
  try {
    return await waitFor(what, timeoutMs, async () => {
      last = await migration(client);
      return accept(last) ? last : undefined;
    }, 10);
  } catch (err) {
    throw new Error(`${(err as Error).message}; last MIGRATION:\n${last?.text ?? '(none)'}`);
  }
}

export interface NodeRow {
  address: string;
  health: string;
  /** DBSIZE as the proxy saw it; undefined when the node did not answer. */
  keys: number | undefined;
  role: '' | 'joining' | 'leaving';
}

/** `NODES` parsed: `<host:port> <health> keys=<n|unknown> share=<p>%[ (joining|leaving)]`. */
export async function nodes(client: TextClient): Promise<NodeRow[]> {
  const text = await client.send('NODES', 10_000);
  if (text === '') return [];
  return text.split('\n').map((line) => {
    const m = /^(\S+) (\S+) keys=(\d+|unknown) share=[\d.]+%(?: \((joining|leaving)\))?$/.exec(line);
    if (m === null) throw new Error(`unexpected NODES line ${JSON.stringify(line)} in:\n${text}`);
    return { address: m[1]!, health: m[2]!, keys: m[3] === 'unknown' ? undefined : Number(m[3]), role: (m[4] ?? '') as NodeRow['role'] };
  });
}

/** Sorted addresses of the committed ring members (NODES rows that are not joining). */
export async function members(client: TextClient): Promise<string[]> {
  return (await nodes(client))
    .filter((r) => r.role !== 'joining')
    .map((r) => r.address)
    .sort();
}

// ---------------------------------------------------------------------------------------------
// Latency

/** The p-th percentile (0..100) of `samples`, nearest-rank; 0 for no samples. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return 0;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}
