/**
 * image.write end to end against the shell pipelines an operator would use (issue 4, "Benchmarks"):
 * a 1 GiB raw and a 1 GiB zstd image (60 % random, 40 % zero blocks, so zstd has real work),
 * served by the faulty HTTP server in its own process (the client must not share its event loop),
 * written onto a loop device attached with --direct-io=on (closer to a real disk than the page
 * cache):
 *
 *   ours     writeImage in this process, sha256 verified, O_DIRECT
 *   curl|dd  curl -s URL | [zstd -dc |] dd of=DEV bs=4M iflag=fullblock oflag=direct conv=fsync
 *   hashing  curl -s URL | tee >(sha256sum >/dev/null) | [zstd -dc |] dd … (the same, verifying)
 *
 * The three run back to back within each round (order rotated), and the median of the per-round
 * ratios is quoted: the machine is shared, so absolute MB/s drift. MB/s counts image bytes written
 * (1 GiB), whatever went over the wire. Our peak RSS is VmHWM, reset through /proc/self/clear_refs
 * just before each write. Needs root, losetup, curl, dd, zstd, sha256sum.
 * `node dist/bench/image-write.js [--runs 3] [--size-mib 1024]`
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { writeImage } from '../agent/image/write-image.js';
import { silentLogger } from '../agent/util/logger.js';
import { findOnPath } from '../agent/util/run-process.js';
import { LoopDevice, sha256OfRange } from '../test/support/image-loop.js';
import { LoopLab } from '../test/support/loop-lab.js';
import { argument, median, MiB } from './common.js';

const BLOCK = 4 * MiB;

const RUNS = argument('runs', 3);
const SIZE = argument('size-mib', 1024) * MiB;

const mbps = (ms: number): number => SIZE / 1e6 / (ms / 1000);

const run = (file: string, args: string[]): Promise<number> =>
  new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'inherit'] });
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0
        ? resolve(performance.now() - started)
        : reject(new Error(`${file} ${args.join(' ')} exited ${code}`)),
    );
  });

/** 4 MiB blocks, three of every five random and two zero: roughly 60/40 like a sparse OS image. */
const makeImage = async (file: string): Promise<string> => {
  const hash = createHash('sha256');
  const zeros = Buffer.alloc(BLOCK);
  const handle = await open(file, 'w');
  try {
    for (let offset = 0, index = 0; offset < SIZE; offset += BLOCK, index += 1) {
      const block = (index % 5 < 3 ? randomBytes(BLOCK) : zeros).subarray(0, Math.min(BLOCK, SIZE - offset));
      hash.update(block);
      await handle.write(block, 0, block.length, offset);
    }
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
};

interface Served {
  url: string;
  child: ChildProcessWithoutNullStreams;
}

/** The server in its own process; it prints {"url": …} and stops when its stdin closes. */
const serve = async (file: string): Promise<Served> => {
  const child = spawn(process.execPath, [
    new URL('../test/support/faulty-http-server.js', import.meta.url).pathname,
    file,
  ]);
  child.stderr.pipe(process.stderr);
  const lines = createInterface({ input: child.stdout });
  const first = await new Promise<string>((resolve, reject) => {
    lines.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`the image server exited ${code}`)));
  });
  lines.close();
  const { url } = JSON.parse(first) as { url: string };
  return { url, child };
};

const stopServer = async (served: Served): Promise<void> => {
  if (served.child.exitCode !== null) return;
  const exited = new Promise((resolve) => served.child.once('exit', resolve));
  served.child.stdin.end();
  const timer = setTimeout(() => served.child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
};

const rssKiB = async (field: 'VmRSS' | 'VmHWM'): Promise<number> => {
  const status = await readFile('/proc/self/status', 'utf8');
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status)?.[1] ?? NaN);
};

interface OursRun {
  ms: number;
  /** VmHWM after the write, the peak having been reset to the RSS just before it. */
  peakRssMiB: number;
  baseRssMiB: number;
  loopDelayMaxMs: number;
}

const ours = async (
  url: string,
  sha256: string,
  lab: LoopLab,
  node: string,
  staging: string,
): Promise<OursRun> => {
  // "5" resets VmHWM to the current RSS (Linux >= 4.0): the peak is then this write's own.
  await writeFile('/proc/self/clear_refs', '5');
  const baseRssMiB = (await rssKiB('VmRSS')) / 1024;
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const started = performance.now();
  const result = await writeImage(
    { url, device: node, checksum: `sha256:${sha256}` },
    { paths: lab.paths, ca: null, insecure: false, logger: silentLogger(), stagingDir: staging },
    { signal: AbortSignal.timeout(300_000), progress: () => undefined },
  );
  const ms = performance.now() - started;
  delay.disable();
  if (result.bytes_written !== SIZE || !result.checksum_verified)
    throw new Error(`unexpected result ${JSON.stringify(result)}`);
  return { ms, peakRssMiB: (await rssKiB('VmHWM')) / 1024, baseRssMiB, loopDelayMaxMs: delay.max / 1e6 };
};

const main = async (): Promise<void> => {
  if (process.getuid?.() !== 0) throw new Error('needs root (loop devices)');
  for (const tool of ['losetup', 'curl', 'dd', 'zstd', 'sha256sum', 'bash'])
    if ((await findOnPath(tool, `${process.env.PATH ?? ''}:/usr/sbin:/sbin`)) === null)
      throw new Error(`${tool} is not installed`);
  // Images on tmpfs: the server reads from RAM, the same for every contender.
  const work = await mkdtemp('/dev/shm/bma-bench-image-');
  const servers: Served[] = [];
  let loop: LoopDevice | null = null;
  let lab: LoopLab | null = null;
  try {
    const raw = `${work}/image.raw`;
    const sha256Raw = await makeImage(raw);
    await run('zstd', ['-q', '-3', '-T0', '-f', raw, '-o', `${raw}.zst`]);
    // Streamed: a whole-file read would leave hundreds of MiB of garbage behind to blur the RSS.
    const zstdBytes = (await stat(`${raw}.zst`)).size;
    const sha256Zstd = await sha256OfRange(`${raw}.zst`, 0, zstdBytes);
    loop = await LoopDevice.create(SIZE + 64 * MiB, { directIo: true });
    // A tree holding only this loop: the agent cannot see any other disk of this machine.
    lab = await LoopLab.create('bench');
    const node = await lab.expose(loop.path.replace('/dev/', ''));
    console.log(
      `image ${SIZE / MiB} MiB (60 % random, 40 % zero blocks); zstd -3: ${(zstdBytes / MiB).toFixed(0)} MiB; ` +
        `loop ${loop.path} --direct-io=on; ${RUNS} rounds`,
    );

    const rows: string[] = [];
    for (const [format, file, sha256, decompress] of [
      ['raw', raw, sha256Raw, ''],
      ['zstd', `${raw}.zst`, sha256Zstd, ' | zstd -dc'],
    ] as const) {
      const served = await serve(file);
      servers.push(served);
      const dd = `dd of=${loop.path} bs=4M iflag=fullblock oflag=direct conv=fsync status=none`;
      const plain = `set -o pipefail; curl -s ${served.url}${decompress} | ${dd}`;
      const hashing = `set -o pipefail; curl -s ${served.url} | tee >(sha256sum >/dev/null)${decompress} | ${dd}`;
      const times = { ours: [] as number[], plain: [] as number[], hashing: [] as number[] };
      const oursRuns: OursRun[] = [];
      for (let round = 0; round < RUNS; round += 1) {
        const contenders = [
          async () => {
            const result = await ours(served.url, sha256, lab as LoopLab, node, work);
            oursRuns.push(result);
            times.ours.push(result.ms);
          },
          async () => times.plain.push(await run('bash', ['-c', plain])),
          async () => times.hashing.push(await run('bash', ['-c', hashing])),
        ];
        // Rotated, so no contender always follows the same one (page cache, CPU frequency).
        for (let index = 0; index < contenders.length; index += 1)
          await (contenders[(index + round) % contenders.length] as () => Promise<void>)();
        if (round === 0) {
          // Whichever ran last wrote the same image: the device must hold it byte for byte.
          const onDisk = await sha256OfRange(loop.path, 0, SIZE);
          if (onDisk !== sha256Raw)
            throw new Error(`the device does not hold the image after ${format} round 0`);
        }
      }
      await stopServer(served);
      const ratioPlain = median(times.ours.map((ms, index) => (times.plain[index] ?? NaN) / ms));
      const ratioHashing = median(times.ours.map((ms, index) => (times.hashing[index] ?? NaN) / ms));
      const peak = Math.max(...oursRuns.map((result) => result.peakRssMiB));
      const base = median(oursRuns.map((result) => result.baseRssMiB));
      const loopMax = Math.max(...oursRuns.map((result) => result.loopDelayMaxMs));
      rows.push(
        `| ${format.padEnd(4)} | ${mbps(median(times.ours)).toFixed(0).padStart(4)} | ${mbps(
          median(times.plain),
        )
          .toFixed(0)
          .padStart(
            7,
          )} | ${mbps(median(times.hashing)).toFixed(0).padStart(7)} | ${ratioPlain.toFixed(2).padStart(13)} | ${ratioHashing
          .toFixed(2)
          .padStart(
            13,
          )} | ${peak.toFixed(0).padStart(17)} | ${base.toFixed(0).padStart(8)} | ${loopMax.toFixed(0).padStart(16)} |`,
      );
      console.log(
        `${format}: our peak RSS per run ${oursRuns.map((result) => result.peakRssMiB.toFixed(0)).join('/')} MiB`,
      );
      console.log(
        `${format}: ours ${times.ours.map((ms) => mbps(ms).toFixed(0)).join('/')} MB/s, curl|dd ${times.plain
          .map((ms) => mbps(ms).toFixed(0))
          .join('/')}, hashing ${times.hashing.map((ms) => mbps(ms).toFixed(0)).join('/')}`,
      );
    }
    console.log('');
    console.log(
      '| image | ours MB/s | curl\\|dd MB/s | hashing MB/s | ours/curl\\|dd | ours/hashing | our peak RSS MiB (target 150) | base RSS MiB | loop delay max ms |',
    );
    console.log('| ----- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const row of rows) console.log(row);
  } finally {
    for (const served of servers) await stopServer(served).catch(() => undefined);
    await lab?.cleanup();
    await loop?.detach();
    await rm(work, { recursive: true, force: true });
  }
};

await main();
