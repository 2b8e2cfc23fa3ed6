/**
 * The image writer: large aligned writes, optionally O_DIRECT, with a bounded number of buffers.
 *
 * Incoming chunks (any size) are copied into `chunkBytes` staging buffers; a full buffer is
 * written with pwrite while the next one fills, so the disk and the producer (download, hash,
 * decompression) overlap. One aligned 8 MiB O_DIRECT write in flight beat fs.createWriteStream by
 * 1.25-2x here (perf-baseline.md section 4). The last, short piece goes through a second,
 * buffered descriptor, so nothing is ever padded past the end of the image.
 */
import { constants as fsConstants } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { AgentError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import type { BlockWriter, OutputSink } from './contracts.js';

export const DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024;
/** O_DIRECT needs buffers, offsets and lengths aligned to the logical block (512 or 4096). */
export const DIRECT_ALIGNMENT = 4096;
const WASM_PAGE_BYTES = 64 * 1024;
const NOTHING = Buffer.alloc(0);

export interface BlockWriterOptions {
  /** Open with O_DIRECT; falls back to buffered writes (with a warning) where it is refused. */
  direct: boolean;
  /** Size of each write; a multiple of 4096. */
  chunkBytes?: number;
  /**
   * Writes in flight while the next buffer fills (buffers = this + 1). Two keep the device busy
   * across the gap between one write's completion and the next submission: 1.1-1.25x one in
   * flight from memory on a --direct-io loop device here (bench/disk-write.ts), for 8 MiB more.
   */
  inFlight?: 1 | 2;
  /**
   * Open block devices with O_EXCL, which the kernel refuses (EBUSY) while the device is mounted
   * or claimed by RAID, LVM or another exclusive opener. Default true; regular files never use it.
   */
  exclusive?: boolean;
  logger?: Logger;
  /**
   * Called with each block in image order as it goes to the device (the tail included, in
   * finish()), the image's bytes exactly once. The block is not refilled until the returned
   * promise settles, so another thread may read it in place: the buffers are shared memory when
   * WebAssembly is available. A rejection fails the writer.
   */
  onBlock?: (block: Buffer) => Promise<void> | void;
}

export interface OpenedBlockWriter extends BlockWriter, OutputSink {
  readonly path: string;
  /** Whether O_DIRECT is in effect now (false after a fallback). */
  readonly direct: boolean;
  /** Bytes accepted so far (written or staged). */
  readonly bytesAccepted: number;
}

interface SystemError extends Error {
  code?: string;
  errno?: number;
}

const writeFailed = (
  path: string,
  what: string,
  error: unknown,
  extra: { offset?: number; length?: number } = {},
): AgentError => {
  const code = (error as SystemError | undefined)?.code ?? null;
  if (code === 'EBUSY') {
    // O_EXCL on a block device: the kernel refuses while it is mounted or claimed.
    return new AgentError(
      'DEVICE_BUSY',
      `${path} is in use (mounted, or held by RAID, LVM, device-mapper or another exclusive opener)`,
      { details: { device: path, errno: code }, cause: error },
    );
  }
  const reason =
    code === 'ENOSPC'
      ? 'no space left: the image runs past the end of the device'
      : error instanceof Error
        ? error.message
        : String(error);
  const at = extra.offset === undefined ? '' : ` at byte ${extra.offset}`;
  return new AgentError('WRITE_FAILED', `${what} ${path}${at} failed: ${reason}`, {
    details: { device: path, errno: code, offset: extra.offset ?? null, length: extra.length ?? null },
    cause: error,
  });
};

/**
 * Page-aligned buffers. Buffer.allocUnsafeSlow is malloc-backed (address + 16 here), which
 * O_DIRECT rejects with EINVAL; a WebAssembly.Memory is mmap-backed and so page-aligned, and each
 * slice at a multiple of `chunkBytes` stays aligned. A shared one (a SharedArrayBuffer) also lets
 * the hash worker read a block where it lies instead of getting a copy. Without WebAssembly
 * (--jitless) the plain buffers are used and the first write's EINVAL turns O_DIRECT off.
 */
// The ES lib this project compiles against has no WebAssembly types; only Memory is needed.
type WasmMemoryConstructor = new (descriptor: { initial: number; maximum: number; shared?: boolean }) => {
  buffer: ArrayBuffer | SharedArrayBuffer;
};
const WasmMemory = (globalThis as { WebAssembly?: { Memory: WasmMemoryConstructor } }).WebAssembly?.Memory;

type Memory = InstanceType<WasmMemoryConstructor>;

/**
 * The last writer's memory, kept for the next one. V8 does not count a shared WebAssembly.Memory
 * as external memory, so nothing prompts a collection to return it: measured, 12 writers one
 * after the other left 12 × 24 MiB resident. Image writes run one at a time, so one spare (used
 * for any writer that fits in it) bounds what the blocks ever hold.
 */
let spare: Memory | null = null;

const takeMemory = (bytes: number): Memory | null => {
  if (spare !== null && spare.buffer.byteLength >= bytes) {
    const memory = spare;
    spare = null;
    return memory;
  }
  for (const shared of [true, false]) {
    try {
      const pages = bytes / WASM_PAGE_BYTES;
      return new (WasmMemory as WasmMemoryConstructor)({ initial: pages, maximum: pages, shared });
    } catch {
      // Next the unshared memory, then unaligned buffers; the O_DIRECT probe notices those.
    }
  }
  return null;
};

const allocateBuffers = (
  count: number,
  chunkBytes: number,
  aligned: boolean,
): { buffers: Buffer[]; memory: Memory | null } => {
  const memory =
    aligned && WasmMemory !== undefined
      ? takeMemory(Math.ceil((count * chunkBytes) / WASM_PAGE_BYTES) * WASM_PAGE_BYTES)
      : null;
  const buffers = Array.from({ length: count }, (_, index) =>
    memory === null
      ? Buffer.allocUnsafeSlow(chunkBytes)
      : Buffer.from(memory.buffer, index * chunkBytes, chunkBytes),
  );
  return { buffers, memory };
};

/**
 * Copies `source` from `from` into `target` at `offset`, as much as fits; the count copied.
 * Buffer#copy is V8's TypedArray#set, which writes into shared memory (the blocks the hash worker
 * reads) with relaxed atomic stores, byte by byte when the two addresses are not equally aligned:
 * 2.4x slower than into plain memory here, and 40 % of the main thread in a raw write. fill() with
 * a pattern exactly as long as the range is a single memcpy in node.
 */
const copyInto = (target: Buffer, offset: number, source: Buffer, from: number): number => {
  const length = Math.min(source.length - from, target.length - offset);
  // An empty pattern would fill with zeros instead.
  if (length > 0) target.fill(source.subarray(from, from + length), offset, offset + length);
  return Math.max(0, length);
};

const openFlags = (direct: boolean, exclusive: boolean): number =>
  fsConstants.O_WRONLY | (direct ? fsConstants.O_DIRECT : 0) | (exclusive ? fsConstants.O_EXCL : 0);

class AlignedBlockWriter implements OpenedBlockWriter {
  private readonly free: Buffer[];
  private readonly memory: Memory | null;
  /** Writes and observers still reading a buffer: the memory is reused only once none are. */
  private reading = 0;
  private readonly pending: Array<Promise<void>> = [];
  private fill: Buffer | null = null;
  private fillLength = 0;
  /** Device offset where the buffer being filled will go. */
  private offset = 0;
  private accepted = 0;
  private probed = false;
  private failure: AgentError | null = null;
  private busy = false;
  private closed = false;

  constructor(
    readonly path: string,
    private handle: FileHandle,
    private directNow: boolean,
    private readonly exclusive: boolean,
    private readonly chunkBytes: number,
    private readonly inFlight: number,
    private readonly logger: Logger | undefined,
    private readonly onBlock: ((block: Buffer) => Promise<void> | void) | undefined,
  ) {
    ({ buffers: this.free, memory: this.memory } = allocateBuffers(inFlight + 1, chunkBytes, directNow));
  }

  get direct(): boolean {
    return this.directNow;
  }

  get bytesAccepted(): number {
    return this.accepted;
  }

  /**
   * Copies `chunk` in; undefined when that took no waiting (the common case: a free buffer and
   * room for another write in flight), else a promise. Callers that read a stream pause it only
   * for the promise, not after every piece.
   */
  write(chunk: Buffer): Promise<void> | undefined {
    this.enter();
    let position = 0;
    while (position < chunk.length) {
      if (this.fill === null) {
        const buffer = this.free.pop();
        if (buffer === undefined) return this.writeWaiting(chunk, position);
        this.fill = buffer;
        this.fillLength = 0;
      }
      const copied = copyInto(this.fill, this.fillLength, chunk, position);
      position += copied;
      this.fillLength += copied;
      this.accepted += copied;
      if (this.fillLength === this.chunkBytes) {
        if (!this.probed || this.pending.length >= this.inFlight) return this.writeWaiting(chunk, position);
        this.launch();
      }
    }
    this.busy = false;
    return undefined;
  }

  /**
   * The free space of the block being filled, for a reader to fill in place and then commit():
   * write() without its copy. Null while every block is in use or another call is running.
   */
  reserve(): Buffer | null {
    if (this.closed || this.failure !== null || this.busy) return null;
    if (this.fill === null) {
      const buffer = this.free.pop();
      if (buffer === undefined) return null;
      this.fill = buffer;
      this.fillLength = 0;
    }
    return this.fill.subarray(this.fillLength);
  }

  /** Takes `bytes` put at the start of the space reserve() gave; undefined or a promise, as write(). */
  commit(bytes: number): Promise<void> | undefined {
    this.enter();
    if (
      this.fill === null ||
      !Number.isInteger(bytes) ||
      bytes < 0 ||
      this.fillLength + bytes > this.chunkBytes
    ) {
      this.busy = false;
      throw new AgentError('INTERNAL', `${bytes} bytes committed to ${this.path} without the space reserved`);
    }
    this.fillLength += bytes;
    this.accepted += bytes;
    if (this.fillLength === this.chunkBytes) {
      if (!this.probed || this.pending.length >= this.inFlight) return this.writeWaiting(NOTHING, 0);
      this.launch();
    }
    this.busy = false;
    return undefined;
  }

  /** The rest of write() once it has to wait for a buffer or a write slot. */
  private async writeWaiting(chunk: Buffer, from: number): Promise<void> {
    try {
      if (this.fill !== null && this.fillLength === this.chunkBytes) await this.submit();
      let position = from;
      while (position < chunk.length) {
        if (this.fill === null) this.fill = await this.takeBuffer();
        const copied = copyInto(this.fill, this.fillLength, chunk, position);
        position += copied;
        this.fillLength += copied;
        this.accepted += copied;
        if (this.fillLength === this.chunkBytes) await this.submit();
      }
    } finally {
      this.busy = false;
    }
  }

  async finish(): Promise<{ bytesWritten: number }> {
    if (this.failure && !this.closed) {
      // A caller that goes straight to finish after a failed write still gets the device closed.
      await this.abort();
      throw this.failure;
    }
    this.enter();
    try {
      await this.drain();
      if (this.fill !== null && this.fillLength > 0) {
        const tail = this.fill.subarray(0, this.fillLength);
        const [observed, written] = await Promise.allSettled([
          this.observe(tail),
          this.writeTail(this.fill, this.fillLength),
        ]);
        if (written.status === 'rejected') throw written.reason;
        if (observed.status === 'rejected') throw observed.reason;
      }
      await this.sync(this.handle);
      await this.close();
      return { bytesWritten: this.accepted };
    } catch (error) {
      await this.abort();
      throw error;
    } finally {
      this.busy = false;
    }
  }

  async abort(): Promise<void> {
    // In-flight pwrites cannot be cancelled; wait for them so the descriptor closes cleanly.
    await Promise.allSettled(this.pending);
    await this.close();
  }

  private enter(): void {
    if (this.closed) throw new AgentError('INTERNAL', `the writer for ${this.path} is already closed`);
    if (this.busy)
      throw new AgentError(
        'INTERNAL',
        `the writer for ${this.path} was called again before the last call ended`,
      );
    if (this.failure) throw this.failure;
    this.busy = true;
  }

  private async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Let the buffers go with the descriptor, even if the caller keeps the writer object.
    this.free.length = 0;
    this.fill = null;
    await this.handle.close().catch(() => undefined);
    // An abort during a write() may leave a write or an observer still reading a buffer; that
    // memory is left to the collector rather than handed to the next writer.
    if (this.memory !== null && this.reading === 0) spare = this.memory;
  }

  /** A free buffer, waiting for the oldest write to finish when all are in use. */
  private async takeBuffer(): Promise<Buffer> {
    while (this.free.length === 0) {
      if (this.pending.length === 0)
        throw new AgentError('INTERNAL', 'the block writer lost track of a buffer');
      await this.pending[0];
      if (this.failure) throw this.failure;
    }
    this.fillLength = 0;
    return this.free.pop() as Buffer;
  }

  private async submit(): Promise<void> {
    if (!this.probed) {
      // The first write is also the O_DIRECT probe, so it runs alone.
      const buffer = this.fill as Buffer;
      const offset = this.offset;
      this.fill = null;
      this.offset += this.chunkBytes;
      this.probed = true;
      const observed = this.observe(buffer);
      try {
        await this.probeWrite(buffer, offset);
      } finally {
        await observed.catch(() => undefined);
      }
      if (this.failure) throw this.failure;
      this.free.push(buffer);
      return;
    }
    while (this.pending.length >= this.inFlight) {
      await this.pending[0];
      if (this.failure) throw this.failure;
    }
    this.launch();
  }

  /** Starts writing the full buffer being filled; a write slot must be free. */
  private launch(): void {
    const buffer = this.fill as Buffer;
    const offset = this.offset;
    this.fill = null;
    this.offset += this.chunkBytes;
    const observed = this.observe(buffer);
    const written = this.writeAll(this.handle, buffer, this.chunkBytes, offset).catch((error: unknown) => {
      this.failure ??= writeFailed(this.path, 'writing', error, { offset, length: this.chunkBytes });
    });
    // Back to the free list only once both the device and the observer are done with it.
    const write = Promise.all([written, observed.catch(() => undefined)]).then(() => {
      if (this.failure === null) this.free.push(buffer);
    });
    const tracked = write.finally(() => {
      this.pending.splice(this.pending.indexOf(tracked), 1);
    });
    this.pending.push(tracked);
  }

  /**
   * O_DIRECT can be accepted at open and still refused per write (EINVAL: the buffer or the
   * device's block size does not fit). Then the device is reopened buffered, with a warning, so
   * the image still lands; the final fsync makes it durable either way.
   */
  private async probeWrite(buffer: Buffer, offset: number): Promise<void> {
    try {
      await this.writeAll(this.handle, buffer, this.chunkBytes, offset);
      return;
    } catch (error) {
      if (!this.directNow || (error as SystemError).code !== 'EINVAL') {
        throw (this.failure = writeFailed(this.path, 'writing', error, { offset, length: this.chunkBytes }));
      }
    }
    this.logger?.warn(
      { device: this.path },
      'O_DIRECT writes were refused (EINVAL); writing through the page cache with an fsync at the end',
    );
    await this.handle.close().catch(() => undefined);
    this.directNow = false;
    try {
      this.handle = await open(this.path, openFlags(false, this.exclusive));
      await this.writeAll(this.handle, buffer, this.chunkBytes, offset);
    } catch (error) {
      throw (this.failure = writeFailed(this.path, 'writing', error, { offset, length: this.chunkBytes }));
    }
  }

  /** The observer's promise for `block`; its failure is recorded as the writer's. */
  private observe(block: Buffer): Promise<void> {
    if (this.onBlock === undefined) return Promise.resolve();
    this.reading += 1;
    const done = (): void => {
      this.reading -= 1;
    };
    const recordFailure = (error: unknown): never => {
      this.failure ??= AgentError.is(error)
        ? error
        : new AgentError('INTERNAL', `observing the block written to ${this.path} failed: ${String(error)}`, {
            cause: error,
          });
      throw this.failure;
    };
    let observed: Promise<void>;
    try {
      observed = Promise.resolve(this.onBlock(block));
    } catch (error) {
      observed = Promise.reject(error);
    }
    return observed.finally(done).catch(recordFailure);
  }

  private async drain(): Promise<void> {
    while (this.pending.length > 0) await this.pending[0];
    if (this.failure) throw this.failure;
  }

  /** pwrite until done: a short write continues where it stopped; zero bytes means no space. */
  private async writeAll(handle: FileHandle, buffer: Buffer, length: number, offset: number): Promise<void> {
    this.reading += 1;
    try {
      let done = 0;
      while (done < length) {
        const { bytesWritten } = await handle.write(buffer, done, length - done, offset + done);
        if (bytesWritten <= 0) {
          throw Object.assign(new Error('the device accepted no more bytes'), { code: 'ENOSPC' });
        }
        done += bytesWritten;
      }
    } finally {
      this.reading -= 1;
    }
  }

  /**
   * The short last piece through a buffered descriptor: O_DIRECT would need it padded to the
   * block size, which would overwrite bytes past the image end. Opened without O_EXCL: this
   * process already holds the exclusive claim through the main descriptor.
   */
  private async writeTail(buffer: Buffer, length: number): Promise<void> {
    const offset = this.offset;
    if (!this.directNow) {
      await this.writeAll(this.handle, buffer, length, offset).catch((error: unknown) => {
        throw writeFailed(this.path, 'writing', error, { offset, length });
      });
      return;
    }
    let tail: FileHandle | null = null;
    try {
      tail = await open(this.path, fsConstants.O_WRONLY);
      await this.writeAll(tail, buffer, length, offset);
      await tail.sync();
    } catch (error) {
      throw writeFailed(this.path, 'writing the last piece to', error, { offset, length });
    } finally {
      await tail?.close().catch(() => undefined);
    }
  }

  private async sync(handle: FileHandle): Promise<void> {
    try {
      await handle.sync();
    } catch (error) {
      throw writeFailed(this.path, 'flushing (fsync)', error);
    }
  }
}

/**
 * Opens `path` (a block device, or an existing regular file) for writing an image from byte 0.
 * Throws DEVICE_BUSY for a mounted or claimed block device (O_EXCL), WRITE_FAILED for other failures.
 */
export const openBlockWriter = async (
  path: string,
  options: BlockWriterOptions,
): Promise<OpenedBlockWriter> => {
  const {
    direct,
    chunkBytes = DEFAULT_CHUNK_BYTES,
    inFlight = 2,
    exclusive = true,
    logger,
    onBlock,
  } = options;
  if (!Number.isInteger(chunkBytes) || chunkBytes <= 0 || chunkBytes % DIRECT_ALIGNMENT !== 0) {
    throw new AgentError('INVALID_PARAMS', `chunkBytes must be a positive multiple of ${DIRECT_ALIGNMENT}`, {
      details: { chunkBytes },
    });
  }
  if (inFlight !== 1 && inFlight !== 2) {
    throw new AgentError('INVALID_PARAMS', 'inFlight must be 1 or 2', { details: { inFlight } });
  }
  let isBlock: boolean;
  try {
    isBlock = (await stat(path)).isBlockDevice();
  } catch (error) {
    throw writeFailed(path, 'opening', error);
  }
  const useExclusive = exclusive && isBlock;
  let handle: FileHandle;
  let directNow = direct;
  try {
    handle = await open(path, openFlags(direct, useExclusive));
  } catch (error) {
    // Filesystems such as tmpfs refuse O_DIRECT at open.
    if (!direct || (error as SystemError).code !== 'EINVAL') throw writeFailed(path, 'opening', error);
    logger?.warn({ device: path }, 'O_DIRECT is not supported here; writing through the page cache');
    directNow = false;
    try {
      handle = await open(path, openFlags(false, useExclusive));
    } catch (retryError) {
      throw writeFailed(path, 'opening', retryError);
    }
  }
  return new AlignedBlockWriter(path, handle, directNow, useExclusive, chunkBytes, inFlight, logger, onBlock);
};
