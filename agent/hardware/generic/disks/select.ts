/**
 * The target disk contract (agent/image/contracts.ts): an explicit device, else the first disk
 * matching the root device hints, else IPA's default (the smallest disk of at least 4 GiB); then
 * every safety refusal, all before anything is written.
 */
import type { RootDeviceHints, SelectDiskOptions, TargetDisk } from '../../../image/contracts.js';
import { AgentError } from '../../../util/errors.js';
import type { HardwarePaths } from '../../paths.js';
import type { DiskInventory } from '../inventory/types.js';
import { listCandidateDisks, toHintSubject } from './candidates.js';
import { readBlockDeviceFacts, resolveWholeDisk } from './device.js';
import { findFirstMatch, parseRootDeviceHints } from './hints.js';
import { assertSafeToWrite } from './safety.js';

/** IPA's `guess_root_disk` floor: anything smaller is not a root disk candidate. */
export const DEFAULT_MIN_DISK_BYTES = 4 * 2 ** 30;

export interface SelectDeps {
  /** Lists the candidate disks; tests substitute a listing that includes their loop devices. */
  listCandidates?: (paths: HardwarePaths, signal: AbortSignal | undefined) => Promise<DiskInventory[]>;
}

const defaultListing = (includeLoops: boolean) => (paths: HardwarePaths, signal: AbortSignal | undefined) =>
  listCandidateDisks(paths, { ...(signal ? { signal } : {}), includeLoops });

const kernelName = (disk: DiskInventory): string => disk.name.slice(disk.name.lastIndexOf('/') + 1);

/** Smallest first, the name breaking ties, like IPA's sort on (size, name). */
export const chooseDefaultDisk = (disks: readonly DiskInventory[]): DiskInventory | null =>
  [...disks]
    .sort((a, b) => a.size - b.size || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .find((disk) => disk.size >= DEFAULT_MIN_DISK_BYTES) ?? null;

// What the operator needs to write a better hint: the disks that were there.
const summarize = (paths: HardwarePaths, disks: readonly DiskInventory[]) =>
  disks.slice(0, 64).map((disk) => {
    const subject = toHintSubject(paths, disk);
    return {
      name: subject.name,
      size: disk.size,
      model: disk.model,
      serial: disk.serial,
      wwn: disk.wwn,
      rotational: disk.rotational,
      by_path: subject.by_path,
    };
  });

const noMatchingDisk = (
  paths: HardwarePaths,
  disks: readonly DiskInventory[],
  hints: RootDeviceHints | undefined,
): AgentError => {
  const listed = disks.map((disk) => `${toHintSubject(paths, disk).name} (${disk.size} bytes)`).join(', ');
  const found = disks.length === 0 ? 'no disks were found' : `disks found: ${listed}`;
  const message = hints
    ? `no disk matches the root device hints ${JSON.stringify(hints)}; ${found}`
    : `no disk of at least ${DEFAULT_MIN_DISK_BYTES} bytes (4 GiB) was found for the default choice; ${found}; name a device or give root device hints`;
  return new AgentError('NO_MATCHING_DISK', message, {
    details: { hints: hints ?? null, candidates: summarize(paths, disks) },
  });
};

const hasHints = (hints: RootDeviceHints | undefined): hints is RootDeviceHints =>
  hints !== undefined && Object.keys(hints).length > 0;

/** The kernel name of the disk hints or the default choice pick; a named device is returned as is. */
const pickDevice = async (options: SelectDiskOptions, deps: SelectDeps): Promise<string> => {
  if (options.device !== undefined) return options.device;
  // Hints are checked before anything is listed: a typo fails fast and names the field.
  const hints = hasHints(options.hints) ? parseRootDeviceHints(options.hints) : null;
  const disks = await (deps.listCandidates ?? defaultListing(options.includeLoops ?? false))(
    options.paths,
    options.signal,
  );
  options.signal?.throwIfAborted();
  const chosen =
    hints === null
      ? chooseDefaultDisk(disks)
      : (findFirstMatch(
          disks.map((disk) => ({ disk, ...toHintSubject(options.paths, disk) })),
          hints,
        )?.disk ?? null);
  if (chosen === null)
    throw noMatchingDisk(options.paths, disks, hasHints(options.hints) ? options.hints : undefined);
  return kernelName(chosen);
};

export const selectTargetDisk = async (
  options: SelectDiskOptions,
  deps: SelectDeps = {},
): Promise<TargetDisk> => {
  options.signal?.throwIfAborted();
  if (options.device !== undefined && hasHints(options.hints))
    throw new AgentError('INVALID_PARAMS', 'give either a device or root device hints, not both', {
      details: { field: 'device' },
    });
  const device = await pickDevice(options, deps);
  const resolved = await resolveWholeDisk(options.paths, device);
  const facts = await readBlockDeviceFacts(options.paths, resolved);
  await assertSafeToWrite(options.paths, facts, options.minSizeBytes);
  options.signal?.throwIfAborted();
  return {
    path: facts.path,
    kname: facts.kname,
    sizeBytes: facts.sizeBytes,
    logicalSectorBytes: facts.logicalSectorBytes,
    physicalSectorBytes: facts.physicalSectorBytes,
  };
};
