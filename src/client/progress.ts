// A progress bar for long ADD/REMOVE commands. The command itself blocks its connection until
// the move is done, so progress is read on a second connection by polling MIGRATION.
import { ProxyConnection } from './connection.js';

const WIDTH = 30;

export interface ProgressOptions {
  /** Wait this long before showing anything: short moves print just their result. */
  delayMs?: number;
  intervalMs?: number;
  write?: (text: string) => void;
}

function fields(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0) out.set(line.slice(0, i), line.slice(i + 1));
  }
  return out;
}

export function renderBar(scanned: number, total: number, moved: number, rate: number): string {
  const fraction = total > 0 ? Math.min(1, scanned / total) : 0;
  const filled = Math.round(fraction * WIDTH);
  const bar = '='.repeat(Math.max(0, filled - 1)) + (filled > 0 ? '>' : '') + ' '.repeat(WIDTH - filled);
  return `[${bar}] ${(fraction * 100).toFixed(0).padStart(3)}%  scanned ${scanned}/${total}  moved ${moved}  ${rate} keys/s`;
}

/** Show progress until `work` settles. Returns whether a bar was shown. */
export async function withProgress<T>(host: string, port: number, headline: string, work: Promise<T>, options: ProgressOptions = {}): Promise<{ result: T; shown: boolean }> {
  const write = options.write ?? ((t: string) => process.stdout.write(t));
  let finished = false;
  let shown = false;
  // The initial wait is cut short when the work ends first, so short commands are not delayed.
  let timer: NodeJS.Timeout | undefined;
  let wake: () => void = () => {};
  const poller = (async () => {
    await new Promise<void>((resolve) => {
      wake = resolve;
      timer = setTimeout(resolve, options.delayMs ?? 1000);
    });
    if (finished) return;
    const conn = new ProxyConnection(host, port, 5000);
    try {
      while (!finished) {
        const reply = await conn.send(['MIGRATION']);
        if (finished) break;
        if (reply.type === 'bulk' && reply.value !== null) {
          const f = fields(reply.value.toString('latin1'));
          if (f.get('migration_state') === 'running') {
            if (!shown) write(`${headline}\n`);
            shown = true;
            const line = renderBar(Number(f.get('migration_keys_scanned') ?? 0), Number(f.get('migration_keys_total') ?? 0), Number(f.get('migration_keys_moved') ?? 0), Number(f.get('migration_keys_per_sec') ?? 0));
            write(`\r\x1b[K${line}`);
          }
        }
        await new Promise((r) => setTimeout(r, options.intervalMs ?? 250));
      }
    } catch {
      // Progress is best effort: the command's own reply is what counts.
    } finally {
      conn.close();
    }
  })();
  try {
    const result = await work;
    return { result, shown };
  } finally {
    finished = true;
    clearTimeout(timer);
    wake();
    await poller;
    if (shown) write('\r\x1b[K');
  }
}
