import os from 'node:os';
import path from 'node:path';
import { sysPath, type HardwarePaths } from '../../paths.js';
import {
  exists,
  isDirectory,
  linkName,
  listDirectory,
  readAttribute,
  resolvedPath,
  toInteger,
} from './sysfs.js';
import type { Tools } from './tools.js';
import type { InterfaceInventory } from './types.js';

export type NetworkInterfacesSource = () => NodeJS.Dict<os.NetworkInterfaceInfo[]>;

const VLAN_NAME = /^.+\.\d+$/;
const PCI_ADDRESS = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i;
const BIOSDEVNAME_TIMEOUT_MS = 10_000;

// IPoIB hardware addresses are 20 bytes: 4 of flags and QPN, 8 of subnet prefix, 8 of port GUID.
const INFINIBAND_ADDRESS_LENGTH = 59;
const INFINIBAND_CLIENT_ID_PREFIX = 'ff:00:00:00:00:00:02:00:00:02:c9:00:';

/**
 * The interfaces IPA lists: those with a `device` link (physical NICs), VLAN sub-interfaces
 * (`name.<digits>`) and bonds; never the loopback, bridges, veths or other virtual devices.
 */
export const listInterfaceNames = async (paths: HardwarePaths): Promise<string[]> => {
  const names = await listDirectory(sysPath(paths, 'class', 'net'));
  const kept = await Promise.all(
    names.map(async (name) => {
      if (name === 'lo') return null;
      if (VLAN_NAME.test(name)) return name;
      const base = sysPath(paths, 'class', 'net', name);
      const [device, bond] = await Promise.all([
        exists(path.join(base, 'device')),
        isDirectory(path.join(base, 'bonding')),
      ]);
      return device || bond ? name : null;
    }),
  );
  return kept.filter((name): name is string => name !== null);
};

/**
 * The PCI function behind a NIC: the device itself, or the PCI parent of a virtio device. USB
 * NICs and devices without a PCI ancestor have none.
 */
const pciAddressOf = (devicePath: string | null): string | null => {
  if (devicePath === null) return null;
  const parts = devicePath.split(path.sep).reverse();
  for (const part of parts) {
    if (PCI_ADDRESS.test(part)) return part.toLowerCase();
    if (/^usb\d+$/.test(part)) return null;
  }
  return null;
};

/** `biosdevname -d` describes every NIC at once: blocks with "BIOS device:" and "Kernel name:". */
export const parseBiosdevnameDump = (text: string): Map<string, string> => {
  const names = new Map<string, string>();
  for (const block of text.split(/\n[ \t]*\n/)) {
    const bios = /^BIOS device:[ \t]*(\S+)/m.exec(block)?.[1];
    const kernel = /^Kernel name:[ \t]*(\S+)/m.exec(block)?.[1];
    if (bios && kernel) names.set(kernel, bios);
  }
  return names;
};

/**
 * IPA runs `biosdevname -i IF` per interface; one `biosdevname -d` gives the same names for all.
 * Absent tool, a VM (biosdevname exits 4) or any failure: no names, as IPA reports then.
 */
const readBiosdevnames = async (tools: Tools): Promise<Map<string, string>> => {
  if (!(await tools.has('biosdevname'))) return new Map();
  try {
    const { stdout } = await tools.run('biosdevname', ['-d'], { timeoutMs: BIOSDEVNAME_TIMEOUT_MS });
    return parseBiosdevnameDump(stdout);
  } catch {
    tools.signal?.throwIfAborted();
    return new Map();
  }
};

const isLinkLocal = (address: string): boolean => /^fe[89ab][0-9a-f]:/i.test(address);

const pickAddresses = (
  entries: os.NetworkInterfaceInfo[] | undefined,
): { ipv4: string | null; ipv6: string | null } => {
  const v4 = entries?.find((entry) => entry.family === 'IPv4');
  const v6 = (entries ?? []).filter((entry) => entry.family === 'IPv6');
  // IPv6: the first global (or unique-local) address, and only without one the link-local
  // address, which is reported without its %scope suffix.
  const v6Chosen = v6.find((entry) => !isLinkLocal(entry.address)) ?? v6[0];
  return { ipv4: v4?.address ?? null, ipv6: v6Chosen?.address ?? null };
};

const readInterface = async (
  paths: HardwarePaths,
  name: string,
  addresses: NodeJS.Dict<os.NetworkInterfaceInfo[]>,
  biosdevnames: ReadonlyMap<string, string>,
): Promise<InterfaceInventory | null> => {
  const base = sysPath(paths, 'class', 'net', name);
  const [address, carrier, speed, vendor, product, devicePath, driver] = await Promise.all([
    readAttribute(path.join(base, 'address')),
    readAttribute(path.join(base, 'carrier')),
    readAttribute(path.join(base, 'speed')),
    readAttribute(path.join(base, 'device', 'vendor')),
    readAttribute(path.join(base, 'device', 'device')),
    resolvedPath(path.join(base, 'device')),
    linkName(path.join(base, 'device', 'driver')),
  ]);
  // IPA leaves out an interface whose MAC it cannot read.
  if (address === null) return null;
  let mac = address.toLowerCase();
  let clientId: string | null = null;
  if (mac.length === INFINIBAND_ADDRESS_LENGTH) {
    // IPA's translation: the MAC is the GUID without its middle two bytes; the DHCP client id
    // is a fixed prefix and the GUID.
    clientId = INFINIBAND_CLIENT_ID_PREFIX + mac.slice(36);
    mac = mac.slice(36, -14) + mac.slice(51);
  }
  const { ipv4, ipv6 } = pickAddresses(addresses[name]);
  // A link that is down or has no PHY reports -1 or nothing at all.
  const speedValue = toInteger(speed);
  return {
    name,
    mac_address: mac,
    ipv4_address: ipv4,
    ipv6_address: ipv6,
    has_carrier: carrier === '1',
    lldp: null,
    vendor,
    product,
    client_id: clientId,
    biosdevname: biosdevnames.get(name) ?? null,
    speed_mbps: speedValue !== null && speedValue > 0 ? speedValue : null,
    pci_address: pciAddressOf(devicePath),
    driver,
  };
};

export const collectInterfaces = async (
  paths: HardwarePaths,
  tools: Tools,
  networkInterfaces: NetworkInterfacesSource = os.networkInterfaces,
): Promise<InterfaceInventory[]> => {
  const [names, biosdevnames] = await Promise.all([listInterfaceNames(paths), readBiosdevnames(tools)]);
  // getifaddrs(3): one system call, no child process.
  const addresses = networkInterfaces();
  const interfaces = await Promise.all(
    names.map((name) => readInterface(paths, name, addresses, biosdevnames)),
  );
  return interfaces.filter((nic): nic is InterfaceInventory => nic !== null);
};
