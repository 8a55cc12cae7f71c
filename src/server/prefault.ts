// Faulting in a replay's memory on a second thread.
//
// A restart copies every key and value into arenas sized once for the whole log. On this VM the
// first write to each fresh 4 KiB page costs ~12 µs in the kernel, so a 1M-key replay spent a
// third of its time in page faults, all on the one thread that also parses the log. Here the
// arenas are SharedArrayBuffers, and a worker thread touches their pages, a page of every arena
// in turn (the replay fills them all from the front), while the main thread replays: most
// pages are already mapped when the replay reaches them.
//
// The touch is Atomics.add(+0) on the page's first word: an atomic read-modify-write that never
// changes a value, so it is harmless even if the replay has already written that word. It is
// best effort: if the worker cannot start, or is slow, the replay faults the pages itself.
// It maps little that the replay would not: a replay appends every SET it reads (dead entries
// are compacted only later), so the arenas, sized from the log's bytes, end up about full.
import { Worker } from 'node:worker_threads';

/** Below this much arena memory the worker's start-up (~20-40 ms) costs more than it saves. */
const MIN_BYTES = 16 * 1024 * 1024;

const TOUCH_PAGES = `
const { workerData, parentPort } = require('node:worker_threads');
const views = workerData.map((b) => new Int32Array(b, 0, b.byteLength >> 2));
for (let page = 0, more = true; more; page++) {
  more = false;
  for (const v of views) {
    const i = page * 1024;
    if (i < v.length) {
      Atomics.add(v, i, 0);
      more = true;
    }
  }
}
parentPort.postMessage('done');
`;

export class Prefaulter {
  private readonly buffers: SharedArrayBuffer[] = [];
  private bytes = 0;
  private worker: Worker | undefined;

  /** An arena allocator for ShardedStore.reserve: zeroed shared memory, remembered for start(). */
  readonly allocate = (size: number): Buffer => {
    const shared = new SharedArrayBuffer(size);
    this.buffers.push(shared);
    this.bytes += size;
    return Buffer.from(shared);
  };

  /**
   * Start touching the pages of everything allocated so far, if that is worth a thread.
   * Resolves once every page was touched, or at once if no thread was started (or it failed).
   */
  start(): Promise<void> {
    if (this.bytes < MIN_BYTES || this.worker !== undefined) return Promise.resolve();
    let worker: Worker;
    try {
      // Small heap limits: the script allocates next to nothing; a default heap would be sized for a server.
      worker = new Worker(TOUCH_PAGES, { eval: true, workerData: this.buffers, resourceLimits: { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 16 } });
    } catch {
      return Promise.resolve();
    }
    this.worker = worker;
    worker.unref();
    return new Promise((resolve) => {
      worker.once('message', () => resolve());
      worker.once('error', () => resolve()); // best effort: the replay faults the pages itself
      worker.once('exit', () => resolve());
    });
  }

  /** Stop the worker, done or not. */
  close(): void {
    void this.worker?.terminate();
    this.worker = undefined;
    this.buffers.length = 0;
  }
}
