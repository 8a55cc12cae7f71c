// `npm start`: a local demo cluster in one terminal. Three kv-server processes (8081-8083,
// data under ./data/) and a kv-proxy on 8000 with all three nodes added. Real processes, so
// you can `kill -9` one and watch it come back. Ctrl-C stops everything cleanly; the next
// start resumes from ./data (the WALs and the proxy's ring state).
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import readline from 'node:readline';
import { Command } from 'commander';
import { ProxyConnection } from '../client/connection.js';
import { VERSION } from '../common/version.js';
import { InvalidArgumentError } from 'commander';
import { parsePort, strict } from './options.js';
import { makeDirectory } from '../common/durable-file.js';

function parsePortList(value: string): number[] {
  const ports = value.split(',').map((p) => parsePort(p.trim()));
  if (new Set(ports).size !== ports.length) throw new InvalidArgumentError(`'${value}' lists a port twice.`);
  return ports;
}

const program = strict(new Command('kv-demo'))
  .description('Start a local demo cluster: 3 servers and a proxy, nodes already added.')
  .version(VERSION)
  .option('--dir <path>', 'data directory', './data')
  .option('--proxy-port <port>', 'proxy port', (v) => parsePort(v), 8000)
  .option('--server-ports <ports>', 'comma-separated server ports', parsePortList, [8081, 8082, 8083])
  .parse();
const opts = program.opts<{ dir: string; proxyPort: number; serverPorts: number[] }>();
const serverPorts = opts.serverPorts;
const dir = path.resolve(opts.dir);
try {
  makeDirectory(dir);
} catch (err) {
  console.error(`kv-demo: ${(err as Error).message}`);
  process.exit(1);
}

const binDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin');
const children: { name: string; proc: ChildProcess }[] = [];
let stopping = false;

function launch(name: string, bin: string, args: string[], banner: RegExp): Promise<void> {
  // Own process group: Ctrl-C reaches only this script, which then stops the children in order
  // (proxy first, then servers), instead of every process racing on the same SIGINT.
  const proc = spawn(process.execPath, [path.join(binDir, bin), ...args, '--dir', dir, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  children.push({ name, proc });
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: proc.stdout! });
    lines.on('line', (line) => {
      console.log(banner.test(line) ? line : `[${name}] ${line}`);
      if (banner.test(line)) resolve();
    });
    readline.createInterface({ input: proc.stderr! }).on('line', (line) => console.error(`[${name}] ${line}`));
    proc.on('exit', (code, signal) => {
      reject(new Error(`${name} exited (${signal ?? code}) before it was ready`));
      if (!stopping) console.error(`[${name}] exited (${signal ?? code}); restart it with: ./bin/${bin} ${args.join(' ')} --dir ${dir}`);
    });
  });
}

async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  console.log('\nStopping the demo cluster (servers finish their pending fsyncs first)...');
  // Proxy first, so nothing new arrives; then the servers drain and close their WALs.
  for (const name of ['proxy', ...serverPorts.map(String)]) {
    const child = children.find((c) => c.name === name);
    if (child === undefined || child.proc.exitCode !== null || child.proc.signalCode !== null) continue;
    const exited = new Promise((resolve) => child.proc.once('exit', resolve));
    child.proc.kill('SIGTERM');
    await exited;
  }
  console.log('Stopped. Data is kept in', dir);
}

process.on('SIGINT', () => void stop().then(() => process.exit(0)));
process.on('SIGTERM', () => void stop().then(() => process.exit(0)));
// If this script dies some other way, do not leave the cluster running behind it.
process.on('exit', () => {
  for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGTERM');
});

try {
  await Promise.all(serverPorts.map((p) => launch(String(p), 'kv-server', [String(p)], /^--- Persistent Server Port /)));
  await launch('proxy', 'kv-proxy', ['--port', String(opts.proxyPort)], /^--- KV Proxy\/Gateway running on Port /);
  const conn = new ProxyConnection('127.0.0.1', opts.proxyPort, 120_000);
  for (const p of serverPorts) {
    const node = `127.0.0.1:${p}`;
    const reply = await conn.send(['ADD', node]);
    if (reply.type === 'error') throw new Error(`ADD ${node}: ${reply.message}`);
    const text = reply.type === 'simple' ? reply.value : '';
    console.log(text.startsWith('OK already a member') ? `[Proxy] ${node} is already a member (resumed from ${dir}).` : `[Proxy] Node Added: ${node}`);
  }
  conn.close();
  console.log(`\nDemo cluster ready. In another terminal:\n  ./bin/kv-client${opts.proxyPort === 8000 ? '' : ` --port ${opts.proxyPort}`}   (interactive)\n  printf 'SET a hello\\nGET a\\n' | nc -q1 127.0.0.1 ${opts.proxyPort}\n  redis-cli -p ${opts.proxyPort} set k v\nCtrl-C here stops everything.`);
} catch (err) {
  console.error(`kv-demo: ${(err as Error).message}`);
  await stop();
  process.exit(1);
}
