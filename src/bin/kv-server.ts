// kv-server <port>: parse flags, start the server, print the banner, stop cleanly on signals.
import { Command } from 'commander';
import { startServer } from '../server/server.js';
import { DEFAULT_PREALLOCATE, FSYNC_POLICIES, WalCorruptionError, type FsyncPolicy } from '../server/wal.js';
import { repairLog } from '../server/wal-repair.js';
import { DEFAULT_COMPACTION } from '../server/compaction.js';
import { DEFAULT_WARMUP_KEYS } from '../server/warm-up.js';
import { InvalidArgumentError } from 'commander';
import { createLogger } from '../common/logger.js';
import { DEFAULT_LIMITS, DEFAULT_MAX_OUTPUT } from '../common/limits.js';
import { VERSION } from '../common/version.js';
import { onShutdownSignal, parseSeconds, parseBytes, parseBytesOrZero, parseChoice, parseLogLevel, parseNonNegativeInt, parsePort, parsePositiveInt, strict } from './options.js';
import path from 'node:path';

function parseRatio(value: string): number {
  const n = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value) || n < 1.1 || n > 1000) throw new InvalidArgumentError(`'${value}' must be a number from 1.1 to 1000.`);
  return n;
}

const program = strict(new Command('kv-server'))
  .description('Storage node: sharded in-memory map with an fsync\'d write-ahead log (wal_<port>.log).')
  .version(VERSION)
  .argument('<port>', 'TCP port to listen on (1-65535)', (v) => parsePort(v))
  .option('--host <addr>', 'address to listen on (loopback unless you mean otherwise)', '127.0.0.1')
  .option('--dir <path>', 'data directory for wal_<port>.log', '.')
  .option('--shards <n>', 'number of in-memory shards (a power of two)', parsePositiveInt(4096), 16)
  .option('--password <pw>', 'require AUTH <pw> before serving data (only AUTH, PING, QUIT, CLIENT and HELP work before it)')
  .option('--fsync <policy>', 'when to fsync the WAL: always | everysec | no', parseChoice(FSYNC_POLICIES), 'always' as FsyncPolicy)
  .option('--max-clients <n>', 'most client connections at once', parsePositiveInt(1_000_000), 10_000)
  .option('--timeout <seconds>', 'close client connections idle this long (0: never)', parseSeconds, 0)
  .option('--max-output <bytes>', 'disconnect a client whose unread replies exceed this', parseBytes, DEFAULT_MAX_OUTPUT)
  .option('--max-line <bytes>', 'longest text-protocol line', parseBytes, DEFAULT_LIMITS.maxLineBytes)
  .option('--max-bulk <bytes>', 'largest RESP bulk string (key or value)', parseBytes, DEFAULT_LIMITS.maxBulkBytes)
  .option('--max-args <n>', 'most arguments in one RESP request', parsePositiveInt(100_000_000), DEFAULT_LIMITS.maxArgs)
  .option('--compact-min <bytes>', 'never compact a WAL smaller than this', parseBytes, DEFAULT_COMPACTION.minBytes)
  .option('--compact-ratio <n>', 'compact when the WAL is this many times the live data', parseRatio, DEFAULT_COMPACTION.ratio)
  .option('--wal-preallocate <bytes>', 'zeros written ahead of the WAL at a time (up to 16x that while it grows fast), so fsyncs overwrite instead of growing the file (0: off)', parseBytesOrZero, DEFAULT_PREALLOCATE)
  .option('--warmup-keys <n>', 'scratch keys an empty server imports into a throwaway instance of itself once idle for a second, so its first ADD finds its code compiled (0: off)', parseNonNegativeInt(1_000_000), DEFAULT_WARMUP_KEYS)
  .option('--repair', 'cut the WAL back at its first damaged record (keeping a .broken backup), then exit')
  .option('--log-level <level>', 'fatal | error | warn | info | debug | trace | silent', parseLogLevel, 'info')
  .parse();

const port = program.processedArgs[0] as number;
const opts = program.opts<{
  host: string;
  dir: string;
  shards: number;
  password?: string;
  fsync: FsyncPolicy;
  maxClients: number;
  timeout: number;
  maxOutput: number;
  maxLine: number;
  maxBulk: number;
  maxArgs: number;
  compactMin: number;
  compactRatio: number;
  walPreallocate: number;
  warmupKeys: number;
  repair?: boolean;
  logLevel: string;
}>();

if ((opts.shards & (opts.shards - 1)) !== 0) program.error(`error: option '--shards <n>' argument '${opts.shards}' must be a power of two.`);

if (opts.repair) {
  const file = path.join(path.resolve(opts.dir), `wal_${port}.log`);
  const report = repairLog(file);
  console.log(report.message);
  process.exit(report.ok ? 0 : 1);
}

const { log, release: releaseLog } = createLogger('kv-server', opts.logLevel);
try {
  const server = await startServer({
    port,
    host: opts.host,
    dir: opts.dir,
    shards: opts.shards,
    password: opts.password,
    fsync: opts.fsync,
    maxClients: opts.maxClients,
    idleTimeoutMs: opts.timeout * 1000,
    maxOutputBytes: opts.maxOutput,
    limits: { maxLineBytes: opts.maxLine, maxBulkBytes: opts.maxBulk, maxArgs: opts.maxArgs },
    compaction: { minBytes: opts.compactMin, ratio: opts.compactRatio },
    walPreallocate: opts.walPreallocate,
    warmupKeys: opts.warmupKeys,
    logger: log,
  });
  onShutdownSignal(async (signal) => {
    log.info({ signal }, 'shutting down: draining pending writes');
    await server.close();
    log.flush();
  });
  console.log(`--- Persistent Server Port ${server.port} (WAL: ${path.basename(server.walFile)}) ---`);
  releaseLog();
} catch (err) {
  releaseLog();
  if (err instanceof WalCorruptionError) {
    console.error(`kv-server: ${err.message}`);
    process.exit(2);
  }
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') console.error(`kv-server: port ${port} on ${opts.host} is already in use.`);
  else if (code === 'EACCES') console.error(`kv-server: permission denied binding ${opts.host}:${port}.`);
  else console.error(`kv-server: ${(err as Error).message}`);
  process.exit(1);
}
