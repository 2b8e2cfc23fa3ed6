import path from 'node:path';
import { procPath, sysPath, type HardwarePaths } from '../../paths.js';
import { listDirectory, readAttribute, readBinary } from './sysfs.js';
import type { MemoryInventory } from './types.js';

const SMBIOS_MEMORY_DEVICE = 17;
const SMBIOS_END_OF_TABLE = 127;

/**
 * The sizes in MiB of the installed memory devices (SMBIOS type 17) of a raw DMI table, as
 * `/sys/firmware/dmi/tables/DMI` holds it. Empty slots (size 0) and unknown sizes are left out.
 * A malformed table ends the walk; the sizes read up to there are kept.
 */
export const parseDimmSizesMb = (table: Buffer): number[] => {
  const sizes: number[] = [];
  let offset = 0;
  while (offset + 4 <= table.length) {
    const type = table[offset] ?? 0;
    const length = table[offset + 1] ?? 0;
    if (length < 4 || offset + length > table.length) break;
    // Size is the word at 0x0c (SMBIOS 2.1+): bit 15 set means KiB, 0x7fff means "see the
    // Extended Size dword at 0x1c" (SMBIOS 2.7+, devices of 32 GiB and more).
    if (type === SMBIOS_MEMORY_DEVICE && length >= 0x0e) {
      const size = table.readUInt16LE(offset + 0x0c);
      if (size === 0x7fff && length >= 0x20) sizes.push(table.readUInt32LE(offset + 0x1c) & 0x7fffffff);
      else if (size !== 0 && size !== 0xffff) sizes.push(size & 0x8000 ? (size & 0x7fff) / 1024 : size);
    }
    if (type === SMBIOS_END_OF_TABLE) break;
    // The formatted area is followed by its strings, ended by two NUL bytes.
    let next = offset + length;
    while (next + 1 < table.length && (table[next] !== 0 || table[next + 1] !== 0)) next += 1;
    offset = next + 2;
  }
  return sizes;
};

const readDmiMemoryMb = async (paths: HardwarePaths): Promise<number | null> => {
  // Readable by root only, which the agent is in the ramdisk.
  const table = await readBinary(sysPath(paths, 'firmware', 'dmi', 'tables', 'DMI'));
  if (table === null) return null;
  const total = parseDimmSizesMb(table).reduce((sum, size) => sum + size, 0);
  return total > 0 ? Math.round(total) : null;
};

/**
 * Memory the kernel knows as hot-pluggable blocks. Whole blocks are counted, so it can exceed the
 * installed size by a few blocks where RAM does not fill them; it is the fallback without SMBIOS.
 */
const readMemoryBlocksMb = async (paths: HardwarePaths): Promise<number | null> => {
  const base = sysPath(paths, 'devices', 'system', 'memory');
  const [blockSize, entries] = await Promise.all([
    readAttribute(path.join(base, 'block_size_bytes')),
    listDirectory(base),
  ]);
  if (blockSize === null || !/^[0-9a-f]+$/i.test(blockSize)) return null;
  const blocks = entries.filter((entry) => /^memory\d+$/.test(entry)).length;
  const bytes = Number.parseInt(blockSize, 16) * blocks;
  return bytes > 0 ? Math.round(bytes / (1024 * 1024)) : null;
};

const readMemTotal = async (paths: HardwarePaths): Promise<number | null> => {
  const meminfo = await readAttribute(procPath(paths, 'meminfo'));
  const match = meminfo === null ? null : /^MemTotal:\s*(\d+)\s*kB/m.exec(meminfo);
  return match ? Number.parseInt(match[1] ?? '', 10) * 1024 : null;
};

/**
 * total: MemTotal in bytes, what psutil gives IPA. physical_mb: IPA sums the memory banks lshw
 * finds, and lshw reads them from SMBIOS; the same table is read here directly. Machines without
 * SMBIOS (many VMs, some ARM boards) fall back to the memory blocks.
 */
export const collectMemory = async (paths: HardwarePaths): Promise<MemoryInventory> => {
  const [total, dmiMb, blocksMb] = await Promise.all([
    readMemTotal(paths),
    readDmiMemoryMb(paths),
    readMemoryBlocksMb(paths),
  ]);
  return { total, physical_mb: dmiMb ?? blocksMb };
};
