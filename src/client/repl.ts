// kv-client's three modes: one command from argv, lines piped on stdin, or an interactive
// prompt with history and tab completion.
import readline from 'node:readline';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ProxyConnection } from './connection.js';
import { withProgress } from './progress.js';
import { formatReply, PLAIN, COLOR, type Style } from './format.js';
import { tokenize } from '../common/protocol/request-decoder.js';
import { allCommands, hasFlag, TEXT_REST } from '../common/commands/table.js';
import { TransportError } from '../common/errors.js';

export const HISTORY_FILE = path.join(os.homedir(), '.kv_client_history');
const HISTORY_SIZE = 1000;

/** Split a typed line the way the text protocol would (SET's value is the rest of the line). */
export function parseLine(line: string): Buffer[] {
  const bytes = Buffer.from(line, 'utf8');
  return tokenize(bytes, 0, bytes.length, TEXT_REST);
}

export interface RunResult {
  failed: boolean;
  unreachable: boolean;
}

/** Run one command and print its result. With `progress`, a long ADD/REMOVE shows a bar. */
export async function runCommand(conn: ProxyConnection, args: Buffer[], out: (line: string) => void, style: Style, progress = false): Promise<RunResult> {
  const command = args[0]!.toString('latin1').toLowerCase();
  // RING is a client-side view of NODES.
  if (command === 'ring') args = [Buffer.from('NODES'), ...args.slice(1)];

  try {
    let reply;
    let lines: string[];
    let failed: boolean;
    if (progress && (command === 'add' || command === 'remove')) {
      const headline = command === 'add' ? '[Proxy] Rebalancing for new node...' : '[Proxy] Evacuating node...';
      const run = await withProgress(conn.host, conn.port, headline, conn.send(args));
      reply = run.result;
      ({ lines, failed } = formatReply(command, args.slice(1).map((a) => a.toString('utf8')), reply, style));
      // The headline already went out above the bar; print only what follows it.
      if (run.shown && lines[0] === headline) lines = lines.slice(1);
    } else {
      reply = await conn.send(args);
      ({ lines, failed } = formatReply(command, args.slice(1).map((a) => a.toString('utf8')), reply, style));
    }
    if (command === 'help' && args.length === 1 && !failed) {
      lines.push('RING                                Each node\'s share of the ring as a bar (kv-client only).', 'EXIT | QUIT                         Leave the interactive kv-client.');
    }
    const formatted = { lines, failed };
    for (const line of formatted.lines) out(line);
    return { failed: formatted.failed, unreachable: false };
  } catch (err) {
    if (!(err instanceof TransportError)) throw err;
    out(style.error(`(error) ${err.message}`));
    return { failed: true, unreachable: true };
  }
}

export async function runOnce(conn: ProxyConnection, argv: string[]): Promise<number> {
  const result = await runCommand(conn, argv.map((a) => Buffer.from(a, 'utf8')), (l) => console.log(l), PLAIN, process.stdout.isTTY === true);
  conn.close();
  return result.unreachable ? 2 : result.failed ? 1 : 0;
}

/** Piped stdin: each line is a command, answered in order. */
export async function runPiped(conn: ProxyConnection, input: NodeJS.ReadableStream): Promise<number> {
  const rl = readline.createInterface({ input, crlfDelay: Infinity, terminal: false });
  let failed = false;
  let unreachable = false;
  for await (const line of rl) {
    const args = parseLine(line);
    if (args.length === 0) continue;
    const result = await runCommand(conn, args, (l) => console.log(l), PLAIN);
    failed ||= result.failed;
    unreachable ||= result.unreachable;
  }
  conn.close();
  return unreachable ? 2 : failed ? 1 : 0;
}

function loadHistory(): string[] {
  try {
    return fs.readFileSync(HISTORY_FILE, 'utf8').split('\n').filter(Boolean).reverse().slice(0, HISTORY_SIZE);
  } catch {
    return [];
  }
}

function saveHistory(lines: readonly string[]): void {
  try {
    fs.writeFileSync(HISTORY_FILE, [...lines].reverse().slice(-HISTORY_SIZE).join('\n') + '\n', { mode: 0o600 });
  } catch {
    // History is a convenience; a read-only home must not break the client.
  }
}

export function completer(line: string): [string[], string] {
  if (line.includes(' ')) return [[], line];
  const names = [
    ...allCommands()
      .filter((c) => !hasFlag(c, 'internal') && c.on !== 'server')
      .map((c) => c.name.toUpperCase()),
    'RING',
  ];
  const upper = line.toUpperCase();
  const hits = names.filter((n) => n.startsWith(upper));
  return [hits.length > 0 ? hits : names, line];
}

/** Interactive prompt on a TTY. */
export async function runInteractive(conn: ProxyConnection): Promise<number> {
  const style = process.stdout.hasColors?.() ? COLOR : PLAIN;
  console.log(`--- Thin KV Client (Connected to Proxy:${conn.port}) ---`);
  // Check at once, so a missing proxy is reported before the first command, not after it.
  try {
    await conn.send(['PING']);
  } catch (err) {
    console.log(style.error(`(error) ${(err as Error).message}; start kv-proxy, then type a command to retry`));
  }
  const rl = readline.createInterface({
    input: process.stdin,
    output: process.stdout,
    prompt: '> ',
    completer,
    history: loadHistory(),
    historySize: HISTORY_SIZE,
    removeHistoryDuplicates: true,
  });
  rl.prompt();
  for await (const line of rl) {
    const args = parseLine(line);
    if (args.length > 0) {
      const name = args[0]!.toString('latin1').toLowerCase();
      if (name === 'exit' || name === 'quit') break;
      await runCommand(conn, args, (l) => console.log(l), style, true);
      console.log();
    }
    rl.prompt();
  }
  saveHistory((rl as unknown as { history: string[] }).history ?? []);
  rl.close();
  conn.close();
  return 0;
}
