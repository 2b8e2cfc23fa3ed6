/**
 * The image write path against the plain tools, on loop devices this script makes (and removes).
 *
 * - write: a 1 GiB image-like file (page cache) through openBlockWriter, O_DIRECT with 1 and 2
 *   writes in flight and buffered + fsync, against `dd if=FILE of=DEV bs=4M iflag=fullblock
 *   oflag=direct conv=fsync` (without iflag=fullblock dd silently drops O_DIRECT on short reads);
 *   on a loop device with --direct-io=on (closer to a real disk) and with the default (page cache).
 * - zstd: the file compressed with `zstd -3`, through the zstd decoder into a counting consumer,
 *   against `zstd -dc FILE > /dev/null`; and decompress + write against `zstd -dc FILE | dd …`.
 *
 * Runs are paired (A B A B …, one warm-up each) and the median of the per-pair ratios is quoted,
 * as in perf-baseline.md: the machine is shared, so absolute MB/s drift. Needs root and losetup.
 * `node dist/bench/disk-write.js [--runs 3] [--size-mib 1024]`
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { openBlockWriter } from '../agent/image/block-writer.js';
import type { OutputSink } from '../agent/image/contracts.js';
import { openDecoder } from '../agent/image/decompress.js';
import { findOnPath } from '../agent/util/run-process.js';
import { argument, median, MiB } from './common.js';

const RUNS = argument('runs', 3);
const SIZE = argument('size-mib', 1024) * MiB;

const mbps = (bytes: number, ms: number): number => bytes / 1e6 / (ms / 1000);

/** Runs a program (or a shell pipeline) to completion; returns its wall time in ms. */
const timed = (file: string, args: string[], stdoutTo?: number): Promise<number> =>
  new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(file, args, { stdio: ['ignore', stdoutTo ?? 'ignore', 'inherit'] });
    child.once('error', reject);
    child.once('close', (code) => {
      if (code === 0) resolve(performance.now() - started);
      else reject(new Error(`${file} ${args.join(' ')} exited ${code}`));
    });
  });

const exec = (file: string, args: string[]): Promise<string> =>
  new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (out += text));
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0 ? resolve(out.trim()) : reject(new Error(`${file} exited ${code}`)),
    );
  });

/** An image-like file: per MiB a quarter random, a quarter text, half zeros (zstd -3: about 30 %). */
const makeSource = async (file: string, size: number): Promise<void> => {
  const handle = await open(file, 'w');
  const text = Buffer.from('Lorem ipsum /usr/lib/x86_64-linux-gnu/libc.so.6 0x7f3a '.repeat(5000)).subarray(
    0,
    MiB / 4,
  );
  const block = Buffer.alloc(MiB);
  try {
    for (let offset = 0; offset < size; offset += MiB) {
      randomBytes(MiB / 4).copy(block, 0);
      text.copy(block, MiB / 4);
      block[MiB / 4 + (offset % 1000)] = offset & 0xff;
      await handle.write(block, 0, Math.min(MiB, size - offset), offset);
    }
  } finally {
    await handle.close();
  }
};

interface WriteRun {
  ms: number;
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
}

/** Reads `source` in 1 MiB pieces into the writer; the whole open → finish (fsync) is timed. */
const oursWrite = async (
  source: string,
  device: string,
  direct: boolean,
  inFlight: 1 | 2,
): Promise<WriteRun> => {
  const delay = monitorEventLoopDelay({ resolution: 5 });
  delay.enable();
  const started = performance.now();
  const writer = await openBlockWriter(device, { direct, inFlight });
  const input = await open(source, 'r');
  const buffer = Buffer.allocUnsafe(MiB);
  try {
    while (true) {
      const { bytesRead } = await input.read(buffer, 0, MiB, null);
      if (bytesRead === 0) break;
      // The writer copies before write() resolves, so the read buffer can be reused.
      await writer.write(buffer.subarray(0, bytesRead));
    }
    await writer.finish();
  } catch (error) {
    await writer.abort();
    throw error;
  } finally {
    await input.close();
  }
  const ms = performance.now() - started;
  delay.disable();
  return { ms, loopDelayP99Ms: delay.percentile(99) / 1e6, loopDelayMaxMs: delay.max / 1e6 };
};

/** The writer alone: the same 1 MiB buffer handed over again and again (no source I/O). */
const oursFromMemory = async (device: string, inFlight: 1 | 2): Promise<number> => {
  const piece = randomBytes(MiB);
  const started = performance.now();
  const writer = await openBlockWriter(device, { direct: true, inFlight });
  try {
    for (let offset = 0; offset < SIZE; offset += MiB) await writer.write(piece);
    await writer.finish();
  } catch (error) {
    await writer.abort();
    throw error;
  }
  return performance.now() - started;
};

/** The file fed to a zstd decoder in 1 MiB reads, as the download would. */
const throughDecoder = async (file: string, sink: OutputSink): Promise<void> => {
  const decoder = await openDecoder('zstd', { sink });
  try {
    for await (const chunk of createReadStream(file, { highWaterMark: MiB }) as AsyncIterable<Buffer>)
      await decoder.write(chunk);
    decoder.end();
    await decoder.done;
  } catch (error) {
    await decoder.destroy(error instanceof Error ? error : new Error(String(error)));
    throw error;
  }
};

const oursZstdToNull = async (file: string): Promise<number> => {
  const started = performance.now();
  let bytes = 0;
  const space = Buffer.allocUnsafe(MiB);
  await throughDecoder(file, {
    reserve: () => space,
    commit: (count) => {
      bytes += count;
      return undefined;
    },
    write: (piece) => {
      bytes += piece.length;
      return undefined;
    },
  });
  if (bytes !== SIZE) throw new Error(`zstd decoder gave ${bytes} bytes`);
  return performance.now() - started;
};

const oursZstdToDevice = async (file: string, device: string): Promise<number> => {
  const started = performance.now();
  const writer = await openBlockWriter(device, { direct: true });
  try {
    await throughDecoder(file, writer);
    await writer.finish();
  } catch (error) {
    await writer.abort();
    throw error;
  }
  return performance.now() - started;
};

interface Variant {
  name: string;
  run: () => Promise<number>;
}

/** A B A B … with a warm-up of each; returns per-variant times and per-run ratios to the last. */
const paired = async (variants: Variant[]): Promise<Map<string, number[]>> => {
  const times = new Map<string, number[]>(variants.map((variant) => [variant.name, []]));
  for (const variant of variants) await variant.run();
  for (let run = 0; run < RUNS; run += 1) {
    for (const variant of variants) times.get(variant.name)?.push(await variant.run());
  }
  return times;
};

const report = (title: string, bytes: number, times: Map<string, number[]>, baseline: string): void => {
  const base = times.get(baseline) ?? [];
  process.stdout.write(
    `\n${title} (${(bytes / MiB).toFixed(0)} MiB, median of ${RUNS}, ratio = MB/s ÷ ${baseline})\n`,
  );
  for (const [name, samples] of times) {
    const ratios = samples.map((ms, index) => (base[index] ?? ms) / ms);
    const sorted = [...samples].sort((a, b) => a - b);
    const line =
      `  ${name.padEnd(50)} ${mbps(bytes, median(samples)).toFixed(0).padStart(5)} MB/s` +
      `  (${mbps(bytes, sorted.at(-1) ?? 0).toFixed(0)}–${mbps(bytes, sorted[0] ?? 0).toFixed(0)})` +
      (name === baseline ? '' : `  ratio ${median(ratios).toFixed(2)}`);
    process.stdout.write(`${line}\n`);
  }
};

const main = async (): Promise<void> => {
  if (process.getuid?.() !== 0) throw new Error('needs root (losetup)');
  for (const tool of ['losetup', 'dd', 'zstd', 'sh']) {
    if ((await findOnPath(tool)) === null) throw new Error(`${tool} is not installed`);
  }
  const scratch = await mkdtemp(path.join(os.tmpdir(), 'bma-bench-disk-'));
  const loops: string[] = [];
  const cleanup = async (): Promise<void> => {
    for (const loop of loops.splice(0)) await exec('losetup', ['-d', loop]).catch(() => undefined);
    await rm(scratch, { recursive: true, force: true });
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    const source = path.join(scratch, 'image.raw');
    const zst = path.join(scratch, 'image.raw.zst');
    process.stdout.write(`making a ${SIZE / MiB} MiB image-like file and its zstd -3 copy in ${scratch}…\n`);
    await makeSource(source, SIZE);
    await timed('zstd', ['-q', '-T0', '-3', '-f', '-o', zst, source]);
    // Both in page cache, as in perf-baseline.md.
    await timed('cat', [source, zst]);
    const zstBytes = Number(await exec('stat', ['-c', '%s', zst]));
    process.stdout.write(
      `zstd file: ${(zstBytes / MiB).toFixed(0)} MiB (${((100 * zstBytes) / SIZE).toFixed(1)} %)\n`,
    );

    // Event-loop delay per writer mode: p99s and the worst max over every run of that mode.
    const delays = new Map<string, { p99: number[]; max: number }>();
    const ours = (device: string, direct: boolean, inFlight: 1 | 2) => async (): Promise<number> => {
      const result = await oursWrite(source, device, direct, inFlight);
      const key = `${direct ? 'O_DIRECT' : 'buffered'}, ${inFlight} in flight`;
      const entry = delays.get(key) ?? { p99: [], max: 0 };
      entry.p99.push(result.loopDelayP99Ms);
      entry.max = Math.max(entry.max, result.loopDelayMaxMs);
      delays.set(key, entry);
      return result.ms;
    };
    const dd = (device: string) => (): Promise<number> =>
      timed('dd', [
        `if=${source}`,
        `of=${device}`,
        'bs=4M',
        'iflag=fullblock',
        'oflag=direct',
        'conv=fsync',
        'status=none',
      ]);

    for (const directIo of [true, false]) {
      const backing = path.join(scratch, `disk-${directIo ? 'dio' : 'cached'}.img`);
      const handle = await open(backing, 'w');
      await handle.truncate(SIZE + 64 * MiB);
      await handle.close();
      const device = await exec('losetup', [
        '-f',
        '--show',
        ...(directIo ? ['--direct-io=on'] : []),
        backing,
      ]);
      loops.push(device);
      const label = directIo ? 'loop --direct-io=on' : 'loop (page-cached backing file)';
      const times = await paired([
        { name: 'openBlockWriter O_DIRECT, 1 in flight', run: ours(device, true, 1) },
        { name: 'openBlockWriter O_DIRECT, 2 in flight (default)', run: ours(device, true, 2) },
        { name: 'openBlockWriter buffered + fsync, 1 in flight', run: ours(device, false, 1) },
        { name: 'openBlockWriter O_DIRECT, 1, from memory', run: () => oursFromMemory(device, 1) },
        { name: 'openBlockWriter O_DIRECT, 2, from memory', run: () => oursFromMemory(device, 2) },
        { name: 'dd bs=4M iflag=fullblock oflag=direct conv=fsync', run: dd(device) },
      ]);
      report(`write to ${label}`, SIZE, times, 'dd bs=4M iflag=fullblock oflag=direct conv=fsync');
      if (directIo) {
        const decompressTimes = await paired([
          { name: 'zstd decoder -> writer O_DIRECT', run: () => oursZstdToDevice(zst, device) },
          {
            name: 'zstd -dc | dd (fullblock, direct, fsync)',
            run: () =>
              timed('sh', [
                '-c',
                `zstd -dc '${zst}' | dd of='${device}' bs=4M iflag=fullblock oflag=direct conv=fsync status=none`,
              ]),
          },
        ]);
        report(`zstd image to ${label}`, SIZE, decompressTimes, 'zstd -dc | dd (fullblock, direct, fsync)');
      }
    }

    const devNull = await open('/dev/null', 'w');
    try {
      const zstdTimes = await paired([
        { name: 'openDecoder(zstd) -> counting consumer', run: () => oursZstdToNull(zst) },
        // What any reader of a 64 KiB pipe gets.
        {
          name: 'zstd -dc FILE | cat > /dev/null',
          run: () => timed('sh', ['-c', `zstd -dc '${zst}' | cat`], devNull.fd),
        },
        { name: 'zstd -dc FILE > /dev/null', run: () => timed('zstd', ['-dc', zst], devNull.fd) },
      ]);
      report('zstd decompression (output bytes)', SIZE, zstdTimes, 'zstd -dc FILE > /dev/null');
    } finally {
      await devNull.close();
    }
    process.stdout.write('\nevent-loop delay while writing from the file (all runs):\n');
    for (const [key, entry] of delays) {
      process.stdout.write(
        `  ${key.padEnd(26)} p99 ${median(entry.p99).toFixed(1)} ms, max ${entry.max.toFixed(1)} ms\n`,
      );
    }
    const usage = process.resourceUsage();
    process.stdout.write(
      `peak RSS of the bench process: ${(usage.maxRSS / 1024).toFixed(0)} MiB (every writer's buffers linger until GC)\n`,
    );
  } finally {
    await cleanup();
  }
};

await main();
