// A closed-loop RESP load generator: N connections, each with one request outstanding, for
// measuring throughput and latency while something else (a rebalance) happens.
import net from 'node:net';
import { ReplyDecoder, encodeRespRequest } from '../src/common/protocol/resp.js';

export interface LoadStats {
  ops: number;
  errors: number;
  latenciesUs: number[];
  firstError: string;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** The middle value (the upper of the two for an even count; NaN for none): what the benches report. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor(s.length / 2)]!;
}

/** Run until `stop()` is called; `next(i)` makes the i-th request of a connection. */
export function closedLoop(port: number, clients: number, next: (conn: number, i: number) => (string | Buffer)[]) {
  const stats: LoadStats = { ops: 0, errors: 0, latenciesUs: [], firstError: '' };
  let running = true;
  const sockets: net.Socket[] = [];
  for (let c = 0; c < clients; c++) {
    const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
    sockets.push(socket);
    const decoder = new ReplyDecoder();
    let i = 0;
    let sentAt = 0;
    const send = (): void => {
      if (!running) return;
      sentAt = performance.now();
      socket.write(encodeRespRequest(next(c, i++)));
    };
    socket.on('connect', send);
    socket.on('error', () => {});
    socket.on('data', (chunk) => {
      decoder.push(chunk);
      for (let r = decoder.next(); r !== undefined; r = decoder.next()) {
        stats.ops++;
        stats.latenciesUs.push((performance.now() - sentAt) * 1000);
        if (r.type === 'error') {
          stats.errors++;
          stats.firstError ||= r.message;
        }
        send();
      }
    });
  }
  return {
    stats,
    /** Reset counters (e.g. after warm-up) and return the previous window. */
    window(): LoadStats {
      const w = { ...stats, latenciesUs: stats.latenciesUs };
      stats.ops = 0;
      stats.errors = 0;
      stats.latenciesUs = [];
      return w;
    },
    stop(): void {
      running = false;
      for (const s of sockets) s.destroy();
    },
  };
}

/** Send requests on one connection, many in flight, and wait for all replies. */
export async function pipelined(port: number, requests: Iterable<(string | Buffer)[]>, window = 256): Promise<number> {
  const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
  await new Promise((r) => socket.once('connect', r));
  const decoder = new ReplyDecoder();
  let inFlight = 0;
  let errors = 0;
  let wake: (() => void) | undefined;
  socket.on('data', (chunk) => {
    decoder.push(chunk);
    for (let r = decoder.next(); r !== undefined; r = decoder.next()) {
      inFlight--;
      if (r.type === 'error') errors++;
    }
    wake?.();
  });
  for (const req of requests) {
    while (inFlight >= window) await new Promise<void>((r) => (wake = r));
    inFlight++;
    socket.write(encodeRespRequest(req));
  }
  while (inFlight > 0) await new Promise<void>((r) => (wake = r));
  socket.destroy();
  return errors;
}
