// kv-proxy: parse flags, start the proxy, print the banner, stop cleanly on signals.
import { Command } from 'commander';
import { startProxy } from '../proxy/proxy.js';
import { createLogger } from '../common/logger.js';
import { DEFAULT_LIMITS, DEFAULT_MAX_OUTPUT } from '../common/limits.js';
import { DEFAULT_VNODES } from '../common/ring.js';
import { DEFAULT_BATCH_KEYS, DEFAULT_MIGRATE_RATE } from '../proxy/migration.js';
import { VERSION } from '../common/version.js';
import { onShutdownSignal, parseSeconds, parseBytes, parseLogLevel, parseNonNegativeInt, parsePort, parsePositiveInt, strict } from './options.js';

const program = strict(new Command('kv-proxy'))
  .description('The gateway: routes keys over a consistent-hash ring and moves data on ADD/REMOVE.')
  .version(VERSION)
  .option('--port <port>', 'TCP port for clients', (v) => parsePort(v, true), 8000)
  .option('--host <addr>', 'address to listen on (loopback unless you mean otherwise)', '127.0.0.1')
  .option('--dir <path>', 'directory for the ring state file ring_<port>.json', '.')
  .option('--vnodes <n>', 'virtual nodes per storage node (fixed once the ring has members)', parsePositiveInt(65536), DEFAULT_VNODES)
  .option('--password <pw>', 'require AUTH <pw> from clients')
  .option('--node-password <pw>', 'password for the storage nodes (default: --password)')
  .option('--max-clients <n>', 'most client connections at once', parsePositiveInt(1_000_000), 10_000)
  .option('--connect-timeout <ms>', 'give up connecting to a node after this long', parsePositiveInt(600_000), 1000)
  .option('--request-timeout <ms>', 'drop a node connection that leaves a request unanswered this long', parsePositiveInt(3_600_000), 2000)
  .option('--migrate-batch <keys>', 'keys per IMPORT while moving data: larger moves faster, smaller keeps client latency lower', parsePositiveInt(100_000), DEFAULT_BATCH_KEYS)
  .option('--migrate-rate <keys/s>', 'most keys moved per second during ADD/REMOVE, to leave CPU to client traffic (0: no limit)', parseNonNegativeInt(100_000_000), DEFAULT_MIGRATE_RATE)
  .option('--timeout <seconds>', 'close client connections idle this long (0: never)', parseSeconds, 0)
  .option('--max-output <bytes>', 'disconnect a client whose unread replies exceed this', parseBytes, DEFAULT_MAX_OUTPUT)
  .option('--max-line <bytes>', 'longest text-protocol line', parseBytes, DEFAULT_LIMITS.maxLineBytes)
  .option('--max-bulk <bytes>', 'largest RESP bulk string (key or value)', parseBytes, DEFAULT_LIMITS.maxBulkBytes)
  .option('--max-args <n>', 'most arguments in one RESP request', parsePositiveInt(100_000_000), DEFAULT_LIMITS.maxArgs)
  .option('--log-level <level>', 'fatal | error | warn | info | debug | trace | silent', parseLogLevel, 'info')
  .parse();

const opts = program.opts<{
  port: number;
  host: string;
  dir: string;
  vnodes: number;
  password?: string;
  nodePassword?: string;
  maxClients: number;
  connectTimeout: number;
  requestTimeout: number;
  migrateBatch: number;
  migrateRate: number;
  timeout: number;
  maxOutput: number;
  maxLine: number;
  maxBulk: number;
  maxArgs: number;
  logLevel: string;
}>();
const vnodesGiven = program.getOptionValueSource('vnodes') === 'cli';

const { log, release: releaseLog } = createLogger('kv-proxy', opts.logLevel);
try {
  const proxy = await startProxy({
    port: opts.port,
    host: opts.host,
    dir: opts.dir,
    vnodes: vnodesGiven ? opts.vnodes : undefined,
    password: opts.password,
    nodePassword: opts.nodePassword,
    maxClients: opts.maxClients,
    idleTimeoutMs: opts.timeout * 1000,
    maxOutputBytes: opts.maxOutput,
    connectTimeoutMs: opts.connectTimeout,
    requestTimeoutMs: opts.requestTimeout,
    migrateBatchKeys: opts.migrateBatch,
    migrateRate: opts.migrateRate,
    limits: { maxLineBytes: opts.maxLine, maxBulkBytes: opts.maxBulk, maxArgs: opts.maxArgs },
    logger: log,
  });
  onShutdownSignal(async (signal) => {
    log.info({ signal }, 'shutting down');
    await proxy.close();
    log.flush();
  });
  console.log(`--- KV Proxy/Gateway running on Port ${proxy.port} ---`);
  releaseLog();
} catch (err) {
  releaseLog();
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') console.error(`kv-proxy: port ${opts.port} on ${opts.host} is already in use.`);
  else console.error(`kv-proxy: ${(err as Error).message}`);
  process.exit(1);
}
