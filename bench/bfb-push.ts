/**
 * The BFB push against the shell's `cat bfb cfg > boot`, with a FIFO standing in for the rshim
 * boot device and `cat FIFO > /dev/null` draining it at full speed (the real device takes
 * 6-12 MiB/s, so only a drain this fast shows our own overhead).
 *
 *   ours  validateBfbFile over the whole file (every header, every image CRC), then
 *         pushBootStream (the device opened in Node, cat under a shell, wchar polled 4 times a second)
 *   cat   sh -c 'cat BFB CFG > FIFO'
 *
 * A 1 GiB BFB from writeLargeBfb in os.tmpdir() (on disk here; the runs read it from the page
 * cache after the warm-up). Runs are paired and interleaved, the order swapped every pair; the
 * figure is the median of the per-pair speed ratios ours/cat (target >= 0.95), given both for the
 * whole of ours (validation + push) and for the push alone, since the agent validates a download
 * while staging it and the push then reads an already validated file.
 * `node dist/bench/bfb-push.js [--runs 5] [--size-mib 1024]`
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { validateBfbFile } from '../agent/hardware/bluefield/bfb/validator.js';
import { pushBootStream } from '../agent/hardware/bluefield/rshim/push.js';
import { DEFAULT_PATHS } from '../agent/hardware/paths.js';
import { writeLargeBfb } from '../test/support/bfb-builder.js';
import { argument, median, MiB } from './common.js';

const RUNS = argument('runs', 5);
const SIZE = argument('size-mib', 1024) * MiB;

const run = (argv: string[]): Promise<void> =>
  new Promise((resolve, reject) => {
    const child = spawn(argv[0] ?? 'false', argv.slice(1), { stdio: ['ignore', 'ignore', 'inherit'] });
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`${argv.join(' ')} exited ${code}`)),
    );
  });

/** Starts `cat FIFO > /dev/null`; resolves when the drain has seen the end of the stream. */
const drain = (fifo: string): Promise<void> => run(['sh', '-c', 'exec cat "$1" > /dev/null', 'sh', fifo]);

interface Timing {
  validateMs: number;
  pushMs: number;
}

const ours = async (fifo: string, bfb: string, cfg: string): Promise<Timing> => {
  const drained = drain(fifo);
  const started = performance.now();
  await validateBfbFile(bfb);
  const validated = performance.now();
  await pushBootStream({ bootPath: fifo, bfbPath: bfb, cfgPath: cfg, paths: DEFAULT_PATHS });
  const pushed = performance.now();
  await drained;
  return { validateMs: validated - started, pushMs: pushed - validated };
};

const plainCat = async (fifo: string, bfb: string, cfg: string): Promise<number> => {
  const drained = drain(fifo);
  const started = performance.now();
  await run(['sh', '-c', 'cat "$1" "$2" > "$3"', 'sh', bfb, cfg, fifo]);
  const ended = performance.now();
  await drained;
  return ended - started;
};

const gbps = (bytes: number, ms: number): string => (bytes / 1e9 / (ms / 1000)).toFixed(2);

const main = async (): Promise<void> => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bma-bench-bfb-'));
  try {
    const bfb = path.join(dir, 'bench.bfb');
    const cfg = path.join(dir, 'bf.cfg');
    const fifo = path.join(dir, 'boot');
    const madeAt = performance.now();
    const bytes = await writeLargeBfb(bfb, SIZE);
    await writeFile(cfg, "ubuntu_PASSWORD='$1$bench$x'\n");
    const total = bytes + (await stat(cfg)).size;
    await run(['mkfifo', fifo]);
    process.stdout.write(
      `BFB ${(bytes / MiB).toFixed(0)} MiB written to ${dir} in ${((performance.now() - madeAt) / 1000).toFixed(1)} s; ` +
        `${RUNS} paired runs after one warm-up each\n\n`,
    );

    await plainCat(fifo, bfb, cfg);
    await ours(fifo, bfb, cfg);

    const rows: Array<{ cat: number; validate: number; push: number }> = [];
    for (let i = 0; i < RUNS; i += 1) {
      let cat: number;
      let mine: Timing;
      if (i % 2 === 0) {
        cat = await plainCat(fifo, bfb, cfg);
        mine = await ours(fifo, bfb, cfg);
      } else {
        mine = await ours(fifo, bfb, cfg);
        cat = await plainCat(fifo, bfb, cfg);
      }
      rows.push({ cat, validate: mine.validateMs, push: mine.pushMs });
    }

    const line = (cells: string[]): string => `| ${cells.join(' | ')} |\n`;
    process.stdout.write(
      line([
        'run',
        'cat ms',
        'cat GB/s',
        'validate ms',
        'push ms',
        'ours ms',
        'ours GB/s',
        'ratio all',
        'ratio push',
      ]),
    );
    process.stdout.write(line(Array.from({ length: 9 }, () => '--:')));
    rows.forEach((row, index) => {
      const all = row.validate + row.push;
      process.stdout.write(
        line([
          String(index + 1),
          row.cat.toFixed(0),
          gbps(total, row.cat),
          row.validate.toFixed(0),
          row.push.toFixed(0),
          all.toFixed(0),
          gbps(total, all),
          (row.cat / all).toFixed(2),
          (row.cat / row.push).toFixed(2),
        ]),
      );
    });
    const ratioAll = median(rows.map((row) => row.cat / (row.validate + row.push)));
    const ratioPush = median(rows.map((row) => row.cat / row.push));
    const validate = median(rows.map((row) => row.validate));
    process.stdout.write(
      `\nmedian validation ${validate.toFixed(0)} ms (${gbps(bytes, validate)} GB/s), ` +
        `push ${median(rows.map((row) => row.push)).toFixed(0)} ms, cat ${median(rows.map((row) => row.cat)).toFixed(0)} ms\n` +
        `median speed ratio ours/cat: ${ratioAll.toFixed(2)} validation + push, ${ratioPush.toFixed(2)} push alone (target >= 0.95)\n`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
};

await main();
