/**
 * The disks hints and the default choice pick from: the inventory's own listing (one lsblk, udev
 * identities, by-path links), kept to those the configured sys and dev roots show. lsblk reads
 * the machine's /sys whatever the roots say, so a disk counts only when `<sys>/class/block/<k>`
 * exists and `<dev>/<k>` is that very device: a test tree holding only its loop devices can never
 * offer this machine's own disks.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { collectDisks, parseLsblkOutput, toDiskInventory, type LsblkDevice } from '../inventory/disks.js';
import { readAttribute } from '../inventory/sysfs.js';
import { createTools, type Tools } from '../inventory/tools.js';
import type { DiskInventory } from '../inventory/types.js';
import { devPath, sysPath, type HardwarePaths } from '../../paths.js';
import { runProcess as defaultRunProcess, type RunProcess } from '../../../util/run-process.js';
import { splitDevNumber } from './device.js';
import type { HintSubject } from './hints.js';

export interface ListCandidatesOptions {
  signal?: AbortSignal;
  runProcess?: RunProcess;
  /**
   * Offer loop devices too. The agent never does (a loop device is chosen only when named);
   * tests use it to drive hints and the default choice over the loop devices they made.
   */
  includeLoops?: boolean;
}

const flatten = (devices: LsblkDevice[]): LsblkDevice[] =>
  devices.flatMap((device) => [device, ...flatten(device.children ?? [])]);

const kernelName = (disk: DiskInventory): string => path.basename(disk.name);

/** The sysfs entry exists and the node under the dev root carries the same device number. */
const isInTree = async (paths: HardwarePaths, kname: string): Promise<boolean> => {
  const majMin = await readAttribute(sysPath(paths, 'class', 'block', kname, 'dev'));
  if (majMin === null) return false;
  try {
    const info = await stat(devPath(paths, kname), { bigint: true });
    return info.isBlockDevice() && splitDevNumber(info.rdev) === majMin;
  } catch {
    return false;
  }
};

export const listCandidateDisks = async (
  paths: HardwarePaths,
  options: ListCandidatesOptions = {},
): Promise<DiskInventory[]> => {
  const tools = createTools(options.runProcess ?? defaultRunProcess, undefined, options.signal);
  // The inventory leaves loop devices out; its lsblk output is kept so they can be added back
  // from the same listing, parsed by the same code.
  const captured: { listing: string | null } = { listing: null };
  const recording: Tools = {
    ...tools,
    run: async (name, args, runOptions) => {
      const result = await tools.run(name, args, runOptions);
      if (name === 'lsblk') captured.listing = result.stdout;
      return result;
    },
  };
  const disks = await collectDisks(paths, recording);
  const devices = captured.listing === null ? [] : flatten(parseLsblkOutput(captured.listing).blockdevices);
  const loops = options.includeLoops
    ? devices
        .filter((device) => device.type === 'loop' && Number(device.size ?? 0) > 0)
        .map((device) => toDiskInventory(device, paths, new Map()))
    : [];
  const order = new Map(devices.map((device, index) => [device.kname, index]));
  const position = (disk: DiskInventory) => order.get(kernelName(disk)) ?? Number.MAX_SAFE_INTEGER;
  const all = [...disks, ...loops].sort((a, b) => position(a) - position(b));
  const kept = await Promise.all(all.map((disk) => isInTree(paths, kernelName(disk))));
  return all.filter((_, index) => kept[index]);
};

// Hints name devices the way the conductor sees them, `/dev/...`, whatever the dev root is.
const asDevName = (paths: HardwarePaths, file: string | null): string | null => {
  if (file === null) return null;
  const relative = path.relative(paths.dev, file);
  return relative.startsWith('..') || path.isAbsolute(relative) ? file : `/dev/${relative}`;
};

export const toHintSubject = (paths: HardwarePaths, disk: DiskInventory): HintSubject => ({
  size: disk.size,
  rotational: disk.rotational,
  model: disk.model,
  vendor: disk.vendor,
  serial: disk.serial,
  wwn: disk.wwn,
  wwn_with_extension: disk.wwn_with_extension,
  wwn_vendor_extension: disk.wwn_vendor_extension,
  name: asDevName(paths, disk.name),
  hctl: disk.hctl,
  by_path: asDevName(paths, disk.by_path),
  tran: disk.tran,
});
