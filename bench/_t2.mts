import { Backend } from '../src/proxy/backend.ts';
import { silentLogger } from '../src/common/logger.ts';
const dst = new Backend('127.0.0.1:9922', { logger: silentLogger() });
const V = Buffer.alloc(100, 118);
for (const cmd of ['MSET', 'IMPORT', 'MSET', 'IMPORT', 'PING']) {
  for (const n of [10, 200, 2000]) {
    const args: (string|Buffer)[] = [cmd];
    if (cmd !== 'PING') for (let i = 0; i < n; i++) args.push(`k${Math.random()}`, V);
    const t = performance.now();
    await dst.call(args);
    console.log(cmd, n, (performance.now() - t).toFixed(2), 'ms');
  }
}
process.exit(0);
