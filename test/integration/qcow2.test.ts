import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { ProgressUpdate } from '../../agent/commands/definition.js';
import { detectFormat } from '../../agent/image/decompress.js';
import {
  checkMemoryFor,
  convertToDevice,
  inspectImage,
  writeQemuImage,
  type StagingBudget,
} from '../../agent/image/qcow2.js';
import { AgentError } from '../../agent/util/errors.js';
import { silentLogger } from '../../agent/util/logger.js';
import { findOnPath } from '../../agent/util/run-process.js';
import { LoopDevice, loopSkipReason, patternBuffer, sha256, sha256OfRange } from '../support/image-loop.js';
import { assertCode } from '../support/agent-errors.js';

/*
 * qemu formats onto real loop devices: a qcow2 built in the test (qemu-img create, then qemu-io
 * writes a pattern; or a convert from a raw file when qemu-io is missing) converted with IPA's
 * flags and compared byte for byte; refusals before a byte is written; staging and its clean-up.
 */

const exec = promisify(execFile);
const MiB = 1024 * 1024;
const FILL_SEED = 0x33;

const skip =
  (await loopSkipReason()) ??
  ((await findOnPath('qemu-img')) === null ? 'qemu-img (Debian qemu-utils) is not installed' : null) ??
  false;
if (skip) process.stderr.write(`# skipping qcow2 tests: ${skip}\n`);
const hasQemuIo = (await findOnPath('qemu-io')) !== null;

let dir = '';
const devices: LoopDevice[] = [];
const newLoop = async (sizeBytes: number, fill = true): Promise<LoopDevice> => {
  const loop = await LoopDevice.create(sizeBytes, fill ? { fillSeed: FILL_SEED } : {});
  devices.push(loop);
  return loop;
};

const VIRTUAL = 24 * MiB;
/** What the qcow2 holds, as a raw disk: two written regions, zeros elsewhere. */
let expected: Buffer = Buffer.alloc(0);
let qcow2 = '';

const buildQcow2 = async (file: string): Promise<Buffer> => {
  const raw = Buffer.alloc(VIRTUAL);
  const random = randomBytes(3 * MiB);
  random.copy(raw, 1 * MiB);
  raw.fill(0xab, 10 * MiB, 10 * MiB + 512 * 1024 + 17);
  if (hasQemuIo) {
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(VIRTUAL)]);
    // A pattern qemu-io generates, and random data it reads from a file (write -s).
    const rawPart = `${file}.part`;
    await writeFile(rawPart, random);
    await exec('qemu-io', ['-f', 'qcow2', '-c', `write -q -P 0xab ${10 * MiB} ${512 * 1024 + 17}`, file]);
    await exec('qemu-io', ['-f', 'qcow2', '-c', `write -q -s ${rawPart} ${1 * MiB} ${3 * MiB}`, file]);
    await rm(rawPart);
  } else {
    const rawFile = `${file}.raw`;
    await writeFile(rawFile, raw);
    await exec('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rawFile, file]);
    await rm(rawFile);
  }
  return raw;
};

/** How many processes have `text` in their command line (from /proc, so no procps needed). */
const processesMentioning = async (text: string): Promise<number> => {
  let count = 0;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.split('\0').includes(text)) count += 1;
  }
  return count;
};

describe('qemu formats onto a loop device', { skip }, () => {
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bma-qcow2-'));
    qcow2 = path.join(dir, 'image.qcow2');
    expected = await buildQcow2(qcow2);
  });
  after(async () => {
    for (const loop of devices.splice(0)) await loop.detach();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('inspects the qcow2: format by magic, virtual size from qemu-img info', async () => {
    assert.equal(detectFormat((await readFile(qcow2)).subarray(0, 512)), 'qcow2');
    const info = await inspectImage(qcow2, { format: 'qcow2' });
    assert.equal(info.format, 'qcow2');
    assert.equal(info.virtualBytes, VIRTUAL);
  });

  it('converts onto the device byte-identical, leaving the rest of the device alone', async () => {
    const loop = await newLoop(32 * MiB);
    const updates: ProgressUpdate[] = [];
    const result = await convertToDevice({
      source: qcow2,
      format: 'qcow2',
      device: loop.path,
      signal: new AbortController().signal,
      logger: silentLogger(),
      progress: (update) => updates.push(update),
    });
    assert.equal(result.bytesWritten, VIRTUAL);
    // -S 0 writes the zeros too, so the unallocated clusters do not keep the old pattern.
    assert.equal(await sha256OfRange(loop.path, 0, VIRTUAL), sha256(expected));
    assert.equal(
      await sha256OfRange(loop.path, VIRTUAL, loop.sizeBytes - VIRTUAL),
      sha256(patternBuffer(FILL_SEED, VIRTUAL, loop.sizeBytes - VIRTUAL)),
    );
    const last = updates.at(-1);
    assert.ok(last && last.phase === 'convert' && last.done === VIRTUAL && last.total === VIRTUAL);
  });

  it('refuses, before writing a byte, a qcow2 whose virtual size exceeds the device', async () => {
    const loop = await newLoop(16 * MiB);
    const before = await sha256OfRange(loop.path, 0, loop.sizeBytes);
    await assert.rejects(
      convertToDevice({
        source: qcow2,
        format: 'qcow2',
        device: loop.path,
        signal: new AbortController().signal,
        logger: silentLogger(),
      }),
      (error: unknown) => {
        const agentError = assertCode(error, 'DEVICE_TOO_SMALL');
        assert.equal(agentError.details.virtualBytes, VIRTUAL);
        assert.equal(agentError.details.deviceBytes, 16 * MiB);
        return true;
      },
    );
    assert.equal(await sha256OfRange(loop.path, 0, loop.sizeBytes), before, 'the device is untouched');
  });

  it('refuses an image with a backing file', async () => {
    const overlay = path.join(dir, 'overlay.qcow2');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', qcow2, overlay]);
    await assert.rejects(inspectImage(overlay, { format: 'qcow2' }), (error: unknown) => {
      const agentError = assertCode(error, 'UNSUPPORTED_FORMAT');
      assert.equal(agentError.details.backingFile, qcow2);
      return true;
    });
  });

  it('stages the image, converts it and removes the staged copy', async () => {
    const loop = await newLoop(32 * MiB);
    const staging = path.join(dir, 'staging-ok');
    await mkdir(staging);
    const data = await readFile(qcow2);
    const chunks = (async function* () {
      for (let offset = 0; offset < data.length; offset += 100_000)
        yield data.subarray(offset, offset + 100_000);
    })();
    const result = await writeQemuImage({
      chunks,
      totalBytes: data.length,
      stagingDir: staging,
      paths: { sys: '/sys', dev: '/dev', proc: '/proc' },
      format: 'qcow2',
      device: loop.path,
      signal: new AbortController().signal,
      logger: silentLogger(),
    });
    assert.equal(result.bytesWritten, VIRTUAL);
    assert.equal(await sha256OfRange(loop.path, 0, VIRTUAL), sha256(expected));
    assert.deepEqual(await readdir(staging), [], 'no staged copy is left behind');
  });

  it('removes the staged copy when the conversion is refused', async () => {
    const loop = await newLoop(8 * MiB);
    const staging = path.join(dir, 'staging-refused');
    await mkdir(staging);
    const data = await readFile(qcow2);
    await assert.rejects(
      writeQemuImage({
        chunks: (async function* () {
          yield data;
        })(),
        totalBytes: data.length,
        stagingDir: staging,
        paths: { sys: '/sys', dev: '/dev', proc: '/proc' },
        format: 'qcow2',
        device: loop.path,
        signal: new AbortController().signal,
        logger: silentLogger(),
      }),
      (error: unknown) => assertCode(error, 'DEVICE_TOO_SMALL') !== null,
    );
    assert.deepEqual(await readdir(staging), []);
  });

  it('cancels a running conversion: qemu-img is stopped and the abort reason surfaces', async () => {
    // Large enough that the conversion is still running when the first progress arrives.
    const big = path.join(dir, 'big.qcow2');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', big, String(1024 * MiB)]);
    const loop = await newLoop(1024 * MiB, false);
    const controller = new AbortController();
    const started = performance.now();
    await assert.rejects(
      convertToDevice({
        source: big,
        format: 'qcow2',
        device: loop.path,
        signal: controller.signal,
        logger: silentLogger(),
        progress: () => controller.abort(new AgentError('CANCELLED', 'stop')),
      }).finally(() => {
        if (!controller.signal.aborted) controller.abort();
      }),
      (error: unknown) => assertCode(error, 'CANCELLED').message === 'stop',
    );
    assert.ok(performance.now() - started < 30_000);
    assert.equal(await processesMentioning(big), 0, 'no qemu-img left running');
  });
});

describe('staging memory check', () => {
  let proc = '';
  let staging = '';
  before(async () => {
    proc = await mkdtemp(path.join(os.tmpdir(), 'bma-proc-'));
    staging = await mkdtemp(path.join('/dev/shm', 'bma-staging-'));
  });
  after(async () => {
    await rm(proc, { recursive: true, force: true });
    await rm(staging, { recursive: true, force: true });
  });

  const meminfo = (availableKiB: number): string =>
    `MemTotal:        2048000 kB\nMemFree:          100000 kB\nMemAvailable:    ${availableKiB} kB\n`;

  it('refuses with INSUFFICIENT_MEMORY, saying what is needed and what is available', async () => {
    await writeFile(path.join(proc, 'meminfo'), meminfo(1024 * 1024)); // 1 GiB available
    await assert.rejects(
      checkMemoryFor(900 * MiB, { paths: { sys: '/sys', dev: '/dev', proc }, stagingDir: staging }),
      (error: unknown) => {
        const agentError = assertCode(error, 'INSUFFICIENT_MEMORY');
        assert.match(agentError.message, /needs 900 MiB/);
        assert.match(agentError.message, /only 512 MiB is available/);
        assert.match(agentError.message, /MemAvailable 1024 MiB minus a 512 MiB safety margin/);
        assert.equal(agentError.details.neededBytes, 900 * MiB);
        assert.equal(agentError.details.ramBacked, true);
        return true;
      },
    );
  });

  it('accepts an image that fits, and returns the budget when the size is unknown', async () => {
    await writeFile(path.join(proc, 'meminfo'), meminfo(2 * 1024 * 1024));
    const paths = { sys: '/sys', dev: '/dev', proc };
    const budget: StagingBudget = await checkMemoryFor(100 * MiB, { paths, stagingDir: staging });
    assert.ok(budget.ramBacked);
    assert.equal(budget.budgetBytes, Math.min(2048 * MiB - 512 * MiB, budget.dirFreeBytes));
    const unknown = await checkMemoryFor(null, { paths, stagingDir: staging, marginBytes: 0 });
    assert.equal(unknown.marginBytes, 0);
  });

  it('stops staging an image of unknown size once it passes the budget, and removes it', async () => {
    await writeFile(path.join(proc, 'meminfo'), meminfo(513 * 1024)); // 1 MiB over the margin
    const staged = path.join(staging, 'unknown');
    await mkdir(staged);
    const chunk = Buffer.alloc(256 * 1024);
    const chunks = (async function* () {
      for (let i = 0; i < 64; i += 1) yield chunk;
    })();
    await assert.rejects(
      writeQemuImage({
        chunks,
        totalBytes: null,
        stagingDir: staged,
        paths: { sys: '/sys', dev: '/dev', proc },
        format: 'qcow2',
        device: '/nonexistent',
        signal: new AbortController().signal,
        logger: silentLogger(),
      }),
      (error: unknown) => assertCode(error, 'INSUFFICIENT_MEMORY') !== null,
    );
    assert.deepEqual(await readdir(staged), []);
  });
});
