/**
 * The "root uuid" Ironic records for a whole-disk image: the 4-byte MBR disk signature at byte
 * 440, read little-endian and printed as `0x%08x`, exactly what IPA prints with hexdump. GPT disks
 * carry one too (in the protective MBR), usually zero.
 */
import { open } from 'node:fs/promises';
import { AgentError } from '../../../util/errors.js';

const SIGNATURE_OFFSET = 440;
const SIGNATURE_BYTES = 4;

const errnoOf = (error: unknown): string | undefined => {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
};

/**
 * Reads `length` bytes at `position` of a device or image file, or fails with DISK_READ_FAILED
 * (DEVICE_NOT_FOUND when it is not there): a short read is an error, never zeros.
 */
export const readDiskBytes = async (device: string, position: number, length: number): Promise<Buffer> => {
  let handle;
  try {
    handle = await open(device, 'r');
  } catch (error) {
    if (errnoOf(error) === 'ENOENT')
      throw new AgentError('DEVICE_NOT_FOUND', `${device} does not exist`, { details: { device } });
    throw new AgentError(
      'DISK_READ_FAILED',
      `cannot open ${device} for reading: ${errnoOf(error) ?? error}`,
      {
        details: { device, errno: errnoOf(error) ?? null },
        cause: error,
      },
    );
  }
  try {
    const buffer = Buffer.alloc(length);
    let filled = 0;
    while (filled < length) {
      const { bytesRead } = await handle.read(buffer, filled, length - filled, position + filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    if (filled < length)
      throw new AgentError(
        'DISK_READ_FAILED',
        `${device} ends at byte ${position + filled}, before the ${length} bytes at ${position} could be read`,
        { details: { device, position, length, read: filled } },
      );
    return buffer;
  } catch (error) {
    if (AgentError.is(error)) throw error;
    throw new AgentError('DISK_READ_FAILED', `reading ${device} failed: ${errnoOf(error) ?? error}`, {
      details: { device, position, length, errno: errnoOf(error) ?? null },
      cause: error,
    });
  } finally {
    await handle.close();
  }
};

/** Formats a disk signature the way Ironic stores it (`0x` and eight lower-case hex digits). */
export const formatDiskIdentifier = (signature: number): string =>
  `0x${(signature >>> 0).toString(16).padStart(8, '0')}`;

/** The disk identifier of a device (or image file), e.g. `0x53544942`. */
export const readDiskIdentifier = async (device: string): Promise<string> => {
  const bytes = await readDiskBytes(device, SIGNATURE_OFFSET, SIGNATURE_BYTES);
  return formatDiskIdentifier(bytes.readUInt32LE(0));
};
