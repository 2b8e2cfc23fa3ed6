import os from 'node:os';
import { procPath, sysPath, type HardwarePaths } from '../../paths.js';
import { readAttribute } from './sysfs.js';
import type { SystemVendorInventory } from './types.js';

/**
 * The DMI identity as the kernel exports it, the fields lshw gives IPA. product_serial is
 * readable by root only; elsewhere it is null.
 */
export const collectSystemVendor = async (paths: HardwarePaths): Promise<SystemVendorInventory> => {
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

/** The kernel's host name (what socket.gethostname() returns to IPA); uname when procfs lacks it. */
export const readHostname = async (paths: HardwarePaths): Promise<string> =>
  (await readAttribute(procPath(paths, 'sys', 'kernel', 'hostname'))) ?? os.hostname();
