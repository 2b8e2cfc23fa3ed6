import type { ProgressUpdate } from '../commands/definition.js';
import { rereadPartitions, selectTargetDisk, wipeSignatures } from '../hardware/generic/disks/index.js';
import type { HardwarePaths } from '../hardware/paths.js';
import { AgentError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { openBlockWriter } from './block-writer.js';
import { resolveChecksum, type ChecksumSpec } from './checksum.js';
import type { ExpectedChecksum, ImageFormat, RootDeviceHints, TargetDisk } from './contracts.js';
import {
  COMPRESSED_FORMATS,
  openDecoder,
  detectFormat,
  FORMAT_PROBE_BYTES,
  QEMU_FORMATS,
} from './decompress.js';
import { fetchText, openImageStream, type FetchTextOptions } from './fetch.js';
import { withRestarts } from './restart.js';
import { createInlineHasher, createOffThreadHasher, type AsyncHasher } from './hash-worker.js';
import { checkMemoryFor, convertToDevice, stageImage } from './qcow2.js';
import { abortError } from '../util/tool-process.js';

export interface WriteImageRequest {
  url: string;
  checksum?: ChecksumSpec;
  disk_format?: 'raw' | 'qcow2' | 'auto';
  device?: string;
  root_device_hints?: RootDeviceHints;
}

export interface WriteImageDeps {
  paths: HardwarePaths;
  ca: Buffer | null;
  insecure: boolean;
  logger: Logger;
  /** Where images that cannot be streamed are staged: a tmpfs in the ramdisk. */
  stagingDir: string;
  direct?: boolean;
  retries?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  stallTimeoutMs?: number;
  /** Loop devices count as disks (bma-include-loop-disks). */
  includeLoops?: boolean;
}

export interface WriteImageResult {
  device: string;
  bytes_written: number;
  bytes_downloaded: number;
  format: ImageFormat;
  /** `algo:hex` of the bytes as downloaded, in the form the params take. */
  checksum: string;
  /** False when no checksum was given: then `checksum` is what was written, unchecked. */
  checksum_verified: boolean;
  seconds: number;
  rate_bytes_per_s: number;
  resumes: number;
  restarts: number;
}

interface Context {
  signal: AbortSignal;
  progress: (update: ProgressUpdate) => void;
}

// A server that cannot resume makes the whole write start over; more than this is not a blip.

/**
 * Reads chunks until `FORMAT_PROBE_BYTES` are known, then hands back the head and an iterator that
 * yields those chunks first. Only they are copied (the body's chunks are borrowed, and these are
 * kept past the next pull); the rest of the stream passes through as it comes.
 */
const peek = async (
  body: AsyncIterable<Buffer>,
): Promise<{
  head: Buffer;
  chunks: AsyncIterable<Buffer>;
  /** The chunks read to find the head, for a consumer that takes the rest by other means. */
  taken: () => Buffer[];
  close: () => Promise<void>;
}> => {
  const iterator = body[Symbol.asyncIterator]();
  const buffered: Buffer[] = [];
  let length = 0;
  let done = false;
  while (length < FORMAT_PROBE_BYTES) {
    const next = await iterator.next();
    if (next.done) {
      done = true;
      break;
    }
    buffered.push(next.value);
    length += next.value.length;
  }
  const kept = buffered.map((chunk) => Buffer.from(chunk));
  buffered.length = 0;
  const head = Buffer.concat(kept, length).subarray(0, FORMAT_PROBE_BYTES);
  // Returning the body's iterator is what releases the download's socket (its generator's
  // finally). A consumer that stops early (a failed pipeline, a refusal before the first write)
  // must reach it, or the connection stays open and keeps the process alive for minutes.
  const close = async (): Promise<void> => {
    if (done) return;
    done = true;
    await iterator.return?.();
  };
  async function* chunks(): AsyncGenerator<Buffer> {
    try {
      yield* kept;
      kept.length = 0;
      if (done) return;
      while (true) {
        const next = await iterator.next();
        if (next.done) {
          done = true;
          return;
        }
        yield next.value;
      }
    } finally {
      await close();
    }
  }
  const taken = (): Buffer[] => kept.splice(0);
  return { head, chunks: chunks(), taken, close };
};

/**
 * image.write: the root disk chosen by hints -> fetch (resume) -> hash -> decompress by magic ->
 * aligned writer -> verify -> flush and re-read partitions. Once a byte may have reached the disk,
 * any failure wipes the signatures at both ends so nothing half-written can boot.
 *
 * A raw image's bytes are read from the socket straight into the writer's aligned blocks, which
 * the hash worker reads where they lie: no copy in user space. A compressed image's are copied
 * once, into the decompressor's input; the program's output is read straight into the blocks. No
 * stream stage sits in between (bench/README.md, "image-write").
 */
export const writeImage = async (
  request: WriteImageRequest,
  deps: WriteImageDeps,
  context: Context,
): Promise<WriteImageResult> => {
  const { logger } = deps;
  const { signal } = context;
  if (request.device && request.root_device_hints) {
    throw new AgentError('INVALID_PARAMS', 'give either device or root_device_hints, not both', {
      details: { field: 'device' },
    });
  }
  const started = performance.now();
  const fetchOptions: FetchTextOptions = {
    ca: deps.ca,
    insecure: deps.insecure,
    logger,
    signal,
    ...(deps.retries === undefined ? {} : { retries: deps.retries }),
    ...(deps.retryBaseMs === undefined ? {} : { retryBaseMs: deps.retryBaseMs }),
    ...(deps.retryMaxMs === undefined ? {} : { retryMaxMs: deps.retryMaxMs }),
    ...(deps.stallTimeoutMs === undefined ? {} : { stallTimeoutMs: deps.stallTimeoutMs }),
  };
  // The checksum is settled first: a bad spec or a missing checksums entry fails before any disk I/O.
  const expected = await resolveChecksum(request.checksum, request.url, (url) =>
    fetchText(url, fetchOptions),
  );
  if (!expected)
    logger.warn(
      { url: request.url },
      'no checksum given: the image is written unverified (its sha256 is reported)',
    );
  const disk = await selectTargetDisk({
    paths: deps.paths,
    ...(request.device ? { device: request.device } : {}),
    ...(request.root_device_hints ? { hints: request.root_device_hints } : {}),
    includeLoops: deps.includeLoops ?? false,
    signal,
  });
  logger.info({ device: disk.path, size: disk.sizeBytes, url: request.url }, 'writing image');

  let touched = false;
  try {
    return await withRestarts(
      async (restarts) => {
        const outcome = await writeOnce(request, deps, context, disk, expected, fetchOptions, () => {
          touched = true;
        });
        await rereadPartitions(disk, { paths: deps.paths, signal, logger });
        const seconds = (performance.now() - started) / 1000;
        return {
          device: disk.path,
          ...outcome,
          seconds: Math.round(seconds * 1000) / 1000,
          rate_bytes_per_s: Math.round(outcome.bytes_written / Math.max(seconds, 0.001)),
          restarts,
        };
      },
      { signal, logger, message: 'the server cannot resume: starting the image over from byte 0' },
    );
  } catch (caught) {
    // A pipeline stopped by the signal rejects with a bare AbortError; callers (and the qcow2
    // path, which already does this) expect CANCELLED.
    const error = signal.aborted && !AgentError.is(caught) ? abortError(signal, 'the image write') : caught;
    if (touched) {
      logger.error(
        { device: disk.path, err: error },
        'image write failed after writing began: wiping signatures at both ends',
      );
      try {
        const { wiped } = await wipeSignatures(disk, {
          paths: deps.paths,
          signal: AbortSignal.timeout(120_000),
          logger,
        });
        if (AgentError.is(error)) error.details.wiped = wiped;
      } catch (wipeError) {
        logger.error(
          { err: wipeError, device: disk.path },
          'could not wipe the half-written disk: it may hold a partial image',
        );
        if (AgentError.is(error))
          error.details.wipe_error = wipeError instanceof Error ? wipeError.message : String(wipeError);
      }
    }
    throw error;
  }
};

type Outcome = Omit<WriteImageResult, 'device' | 'seconds' | 'rate_bytes_per_s' | 'restarts'>;

const writeOnce = async (
  request: WriteImageRequest,
  deps: WriteImageDeps,
  context: Context,
  disk: TargetDisk,
  expected: ExpectedChecksum | null,
  fetchOptions: FetchTextOptions,
  markTouched: () => void,
): Promise<Outcome> => {
  const { signal } = context;
  // Every consumer below is done with a chunk before it pulls the next (peek copies what it keeps).
  const stream = await openImageStream({ ...fetchOptions, url: request.url, borrowChunks: true });
  const { head, chunks, taken, close } = await peek(stream.body);
  const format = request.disk_format === 'raw' ? 'raw' : detectFormat(head);
  // A raw or qemu image is hashed on a worker, alongside the receive (raw images straight from
  // the writer's blocks). A compressed image is hashed here while its decompressor, which takes
  // the other core, works on the same chunk: a worker measured no faster and costs more CPU and
  // about 14 MiB (bench/README.md, "image-write").
  const hasher = COMPRESSED_FORMATS.has(format)
    ? createInlineHasher(expected)
    : createOffThreadHasher(expected);
  // Also closes the connection (and stops the hash worker) when the write is refused or fails
  // before the body was read.
  try {
    // Only a raw image's size is known before writing; compressed ones are checked as they expand
    // (the writer refuses to pass the end) and qemu formats by their virtual size.
    if (format === 'raw' && stream.totalBytes !== null && stream.totalBytes > disk.sizeBytes) {
      throw new AgentError(
        'DEVICE_TOO_SMALL',
        `the image is ${stream.totalBytes} bytes and ${disk.path} holds only ${disk.sizeBytes}: choose a larger disk`,
        {
          details: { image_bytes: stream.totalBytes, device_bytes: disk.sizeBytes, device: disk.path },
        },
      );
    }
    if (request.disk_format === 'qcow2' && format !== 'qcow2') {
      throw new AgentError('UNSUPPORTED_FORMAT', `disk_format qcow2 was given but the image is ${format}`, {
        details: { format },
      });
    }
    const total = stream.totalBytes;
    let downloaded = 0;
    let lastTick = performance.now();
    let lastBytes = 0;
    let rate: number | null = null;
    const report = (phase: string): void => {
      const now = performance.now();
      if (now - lastTick >= 500) {
        rate = Math.round(((downloaded - lastBytes) * 1000) / (now - lastTick));
        lastTick = now;
        lastBytes = downloaded;
      }
      context.progress({ phase, done: downloaded, total, unit: 'bytes', rate, message: format });
    };
    async function* hashed(): AsyncGenerator<Buffer> {
      for await (const chunk of chunks) {
        const full = hasher.update(chunk);
        if (full) await full;
        downloaded += chunk.length;
        report(QEMU_FORMATS.has(format) ? 'download' : 'write');
        yield chunk;
      }
    }

    let bytesWritten: number;
    let digest: string;
    if (QEMU_FORMATS.has(format)) {
      // qemu-img needs the whole file: staged in RAM (tmpfs), verified, and only then converted.
      const budget = await checkMemoryFor(total, { paths: deps.paths, stagingDir: deps.stagingDir });
      const staged = await stageImage({ chunks: hashed(), dir: deps.stagingDir, budget, signal });
      try {
        digest = await finishHash(hasher, expected);
        markTouched();
        const converted = await convertToDevice({
          source: staged.file,
          format,
          device: disk.path,
          deviceBytes: disk.sizeBytes,
          signal,
          logger: deps.logger,
          progress: context.progress,
          paths: deps.paths,
        });
        bytesWritten = converted.bytesWritten;
      } finally {
        await staged.remove();
      }
    } else {
      const writer = await openBlockWriter(disk.path, {
        direct: deps.direct ?? true,
        // A raw image's bytes are the download's: the hash worker reads each block from the
        // writer's own (shared) buffers, with no copy of its own.
        ...(format === 'raw' ? { onBlock: (block: Buffer) => hasher.hashInPlace(block) } : {}),
      });
      markTouched();
      let finished = false;
      try {
        if (format === 'raw') {
          for (const chunk of taken()) {
            downloaded += chunk.length;
            const accepted = writer.write(chunk);
            if (accepted) await accepted;
          }
          // The rest is read from the socket straight into the writer's blocks.
          await stream.pipeTo(writer, (bytes) => {
            downloaded += bytes;
            report('write');
          });
          ({ bytesWritten } = await writer.finish());
          finished = true;
          digest = await finishHash(hasher, expected);
        } else {
          // The decompressor's output is read straight into the writer's blocks.
          const decoder = await openDecoder(format, { signal, sink: writer });
          try {
            for await (const chunk of chunks) {
              downloaded += chunk.length;
              report('write');
              // The decoder starts on the chunk while it is hashed here (both only read it).
              const fed = decoder.write(chunk);
              fed.catch(() => undefined);
              const full = hasher.update(chunk);
              if (full) await full;
              await fed;
            }
            decoder.end();
            await decoder.done;
          } catch (error) {
            await decoder.destroy(error instanceof Error ? error : new Error(String(error)));
            throw error;
          }
          digest = await finishHash(hasher, expected);
          ({ bytesWritten } = await writer.finish());
          finished = true;
        }
      } finally {
        if (!finished) await writer.abort().catch(() => undefined);
      }
    }
    const stats = stream.stats();
    return {
      bytes_written: bytesWritten,
      bytes_downloaded: downloaded,
      format,
      checksum: `${hasher.algorithm}:${digest}`,
      checksum_verified: expected !== null,
      resumes: stats.resumes,
    };
  } finally {
    await hasher.close().catch(() => undefined);
    await close().catch(() => undefined);
  }
};

/** Ends the hash: a mismatch throws CHECKSUM_MISMATCH before the image is finished or converted. */
const finishHash = (hasher: AsyncHasher, expected: ExpectedChecksum | null): Promise<string> =>
  expected ? hasher.verify() : hasher.digestHex();
