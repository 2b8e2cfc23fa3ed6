/**
 * Whether a disk (or an image file) starts with a partition table that holds partitions, read
 * from the bytes rather than from parted: after a whole-disk image is written, that is what
 * tells an image that boots from one that was never a disk image.
 */
import { AgentError } from '../../../util/errors.js';
import { readDiskBytes } from './disk-identifier.js';

export type PartitionTable =
  { kind: 'gpt'; sectorBytes: number; partitions: number } | { kind: 'mbr'; partitions: number };

const MBR_BYTES = 512;
const MBR_ENTRIES_OFFSET = 446;
const MBR_ENTRY_BYTES = 16;
const MBR_PROTECTIVE_TYPE = 0xee;
const GPT_SIGNATURE = 'EFI PART';
/** The header sits in LBA 1, whose offset depends on the logical sector size. */
const SECTOR_SIZES = [512, 4096] as const;
// Bounds a hostile or corrupt header before it sizes a read: real tables have 128 entries of 128 bytes.
const MAX_GPT_ENTRIES = 1024;
const MAX_GPT_ENTRY_BYTES = 4096;

/** A header read past the end of a small image is no header, not an error. */
const readOrNull = async (device: string, position: number, length: number): Promise<Buffer | null> => {
  try {
    return await readDiskBytes(device, position, length);
  } catch (error) {
    if (AgentError.is(error) && error.code === 'DISK_READ_FAILED' && error.details.read !== undefined)
      return null;
    throw error;
  }
};

const countGptEntries = async (
  device: string,
  header: Buffer,
  sectorBytes: number,
): Promise<number | null> => {
  const entriesLba = header.readBigUInt64LE(72);
  const count = header.readUInt32LE(80);
  const entryBytes = header.readUInt32LE(84);
  if (count === 0 || count > MAX_GPT_ENTRIES) return null;
  if (entryBytes < 128 || entryBytes > MAX_GPT_ENTRY_BYTES || entryBytes % 8 !== 0) return null;
  const position = entriesLba * BigInt(sectorBytes);
  if (position > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  const entries = await readOrNull(device, Number(position), count * entryBytes);
  if (!entries) return null;
  let used = 0;
  for (let index = 0; index < count; index += 1) {
    const type = entries.subarray(index * entryBytes, index * entryBytes + 16);
    if (type.some((byte) => byte !== 0)) used += 1;
  }
  return used;
};

/** The partition table at the start of `device`, or null when there is none (or it cannot be read as one). */
export const readPartitionTable = async (device: string): Promise<PartitionTable | null> => {
  const mbr = await readDiskBytes(device, 0, MBR_BYTES);
  for (const sectorBytes of SECTOR_SIZES) {
    const header = await readOrNull(device, sectorBytes, 92);
    if (!header || header.toString('latin1', 0, 8) !== GPT_SIGNATURE) continue;
    const partitions = await countGptEntries(device, header, sectorBytes);
    if (partitions !== null) return { kind: 'gpt', sectorBytes, partitions };
  }
  if (mbr[510] !== 0x55 || mbr[511] !== 0xaa) return null;
  const types = Array.from(
    { length: 4 },
    (_, index) => mbr[MBR_ENTRIES_OFFSET + index * MBR_ENTRY_BYTES + 4],
  );
  // A protective MBR whose GPT is gone describes nothing that can be booted.
  if (types.includes(MBR_PROTECTIVE_TYPE)) return null;
  return { kind: 'mbr', partitions: types.filter((type) => type !== 0).length };
};
