import { sysPath, type HardwarePaths } from '../../paths.js';
import { exists } from './sysfs.js';
import type { BootInventory } from './types.js';

/** UEFI when the kernel exposes EFI runtime services, as IPA decides; BOOTIF as given. */
export const collectBoot = async (paths: HardwarePaths, bootif: string | null): Promise<BootInventory> => ({
  current_boot_mode: (await exists(sysPath(paths, 'firmware', 'efi'))) ? 'uefi' : 'bios',
  pxe_interface: bootif,
});
