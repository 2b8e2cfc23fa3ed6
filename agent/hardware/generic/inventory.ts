import { readFile, readdir, readlink, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import * as si from 'systeminformation';
import type { ProgressUpdate } from '../../commands/definition.js';
import { validate } from '../../protocol/validate.js';
import { AgentError } from '../../util/errors.js';
import { runProcess as defaultRunProcess, type RunProcess } from '../../util/run-process.js';
import { devPath, procPath, sysPath, type HardwarePaths } from '../paths.js';

// The inventory keeps IPA's field names (snake_case) because ironic and inspector read it as is.

export interface CpuInventory {
  model_name: string | null;
  frequency: string | null;
  count: number;
  architecture: string;
  flags: string[];
  socket_count: number | null;
}

export interface MemoryInventory {
  total: number;
  physical_mb: number | null;
}

export interface DiskInventory {
  name: string;
  model: string | null;
  size: number;
  rotational: boolean;
  wwn: string | null;
  serial: string | null;
  vendor: string | null;
  wwn_with_extension: string | null;
  wwn_vendor_extension: string | null;
  hctl: string | null;
  by_path: string | null;
}

export interface InterfaceInventory {
  name: string;
  mac_address: string | null;
  ipv4_address: string | null;
  ipv6_address: string | null;
  has_carrier: boolean;
  lldp: null;
  vendor: string | null;
  product: string | null;
  client_id: null;
  biosdevname: null;
  speed_mbps: number | null;
}

export interface SystemVendorInventory {
  product_name: string | null;
  serial_number: string | null;
  manufacturer: string | null;
  firmware: { vendor: string | null; version: string | null; build_date: string | null };
}

export interface BootInventory {
  current_boot_mode: 'uefi' | 'bios';
  pxe_interface: string | null;
}

export interface Inventory {
  cpu: CpuInventory;
  memory: MemoryInventory;
  disks: DiskInventory[];
  interfaces: InterfaceInventory[];
  bmc_address: string;
  bmc_v6address: string;
  bmc_mac: string | null;
  system_vendor: SystemVendorInventory;
  boot: BootInventory;
  hostname: string;
  pci_devices: unknown[];
  bluefield: unknown[];
}

export type NetworkInterfacesSource = () => NodeJS.Dict<os.NetworkInterfaceInfo[]>;

export interface CollectInventoryOptions {
  paths: HardwarePaths;
  /** The raw BOOTIF value from the kernel command line, reported as boot.pxe_interface. */
  bootif: string | null;
  signal?: AbortSignal;
  progress?: (update: ProgressUpdate) => void;
  /** Tests replace the tools and the address table; the agent uses the real ones. */
  runProcess?: RunProcess;
  networkInterfaces?: NetworkInterfacesSource;
}

const LSBLK_TIMEOUT_MS = 60_000;

/* ---------------------------------------------------------------- sysfs helpers */

/** Sysfs attributes may be absent, unreadable or fail with EINVAL (carrier of a down link): all are null. */
const readAttribute = async (file: string): Promise<string | null> => {
  try {
    const text = (await readFile(file, 'utf8')).trim();
    return text === '' ? null : text;
  } catch {
    return null;
  }
};

const exists = async (file: string): Promise<boolean> => {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
};

const listDirectory = async (directory: string): Promise<string[]> => {
  try {
    return (await readdir(directory)).sort();
  } catch {
    return [];
  }
};

/* ---------------------------------------------------------------- disks (lsblk) */

// Old util-linux (before 2.33) prints every JSON value as a string, so both forms are accepted.
const LsblkFlag = Type.Union([Type.Boolean(), Type.Literal('0'), Type.Literal('1'), Type.Null()]);
const LsblkSize = Type.Union([
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
    size: LsblkSize,
    rm: Type.Optional(LsblkFlag),
    rota: Type.Optional(LsblkFlag),
    model: LsblkText,
    serial: LsblkText,
    vendor: LsblkText,
    wwn: LsblkText,
    hctl: LsblkText,
    children: Type.Optional(Type.Array(Self)),
  }),
);

export const LsblkOutput = Type.Object({ blockdevices: Type.Array(LsblkDevice) });
export type LsblkOutput = Static<typeof LsblkOutput>;
type LsblkDevice = Static<typeof LsblkDevice>;

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
const toSize = (value: number | string | null): number => (value === null ? 0 : Number(value));
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
    if (toSize(device.size) === 0) continue;
    if ((device.children ?? []).some((child) => child.type === 'mpath')) continue;
    selected.push(device);
  }
  return selected;
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
  const links = new Map<string, string>();
  for (const entry of await listDirectory(directory)) {
    try {
      const target = path.basename(await readlink(path.join(directory, entry)));
      if (!links.has(target)) links.set(target, path.join(directory, entry));
    } catch {
      // Not a link, or gone since the listing: nothing to map.
    }
  }
  return links;
};

export const toDiskInventory = (
  device: LsblkDevice,
  paths: HardwarePaths,
  byPath: ReadonlyMap<string, string>,
): DiskInventory => {
  const fullWwn = toText(device.wwn);
  const { wwn, extension } = splitWwn(fullWwn);
  return {
    name: devPath(paths, device.kname),
    model: toText(device.model),
    size: toSize(device.size),
    rotational: toFlag(device.rota),
    wwn,
    serial: toText(device.serial),
    vendor: toText(device.vendor),
    wwn_with_extension: fullWwn,
    wwn_vendor_extension: extension,
    hctl: toText(device.hctl),
    by_path: byPath.get(device.kname) ?? null,
  };
};

const collectDisks = async (
  paths: HardwarePaths,
  run: RunProcess,
  signal: AbortSignal | undefined,
): Promise<DiskInventory[]> => {
  const [listing, byPath] = await Promise.all([
    run('lsblk', ['-J', '-b', '-O'], { timeoutMs: LSBLK_TIMEOUT_MS, ...(signal ? { signal } : {}) }),
    readByPathLinks(paths),
  ]);
  return selectDisks(parseLsblkOutput(listing.stdout)).map((device) =>
    toDiskInventory(device, paths, byPath),
  );
};

/* ---------------------------------------------------------------- interfaces */

const firstAddress = (
  entries: os.NetworkInterfaceInfo[] | undefined,
  family: 'IPv4' | 'IPv6',
): string | null => entries?.find((entry) => entry.family === family)?.address ?? null;

const readInterface = async (
  paths: HardwarePaths,
  name: string,
  addresses: NodeJS.Dict<os.NetworkInterfaceInfo[]>,
): Promise<InterfaceInventory> => {
  const base = sysPath(paths, 'class', 'net', name);
  const [address, carrier, speed, vendor, product] = await Promise.all([
    readAttribute(path.join(base, 'address')),
    readAttribute(path.join(base, 'carrier')),
    readAttribute(path.join(base, 'speed')),
    readAttribute(path.join(base, 'device', 'vendor')),
    readAttribute(path.join(base, 'device', 'device')),
  ]);
  // A link that is down or has no PHY reports -1 or nothing at all.
  const speedValue = speed === null ? NaN : Number.parseInt(speed, 10);
  return {
    name,
    mac_address: address?.toLowerCase() ?? null,
    ipv4_address: firstAddress(addresses[name], 'IPv4'),
    ipv6_address: firstAddress(addresses[name], 'IPv6'),
    has_carrier: carrier === '1',
    lldp: null,
    vendor,
    product,
    client_id: null,
    biosdevname: null,
    speed_mbps: Number.isInteger(speedValue) && speedValue > 0 ? speedValue : null,
  };
};

/** Physical NICs only, as IPA does: the loopback and anything without a `device` link are left out. */
export const collectInterfaces = async (
  paths: HardwarePaths,
  networkInterfaces: NetworkInterfacesSource = os.networkInterfaces,
): Promise<InterfaceInventory[]> => {
  const names = await listDirectory(sysPath(paths, 'class', 'net'));
  const physical = await Promise.all(
    names.map(async (name) =>
      name !== 'lo' && (await exists(sysPath(paths, 'class', 'net', name, 'device'))) ? name : null,
    ),
  );
  const addresses = networkInterfaces();
  return Promise.all(
    physical
      .filter((name): name is string => name !== null)
      .map((name) => readInterface(paths, name, addresses)),
  );
};

/* ---------------------------------------------------------------- cpu, memory, system, boot */

// Without cpufreq (most VMs) the only clock figure is the "cpu MHz" line of /proc/cpuinfo.
const readCpuinfoMhz = async (paths: HardwarePaths): Promise<number> => {
  const cpuinfo = await readAttribute(procPath(paths, 'cpuinfo'));
  const match = cpuinfo === null ? null : /^cpu MHz\s*:\s*([0-9.]+)/m.exec(cpuinfo);
  return match ? Number.parseFloat(match[1] ?? '') || 0 : 0;
};

const collectCpu = async (paths: HardwarePaths): Promise<CpuInventory> => {
  const [cpu, cpuinfoMhz] = await Promise.all([si.cpu(), readCpuinfoMhz(paths)]);
  const cores = os.cpus();
  // lscpu's "CPU max MHz" when known, else the current clock, like IPA.
  const mhz = cpu.speedMax > 0 ? cpu.speedMax * 1000 : (cores[0]?.speed ?? 0) || cpuinfoMhz;
  return {
    model_name: toText(cores[0]?.model) ?? toText(`${cpu.manufacturer} ${cpu.brand}`),
    frequency: mhz > 0 ? mhz.toFixed(4) : null,
    count: cores.length,
    architecture: os.machine(),
    flags: cpu.flags.split(/\s+/).filter((flag) => flag !== ''),
    socket_count: cpu.processors > 0 ? cpu.processors : null,
  };
};

/**
 * Memory the kernel knows as physical blocks, in MiB. IPA sums DIMM sizes from lshw; without lshw
 * the memory block devices are the closest figure and, unlike MemTotal, include kernel reservations.
 */
const readPhysicalMemoryMb = async (paths: HardwarePaths): Promise<number | null> => {
  const base = sysPath(paths, 'devices', 'system', 'memory');
  const blockSize = await readAttribute(path.join(base, 'block_size_bytes'));
  if (blockSize === null || !/^[0-9a-f]+$/i.test(blockSize)) return null;
  const blocks = (await listDirectory(base)).filter((entry) => /^memory\d+$/.test(entry)).length;
  const bytes = Number.parseInt(blockSize, 16) * blocks;
  return bytes > 0 ? Math.round(bytes / (1024 * 1024)) : null;
};

const collectMemory = async (paths: HardwarePaths): Promise<MemoryInventory> => {
  const [memory, physicalMb] = await Promise.all([si.mem(), readPhysicalMemoryMb(paths)]);
  return { total: memory.total, physical_mb: physicalMb };
};

/**
 * The DMI table as the kernel exports it. Read here instead of si.system()/si.bios(), which run
 * synchronous child processes (blocking the event loop) and always look at the real /sys.
 */
const collectSystemVendor = async (paths: HardwarePaths): Promise<SystemVendorInventory> => {
  const dmi = (attribute: string): Promise<string | null> =>
    readAttribute(sysPath(paths, 'class', 'dmi', 'id', attribute));
  const [productName, serial, manufacturer, biosVendor, biosVersion, biosDate] = await Promise.all([
    dmi('product_name'),
    dmi('product_serial'),
    dmi('sys_vendor'),
    dmi('bios_vendor'),
    dmi('bios_version'),
    dmi('bios_date'),
  ]);
  return {
    product_name: productName,
    serial_number: serial,
    manufacturer,
    firmware: { vendor: biosVendor, version: biosVersion, build_date: biosDate },
  };
};

const collectBoot = async (paths: HardwarePaths, bootif: string | null): Promise<BootInventory> => ({
  current_boot_mode: (await exists(sysPath(paths, 'firmware', 'efi'))) ? 'uefi' : 'bios',
  pxe_interface: bootif,
});

/* ---------------------------------------------------------------- collector */

/**
 * Collects the inventory in IPA's shape. The parts run concurrently; each one reports a progress
 * step as it finishes. A part that fails fails the whole collection (INVENTORY_FAILED with the
 * cause) rather than sending a silently partial inventory that a scheduler would trust.
 */
export const collectInventory = async (options: CollectInventoryOptions): Promise<Inventory> => {
  const { paths, bootif, signal, progress } = options;
  const run = options.runProcess ?? defaultRunProcess;
  signal?.throwIfAborted();

  const total = 6;
  let done = 0;
  const part = async <T>(phase: string, collect: () => Promise<T>): Promise<T> => {
    let value: T;
    try {
      value = await collect();
    } catch (error) {
      signal?.throwIfAborted();
      if (AgentError.is(error) && error.code === 'INVENTORY_FAILED') throw error;
      const reason = error instanceof Error ? error.message : String(error);
      throw new AgentError('INVENTORY_FAILED', `collecting ${phase} failed: ${reason}`, {
        details: { part: phase },
        cause: error,
      });
    }
    done += 1;
    progress?.({ phase, done, total, unit: 'steps' });
    return value;
  };

  const [cpu, memory, disks, interfaces, system_vendor, boot] = await Promise.all([
    part('cpu', () => collectCpu(paths)),
    part('memory', () => collectMemory(paths)),
    part('disks', () => collectDisks(paths, run, signal)),
    part('interfaces', () => collectInterfaces(paths, options.networkInterfaces)),
    part('system', () => collectSystemVendor(paths)),
    part('boot', () => collectBoot(paths, bootif)),
  ]);
  signal?.throwIfAborted();

  return {
    cpu,
    memory,
    disks,
    interfaces,
    // No ipmitool in this ramdisk: these are IPA's "not found" values, which inspector treats as absent.
    bmc_address: '0.0.0.0',
    bmc_v6address: '::/0',
    bmc_mac: null,
    system_vendor,
    boot,
    hostname: os.hostname(),
    pci_devices: [],
    bluefield: [],
  };
};
