/**
 * What the kernel says about one block device, read only through HardwarePaths: the node under
 * the dev root, its sysfs entry, partitions, holders, size and read-only flag. Nothing here
 * writes; selection and the safety checks are built on these facts.
 */
import { realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../../../util/errors.js';
import { devPath, sysPath, type HardwarePaths } from '../../paths.js';
import { exists, listDirectory, readAttribute, toInteger } from '../inventory/sysfs.js';

export interface PartitionFacts {
  kname: string;
  /** "major:minor" from sysfs. */
  majMin: string;
  holders: string[];
}

export interface BlockDeviceFacts {
  /** The node under the dev root, e.g. `<dev>/sda`. */
  path: string;
  kname: string;
  majMin: string;
  sizeBytes: number;
  logicalSectorBytes: number;
  physicalSectorBytes: number;
  readOnly: boolean;
  holders: string[];
  partitions: PartitionFacts[];
}

const SECTOR = 512;

/** Linux's dev_t layout (glibc's gnu_dev_major/minor), on a bigint so large minors survive. */
export const splitDevNumber = (rdev: bigint): string => {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
};

const errnoOf = (error: unknown): string | undefined => {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
};

const describeKind = (info: { isFile(): boolean; isDirectory(): boolean; isCharacterDevice(): boolean }) =>
  info.isFile()
    ? 'a regular file'
    : info.isDirectory()
      ? 'a directory'
      : info.isCharacterDevice()
        ? 'a character device'
        : 'not a device';

const isInside = (root: string, candidate: string): boolean => {
  const relative = path.relative(root, candidate);
  return relative !== '' && !relative.startsWith('..') && !path.isAbsolute(relative);
};

/**
 * Where a device name points under the dev root: "sda", "disk/by-id/x", "/dev/sda" (read as
 * `<dev>/sda`, so a conductor's usual names work under a test tree) or a path already under the
 * dev root. Anything else, or a name climbing out with `..`, is refused before it is touched.
 */
const lexicalPath = (paths: HardwarePaths, device: string): string => {
  const root = path.resolve(paths.dev);
  if (device.includes('\0')) throw invalidDevice(device, 'contains a NUL byte');
  let candidate: string;
  if (!path.isAbsolute(device)) candidate = path.resolve(root, device);
  else if (isInside(root, path.resolve(device))) candidate = path.resolve(device);
  else if (device.startsWith('/dev/')) candidate = path.resolve(root, device.slice('/dev/'.length));
  else throw invalidDevice(device, `is not under the device directory ${paths.dev}`);
  if (!isInside(root, candidate))
    throw invalidDevice(device, `does not name a device inside the device directory ${paths.dev}`);
  return candidate;
};

const invalidDevice = (device: string, why: string, details: Record<string, unknown> = {}): AgentError =>
  new AgentError('INVALID_DEVICE', `${device} ${why}; name a whole disk such as /dev/sda or /dev/nvme0n1`, {
    details: { device, ...details },
  });

const readDevNumber = async (paths: HardwarePaths, kname: string): Promise<string | null> => {
  const text = await readAttribute(sysPath(paths, 'class', 'block', kname, 'dev'));
  return text !== null && /^\d+:\d+$/.test(text) ? text : null;
};

export interface ResolvedDevice {
  path: string;
  kname: string;
  majMin: string;
}

/**
 * Resolves a name to a whole block device under the dev root: the real path (links followed)
 * stays inside the dev root, is a block device, has a `<sys>/class/block/<kname>` entry whose
 * device number is the node's, and that entry is not a partition.
 */
export const resolveWholeDisk = async (paths: HardwarePaths, device: string): Promise<ResolvedDevice> => {
  const lexical = lexicalPath(paths, device);
  let real: string;
  let root: string;
  try {
    root = await realpath(paths.dev);
    real = await realpath(lexical);
  } catch (error) {
    if (errnoOf(error) === 'ENOENT' || errnoOf(error) === 'ENOTDIR')
      throw new AgentError('DEVICE_NOT_FOUND', `no device ${device} under ${paths.dev}`, {
        details: { device, path: lexical },
      });
    throw invalidDevice(device, `cannot be resolved (${errnoOf(error) ?? String(error)})`);
  }
  // A link out of the dev root names something the agent was not told to look at.
  if (!isInside(root, real))
    throw invalidDevice(device, `resolves to ${real}, outside the device directory ${paths.dev}`);
  const info = await stat(real, { bigint: true });
  if (!info.isBlockDevice()) throw invalidDevice(device, `is ${describeKind(info)}, not a block device`);
  const kname = path.basename(real);
  const majMin = splitDevNumber(info.rdev);
  const sysMajMin = await readDevNumber(paths, kname);
  if (sysMajMin === null)
    throw invalidDevice(device, `has no sysfs entry ${sysPath(paths, 'class', 'block', kname)}`);
  if (sysMajMin !== majMin)
    throw invalidDevice(device, `is device ${majMin} but sysfs says ${kname} is ${sysMajMin}`);
  if (await exists(sysPath(paths, 'class', 'block', kname, 'partition'))) {
    const disk = await parentDisk(paths, kname);
    throw new AgentError(
      'INVALID_DEVICE',
      `${device} is a partition${disk ? ` of ${disk}` : ''}; name the whole disk${disk ? ` (/dev/${disk})` : ''}: the image carries its own partition table`,
      { details: { device, kname, disk } },
    );
  }
  return { path: path.join(paths.dev, path.relative(root, real)), kname, majMin };
};

/** The disk a partition belongs to: sysfs puts a partition's directory inside its disk's. */
const parentDisk = async (paths: HardwarePaths, kname: string): Promise<string | null> => {
  try {
    return path.basename(path.dirname(await realpath(sysPath(paths, 'class', 'block', kname))));
  } catch {
    return null;
  }
};

/** Partitions are the subdirectories of a disk's sysfs entry that have a `partition` file. */
export const listPartitions = async (paths: HardwarePaths, kname: string): Promise<PartitionFacts[]> => {
  const entries = await listDirectory(sysPath(paths, 'class', 'block', kname));
  const partitions = await Promise.all(
    entries.map(async (entry): Promise<PartitionFacts | null> => {
      const base = sysPath(paths, 'class', 'block', kname, entry);
      if (!(await exists(path.join(base, 'partition')))) return null;
      const majMin = await readAttribute(path.join(base, 'dev'));
      if (majMin === null) return null;
      return { kname: entry, majMin, holders: await listDirectory(path.join(base, 'holders')) };
    }),
  );
  return partitions.filter((partition): partition is PartitionFacts => partition !== null);
};

export const readBlockDeviceFacts = async (
  paths: HardwarePaths,
  resolved: ResolvedDevice,
): Promise<BlockDeviceFacts> => {
  const attribute = (...parts: string[]) =>
    readAttribute(sysPath(paths, 'class', 'block', resolved.kname, ...parts));
  const [sectors, logical, physical, ro, holders, partitions] = await Promise.all([
    attribute('size'),
    attribute('queue', 'logical_block_size'),
    attribute('queue', 'physical_block_size'),
    attribute('ro'),
    listDirectory(sysPath(paths, 'class', 'block', resolved.kname, 'holders')),
    listPartitions(paths, resolved.kname),
  ]);
  // sysfs counts the size in 512-byte units whatever the logical sector size.
  return {
    ...resolved,
    sizeBytes: (toInteger(sectors) ?? 0) * SECTOR,
    logicalSectorBytes: toInteger(logical) ?? SECTOR,
    physicalSectorBytes: toInteger(physical) ?? toInteger(logical) ?? SECTOR,
    readOnly: ro === '1',
    holders,
    partitions,
  };
};

/** The node of a partition under the dev root, when it is there and is that partition. */
export const partitionNode = async (
  paths: HardwarePaths,
  partition: PartitionFacts,
): Promise<string | null> => {
  const node = devPath(paths, partition.kname);
  try {
    const info = await stat(node, { bigint: true });
    return info.isBlockDevice() && splitDevNumber(info.rdev) === partition.majMin ? node : null;
  } catch {
    return null;
  }
};
