/**
 * image.write end to end against the shell pipelines an operator would use (issue 4, "Benchmarks"):
 * a raw and a zstd image (60 % random, 40 % zero blocks, so zstd has real work), served by the
 * faulty HTTP server in its own process (the client must not share its event loop), written onto
 * a loop device attached with --direct-io=on (closer to a real disk than the page cache), whose
 * backing file is written in full first (so every write is an overwrite, as on a real disk):
 *
 *   ours     writeImage in a child process of its own, sha256 verified, O_DIRECT
 *   curl|dd  curl -s URL | [zstd -dc |] dd of=DEV bs=4M iflag=fullblock oflag=direct conv=fsync
 *   hashing  curl -s URL | tee >(sha256sum >/dev/null) | [zstd -dc |] dd … (the same, verifying)
 *
 * The three run back to back within each round (order rotated), and the median of the per-round
 * ratios is quoted: the machine is shared, so absolute MB/s drift. MB/s counts image bytes written,
 * whatever went over the wire. Ours is timed from the call to writeImage to its result (the agent
 * is a daemon: Node's start-up is not part of a write); the whole child process is timed too.
 *
 * CPU seconds per GiB written are less sensitive to other work on the machine than wall time:
 * ours is the child's own (every thread) plus the decompressor it ran, during the write; a
 * pipeline's is bash with every program in it. The server's CPU is given separately; the loop
 * device's kernel threads are in neither.
 *
 * Our peak RSS is the child's VmHWM (a fresh Node process: start-up and module loading included);
 * the child also samples its RSS every 250 ms, which shows whether it stays flat on a long image.
 * Needs root, losetup, curl, dd, zstd, sha256sum.
 *
 * `node dist/bench/image-write.js [--runs 3] [--size-mib 1024] [--dir /dev/shm] [--formats raw,zstd]
 *   [--contenders ours,curl,hashing[,tuned]] [--child-node-options "--cpu-prof --cpu-prof-dir=DIR"]`
 * --dir holds the images the server reads (tmpfs by default; a disk directory for large images);
 * each is read once before its rounds, so that no contender pays for filling the page cache.
 * `tuned` adds curl | zstd -dc --no-asyncio | dd: the plain pipeline with zstd run as ours runs it.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type { HardwarePaths } from '../agent/hardware/paths.js';
import { writeImage } from '../agent/image/write-image.js';
import { silentLogger } from '../agent/util/logger.js';
import { findOnPath } from '../agent/util/run-process.js';
import { LoopDevice, sha256OfRange } from '../test/support/image-loop.js';
import { LoopLab } from '../test/support/loop-lab.js';
import { argument, median, MiB, procCpuSeconds, textArgument } from './common.js';
import { serveFile, stopServer, type Served } from './file-server.js';

const SELF = fileURLToPath(import.meta.url);
const BLOCK = 4 * MiB;
const GiB = 1024 * MiB;
const RSS_SAMPLE_MS = 250;

const RUNS = argument('runs', 3);
const SIZE = argument('size-mib', 1024) * MiB;
const DIR = textArgument('dir', '/dev/shm');
const FORMATS = textArgument('formats', 'raw,zstd').split(',');
const CONTENDERS = textArgument('contenders', 'ours,curl,hashing').split(',');
const CHILD_NODE_OPTIONS = textArgument('child-node-options', '').split(' ').filter(Boolean);

const mbps = (ms: number): number => SIZE / 1e6 / (ms / 1000);
const perGiB = (seconds: number): number => seconds / (SIZE / GiB);

const rssKiB = async (field: 'VmRSS' | 'VmHWM'): Promise<number> => {
  const status = await readFile('/proc/self/status', 'utf8');
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status)?.[1] ?? NaN);
};

interface ChildSpec {
  url: string;
  sha256: string;
  node: string;
  paths: HardwarePaths;
  staging: string;
}

interface ChildReport {
  ms: number;
  cpuSeconds: number;
  peakRssMiB: number;
  baseRssMiB: number;
  /** VmRSS through the write, every RSS_SAMPLE_MS. */
  rssMiB: number[];
  loopDelayMaxMs: number;
  bytesWritten: number;
  verified: boolean;
}

/** Child mode: one writeImage, then one JSON line on stdout. */
const runChild = async (spec: ChildSpec): Promise<void> => {
  const baseRssMiB = (await rssKiB('VmRSS')) / 1024;
  const rssMiB: number[] = [];
  const sampler = setInterval(() => {
    void rssKiB('VmRSS').then((kib) => rssMiB.push(kib / 1024));
  }, RSS_SAMPLE_MS);
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const cpuBefore = process.cpuUsage();
  const childrenBefore = await procCpuSeconds('self', true);
  const started = performance.now();
  const result = await writeImage(
    { url: spec.url, device: spec.node, checksum: `sha256:${spec.sha256}` },
    { paths: spec.paths, ca: null, insecure: false, logger: silentLogger(), stagingDir: spec.staging },
    { signal: AbortSignal.timeout(3_600_000), progress: () => undefined },
  );
  const ms = performance.now() - started;
  const cpu = process.cpuUsage(cpuBefore);
  const childrenSeconds = (await procCpuSeconds('self', true)) - childrenBefore;
  clearInterval(sampler);
  delay.disable();
  const report: ChildReport = {
    ms,
    cpuSeconds: (cpu.user + cpu.system) / 1e6 + childrenSeconds,
    peakRssMiB: (await rssKiB('VmHWM')) / 1024,
    baseRssMiB,
    rssMiB,
    loopDelayMaxMs: delay.max / 1e6,
    bytesWritten: result.bytes_written,
    verified: result.checksum_verified,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
};

interface Timed {
  ms: number;
  cpuSeconds: number;
  serverCpuSeconds: number;
  stdout: string;
}

/** Runs a program to completion: wall time, and the CPU of it and everything it waited for. */
const run = async (file: string, args: string[], serverPid: number): Promise<Timed> => {
  const cpuBefore = await procCpuSeconds('self', true);
  const serverBefore = await procCpuSeconds(serverPid);
  const started = performance.now();
  const stdout = await new Promise<string>((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    child.stdout.setEncoding('utf8').on('data', (piece: string) => (text += piece));
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0 ? resolve(text) : reject(new Error(`${file} ${args.join(' ')} exited ${code}`)),
    );
  });
  const ms = performance.now() - started;
  return {
    ms,
    cpuSeconds: (await procCpuSeconds('self', true)) - cpuBefore,
    serverCpuSeconds: (await procCpuSeconds(serverPid)) - serverBefore,
    stdout,
  };
};

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

interface Sample {
  ms: number;
  cpuSeconds: number;
  serverCpuSeconds: number;
}

const fixed = (value: number, digits: number, width: number): string =>
  (Number.isFinite(value) ? value.toFixed(digits) : '-').padStart(width);

const main = async (): Promise<void> => {
  if (process.getuid?.() !== 0) throw new Error('needs root (loop devices)');
  for (const tool of ['losetup', 'curl', 'dd', 'zstd', 'sha256sum', 'bash'])
    if ((await findOnPath(tool, `${process.env.PATH ?? ''}:/usr/sbin:/sbin`)) === null)
      throw new Error(`${tool} is not installed`);
  const work = await mkdtemp(`${DIR}/bma-bench-image-`);
  const servers: Served[] = [];
  let loop: LoopDevice | null = null;
  let lab: LoopLab | null = null;
  try {
    const raw = `${work}/image.raw`;
    const sha256Raw = await makeImage(raw);
    const images: Array<{ format: string; file: string; sha256: string; decompress: string }> = [];
    if (FORMATS.includes('raw')) images.push({ format: 'raw', file: raw, sha256: sha256Raw, decompress: '' });
    let zstdNote = '';
    if (FORMATS.includes('zstd')) {
      const zst = `${raw}.zst`;
      const made = spawn('zstd', ['-q', '-3', '-T0', '-f', raw, '-o', zst], { stdio: 'inherit' });
      await new Promise((resolve, reject) =>
        made.once('close', (code) => (code === 0 ? resolve(code) : reject(new Error(`zstd exited ${code}`)))),
      );
      // Streamed: a whole-file read of a large image is no way to hash it.
      const zstdBytes = (await stat(zst)).size;
      images.push({
        format: 'zstd',
        file: zst,
        sha256: await sha256OfRange(zst, 0, zstdBytes),
        decompress: ' | zstd -dc',
      });
      zstdNote = `; zstd -3: ${(zstdBytes / MiB).toFixed(0)} MiB`;
    }
    loop = await LoopDevice.create(SIZE + 64 * MiB, { directIo: true, preallocate: true });
    // A tree holding only this loop: the agent cannot see any other disk of this machine.
    lab = await LoopLab.create('bench');
    const node = await lab.expose(loop.path.replace('/dev/', ''));
    console.log(
      `image ${SIZE / MiB} MiB in ${DIR} (60 % random, 40 % zero blocks)${zstdNote}; ` +
        `loop ${loop.path} --direct-io=on; ${RUNS} rounds; contenders ${CONTENDERS.join(', ')}`,
    );

    const rows: string[] = [];
    for (const { format, file, sha256, decompress } of images) {
      // Whoever runs first must not be the one to pull a large image from the disk into the cache.
      await sha256OfRange(file, 0, (await stat(file)).size);
      const served = await serveFile(file);
      servers.push(served);
      const serverPid = served.child.pid as number;
      const dd = `dd of=${loop.path} bs=4M iflag=fullblock oflag=direct conv=fsync status=none`;
      const plain = `set -o pipefail; curl -s ${served.url}${decompress} | ${dd}`;
      const hashing = `set -o pipefail; curl -s ${served.url} | tee >(sha256sum >/dev/null)${decompress} | ${dd}`;
      // The plain pipeline with zstd run as ours runs it (without its I/O threads), for comparison.
      const tuned = `set -o pipefail; curl -s ${served.url}${decompress.replace('zstd -dc', 'zstd -dc --no-asyncio')} | ${dd}`;
      const samples = new Map<string, Sample[]>(CONTENDERS.map((name) => [name, []]));
      const wholeProcessMs: number[] = [];
      const reports: ChildReport[] = [];
      const spec: ChildSpec = { url: served.url, sha256, node, paths: lab.paths, staging: work };
      const contenders: Record<string, () => Promise<void>> = {
        ours: async () => {
          const timed = await run(
            process.execPath,
            [...CHILD_NODE_OPTIONS, SELF, '--child', JSON.stringify(spec)],
            serverPid,
          );
          const report = JSON.parse(timed.stdout) as ChildReport;
          if (report.bytesWritten !== SIZE || !report.verified)
            throw new Error(`unexpected result ${timed.stdout}`);
          reports.push(report);
          wholeProcessMs.push(timed.ms);
          samples.get('ours')?.push({ ...timed, ms: report.ms, cpuSeconds: report.cpuSeconds });
        },
        curl: async () => {
          samples.get('curl')?.push(await run('bash', ['-c', plain], serverPid));
        },
        hashing: async () => {
          samples.get('hashing')?.push(await run('bash', ['-c', hashing], serverPid));
        },
        tuned: async () => {
          // Without a decompressor it is the plain pipeline again.
          if (decompress !== '') samples.get('tuned')?.push(await run('bash', ['-c', tuned], serverPid));
        },
      };
      for (let round = 0; round < RUNS; round += 1) {
        // Rotated, so no contender always follows the same one (page cache, CPU frequency).
        for (let index = 0; index < CONTENDERS.length; index += 1) {
          const name = CONTENDERS[(index + round) % CONTENDERS.length] as string;
          const contender = contenders[name];
          if (contender === undefined) throw new Error(`unknown contender ${name}`);
          await contender();
        }
        if (round === 0) {
          // Whichever ran last wrote the same image: the device must hold it byte for byte.
          const onDisk = await sha256OfRange(loop.path, 0, SIZE);
          if (onDisk !== sha256Raw)
            throw new Error(`the device does not hold the image after ${format} round 0`);
        }
      }
      await stopServer(served);
      const of = (name: string): Sample[] => samples.get(name) ?? [];
      const ms = (name: string): number => median(of(name).map((sample) => sample.ms));
      const cpu = (name: string, field: 'cpuSeconds' | 'serverCpuSeconds'): number =>
        perGiB(median(of(name).map((sample) => sample[field])));
      // Per round: theirs / ours in time, which is ours / theirs in MB/s.
      const ratio = (name: string): number =>
        median(of('ours').map((sample, index) => (of(name)[index]?.ms ?? NaN) / sample.ms));
      const wholeRatio = median(wholeProcessMs.map((value, index) => (of('curl')[index]?.ms ?? NaN) / value));
      const peak = Math.max(...reports.map((report) => report.peakRssMiB));
      const base = median(reports.map((report) => report.baseRssMiB));
      const loopMax = Math.max(...reports.map((report) => report.loopDelayMaxMs));
      rows.push(
        `| ${format.padEnd(5)} | ${fixed(mbps(ms('ours')), 0, 4)} | ${fixed(mbps(ms('curl')), 0, 4)} | ${fixed(
          mbps(ms('hashing')),
          0,
          4,
        )} | ${fixed(ratio('curl'), 2, 5)} | ${fixed(ratio('hashing'), 2, 5)} | ${fixed(cpu('ours', 'cpuSeconds'), 2, 5)} | ${fixed(
          cpu('curl', 'cpuSeconds'),
          2,
          5,
        )} | ${fixed(cpu('hashing', 'cpuSeconds'), 2, 5)} | ${fixed(cpu('ours', 'serverCpuSeconds'), 2, 5)} / ${fixed(
          cpu('curl', 'serverCpuSeconds'),
          2,
          4,
        )} | ${fixed(peak, 0, 4)} | ${fixed(base, 0, 4)} | ${fixed(loopMax, 0, 4)} |`,
      );
      const list = (name: string, pick: (sample: Sample) => number, digits: number): string =>
        of(name)
          .map((sample) => pick(sample).toFixed(digits))
          .join('/');
      console.log(
        `${format}: MB/s ours ${list('ours', (sample) => mbps(sample.ms), 0)}, curl|dd ${list('curl', (sample) => mbps(sample.ms), 0)}, ` +
          `hashing ${list('hashing', (sample) => mbps(sample.ms), 0)}; ours/curl|dd with Node's start-up counted ${wholeRatio.toFixed(2)}`,
      );
      console.log(
        `${format}: CPU s/GiB ours ${list('ours', (sample) => perGiB(sample.cpuSeconds), 2)}, curl|dd ${list('curl', (sample) => perGiB(sample.cpuSeconds), 2)}, ` +
          `hashing ${list('hashing', (sample) => perGiB(sample.cpuSeconds), 2)}`,
      );
      if (of('tuned').length > 0) {
        console.log(
          `${format}: curl | zstd -dc --no-asyncio | dd MB/s ${list('tuned', (sample) => mbps(sample.ms), 0)}, ` +
            `CPU s/GiB ${list('tuned', (sample) => perGiB(sample.cpuSeconds), 2)}; ours / that ${ratio('tuned').toFixed(2)}`,
        );
      }
      for (const report of reports) {
        const during = report.rssMiB;
        const at = (share: number): string =>
          (during[Math.floor(share * (during.length - 1))] ?? NaN).toFixed(0);
        console.log(
          `${format}: our RSS MiB: before ${report.baseRssMiB.toFixed(0)}, at 10/50/90 % of the write ${at(0.1)}/${at(0.5)}/${at(0.9)}, ` +
            `max sampled ${Math.max(...during).toFixed(0)}, peak (VmHWM) ${report.peakRssMiB.toFixed(0)} (${during.length} samples)`,
        );
      }
    }
    console.log('');
    console.log(
      '| image | ours MB/s | curl\\|dd MB/s | hashing MB/s | ours / curl\\|dd | ours / hashing | CPU s/GiB ours | CPU s/GiB curl\\|dd | CPU s/GiB hashing | server CPU s/GiB (ours / curl\\|dd) | our peak RSS MiB | RSS before the write MiB | event-loop delay max ms |',
    );
    console.log(
      '| ----- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    );
    for (const row of rows) console.log(row);
  } finally {
    for (const served of servers) await stopServer(served).catch(() => undefined);
    await lab?.cleanup();
    await loop?.detach();
    await rm(work, { recursive: true, force: true });
  }
};

const childIndex = process.argv.indexOf('--child');
if (childIndex >= 0) await runChild(JSON.parse(process.argv[childIndex + 1] ?? '{}') as ChildSpec);
else await main();
