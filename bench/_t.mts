import { Backend } from '../src/proxy/backend.ts';
import { silentLogger } from '../src/common/logger.ts';
import { pipelined } from './load.ts';
const VALUE='v'.repeat(100);
function* reqs(){ for(let i=0;i<200000;i+=100){const a=['MSET'];for(let k=i;k<i+100;k++)a.push(`key:${k}`,VALUE);yield a;} }
await pipelined(9921, reqs(), 64);
const src = new Backend('127.0.0.1:9921', { logger: silentLogger() });
const dst = new Backend('127.0.0.1:9922', { logger: silentLogger() });
let t = performance.now();
let total = 0, tDump = 0, tImp = 0, tDel = 0;
let first = true;
for (;;) {
  let t0 = performance.now();
  const r = await src.call(first ? ['RANGEDUMP', 'tok', '2000', '0', '1073741824'] : ['RANGEDUMP', 'tok', '2000']);
  first = false;
  tDump += performance.now() - t0;
  if (r.type !== 'array') { console.log(r); break; }
  const items = r.items!;
  const pairs = items.slice(2).map(i => (i as any).value);
  const keys = pairs.filter((_, i) => i % 2 === 0);
  if (keys.length) {
    t0 = performance.now(); const a = await dst.call(['IMPORT', ...pairs]); tImp += performance.now() - t0;
    t0 = performance.now(); await src.call(['DEL', ...keys]); tDel += performance.now() - t0;
  }
  total += keys.length;
  if ((items[0] as any).value === 1) break;
}
const ms = performance.now() - t;
console.log({ total, ms: Math.round(ms), rate: Math.round(total / ms * 1000), tDump: Math.round(tDump), tImp: Math.round(tImp), tDel: Math.round(tDel) });
process.exit(0);
