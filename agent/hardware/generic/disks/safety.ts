/**
 * The refusals that protect a disk in use, all made before a byte is written: mounted, active
 * swap, holders (RAID, LVM, device-mapper), read-only, too small, and at last the kernel's own
 * verdict through an exclusive open, which catches whatever the files do not show.
 */
import { constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../../../util/errors.js';
import { procPath, type HardwarePaths } from '../../paths.js';
import { readAttribute } from '../inventory/sysfs.js';
import type { BlockDeviceFacts } from './device.js';

export interface MountEntry {
  majMin: string;
  mountPoint: string;
  source: string;
}

// mountinfo and swaps escape blanks and backslashes in paths as octal (\040).
const unescapeOctal = (text: string): string =>
  text.replace(/\\([0-7]{3})/g, (_match, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));

/** `<proc>/self/mountinfo`: "id parent major:minor root mountpoint options ... - fstype source opts". */
export const parseMountInfo = (text: string): MountEntry[] =>
  text
    .split('\n')
    .map((line) => line.split(' '))
    .filter((fields) => fields.length >= 5)
    .map((fields) => {
      const separator = fields.indexOf('-', 6);
      return {
        majMin: fields[2] ?? '',
        mountPoint: unescapeOctal(fields[4] ?? ''),
        source: separator >= 0 ? unescapeOctal(fields[separator + 2] ?? '') : '',
      };
    });

/** `<proc>/swaps`: the first column of every line after the header is the swap area's path. */
export const parseSwaps = (text: string): string[] =>
  text
    .split('\n')
    .slice(1)
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((file) => file !== '')
    .map(unescapeOctal);

const GIB = 2 ** 30;
const describeSize = (bytes: number): string => `${bytes} bytes (${(bytes / GIB).toFixed(2)} GiB)`;

/** The disk and its partitions, by kernel name and device number. */
const members = (facts: BlockDeviceFacts) => [
  { kname: facts.kname, majMin: facts.majMin, holders: facts.holders },
  ...facts.partitions,
];

const checkMounted = async (paths: HardwarePaths, facts: BlockDeviceFacts): Promise<void> => {
  const text = (await readAttribute(procPath(paths, 'self', 'mountinfo'))) ?? '';
  const mounts = parseMountInfo(text);
  for (const member of members(facts)) {
    // btrfs reports an anonymous device number, so the mount source names the device too.
    const mount = mounts.find(
      (entry) =>
        entry.majMin === member.majMin ||
        (entry.source.startsWith('/dev/') && path.basename(entry.source) === member.kname),
    );
    if (mount)
      throw new AgentError(
        'DEVICE_BUSY',
        `${facts.path} is in use: ${member.kname} is mounted on ${mount.mountPoint}; unmount it (umount ${mount.mountPoint}) or choose another disk`,
        {
          details: {
            device: facts.path,
            reason: 'mounted',
            member: member.kname,
            mount_point: mount.mountPoint,
          },
        },
      );
  }
};

const checkSwap = async (paths: HardwarePaths, facts: BlockDeviceFacts): Promise<void> => {
  const swaps = parseSwaps((await readAttribute(procPath(paths, 'swaps'))) ?? '');
  for (const member of members(facts)) {
    const swap = swaps.find((file) => file.startsWith('/dev/') && path.basename(file) === member.kname);
    if (swap)
      throw new AgentError(
        'DEVICE_BUSY',
        `${facts.path} is in use: ${member.kname} holds active swap; turn it off (swapoff ${swap}) or choose another disk`,
        { details: { device: facts.path, reason: 'swap', member: member.kname, swap } },
      );
  }
};

const checkHolders = (facts: BlockDeviceFacts): void => {
  for (const member of members(facts)) {
    if (member.holders.length === 0) continue;
    throw new AgentError(
      'DEVICE_BUSY',
      `${facts.path} is in use: ${member.kname} is held by ${member.holders.join(', ')} (an active RAID array, LVM volume or device-mapper target); stop it first (mdadm --stop, vgchange -an or dmsetup remove) or choose another disk`,
      { details: { device: facts.path, reason: 'holders', member: member.kname, holders: member.holders } },
    );
  }
};

const checkWritable = (facts: BlockDeviceFacts): void => {
  if (!facts.readOnly) return;
  throw new AgentError(
    'DEVICE_READ_ONLY',
    `${facts.path} is read-only (sysfs ro=1: write-protected, or set with blockdev --setro); make it writable (blockdev --setrw ${facts.path}) or choose another disk`,
    { details: { device: facts.path } },
  );
};

const checkSize = (facts: BlockDeviceFacts, minSizeBytes: number | undefined): void => {
  if (facts.sizeBytes === 0)
    throw new AgentError(
      'DEVICE_TOO_SMALL',
      `${facts.path} has a size of 0 (no medium?); choose another disk`,
      {
        details: { device: facts.path, size_bytes: 0, min_size_bytes: minSizeBytes ?? null },
      },
    );
  if (minSizeBytes === undefined || facts.sizeBytes >= minSizeBytes) return;
  throw new AgentError(
    'DEVICE_TOO_SMALL',
    `${facts.path} holds ${describeSize(facts.sizeBytes)} but ${describeSize(minSizeBytes)} must be written; choose a larger disk`,
    { details: { device: facts.path, size_bytes: facts.sizeBytes, min_size_bytes: minSizeBytes } },
  );
};

/**
 * O_EXCL on a block device asks the kernel for the claim a mount, swapon, md or dm takes; it is
 * refused (EBUSY) when the disk or any of its partitions is claimed. It is released at once: this
 * is a check, not a lock.
 */
const checkExclusive = async (facts: BlockDeviceFacts): Promise<void> => {
  let handle;
  try {
    handle = await open(facts.path, fsConstants.O_RDONLY | fsConstants.O_EXCL);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === 'EBUSY')
      throw new AgentError(
        'DEVICE_BUSY',
        `${facts.path} is in use: the kernel refused an exclusive open (it or a partition is mounted, swap, or held by RAID/LVM/device-mapper or another program); stop what uses it or choose another disk`,
        { details: { device: facts.path, reason: 'exclusive_open', errno: code } },
      );
    throw new AgentError('INVALID_DEVICE', `${facts.path} cannot be opened: ${String(code ?? error)}`, {
      details: { device: facts.path, errno: code ?? null },
      cause: error,
    });
  }
  await handle.close();
};

/** Every refusal, in the order whose message is the most useful when several apply. */
export const assertSafeToWrite = async (
  paths: HardwarePaths,
  facts: BlockDeviceFacts,
  minSizeBytes: number | undefined,
): Promise<void> => {
  await checkMounted(paths, facts);
  await checkSwap(paths, facts);
  checkHolders(facts);
  checkWritable(facts);
  checkSize(facts, minSizeBytes);
  await checkExclusive(facts);
};
