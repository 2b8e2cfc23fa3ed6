/**
 * IPA's erase_devices for one disk: every byte overwritten with zeros. blkdiscard's BLKZEROOUT
 * first; where it is missing, refuses, or stops short, our own writes take over from the last
 * byte it reported done. Then the metadata erase: the zeros already cleared every signature,
 * but its fsync of the ends flushes the disk's cache after BLKZEROOUT (which does not), and its
 * partition re-read drops the partitions the kernel still lists.
 */
import type { TargetDisk } from '../../../image/contracts.js';
import { AgentError, errorMessage } from '../../../util/errors.js';
import type { Logger } from '../../../util/logger.js';
import type { RunProcess } from '../../../util/run-process.js';
import type { HardwarePaths } from '../../paths.js';
import { runBlkzeroout } from './blkzeroout.js';
import { wipeSignatures } from './wipe.js';
import { writeZeros } from './zero-write.js';

export type ZeroFillMethod = 'blkzeroout' | 'write';

export interface ZeroFillOptions {
  paths: HardwarePaths;
  logger: Logger;
  signal?: AbortSignal;
  /** Called with the bytes of this disk zeroed so far. */
  onProgress?: (bytes: number) => void;
  /** Where blkdiscard is looked up; the agent's PATH when absent. */
  toolPath?: string;
  stepBytes?: number;
  killGraceMs?: number;
  runProcess?: RunProcess;
}

export interface ZeroFillResult {
  device: string;
  bytes: number;
  method: ZeroFillMethod;
}

const reportedBytes = (error: unknown): number => {
  const bytes = AgentError.is(error) ? error.details.bytes : undefined;
  return typeof bytes === 'number' && Number.isSafeInteger(bytes) && bytes >= 0 ? bytes : 0;
};

export const zeroFillDisk = async (disk: TargetDisk, options: ZeroFillOptions): Promise<ZeroFillResult> => {
  const { logger, signal } = options;
  const size = disk.sizeBytes;
  let zeroed = 0;
  let fallback: string | null = null;
  try {
    const run = await runBlkzeroout(disk.path, {
      ...(options.toolPath === undefined ? {} : { toolPath: options.toolPath }),
      ...(options.stepBytes === undefined ? {} : { stepBytes: options.stepBytes }),
      ...(options.killGraceMs === undefined ? {} : { killGraceMs: options.killGraceMs }),
      ...(signal ? { signal } : {}),
      onProgress: (bytes) => options.onProgress?.(Math.min(bytes, size)),
    });
    zeroed = Math.min(run.bytes, size);
    if (run.bytes !== size)
      fallback = `blkdiscard reported ${run.bytes} bytes zeroed of the ${size} the disk holds`;
  } catch (error) {
    signal?.throwIfAborted();
    zeroed = Math.min(reportedBytes(error), size);
    fallback = errorMessage(error);
  }
  let method: ZeroFillMethod = 'blkzeroout';
  if (fallback !== null) {
    // What blkdiscard reported is whole steps from byte 0, so the writes continue from there.
    const from = zeroed - (zeroed % Math.max(512, disk.logicalSectorBytes));
    logger.warn(
      { device: disk.path, reason: fallback, from },
      'blkdiscard did not zero the whole disk; writing zeros instead',
    );
    method = 'write';
    try {
      await writeZeros(disk.path, {
        from,
        to: size,
        logger,
        ...(signal ? { signal } : {}),
        onProgress: (offset) => options.onProgress?.(offset),
      });
    } catch (error) {
      signal?.throwIfAborted();
      if (AgentError.is(error) && error.code !== 'ERASE_FAILED') throw error;
      throw new AgentError(
        'ERASE_FAILED',
        `${disk.path} was not zeroed to its end: blkdiscard: ${fallback}; then ${errorMessage(error)}`,
        {
          details: {
            device: disk.path,
            size_bytes: size,
            blkdiscard: fallback,
            ...(AgentError.is(error) ? error.details : {}),
          },
          cause: error,
        },
      );
    }
  }
  options.onProgress?.(size);
  await wipeSignatures(disk, {
    paths: options.paths,
    logger,
    ...(signal ? { signal } : {}),
    ...(options.runProcess ? { runProcess: options.runProcess } : {}),
  });
  logger.info({ device: disk.path, bytes: size, method }, 'disk zeroed');
  return { device: disk.path, bytes: size, method };
};
