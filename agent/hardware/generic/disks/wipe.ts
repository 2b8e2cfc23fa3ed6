/**
 * Erasing what makes a disk look partitioned or formatted (IPA's destroy_disk_metadata): the
 * partitions' signatures first, then the disk's with `wipefs`, then the first and last MiB
 * zeroed, which covers the MBR, the primary GPT and the backup GPT header and table at the end
 * even where wipefs is missing or misses one. Only the two ends and the signature bytes wipefs
 * names are touched; the rest of the disk is left as it was.
 */
import { open } from 'node:fs/promises';
import type { TargetDisk } from '../../../image/contracts.js';
import { AgentError, errorMessage } from '../../../util/errors.js';
import type { Logger } from '../../../util/logger.js';
import { findOnPath, runProcess as defaultRunProcess, type RunProcess } from '../../../util/run-process.js';
import type { HardwarePaths } from '../../paths.js';
import { listPartitions, partitionNode } from './device.js';

export const ZERO_BYTES = 1024 * 1024;
const WIPEFS_TIMEOUT_MS = 120_000;
const REREAD_TIMEOUT_MS = 60_000;

export interface DiskToolOptions {
  paths: HardwarePaths;
  signal?: AbortSignal;
  logger: Logger;
  runProcess?: RunProcess;
}

/** "…: 8 bytes were erased at offset 0x00000200 (gpt): 45 46 49 …" -> "gpt at 0x200". */
export const parseWipefsOutput = (output: string): string[] =>
  output.split('\n').flatMap((line) => {
    const match = /bytes? (?:were|was) erased at offset (0x[0-9a-f]+) \(([^)]+)\)/i.exec(line);
    if (!match?.[1] || !match[2]) return [];
    return [`${match[2]} at 0x${BigInt(match[1]).toString(16)}`];
  });

const runWipefs = async (node: string, options: DiskToolOptions): Promise<string[]> => {
  const result = await (options.runProcess ?? defaultRunProcess)('wipefs', ['--all', '--force', node], {
    timeoutMs: WIPEFS_TIMEOUT_MS,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  return parseWipefsOutput(result.stdout);
};

/** Writes `length` zero bytes at `position`, however the kernel splits the write. */
const writeZeros = async (
  handle: Awaited<ReturnType<typeof open>>,
  position: number,
  length: number,
): Promise<void> => {
  const zeros = Buffer.alloc(Math.min(length, ZERO_BYTES));
  let done = 0;
  while (done < length) {
    const { bytesWritten } = await handle.write(
      zeros,
      0,
      Math.min(zeros.length, length - done),
      position + done,
    );
    if (bytesWritten <= 0) throw new Error(`short write at byte ${position + done}`);
    done += bytesWritten;
  }
};

/** The byte ranges to zero: the first and last MiB, one range when the disk is that small. */
export const zeroRanges = (sizeBytes: number): Array<{ offset: number; length: number }> => {
  if (sizeBytes <= 2 * ZERO_BYTES) return sizeBytes > 0 ? [{ offset: 0, length: sizeBytes }] : [];
  return [
    { offset: 0, length: ZERO_BYTES },
    { offset: sizeBytes - ZERO_BYTES, length: ZERO_BYTES },
  ];
};

const zeroEnds = async (disk: TargetDisk): Promise<string[]> => {
  const handle = await open(disk.path, 'r+');
  try {
    const wiped: string[] = [];
    for (const range of zeroRanges(disk.sizeBytes)) {
      await writeZeros(handle, range.offset, range.length);
      wiped.push(`zeroed ${range.length} bytes at ${range.offset}`);
    }
    // On a block device fsync is what sends the zeros past the page cache and the disk's cache.
    await handle.sync();
    return wiped;
  } finally {
    await handle.close();
  }
};

const hasTool = async (name: string): Promise<boolean> => (await findOnPath(name)) !== null;

/**
 * Wipes the disk's partition-table and filesystem signatures at both ends, then has the kernel
 * re-read the (now absent) partition table. A wipefs failure does not stop the zeroing (that is
 * what keeps a half-written disk from booting) but is reported as WIPE_FAILED afterwards.
 */
export const wipeSignatures = async (
  disk: TargetDisk,
  options: DiskToolOptions,
): Promise<{ wiped: string[] }> => {
  const { logger } = options;
  const wiped: string[] = [];
  const failures: string[] = [];
  if (await hasTool('wipefs')) {
    // Partitions first, like IPA: once the table is gone their filesystems would only wait to
    // reappear when the same layout is written again.
    for (const partition of await listPartitions(options.paths, disk.kname)) {
      const node = await partitionNode(options.paths, partition);
      if (node === null) {
        logger.warn({ partition: partition.kname }, 'no device node for the partition; its signatures stay');
        continue;
      }
      try {
        wiped.push(...(await runWipefs(node, options)).map((entry) => `${partition.kname}: ${entry}`));
      } catch (error) {
        options.signal?.throwIfAborted();
        failures.push(`wipefs ${node}: ${errorMessage(error)}`);
      }
    }
    try {
      wiped.push(...(await runWipefs(disk.path, options)));
    } catch (error) {
      options.signal?.throwIfAborted();
      failures.push(`wipefs ${disk.path}: ${errorMessage(error)}`);
    }
  } else {
    logger.warn({ device: disk.path }, 'wipefs is not installed; only the first and last MiB are zeroed');
  }
  try {
    wiped.push(...(await zeroEnds(disk)));
  } catch (error) {
    throw new AgentError('WIPE_FAILED', `zeroing the ends of ${disk.path} failed: ${errorMessage(error)}`, {
      details: { device: disk.path, wiped, failures, errno: (error as { code?: unknown }).code ?? null },
      cause: error,
    });
  }
  await rereadPartitions(disk, options);
  if (failures.length > 0)
    throw new AgentError(
      'WIPE_FAILED',
      `${failures.join('; ')}; the first and last MiB of ${disk.path} were zeroed all the same`,
      { details: { device: disk.path, wiped, failures } },
    );
  logger.info({ device: disk.path, wiped }, 'disk signatures wiped');
  return { wiped };
};

/**
 * Tells the kernel the partition table changed. `blockdev --rereadpt` is the kernel's own scan;
 * `partprobe` adds and removes partitions itself (BLKPG), which also works where the kernel has
 * no parser for the table. Both are best effort: a failure is a warning.
 */
export const rereadPartitions = async (
  disk: TargetDisk,
  options: Omit<DiskToolOptions, 'paths'> & { paths?: HardwarePaths },
): Promise<void> => {
  const run = options.runProcess ?? defaultRunProcess;
  const steps: Array<[string, string[]]> = [
    ['blockdev', ['--rereadpt', disk.path]],
    ['partprobe', [disk.path]],
  ];
  for (const [tool, args] of steps) {
    if (!(await hasTool(tool))) {
      options.logger.debug({ tool }, 'not installed; partition re-read step skipped');
      continue;
    }
    try {
      await run(tool, args, {
        timeoutMs: REREAD_TIMEOUT_MS,
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (error) {
      options.signal?.throwIfAborted();
      options.logger.warn(
        { tool, device: disk.path, err: errorMessage(error) },
        'partition table re-read failed',
      );
    }
  }
};
