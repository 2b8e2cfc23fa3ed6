import path from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { validate } from '../../../protocol/validate.js';
import { AgentError } from '../../../util/errors.js';
import { devPath, runPath, sysPath, type HardwarePaths } from '../../paths.js';
import { linkName, listDirectory, readAttribute } from './sysfs.js';
import type { Tools } from './tools.js';
import type { DiskInventory } from './types.js';

const LSBLK_TIMEOUT_MS = 60_000;

/* ---------------------------------------------------------------- lsblk output */

// Old util-linux (before 2.33) prints every JSON value as a string, so both forms are accepted.
const LsblkFlag = Type.Union([Type.Boolean(), Type.Literal('0'), Type.Literal('1'), Type.Null()]);
const LsblkNumber = Type.Union([
  Type.Integer({ minimum: 0 }),
  Type.String({ pattern: '^[0-9]+$' }),
  Type.Null(),
]);
const LsblkText = Type.Optional(Type.Union([Type.String(), Type.Null()]));

// KNAME becomes part of a path, so it may not climb out of the dev root.
const LsblkDevice = Type.Recursive((Self) =>
  Type.Object({
    kname: Type.String({ minLength: 1, pattern: '^(?!\\.\\.?$)[^/]+$' }),
    type: Type.String(),
    size: LsblkNumber,
    rm: Type.Optional(LsblkFlag),
    rota: Type.Optional(LsblkFlag),
    model: LsblkText,
    serial: LsblkText,
    vendor: LsblkText,
    wwn: LsblkText,
    hctl: LsblkText,
    tran: LsblkText,
    'log-sec': Type.Optional(LsblkNumber),
    'phy-sec': Type.Optional(LsblkNumber),
    // Looks up the udev record; anything but "major:minor" is ignored.
    'maj:min': LsblkText,
    children: Type.Optional(Type.Array(Self)),
  }),
);

export const LsblkOutput = Type.Object({ blockdevices: Type.Array(LsblkDevice) });
export type LsblkOutput = Static<typeof LsblkOutput>;
export type LsblkDevice = Static<typeof LsblkDevice>;

/** lsblk output is untrusted input: it is parsed and checked before anything reads a field. */
export const parseLsblkOutput = (text: string): LsblkOutput => {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new AgentError('INVENTORY_FAILED', 'lsblk printed something that is not JSON', {
      details: { part: 'disks', output_head: text.slice(0, 200) },
      cause: error,
    });
  }
  const checked = validate(LsblkOutput, raw, 'lsblk');
  if (!checked.ok) {
    throw new AgentError(
      'INVENTORY_FAILED',
      `lsblk output does not have the expected shape: ${checked.violation.field}: ${checked.violation.expected}`,
      { details: { part: 'disks', ...checked.violation } },
    );
  }
  return checked.value;
};

const toFlag = (value: boolean | string | null | undefined): boolean => value === true || value === '1';
const toNumber = (value: number | string | null | undefined): number | null =>
  value === null || value === undefined ? null : Number(value);
const toText = (value: string | null | undefined): string | null => {
  const trimmed = value?.trim();
  return trimmed ? trimmed : null;
};

// Same rule as IPA's list_all_block_devices: whole disks, RAID arrays and multipath maps.
const isWantedType = (type: string): boolean => type === 'disk' || type === 'mpath' || type.includes('raid');
const SKIPPED_NAMES = /^(fd|ram|zram|loop)/;

const flattenDevices = (devices: LsblkDevice[]): LsblkDevice[] =>
  devices.flatMap((device) => [device, ...flattenDevices(device.children ?? [])]);

/**
 * The devices the inventory reports, in lsblk order. The tree is flattened because RAID arrays
 * and multipath maps are children of their members; a member path of a multipath map is not
 * reported on its own, the map stands for it.
 */
export const selectDisks = (output: LsblkOutput): LsblkDevice[] => {
  const seen = new Set<string>();
  const selected: LsblkDevice[] = [];
  for (const device of flattenDevices(output.blockdevices)) {
    if (seen.has(device.kname)) continue;
    seen.add(device.kname);
    if (!isWantedType(device.type) || SKIPPED_NAMES.test(device.kname)) continue;
    if (!toNumber(device.size)) continue;
    if ((device.children ?? []).some((child) => child.type === 'mpath')) continue;
    selected.push(device);
  }
  return selected;
};

/* ---------------------------------------------------------------- udev and sysfs */

/** The `E:` properties of a udev database record (`<run>/udev/data/b<major>:<minor>`). */
export const parseUdevRecord = (text: string): Map<string, string> => {
  const properties = new Map<string, string>();
  for (const line of text.split('\n')) {
    const match = /^E:([^=]+)=(.*)$/.exec(line);
    if (match?.[1] !== undefined && match[2] !== undefined) properties.set(match[1], match[2]);
  }
  return properties;
};

/**
 * Identity fields the way IPA takes them from udev: ID_* first, DM_* for device-mapper devices,
 * the short serial before the long one.
 */
const udevIdentity = (properties: ReadonlyMap<string, string>) => {
  const get = (key: string): string | null =>
    toText(properties.get(`ID_${key}`)) ?? toText(properties.get(`DM_${key}`));
  return {
    serial: get('SERIAL_SHORT') ?? get('SERIAL'),
    wwn: get('WWN'),
    wwn_with_extension: get('WWN_WITH_EXTENSION'),
    wwn_vendor_extension: get('WWN_VENDOR_EXTENSION'),
  };
};

// An NAA type 6 identifier of 128 bits is the WWN followed by udev's "vendor extension".
const splitWwn = (wwn: string | null): { wwn: string | null; extension: string | null } => {
  const match = wwn === null ? null : /^0x([0-9a-f]{16})([0-9a-f]{16})$/i.exec(wwn);
  if (!match) return { wwn, extension: null };
  return { wwn: `0x${match[1] ?? ''}`, extension: `0x${match[2] ?? ''}` };
};

/** Maps each kernel name to its /dev/disk/by-path link, the first one in sorted order. */
const readByPathLinks = async (paths: HardwarePaths): Promise<Map<string, string>> => {
  const directory = devPath(paths, 'disk', 'by-path');
  const entries = await listDirectory(directory);
  const targets = await Promise.all(entries.map((entry) => linkName(path.join(directory, entry))));
  const links = new Map<string, string>();
  entries.forEach((entry, index) => {
    const target = targets[index];
    if (target && !links.has(target)) links.set(target, path.join(directory, entry));
  });
  return links;
};

/** Where a disk's WWN and serial come from: udev's database (IPA's source) or lsblk alone. */
export type DiskIdentitySource = 'udev' | 'lsblk';

interface DiskFacts {
  /** The first entry of `<sys>/block/<k>/device/scsi_device/`, as IPA reads the HCTL. */
  hctl: string | null;
  /** `<sys>/class/block/<k>/device/vendor`, as IPA reads it. */
  vendor: string | null;
  udev: Map<string, string> | null;
}

const readDiskFacts = async (
  paths: HardwarePaths,
  device: LsblkDevice,
  identity: DiskIdentitySource,
): Promise<DiskFacts> => {
  const majMin = toText(device['maj:min']);
  const udevFile =
    identity === 'udev' && majMin !== null && /^\d+:\d+$/.test(majMin)
      ? runPath(paths, 'udev', 'data', `b${majMin}`)
      : null;
  const [scsiDevices, vendor, udevText] = await Promise.all([
    listDirectory(sysPath(paths, 'block', device.kname, 'device', 'scsi_device')),
    readAttribute(sysPath(paths, 'class', 'block', device.kname, 'device', 'vendor')),
    udevFile === null ? Promise.resolve(null) : readAttribute(udevFile),
  ]);
  return {
    hctl: scsiDevices[0] ?? null,
    vendor,
    udev: udevText === null ? null : parseUdevRecord(udevText),
  };
};

/**
 * One disk in IPA's shape. Sysfs and udev are IPA's sources; lsblk's columns (which come from the
 * same places when udev and sysfs are there) fill whatever they leave empty.
 */
export const toDiskInventory = (
  device: LsblkDevice,
  paths: HardwarePaths,
  byPath: ReadonlyMap<string, string>,
  facts: DiskFacts = { hctl: null, vendor: null, udev: null },
): DiskInventory => {
  const udev = facts.udev === null ? null : udevIdentity(facts.udev);
  const fromLsblk = toText(device.wwn);
  const split = splitWwn(fromLsblk);
  // lsblk's WWN is udev's ID_WWN_WITH_EXTENSION; without udev the extension is split off by shape.
  const wwns =
    udev !== null && (udev.wwn !== null || udev.wwn_with_extension !== null)
      ? { wwn: udev.wwn, full: udev.wwn_with_extension, extension: udev.wwn_vendor_extension }
      : { wwn: split.wwn, full: fromLsblk, extension: split.extension };
  return {
    name: devPath(paths, device.kname),
    model: toText(device.model),
    size: toNumber(device.size) ?? 0,
    rotational: toFlag(device.rota),
    wwn: wwns.wwn,
    serial: udev?.serial ?? toText(device.serial),
    vendor: facts.vendor ?? toText(device.vendor),
    wwn_with_extension: wwns.full,
    wwn_vendor_extension: wwns.extension,
    hctl: facts.hctl ?? toText(device.hctl),
    by_path: byPath.get(device.kname) ?? null,
    logical_sectors: toNumber(device['log-sec']),
    physical_sectors: toNumber(device['phy-sec']),
    tran: toText(device.tran),
  };
};

/** One `lsblk -J -b -O` for every disk; the rest is file reads, concurrently. */
export const collectDisks = async (
  paths: HardwarePaths,
  tools: Tools,
  identity: DiskIdentitySource = 'udev',
): Promise<DiskInventory[]> => {
  const [listing, byPath] = await Promise.all([
    tools.run('lsblk', ['-J', '-b', '-O'], { timeoutMs: LSBLK_TIMEOUT_MS }),
    readByPathLinks(paths),
  ]);
  const disks = selectDisks(parseLsblkOutput(listing.stdout));
  const facts = await Promise.all(disks.map((disk) => readDiskFacts(paths, disk, identity)));
  return disks.map((disk, index) => toDiskInventory(disk, paths, byPath, facts[index]));
};
