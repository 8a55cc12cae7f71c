import { describe, expect, it } from 'vitest';
import { Prefaulter } from '../../src/server/prefault.js';

const MiB = 1024 * 1024;
const PAGE = 4096;

describe('Prefaulter', () => {
  it('gives zeroed shared arenas, and maps their pages on another thread without changing a byte', async () => {
    const prefault = new Prefaulter();
    const arenas = [prefault.allocate(12 * MiB), prefault.allocate(12 * MiB)];
    for (const a of arenas) {
      expect(a.buffer).toBeInstanceOf(SharedArrayBuffer);
      expect(a.length).toBe(12 * MiB);
    }
    const done = prefault.start();
    // Write a pattern meanwhile, as a replay does: the worker's touches must not undo it.
    const pattern = (i: number): number => (i * 7 + (i >> 12)) & 0xff;
    const head = 2 * MiB;
    for (const a of arenas) for (let i = 0; i < head; i++) a[i] = pattern(i);
    await done;
    // Every page is mapped now: writing the rest faults (almost) nothing on this thread.
    const before = process.resourceUsage().minorPageFault;
    for (const a of arenas) for (let i = head; i < a.length; i += PAGE) a[i] = pattern(i);
    const faults = process.resourceUsage().minorPageFault - before;
    const pages = (2 * (12 * MiB - head)) / PAGE;
    expect(faults, `${faults} page faults writing ${pages} fresh pages`).toBeLessThan(pages / 10);
    for (const a of arenas) {
      for (let i = 0; i < head; i++) if (a[i] !== pattern(i)) throw new Error(`byte ${i} changed`);
      for (let i = head; i < a.length; i++) if (a[i] !== (i % PAGE === 0 ? pattern(i) : 0)) throw new Error(`byte ${i} is not what was written`);
    }
    prefault.close();
  });

  it('starts no thread for less than 16 MiB: it resolves before the next event-loop turn', async () => {
    const prefault = new Prefaulter();
    prefault.allocate(4 * MiB);
    const first = await Promise.race([prefault.start().then(() => 'resolved'), new Promise((resolve) => setImmediate(() => resolve('a turn passed')))]);
    expect(first).toBe('resolved');
    prefault.close();
  });
});
