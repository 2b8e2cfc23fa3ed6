/**
 * The stages of writing an image, as contracts between small modules:
 *   target disk (hints, safety) -> fetch (retry, resume) -> hash (inline) -> decompress (by magic)
 *   -> aligned writer -> verify -> flush, re-read partitions -> result.
 * Each stage is its own module; none reaches back into an earlier one.
 */
import type { HardwarePaths } from '../hardware/paths.js';
import type { Logger } from '../util/logger.js';

// ---- target disk: agent/hardware/generic/disks/ ----

/** Root device hints with IPA's semantics: field -> expression (`"<=  100"`, `"s== foo"`, `"<in> a b"`, plain value). */
export type RootDeviceHints = Record<string, string | number | boolean>;

export interface TargetDisk {
  /** Path under the configured /dev root, e.g. `<dev>/sda`. */
  path: string;
  /** Kernel name, e.g. `sda`, `nvme0n1`, `loop3`. */
  kname: string;
  sizeBytes: number;
  logicalSectorBytes: number;
  physicalSectorBytes: number;
}

export interface SelectDiskOptions {
  paths: HardwarePaths;
  /** An explicit whole block device (a loop device only this way). */
  device?: string;
  hints?: RootDeviceHints;
  /** Refuse a disk smaller than this many bytes (the image size when known). */
  minSizeBytes?: number;
  /** Loop devices count as disks for hints and the default choice (bma-include-loop-disks). */
  includeLoops?: boolean;
  signal?: AbortSignal;
}

// selectTargetDisk(options: SelectDiskOptions): Promise<TargetDisk>
//   throws AgentError DEVICE_NOT_FOUND, NO_MATCHING_DISK, INVALID_DEVICE (not a whole block device),
//   DEVICE_BUSY (mounted, swap, RAID/LVM member, holders), DEVICE_READ_ONLY, DEVICE_TOO_SMALL,
//   INVALID_PARAMS (bad hints), before a byte is written.
// wipeSignatures(disk: TargetDisk, options: {paths, signal, logger}): Promise<{wiped: string[]}>
//   partition-table and filesystem signatures at both ends (wipefs --all --force, zeroing the
//   first and last MiB, which covers the GPT backup header), then a partition re-read.
// rereadPartitions(disk: TargetDisk, ...): Promise<void>   (blockdev --rereadpt, partprobe when present)

// ---- fetch: agent/image/fetch.ts ----

export interface FetchOptions {
  url: string;
  signal: AbortSignal;
  /** PEM CA bundle for https; null means the system store. */
  ca: Buffer | null;
  insecure: boolean;
  /** Attempts after the first for connection errors, 5xx, stalls and drops (default 9, like IPA). */
  retries?: number;
  /** First retry delay; doubles with full jitter up to retryMaxMs. */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** No byte for this long is a stall (default 60 s, IPA's connection timeout). */
  stallTimeoutMs?: number;
  /**
   * Hand out the body's chunks without a copy, as views into the receive buffers: each one is
   * valid only until the next one is asked for. For consumers that are done with a chunk (copied,
   * hashed, written) before they pull the next; anything kept longer must be copied.
   */
  borrowChunks?: boolean;
  logger: Logger;
}

export interface FetchStats {
  /** Bytes delivered to the consumer so far. */
  bytes: number;
  /** Range resumes after a dropped connection. */
  resumes: number;
  /** Attempts that failed before delivering anything. */
  retries: number;
}

/**
 * The body as one ordered byte stream. Drops are resumed with Range + If-Range (the ETag, else
 * Last-Modified); a body shorter or longer than promised is an error, never a success. When a
 * resume is impossible (no validator, the server ignores Range, the validator changed) the
 * iterator throws AgentError DOWNLOAD_RESTART_REQUIRED and the caller starts over from byte 0.
 */
export interface ImageStream {
  /** Content-Length of the whole entity, or null when the server did not say. */
  totalBytes: number | null;
  body: AsyncIterable<Buffer>;
  /**
   * The rest of the body (what `body` has not yielded yet) into `sink`, read straight into its
   * space where the response allows: no copy at all on the way. Resumes as `body` does; rejects
   * with the download's failure or the sink's. `onBytes` counts what the sink was given. Use
   * instead of iterating `body` any further.
   */
  pipeTo(sink: OutputSink, onBytes: (bytes: number) => void): Promise<void>;
  stats(): FetchStats;
}
// openImageStream(options: FetchOptions): Promise<ImageStream>
//   throws DOWNLOAD_FAILED (4xx: at once; 5xx, resets, stalls: after the retries), DOWNLOAD_TRUNCATED,
//   DOWNLOAD_TOO_LONG, INVALID_URL (not http/https, unparsable).
// fetchText(url, options): Promise<string>   small documents (checksum files), same TLS and retries.

// ---- integrity: agent/image/checksum.ts ----

export type HashAlgorithm = 'md5' | 'sha256' | 'sha512';

export interface ExpectedChecksum {
  algorithm: HashAlgorithm;
  hex: string;
  /** Where it came from, for the error message: "params", or the checksums file URL. */
  source: string;
}
// resolveChecksum(spec: string | {os_hash_algo, os_hash_value} | undefined, imageUrl, fetchText):
//   Promise<ExpectedChecksum | null>
//   spec forms: "algo:hex", a bare hex whose length names the algorithm (32/64/128), or the URL
//   of a sha256sum-style file matched by the image URL's file name. INVALID_PARAMS / CHECKSUM_NOT_FOUND.

// ---- formats: agent/image/decompress.ts, agent/image/qcow2.ts ----

export type ImageFormat =
  'raw' | 'gzip' | 'xz' | 'zstd' | 'bzip2' | 'qcow2' | 'vmdk' | 'vhdx' | 'vdi' | 'qed';
// detectFormat(head: Buffer): ImageFormat   (magic bytes; raw when nothing matches)

/**
 * Where a decoder's output goes: read straight into the space reserve() gives, then commit()ted,
 * or handed over by write() (copied). Each call returns undefined when it took the bytes at once,
 * else a promise to wait for before the next call (back-pressure). The block writer is one.
 */
export interface OutputSink {
  /** Free space to read into; null when there is none now (write() then waits for some). */
  reserve(): Buffer | null;
  /** `bytes` were put at the start of the space the last reserve() gave. */
  commit(bytes: number): Promise<void> | undefined;
  /** Bytes that arrived elsewhere; copied, so the piece may be reused at once. */
  write(piece: Buffer): Promise<void> | undefined;
}

// ---- writer: agent/image/block-writer.ts ----
// openBlockWriter(path, {direct: boolean, chunkBytes?: number}): Promise<BlockWriter>
export interface BlockWriter {
  /**
   * Queues bytes (copied: the chunk may be reused at once); undefined when they were taken without
   * waiting, else a promise that resolves when they are (back-pressure). Writes go out in large
   * aligned blocks.
   */
  write(chunk: Buffer): Promise<void> | undefined;
  /** Writes the tail (never padded past the image end), fsyncs, closes. */
  finish(): Promise<{ bytesWritten: number }>;
  /** Closes without flushing more; after a failure. */
  abort(): Promise<void>;
}
