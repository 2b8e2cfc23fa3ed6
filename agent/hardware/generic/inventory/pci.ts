import path from 'node:path';
import { sysPath, type HardwarePaths } from '../../paths.js';
import { linkName, listDirectory, readAttribute, stripHexPrefix } from './sysfs.js';
import type { PciDeviceInventory } from './types.js';

const PCI_ADDRESS = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i;

const readPciDevice = async (directory: string, address: string): Promise<PciDeviceInventory> => {
  const [vendor, device, pciClass, revision, driver] = await Promise.all([
    readAttribute(path.join(directory, 'vendor')),
    readAttribute(path.join(directory, 'device')),
    readAttribute(path.join(directory, 'class')),
    readAttribute(path.join(directory, 'revision')),
    linkName(path.join(directory, 'driver')),
  ]);
  return {
    vendor: stripHexPrefix(vendor),
    device: stripHexPrefix(device),
    class: stripHexPrefix(pciClass),
    address: address.toLowerCase(),
    driver,
    revision: stripHexPrefix(revision),
  };
};

/** Every PCI function under `<sys>/bus/pci/devices`, in address order. */
export const collectPciDevices = async (paths: HardwarePaths): Promise<PciDeviceInventory[]> => {
  const base = sysPath(paths, 'bus', 'pci', 'devices');
  const addresses = (await listDirectory(base)).filter((entry) => PCI_ADDRESS.test(entry));
  return Promise.all(addresses.map((address) => readPciDevice(path.join(base, address), address)));
};
