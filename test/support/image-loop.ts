/**
 * Loop devices for the image-writing tests: a backing file the test fills, attached with
 * losetup, detached (and the file removed) by `detach()`. Tests never touch another disk.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { findOnPath } from '../../agent/util/run-process.js';

const exec = promisify(execFile);

/** Why loop-device tests cannot run here, or null when they can. */
export const loopSkipReason = async (): Promise<string | null> => {
  if (process.getuid?.() !== 0) return 'loop devices need root';
  if ((await findOnPath('losetup')) === null) return 'losetup (util-linux) is not installed';
  try {
    const probe = await LoopDevice.create(1024 * 1024);
    await probe.detach();
  } catch (error) {
    return `cannot attach a loop device: ${error instanceof Error ? error.message : String(error)}`;
  }
  return null;
};

/** A byte pattern that repeats every 251 bytes (prime), so a shifted or padded write shows. */
export const patternByte = (seed: number, index: number): number => (seed + index * 7 + (index % 251)) & 0xff;

export const patternBuffer = (seed: number, start: number, length: number): Buffer => {
  const buffer = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i += 1) buffer[i] = patternByte(seed, start + i);
  return buffer;
};

export interface LoopOptions {
  /** Fill the backing file with `patternBuffer(fillSeed, …)` before attaching; sparse zeros otherwise. */
  fillSeed?: number;
  /** losetup --direct-io=on, closer to a real disk than the default page-cached loop. */
  directIo?: boolean;
  /**
   * Write the whole backing file (zeros) before attaching. The first write into a sparse file
   * pays for block allocation, about half the speed of an overwrite on ext4 (perf-baseline.md
   * section 3), which a real disk never does: benchmarks want every write to be an overwrite.
   */
  preallocate?: boolean;
}

export class LoopDevice {
  private constructor(
    readonly path: string,
    readonly backing: string,
    private readonly dir: string,
    readonly sizeBytes: number,
  ) {}

  static async create(sizeBytes: number, options: LoopOptions = {}): Promise<LoopDevice> {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'bma-loop-'));
    const backing = path.join(dir, 'disk.img');
    try {
      const handle = await open(backing, 'w');
      try {
        await handle.truncate(sizeBytes);
        if (options.preallocate && options.fillSeed === undefined) {
          const zeros = Buffer.alloc(8 * 1024 * 1024);
          for (let offset = 0; offset < sizeBytes; offset += zeros.length) {
            const length = Math.min(zeros.length, sizeBytes - offset);
            await handle.write(zeros, 0, length, offset);
          }
          await handle.sync();
        }
        if (options.fillSeed !== undefined) {
          const step = 1024 * 1024;
          for (let offset = 0; offset < sizeBytes; offset += step) {
            const length = Math.min(step, sizeBytes - offset);
            await handle.write(patternBuffer(options.fillSeed, offset, length), 0, length, offset);
          }
        }
      } finally {
        await handle.close();
      }
      const args = ['-f', '--show', ...(options.directIo ? ['--direct-io=on'] : []), backing];
      const { stdout } = await exec('losetup', args);
      return new LoopDevice(stdout.trim(), backing, dir, sizeBytes);
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  async detach(): Promise<void> {
    await exec('losetup', ['-d', this.path]).catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** sha256 of `length` bytes of `file` from `offset` (a device or a regular file). */
export const sha256OfRange = (file: string, offset: number, length: number): Promise<string> =>
  new Promise((resolve, reject) => {
    if (length === 0) {
      resolve(createHash('sha256').digest('hex'));
      return;
    }
    const hash = createHash('sha256');
    const stream = createReadStream(file, {
      start: offset,
      end: offset + length - 1,
      highWaterMark: 1024 * 1024,
    });
    let seen = 0;
    stream.on('data', (chunk) => {
      const buffer = chunk as Buffer;
      seen += buffer.length;
      hash.update(buffer);
    });
    stream.once('error', reject);
    stream.once('end', () => {
      if (seen !== length) reject(new Error(`read ${seen} of ${length} bytes from ${file}`));
      else resolve(hash.digest('hex'));
    });
  });

export const sha256 = (...buffers: Buffer[]): string => {
  const hash = createHash('sha256');
  for (const buffer of buffers) hash.update(buffer);
  return hash.digest('hex');
};
