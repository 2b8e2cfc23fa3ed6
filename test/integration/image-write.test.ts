/**
 * image.write end to end in-process (issue 4): writeImage against real loop devices, seen through
 * a HardwarePaths tree that holds only this test's loops, fed by a real misbehaving HTTP server
 * on 127.0.0.1. Every success is checked by the sha256 of the device over the image's length;
 * every failure after the first byte by wipefs finding nothing and both end MiBs zeroed; every
 * refusal by the device's bytes being the same before and after.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ProgressUpdate } from '../../agent/commands/definition.js';
import type { ChecksumSpec } from '../../agent/image/checksum.js';
import { writeImage, type WriteImageDeps, type WriteImageRequest } from '../../agent/image/write-image.js';
import { silentLogger } from '../../agent/util/logger.js';
import { FaultyHttpServer, type FaultyServerOptions } from '../support/faulty-http-server.js';
import { sha256OfRange } from '../support/image-loop.js';
import { haveTools, LoopLab, loopLabSkipReason, MIB, sh, type LoopDisk } from '../support/loop-lab.js';
import { rejectsWithCode } from '../support/agent-errors.js';

const skip =
  (await loopLabSkipReason()) ??
  (await haveTools('sgdisk', 'mkfs.ext4', 'wipefs', 'gzip', 'xz', 'zstd', 'bzip2', 'qemu-img')) ??
  false;
if (skip) process.stderr.write(`# skipping image write tests: ${skip}\n`);

const IMAGE_BYTES = 48 * MIB;
const DISK_BYTES = 64 * MIB;
/** Large enough that the write takes a while at full speed: what a heartbeat has to live through. */
const BIG_IMAGE_BYTES = 256 * MIB;
const MARKER = `bm-agent image-write test ${new Date().toISOString()}\n`;

interface Variant {
  bytes: Buffer;
  sha256: string;
}

const digest = (algorithm: string, data: Buffer): string => createHash(algorithm).update(data).digest('hex');

const variant = (bytes: Buffer): Variant => ({ bytes, sha256: digest('sha256', bytes) });

describe('writeImage onto loop devices from a faulty HTTP server', { skip }, () => {
  let work: string;
  let staging: string;
  let raw: Variant;
  const compressed = new Map<string, Variant>();
  let qcow2: Variant;
  /** Labs still attached: the suite's after hook detaches whatever a failed case left. */
  const labs = new Set<LoopLab>();

  before(async () => {
    work = await mkdtemp('/dev/shm/bma-image-write-');
    staging = await mkdtemp('/dev/shm/bma-image-staging-');
    // A disk image as an installer would ship it: GPT, one partition, ext4 holding a marker file
    // and some incompressible data, so the compressors and a byte-identical check both have work.
    const content = path.join(work, 'content');
    await mkdir(content);
    await writeFile(path.join(content, 'marker.txt'), MARKER);
    await writeFile(path.join(content, 'random.bin'), randomBytes(6 * MIB));
    const filesystem = path.join(work, 'fs.img');
    await sh('mkfs.ext4', ['-q', '-F', '-d', content, filesystem, '46M']);
    const image = path.join(work, 'image.img');
    const handle = await open(image, 'w');
    try {
      await handle.truncate(IMAGE_BYTES);
      const fsBytes = await readFile(filesystem);
      await handle.write(fsBytes, 0, fsBytes.length, MIB);
    } finally {
      await handle.close();
    }
    // sgdisk writes only LBA 0-33 and the backup at the end: the filesystem at 1 MiB is untouched.
    await sh('sgdisk', ['-o', '-n', '1:2048:0', '-t', '1:8300', image]);
    raw = variant(await readFile(image));
    for (const [format, program, args, suffix] of [
      ['gzip', 'gzip', ['-k', '-f', '-1'], '.gz'],
      ['xz', 'xz', ['-k', '-f', '-1', '-T0'], '.xz'],
      ['zstd', 'zstd', ['-k', '-f', '-q'], '.zst'],
      ['bzip2', 'bzip2', ['-k', '-f', '-1'], '.bz2'],
    ] as const) {
      await sh(program, [...args, image]);
      compressed.set(format, variant(await readFile(`${image}${suffix}`)));
    }
    await sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', image, `${image}.qcow2`]);
    qcow2 = variant(await readFile(`${image}.qcow2`));
  });

  after(async () => {
    for (const lab of labs) await lab.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
    if (staging) await rm(staging, { recursive: true, force: true });
  });

  /** A fresh loop in a fresh tree, its ends marked so that an untouched or wiped disk shows. */
  const diskFor = async (
    t: TestContext,
    sizeBytes = DISK_BYTES,
  ): Promise<{ lab: LoopLab; disk: LoopDisk }> => {
    const lab = await LoopLab.create('image-write');
    labs.add(lab);
    t.after(async () => {
      labs.delete(lab);
      await lab.cleanup();
    });
    const disk = await lab.addLoop(sizeBytes);
    await lab.writeMarker(disk, 0, MIB);
    await lab.writeMarker(disk, sizeBytes - MIB, MIB);
    return { lab, disk };
  };

  const serve = async (t: TestContext, options: FaultyServerOptions): Promise<FaultyHttpServer> => {
    const server = await FaultyHttpServer.start(options);
    t.after(() => server.stop());
    return server;
  };

  const depsFor = (lab: LoopLab, extra: Partial<WriteImageDeps> = {}): WriteImageDeps => ({
    paths: lab.paths,
    ca: null,
    insecure: false,
    logger: silentLogger(),
    stagingDir: staging,
    retries: 2,
    retryBaseMs: 5,
    stallTimeoutMs: 2000,
    ...extra,
  });

  const write = (
    lab: LoopLab,
    disk: LoopDisk,
    request: Omit<WriteImageRequest, 'device'> & { device?: string },
    options: {
      signal?: AbortSignal;
      progress?: (update: ProgressUpdate) => void;
      deps?: Partial<WriteImageDeps>;
    } = {},
  ) =>
    writeImage({ device: disk.node, ...request }, depsFor(lab, options.deps), {
      signal: options.signal ?? AbortSignal.timeout(120_000),
      progress: options.progress ?? (() => undefined),
    });

  const deviceSha = (disk: LoopDisk, length = raw.bytes.length): Promise<string> =>
    sha256OfRange(disk.real, 0, length);

  /** No signature left for wipefs to find, and both end MiBs zero (the GPT backup included). */
  const assertWiped = async (lab: LoopLab, disk: LoopDisk): Promise<void> => {
    assert.equal((await sh('wipefs', [disk.real])).trim(), '', 'wipefs still finds signatures');
    const zeros = Buffer.alloc(MIB);
    assert.ok((await lab.read(disk, 0, MIB)).equals(zeros), 'the first MiB is not zero');
    assert.ok((await lab.read(disk, disk.sizeBytes - MIB, MIB)).equals(zeros), 'the last MiB is not zero');
  };

  /** The server must be left with no open connection: a failed write may not leak its socket. */
  const assertNoConnections = async (server: FaultyHttpServer): Promise<void> => {
    for (let wait = 0; wait < 20 && server.connections > 0; wait += 1) await sleep(50);
    assert.equal(server.connections, 0, 'a connection to the image server was left open');
  };

  it('writes a raw GPT + ext4 image byte-identical, unverified but hashed', async (t) => {
    const { lab, disk } = await diskFor(t);
    const server = await serve(t, { data: raw.bytes });
    const result = await write(lab, disk, { url: server.url() });
    assert.equal(await deviceSha(disk), raw.sha256);
    assert.equal(result.device, disk.node);
    assert.equal(result.bytes_written, raw.bytes.length);
    assert.equal(result.bytes_downloaded, raw.bytes.length);
    assert.equal(result.format, 'raw');
    assert.equal(result.checksum, `sha256:${raw.sha256}`);
    assert.equal(result.checksum_verified, false);
    assert.equal(result.resumes, 0);
    assert.equal(result.restarts, 0);
    // The disk as a reader sees it: the GPT and the image's partition.
    assert.match(await sh('sgdisk', ['-p', disk.real]), /^\s+1\s+2048\s/m);
    await assertNoConnections(server);
  });

  for (const format of ['gzip', 'xz', 'zstd', 'bzip2'] as const) {
    it(`decompresses a ${format} image on the fly (found by magic, not by name)`, async (t) => {
      const image = compressed.get(format);
      assert.ok(image);
      const { lab, disk } = await diskFor(t);
      const server = await serve(t, { data: image.bytes });
      const result = await write(lab, disk, {
        url: server.url('/image.img'),
        checksum: `sha256:${image.sha256}`,
      });
      assert.equal(await deviceSha(disk), raw.sha256);
      assert.equal(result.format, format);
      assert.equal(result.bytes_written, raw.bytes.length);
      assert.equal(result.bytes_downloaded, image.bytes.length);
      // The checksum is over the bytes as served, like IPA: the compressed file.
      assert.equal(result.checksum, `sha256:${image.sha256}`);
      assert.equal(result.checksum_verified, true);
      assert.equal(result.resumes, 0);
      assert.equal(result.restarts, 0);
    });
  }

  it('converts a qcow2 image with qemu-img after staging it in tmpfs', async (t) => {
    const { lab, disk } = await diskFor(t);
    const server = await serve(t, { data: qcow2.bytes });
    const result = await write(lab, disk, { url: server.url('/image.qcow2'), checksum: qcow2.sha256 });
    assert.equal(await deviceSha(disk), raw.sha256);
    assert.equal(result.format, 'qcow2');
    assert.equal(result.bytes_written, raw.bytes.length);
    assert.equal(result.checksum, `sha256:${qcow2.sha256}`);
    assert.equal(result.checksum_verified, true);
    assert.equal(result.resumes, 0);
    assert.equal(result.restarts, 0);
  });

  const checksumForms: Array<[string, () => ChecksumSpec, string]> = [
    ['sha256:HEX', () => `sha256:${raw.sha256.toUpperCase()}`, 'sha256'],
    ['a bare md5 hex', () => digest('md5', raw.bytes), 'md5'],
    ['sha512:HEX', () => `sha512:${digest('sha512', raw.bytes)}`, 'sha512'],
    [
      'os_hash_algo/os_hash_value',
      () => ({ os_hash_algo: 'sha512', os_hash_value: digest('sha512', raw.bytes) }),
      'sha512',
    ],
  ];
  for (const [name, spec, algorithm] of checksumForms) {
    it(`verifies a checksum given as ${name}`, async (t) => {
      const { lab, disk } = await diskFor(t);
      const server = await serve(t, { data: raw.bytes });
      const result = await write(lab, disk, { url: server.url(), checksum: spec() });
      assert.equal(await deviceSha(disk), raw.sha256);
      assert.equal(result.checksum, `${algorithm}:${digest(algorithm, raw.bytes)}`);
      assert.equal(result.checksum_verified, true);
    });
  }

  it('verifies against a checksums file, matched by the image file name', async (t) => {
    const { lab, disk } = await diskFor(t);
    const other = digest('sha256', Buffer.from('another image'));
    const server = await serve(t, {
      data: raw.bytes,
      documents: {
        '/SHA256SUMS': `${other}  other.img\n${raw.sha256}  image.img\n${other} *image.img.bak\n`,
      },
    });
    const result = await write(lab, disk, {
      url: server.url('/images/image.img'),
      checksum: server.url('/SHA256SUMS'),
    });
    assert.equal(await deviceSha(disk), raw.sha256);
    assert.equal(result.checksum, `sha256:${raw.sha256}`);
    assert.equal(result.checksum_verified, true);
    assert.deepEqual(
      server.requests.map((request) => request.path),
      ['/SHA256SUMS', '/images/image.img'],
      'the checksums file comes first, before the disk is touched',
    );
  });

  it('resumes mid-file after a truncation, byte-identical', async (t) => {
    const { lab, disk } = await diskFor(t);
    const cut = 20 * MIB + 123;
    const server = await serve(t, { data: raw.bytes, faults: { 1: { kind: 'truncate', afterBytes: cut } } });
    const result = await write(lab, disk, { url: server.url(), checksum: `sha256:${raw.sha256}` });
    assert.equal(await deviceSha(disk), raw.sha256);
    const log = server.imageRequestLog;
    assert.equal(log.length, 2);
    assert.equal(log[1]?.range, `bytes=${cut}-`);
    assert.equal(log[1]?.ifRange, server.etag);
    assert.equal(log[1]?.status, 206);
    assert.ok(result.resumes >= 1);
    assert.equal(result.restarts, 0);
    assert.equal(result.bytes_written, raw.bytes.length);
    assert.equal(result.bytes_downloaded, raw.bytes.length);
    assert.equal(result.checksum, `sha256:${raw.sha256}`);
    assert.equal(result.checksum_verified, true);
  });

  it('starts over from byte 0 when the server ignores Range after a drop', async (t) => {
    const { lab, disk } = await diskFor(t);
    const server = await serve(t, {
      data: raw.bytes,
      faults: { 1: { kind: 'truncate', afterBytes: 30 * MIB }, 2: { kind: 'ignore-range' } },
    });
    const result = await write(lab, disk, { url: server.url(), checksum: `sha256:${raw.sha256}` });
    assert.equal(await deviceSha(disk), raw.sha256);
    const log = server.imageRequestLog;
    assert.equal(log.length, 3);
    assert.notEqual(log[1]?.range, null, 'the second request asked for a range');
    assert.equal(log[1]?.status, 200);
    assert.equal(log[2]?.range, null, 'the third starts over');
    assert.ok(result.restarts >= 1);
    assert.equal(result.bytes_written, raw.bytes.length);
    assert.equal(result.checksum, `sha256:${raw.sha256}`);
    assert.equal(result.checksum_verified, true);
  });

  it('on a checksum mismatch reports CHECKSUM_MISMATCH and leaves no signature behind', async (t) => {
    const { lab, disk } = await diskFor(t);
    const server = await serve(t, { data: raw.bytes });
    const wrong = digest('sha256', Buffer.from('not this image'));
    const error = await rejectsWithCode(
      write(lab, disk, { url: server.url(), checksum: `sha256:${wrong}` }),
      'CHECKSUM_MISMATCH',
    );
    assert.equal(error.details.actual, raw.sha256);
    assert.ok(Array.isArray(error.details.wiped), 'the error says what was wiped');
    await assertWiped(lab, disk);
  });

  it('on a 404 fails with DOWNLOAD_FAILED after one request, the disk untouched', async (t) => {
    const { lab, disk } = await diskFor(t);
    const before = await deviceSha(disk, disk.sizeBytes);
    const server = await serve(t, { data: raw.bytes, faults: { 1: { kind: 'status', status: 404 } } });
    await rejectsWithCode(write(lab, disk, { url: server.url() }), 'DOWNLOAD_FAILED');
    assert.equal(server.imageRequestLog.length, 1);
    assert.equal(await deviceSha(disk, disk.sizeBytes), before);
    await assertNoConnections(server);
  });

  it('when a truncation cannot be resumed and the retries run out, fails and wipes the disk', async (t) => {
    const { lab, disk } = await diskFor(t);
    // The first response is cut after 10 MiB; every resume is cut before its first byte.
    const server = await serve(t, {
      data: raw.bytes,
      faults: (n) => ({ kind: 'truncate', afterBytes: n === 1 ? 10 * MIB : 0 }),
    });
    await rejectsWithCode(
      write(lab, disk, { url: server.url() }, { deps: { retries: 2 } }),
      'DOWNLOAD_TRUNCATED',
    );
    // The drop itself spends the first of the 3 failures the budget allows: 1 + 2 resume attempts.
    assert.equal(server.imageRequestLog.length, 3);
    assert.ok(server.imageRequestLog.slice(1).every((request) => request.range === `bytes=${10 * MIB}-`));
    await assertWiped(lab, disk);
    await assertNoConnections(server);
  });

  it('when a drop cannot be resumed (no validator) and restarts run out, fails and wipes the disk', async (t) => {
    const { lab, disk } = await diskFor(t);
    const server = await serve(t, {
      data: raw.bytes,
      etag: false,
      lastModified: false,
      faults: () => ({ kind: 'truncate', afterBytes: 5 * MIB }),
    });
    await rejectsWithCode(write(lab, disk, { url: server.url() }), 'DOWNLOAD_RESTART_REQUIRED');
    assert.equal(server.imageRequestLog.length, 4, 'the first attempt and 3 restarts');
    assert.ok(server.imageRequestLog.every((request) => request.range === null));
    await assertWiped(lab, disk);
  });

  it('refuses an image larger than the device with DEVICE_TOO_SMALL before any write', async (t) => {
    const { lab, disk } = await diskFor(t, 32 * MIB);
    const before = await deviceSha(disk, disk.sizeBytes);
    const server = await serve(t, { data: raw.bytes });
    const error = await rejectsWithCode(write(lab, disk, { url: server.url() }), 'DEVICE_TOO_SMALL');
    assert.equal(error.details.image_bytes, raw.bytes.length);
    assert.equal(error.details.device_bytes, 32 * MIB);
    assert.equal(await deviceSha(disk, disk.sizeBytes), before);
    await assertNoConnections(server);
  });

  it('refuses both device and root device hints with INVALID_PARAMS', async (t) => {
    const { lab, disk } = await diskFor(t);
    const before = await deviceSha(disk, disk.sizeBytes);
    const server = await serve(t, { data: raw.bytes });
    await rejectsWithCode(
      write(lab, disk, { url: server.url(), root_device_hints: { size: '>= 1' } }),
      'INVALID_PARAMS',
    );
    assert.equal(server.requests.length, 0, 'nothing was downloaded');
    assert.equal(await deviceSha(disk, disk.sizeBytes), before);
  });

  it('on cancellation mid-write reports CANCELLED and wipes the disk', async (t) => {
    const { lab, disk } = await diskFor(t);
    // Paced so that the abort surely lands in the middle of the body.
    const server = await serve(t, {
      data: raw.bytes,
      faults: { 1: { kind: 'slow', bytesPerSecond: 64 * MIB } },
    });
    const controller = new AbortController();
    let doneAtAbort = 0;
    const progress = (update: ProgressUpdate): void => {
      if (update.done >= 16 * MIB && !controller.signal.aborted) {
        doneAtAbort = update.done;
        controller.abort();
      }
    };
    await rejectsWithCode(
      write(lab, disk, { url: server.url() }, { signal: controller.signal, progress }),
      'CANCELLED',
    );
    assert.ok(doneAtAbort > 0 && doneAtAbort < raw.bytes.length);
    await assertWiped(lab, disk);
    await assertNoConnections(server);
  });

  it('keeps the event loop responsive (heartbeats on time) during a 256 MiB raw write', async (t) => {
    const { lab, disk } = await diskFor(t, BIG_IMAGE_BYTES + 16 * MIB);
    // Random and zero blocks: the bytes the hasher and the writer see on a real image.
    const file = path.join(work, 'big.img');
    const handle = await open(file, 'w');
    try {
      for (let offset = 0; offset < BIG_IMAGE_BYTES; offset += 4 * MIB) {
        const block = (offset / (4 * MIB)) % 5 < 3 ? randomBytes(4 * MIB) : Buffer.alloc(4 * MIB);
        await handle.write(block, 0, block.length, offset);
      }
    } finally {
      await handle.close();
    }
    t.after(() => rm(file, { force: true }));
    const expected = await sha256OfRange(file, 0, BIG_IMAGE_BYTES);
    const server = await serve(t, { file });
    const histogram = monitorEventLoopDelay({ resolution: 10 });
    histogram.enable();
    const started = performance.now();
    let result;
    try {
      result = await write(lab, disk, { url: server.url(), checksum: `sha256:${expected}` });
    } finally {
      histogram.disable();
    }
    const seconds = (performance.now() - started) / 1000;
    const ms = (ns: number): string => (ns / 1e6).toFixed(1);
    t.diagnostic(
      `256 MiB raw write: ${(BIG_IMAGE_BYTES / 1e6 / seconds).toFixed(0)} MB/s; event-loop delay ` +
        `p50 ${ms(histogram.percentile(50))} ms, p99 ${ms(histogram.percentile(99))} ms, max ${ms(histogram.max)} ms`,
    );
    assert.equal(result.bytes_written, BIG_IMAGE_BYTES);
    assert.equal(await deviceSha(disk, BIG_IMAGE_BYTES), expected);
    assert.ok(histogram.max / 1e6 < 200, `event-loop delay reached ${ms(histogram.max)} ms`);
  });
});
