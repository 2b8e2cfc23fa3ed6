/**
 * Download throughput of openImageStream against curl, on one 127.0.0.1 server, in the same run.
 *
 * The image (1 GiB of random bytes by default, in the temporary directory, warmed into the page
 * cache) is served without faults by test/support/faulty-http-server.ts in its own process, so the
 * client under test never shares the server's event loop. Each round runs, one after the other:
 *
 *   ours       `node dist/bench/fetch.js --client URL`: openImageStream + sha256, bytes discarded
 *   ours/nohash  the same without the hash: Node's HTTP receive ceiling
 *   curl       `curl -s URL -o /dev/null`
 *   curl|sha   `curl -s URL | sha256sum`
 *
 * All are whole-process wall times (Node's start-up included, as curl's is). One warm-up round,
 * then N rounds; medians with min–max, MB/s (10^6 B), and the per-round ratios ours/curl and
 * ours/curl|sha (a ratio below 1 means ours took less time). The digests of ours and of sha256sum
 * are checked against the file's. Prints figures only; there is no pass or fail.
 *
 * `node dist/bench/fetch.js [--size-mib 1024] [--runs 3]`
 */
import { spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { openImageStream } from '../agent/image/fetch.js';
import { silentLogger } from '../agent/util/logger.js';
import { argument, median } from './common.js';

const SELF = fileURLToPath(import.meta.url);
const SERVER = fileURLToPath(new URL('../test/support/faulty-http-server.js', import.meta.url));
const WRITE_BLOCK = 64 * 1024 * 1024;

interface ClientReport {
  bytes: number;
  sha256: string | null;
  maxRssKiB: number;
  resumes: number;
}

/** Child mode: download URL, hash unless told not to, print one JSON line. */
const runClient = async (url: string, hash: boolean): Promise<void> => {
  const stream = await openImageStream({
    url,
    signal: new AbortController().signal,
    ca: null,
    insecure: false,
    // Each chunk is hashed before the next is asked for: it needs no copy of its own.
    borrowChunks: true,
    logger: silentLogger(),
  });
  const hasher = hash ? createHash('sha256') : null;
  let bytes = 0;
  for await (const chunk of stream.body) {
    hasher?.update(chunk);
    bytes += chunk.length;
  }
  const report: ClientReport = {
    bytes,
    sha256: hasher?.digest('hex') ?? null,
    maxRssKiB: process.resourceUsage().maxRSS,
    resumes: stream.stats().resumes,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
};

/** Random bytes (nothing compresses or dedups them anywhere on the way), hashed as written. */
const makeImage = async (file: string, bytes: number): Promise<string> => {
  const handle = await open(file, 'w');
  const hash = createHash('sha256');
  const block = Buffer.allocUnsafe(WRITE_BLOCK);
  try {
    for (let done = 0; done < bytes; done += WRITE_BLOCK) {
      const piece = block.subarray(0, Math.min(WRITE_BLOCK, bytes - done));
      randomFillSync(piece);
      hash.update(piece);
      await handle.write(piece);
    }
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
};

const warmPageCache = async (file: string): Promise<void> => {
  for await (const _chunk of createReadStream(file, { highWaterMark: 8 * 1024 * 1024 })) {
    // Reading is the point.
  }
};

interface Timed {
  seconds: number;
  stdout: string;
  code: number | null;
}

const timed = (file: string, args: string[]): Promise<Timed> =>
  new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.on('error', reject);
    child.on('close', (code) => resolve({ seconds: (performance.now() - started) / 1000, stdout, code }));
  });

interface Server {
  url: string;
  stop(): Promise<void>;
}

const startServer = async (file: string): Promise<Server> => {
  const child = spawn(process.execPath, [SERVER, file], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const [first] = await Promise.race([
    new Promise<string[]>((resolve) => lines.once('line', (line: string) => resolve([line]))),
    new Promise<never>((_, reject) =>
      child.once('exit', (code) => reject(new Error(`server exited ${code}`))),
    ),
  ]);
  const { url } = JSON.parse(first ?? '{}') as { url: string };
  return {
    url,
    stop: async () => {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
};

const range = (values: number[], digits: number): string =>
  `${median(values).toFixed(digits)} (${Math.min(...values).toFixed(digits)}–${Math.max(...values).toFixed(digits)})`;

interface Variant {
  name: string;
  run(url: string): Promise<Timed>;
  check(result: Timed, expected: string, bytes: number): string | null;
}

const clientCheck =
  (hash: boolean) =>
  (result: Timed, expected: string, bytes: number): string | null => {
    if (result.code !== 0) return `exit ${result.code}`;
    const report = JSON.parse(result.stdout) as ClientReport;
    if (report.bytes !== bytes) return `${report.bytes} bytes`;
    if (hash && report.sha256 !== expected) return `sha256 ${report.sha256}`;
    return null;
  };

const VARIANTS: Variant[] = [
  {
    name: 'ours (sha256)',
    run: (url) => timed(process.execPath, [SELF, '--client', url]),
    check: clientCheck(true),
  },
  {
    name: 'ours (no hash)',
    run: (url) => timed(process.execPath, [SELF, '--client', url, '--no-hash']),
    check: clientCheck(false),
  },
  {
    name: 'curl -o /dev/null',
    run: (url) => timed('curl', ['-s', '-f', url, '-o', '/dev/null']),
    check: (result) => (result.code === 0 ? null : `exit ${result.code}`),
  },
  {
    name: 'curl | sha256sum',
    run: (url) => timed('bash', ['-o', 'pipefail', '-c', `curl -s -f '${url}' | sha256sum`]),
    check: (result, expected) =>
      result.code !== 0 ? `exit ${result.code}` : result.stdout.startsWith(expected) ? null : 'wrong sha256',
  },
];

const main = async (): Promise<void> => {
  const sizeBytes = argument('size-mib', 1024) * 1024 * 1024;
  const runs = argument('runs', 3);
  const dir = await mkdtemp(join(tmpdir(), 'bm-agent-bench-fetch-'));
  let server: Server | null = null;
  try {
    const file = join(dir, 'image.raw');
    const expected = await makeImage(file, sizeBytes);
    await warmPageCache(file);
    server = await startServer(file);
    const mb = sizeBytes / 1e6;
    console.log(
      `${(sizeBytes / 2 ** 20).toFixed(0)} MiB from ${server.url}, 1 warm-up round + ${runs} rounds`,
    );
    const seconds = new Map<string, number[]>(VARIANTS.map((variant) => [variant.name, []]));
    let maxRssKiB = 0;
    for (let round = 0; round <= runs; round += 1) {
      for (const variant of VARIANTS) {
        const result = await variant.run(server.url);
        const problem = variant.check(result, expected, sizeBytes);
        if (problem) throw new Error(`${variant.name}: ${problem}`);
        if (variant.name.startsWith('ours')) {
          maxRssKiB = Math.max(maxRssKiB, (JSON.parse(result.stdout) as ClientReport).maxRssKiB);
        }
        if (round > 0) seconds.get(variant.name)?.push(result.seconds);
      }
    }
    const of = (name: string): number[] => seconds.get(name) ?? [];
    console.log('');
    console.log('| variant | wall s, median (min–max) | MB/s (median) |');
    console.log('| --- | --: | --: |');
    for (const variant of VARIANTS) {
      const samples = of(variant.name);
      console.log(`| ${variant.name} | ${range(samples, 3)} | ${(mb / median(samples)).toFixed(0)} |`);
    }
    const ours = of('ours (sha256)');
    const ratio = (other: string): number[] => ours.map((value, index) => value / (of(other)[index] ?? NaN));
    console.log('');
    console.log(
      `ours (sha256) / curl -o /dev/null, time ratio per round: ${range(ratio('curl -o /dev/null'), 2)}`,
    );
    console.log(
      `ours (sha256) / curl | sha256sum, time ratio per round: ${range(ratio('curl | sha256sum'), 2)}`,
    );
    console.log(`peak RSS of our client: ${(maxRssKiB / 1024).toFixed(1)} MiB`);
  } finally {
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
  }
};

const clientIndex = process.argv.indexOf('--client');
if (clientIndex >= 0) {
  await runClient(process.argv[clientIndex + 1] ?? '', !process.argv.includes('--no-hash'));
} else {
  await main();
}
