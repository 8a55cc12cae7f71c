// kv-client: a thin terminal for the proxy. Interactive on a TTY, line by line when piped,
// or one command given as arguments.
import { Command } from 'commander';
import { ProxyConnection } from '../client/connection.js';
import { runInteractive, runOnce, runPiped } from '../client/repl.js';
import { VERSION } from '../common/version.js';
import { parsePort, strict } from './options.js';

const program = strict(new Command('kv-client'))
  .description('Thin client for kv-proxy. With COMMAND, runs it once; with piped input, runs each line; otherwise interactive.')
  .version(VERSION)
  .option('--host <addr>', 'proxy address', '127.0.0.1')
  .option('--port <port>', 'proxy port', (v) => parsePort(v), 8000)
  .argument('[command...]', 'a command to run once, e.g. GET user1')
  .allowExcessArguments(true)
  .passThroughOptions()
  .parse();

const opts = program.opts<{ host: string; port: number }>();
const argv = program.processedArgs[0] as string[];
const conn = new ProxyConnection(opts.host, opts.port);

let code: number;
if (argv.length > 0) code = await runOnce(conn, argv);
else if (process.stdin.isTTY) code = await runInteractive(conn);
else code = await runPiped(conn, process.stdin);
process.exitCode = code;
