/**
 * Zeroing a disk with our own writes, where blkdiscard is missing or refuses: large aligned
 * writes of one zero block, O_DIRECT so a whole disk does not pass through the page cache, and
 * an fsync at the end so the zeros are past the disk's own cache. The descriptor is exclusive
 * (O_EXCL): a mount that races the erase is refused by the kernel rather than overwritten.
 */
import { constants as fsConstants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { AgentError } from '../../../util/errors.js';
import type { Logger } from '../../../util/logger.js';

export const ZERO_WRITE_BYTES = 8 * 1024 * 1024;
const WASM_PAGE_BYTES = 64 * 1024;

export interface ZeroWriteOptions {
  /** First byte to zero; a multiple of the logical sector size. */
  from: number;
  /** One past the last byte to zero: the disk's size. */
  to: number;
  signal?: AbortSignal;
  logger?: Logger;
  /** Called with the byte offset reached so far. */
  onProgress?: (offset: number) => void;
  /** O_DIRECT (the default); falls back to buffered writes where the device refuses it. */
  direct?: boolean;
}

interface SystemError extends Error {
  code?: string;
}

type WasmMemoryConstructor = new (descriptor: { initial: number; maximum: number }) => {
  buffer: ArrayBuffer;
};
const WasmMemory = (globalThis as { WebAssembly?: { Memory: WasmMemoryConstructor } }).WebAssembly?.Memory;

let zeroBlock: { buffer: Buffer; aligned: boolean } | null = null;

/**
 * One zero block shared by every write: it is only ever read. A WebAssembly.Memory is mmap'd,
 * so page-aligned (what O_DIRECT needs) and zero; a malloc'd Buffer is not aligned.
 */
const zeros = (): { buffer: Buffer; aligned: boolean } => {
  if (zeroBlock !== null) return zeroBlock;
  try {
    if (WasmMemory === undefined) throw new Error('no WebAssembly');
    const pages = ZERO_WRITE_BYTES / WASM_PAGE_BYTES;
    const memory = new WasmMemory({ initial: pages, maximum: pages });
    zeroBlock = { buffer: Buffer.from(memory.buffer), aligned: true };
  } catch {
    zeroBlock = { buffer: Buffer.alloc(ZERO_WRITE_BYTES), aligned: false };
  }
  return zeroBlock;
};

const flagsFor = (direct: boolean): number =>
  fsConstants.O_WRONLY | fsConstants.O_EXCL | (direct ? fsConstants.O_DIRECT : 0);

const failed = (device: string, what: string, error: unknown, offset: number | null): AgentError => {
  const code = (error as SystemError | undefined)?.code ?? null;
  if (code === 'EBUSY')
    return new AgentError(
      'DEVICE_BUSY',
      `${device} is in use (mounted, or held by RAID, LVM, device-mapper or another exclusive opener) and was not written`,
      { details: { device, reason: 'exclusive_open', errno: code }, cause: error },
    );
  const reason =
    code === 'ENOSPC'
      ? 'the device accepted no more bytes (it is smaller than its size says)'
      : String((error as Error).message ?? error);
  return new AgentError(
    'ERASE_FAILED',
    `${what} ${device}${offset === null ? '' : ` at byte ${offset}`} failed: ${reason}`,
    {
      details: { device, method: 'write', errno: code, offset },
      cause: error,
    },
  );
};

/**
 * pwrite until `length` bytes are down; a short write continues, none at all is ENOSPC.
 * `cursor.at` follows the bytes that landed, so a failure names the byte it stopped at.
 */
const writeFully = async (
  handle: FileHandle,
  buffer: Buffer,
  length: number,
  cursor: { at: number },
): Promise<void> => {
  let done = 0;
  while (done < length) {
    const { bytesWritten } = await handle.write(buffer, done, length - done, cursor.at);
    if (bytesWritten <= 0) throw Object.assign(new Error('short write'), { code: 'ENOSPC' });
    done += bytesWritten;
    cursor.at += bytesWritten;
  }
};

/** Zeroes [from, to) of `device` and fsyncs it; returns the bytes written. */
export const writeZeros = async (device: string, options: ZeroWriteOptions): Promise<number> => {
  const { from, to, signal } = options;
  if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || from < 0 || to < from || from % 512 !== 0)
    throw new AgentError('INTERNAL', `cannot zero the bytes [${from}, ${to}) of ${device}`);
  signal?.throwIfAborted();
  const block = zeros();
  let direct = (options.direct ?? true) && block.aligned;
  let handle: FileHandle;
  try {
    handle = await open(device, flagsFor(direct));
  } catch (error) {
    if (!direct || (error as SystemError).code !== 'EINVAL') throw failed(device, 'opening', error, null);
    direct = false;
    handle = await open(device, flagsFor(false)).catch((retry: unknown) => {
      throw failed(device, 'opening', retry, null);
    });
  }
  const cursor = { at: from };
  try {
    while (cursor.at < to) {
      signal?.throwIfAborted();
      const length = Math.min(block.buffer.length, to - cursor.at);
      const start = cursor.at;
      try {
        await writeFully(handle, block.buffer, length, cursor);
      } catch (error) {
        // O_DIRECT may be accepted at open and refused per write (alignment); then buffered.
        if (!direct || (error as SystemError).code !== 'EINVAL')
          throw failed(device, 'writing zeros to', error, cursor.at);
        cursor.at = start;
        options.logger?.warn(
          { device },
          'O_DIRECT writes were refused (EINVAL); zeroing through the page cache',
        );
        direct = false;
        await handle.close().catch(() => undefined);
        handle = await open(device, flagsFor(false)).catch((retry: unknown) => {
          throw failed(device, 'opening', retry, null);
        });
        continue;
      }
      options.onProgress?.(cursor.at);
    }
    try {
      await handle.sync();
    } catch (error) {
      throw failed(device, 'flushing (fsync)', error, null);
    }
    return cursor.at - from;
  } finally {
    await handle.close().catch(() => undefined);
  }
};
