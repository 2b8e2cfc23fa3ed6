/**
 * Erasing every disk (IPA's erase_devices and erase_devices_metadata): which disks, checked all
 * before any is touched, and the erasures run a few at a time. A read-only disk is skipped and
 * said so; a disk in use stops the whole erase before a byte is written, naming it. A failure
 * once erasing began leaves the others to finish, and the error lists what was and was not done.
 */
import type { TargetDisk } from '../../../image/contracts.js';
import { AgentError, serializeError, type ErrorCode } from '../../../util/errors.js';
import type { HardwarePaths } from '../../paths.js';
import type { DiskInventory } from '../inventory/types.js';
import { listCandidateDisks } from './candidates.js';
import { readBlockDeviceFacts, resolveWholeDisk } from './device.js';
import { assertSafeToWrite } from './safety.js';

export interface SkippedDisk {
  device: string;
  reason: string;
}

export interface ErasePlan {
  targets: TargetDisk[];
  skipped: SkippedDisk[];
}

export interface PlanOptions {
  signal?: AbortSignal;
  /** Loop devices count as disks: for lab rigs whose disks are loop devices. */
  includeLoops?: boolean;
  /** Lists the candidates; the disk listing of image.write and the hints by default. */
  listCandidates?: (paths: HardwarePaths, signal: AbortSignal | undefined) => Promise<DiskInventory[]>;
}

export const DEFAULT_ERASE_CONCURRENCY = 4;

const kernelName = (disk: DiskInventory): string => disk.name.slice(disk.name.lastIndexOf('/') + 1);

/**
 * Every candidate disk (IPA's rules: whole disks, RAID arrays, multipath maps; loop devices only
 * with `includeLoops`), each resolved and checked. Read-only and empty disks are skipped; any
 * other refusal is thrown before anything is written, several busy disks in one DEVICE_BUSY.
 */
export const planEraseAll = async (paths: HardwarePaths, options: PlanOptions = {}): Promise<ErasePlan> => {
  const { signal } = options;
  const disks = options.listCandidates
    ? await options.listCandidates(paths, signal)
    : await listCandidateDisks(paths, {
        ...(signal ? { signal } : {}),
        includeLoops: options.includeLoops ?? false,
      });
  signal?.throwIfAborted();
  const targets: TargetDisk[] = [];
  const skipped: SkippedDisk[] = [];
  const busy: AgentError[] = [];
  for (const disk of disks) {
    const facts = await readBlockDeviceFacts(paths, await resolveWholeDisk(paths, kernelName(disk)));
    // IPA skips read-only devices rather than failing on them: nothing can be erased there.
    if (facts.readOnly) {
      skipped.push({ device: facts.path, reason: 'read-only (sysfs ro=1)' });
      continue;
    }
    try {
      await assertSafeToWrite(paths, facts, undefined);
    } catch (error) {
      if (AgentError.is(error) && error.code === 'DEVICE_TOO_SMALL') {
        skipped.push({ device: facts.path, reason: 'empty (size 0: no medium?)' });
        continue;
      }
      if (AgentError.is(error) && error.code === 'DEVICE_BUSY') {
        busy.push(error);
        continue;
      }
      throw error;
    }
    targets.push({
      path: facts.path,
      kname: facts.kname,
      sizeBytes: facts.sizeBytes,
      logicalSectorBytes: facts.logicalSectorBytes,
      physicalSectorBytes: facts.physicalSectorBytes,
    });
  }
  signal?.throwIfAborted();
  const [first] = busy;
  if (first !== undefined && busy.length === 1) throw first;
  if (first !== undefined)
    throw new AgentError(
      'DEVICE_BUSY',
      `${busy.length} disks are in use, so nothing was erased: ${busy.map((error) => error.message).join('; ')}`,
      { details: { devices: busy.map((error) => error.details) } },
    );
  return { targets, skipped };
};

export interface EachOutcome<R> {
  done: Array<{ disk: TargetDisk; result: R }>;
  failed: Array<{ disk: TargetDisk; error: unknown }>;
}

/** Runs `erase` on every disk, at most `concurrency` at once, and keeps each outcome in disk order. */
export const eraseEach = async <R>(
  disks: readonly TargetDisk[],
  concurrency: number,
  signal: AbortSignal | undefined,
  erase: (disk: TargetDisk) => Promise<R>,
): Promise<EachOutcome<R>> => {
  const limit = Math.max(1, Math.floor(concurrency));
  const outcomes: Array<{ ok: true; result: R } | { ok: false; error: unknown } | undefined> = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < disks.length && !signal?.aborted) {
      const index = next;
      next += 1;
      const disk = disks[index] as TargetDisk;
      try {
        outcomes[index] = { ok: true, result: await erase(disk) };
      } catch (error) {
        outcomes[index] = { ok: false, error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, disks.length) }, worker));
  signal?.throwIfAborted();
  const outcome: EachOutcome<R> = { done: [], failed: [] };
  disks.forEach((disk, index) => {
    const entry = outcomes[index];
    if (entry?.ok) outcome.done.push({ disk, result: entry.result });
    else if (entry) outcome.failed.push({ disk, error: entry.error });
  });
  return outcome;
};

/**
 * One error for the disks that failed, saying which were erased all the same. A single disk's
 * own error passes through when it was the only disk, so its code is not hidden.
 */
export const throwIfAnyFailed = <R>(outcome: EachOutcome<R>, code: ErrorCode, what: string): void => {
  const [first] = outcome.failed;
  if (first === undefined) return;
  if (outcome.failed.length === 1 && outcome.done.length === 0) throw first.error;
  const erased = outcome.done.map((entry) => entry.disk.path);
  throw new AgentError(
    code,
    `${what} failed on ${outcome.failed.map((entry) => entry.disk.path).join(', ')} (${serializeError(first.error).message})${
      erased.length > 0 ? `; ${erased.join(', ')} ${erased.length === 1 ? 'was' : 'were'} erased` : ''
    }`,
    {
      details: {
        erased,
        failed: outcome.failed.map((entry) => ({
          device: entry.disk.path,
          error: serializeError(entry.error),
        })),
      },
      cause: first.error,
    },
  );
};
