/**
 * The image hash, computed on a worker thread. On the main thread sha256 (about 1.4 GB/s) costs
 * more than receiving the bytes, and the two together cap image.write below what the network and
 * disk can do; on a second core the hash runs alongside. Two ways in:
 * - hashInPlace(block): a block of shared memory (the block writer's buffers) is read by the
 *   worker where it lies, no copy at all; the caller leaves it alone until the promise settles.
 * - update(chunk): chunks are copied into a few fixed batches, each batch is transferred to the
 *   worker (no copy) and comes back once hashed, to be refilled. With every batch out, `update`
 *   returns a promise: that is the back-pressure, so memory stays at `batches * batchBytes`.
 */
import { Worker } from 'node:worker_threads';
import { checkDigest, createHasher } from './checksum.js';
import type { ExpectedChecksum, HashAlgorithm } from './contracts.js';

export interface HashWorkerData {
  algorithm: HashAlgorithm;
}

export type HashRequest =
  | { type: 'batch'; buffer: ArrayBuffer; length: number }
  | { type: 'shared'; buffer: SharedArrayBuffer; offset: number; length: number }
  | { type: 'digest' };

export type HashResponse =
  { type: 'free'; buffer: ArrayBuffer } | { type: 'hashed' } | { type: 'digest'; hex: string };

export interface OffThreadHasherOptions {
  /** Bytes per batch sent to the worker; big enough that a message per batch is negligible. */
  batchBytes?: number;
  /** Batches allocated; at most this many are being filled or hashed at once. */
  batches?: number;
}

/** A hasher whose digest may be computed elsewhere: createHasher's interface, made async. */
export interface AsyncHasher {
  readonly algorithm: HashAlgorithm;
  /**
   * Hashes `chunk` (copied: the caller may reuse it at once). Returns a promise only when every
   * batch is with the worker; wait for it before the next update.
   */
  update(chunk: Buffer): Promise<void> | undefined;
  /**
   * Hashes `block` where it lies, after everything given before: the caller leaves it unchanged
   * until the promise settles. A block in shared memory (the block writer's buffers) reaches the
   * worker without a copy; any other is copied as update() does.
   */
  hashInPlace(block: Buffer): Promise<void>;
  /** The digest of everything so far; ends the hash (later updates throw) and the worker. */
  digestHex(): Promise<string>;
  /** Throws CHECKSUM_MISMATCH unless the digest equals the expected value; returns the digest. */
  verify(): Promise<string>;
  /** Stops the worker; safe to call at any time and more than once (every path must). */
  close(): Promise<void>;
}

const ENTRY = new URL('./hash-worker-entry.js', import.meta.url);

export const DEFAULT_BATCH_BYTES = 1024 * 1024;
/** Three: one filling, one being hashed, one on its way back; more bought nothing measurable. */
export const DEFAULT_BATCHES = 3;

/**
 * Like createHasher, off the main thread. Without an expected value it computes sha256, so a
 * result can report what was written.
 */
export const createOffThreadHasher = (
  expected: ExpectedChecksum | null,
  options: OffThreadHasherOptions = {},
): AsyncHasher => {
  const algorithm = expected?.algorithm ?? 'sha256';
  const batchBytes = options.batchBytes ?? DEFAULT_BATCH_BYTES;
  const data: HashWorkerData = { algorithm };
  // The worker only ever holds a Hash and a message at a time; small heaps keep its footprint
  // (most of it a second Node environment) near 12 MiB, within image.write's 150 MiB budget.
  const worker = new Worker(ENTRY, {
    workerData: data,
    resourceLimits: { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 16 },
  });
  // Allocated on first use: a writer that hashes its own shared blocks never needs them.
  const free: ArrayBuffer[] = [];
  let unallocated = Math.max(1, options.batches ?? DEFAULT_BATCHES);
  const inPlace: Array<{ resolve: () => void; reject: (error: Error) => void }> = [];
  let fill: Uint8Array | null = null;
  let filled = 0;
  let waiting: { resolve: () => void; reject: (error: Error) => void } | null = null;
  let digestWaiter: { resolve: (hex: string) => void; reject: (error: Error) => void } | null = null;
  let digest: Promise<string> | null = null;
  let failure: Error | null = null;
  let closed = false;

  const fail = (error: Error): void => {
    failure ??= error;
    waiting?.reject(failure);
    waiting = null;
    digestWaiter?.reject(failure);
    digestWaiter = null;
    for (const waiter of inPlace.splice(0)) waiter.reject(failure);
  };
  worker.on('message', (message: HashResponse) => {
    if (message.type === 'free') {
      free.push(message.buffer);
      const resume = waiting;
      waiting = null;
      resume?.resolve();
    } else if (message.type === 'hashed') {
      inPlace.shift()?.resolve();
    } else {
      digestWaiter?.resolve(message.hex);
      digestWaiter = null;
    }
  });
  worker.on('error', (error: Error) => fail(new Error(`the hash worker failed: ${error.message}`)));
  worker.on('exit', (code) => {
    closed = true;
    fail(new Error(`the hash worker exited (${code}) before the hash was finished`));
  });

  /** Sends the batch being filled, if it holds anything. */
  const send = (): void => {
    if (fill === null || filled === 0) return;
    const request: HashRequest = { type: 'batch', buffer: fill.buffer as ArrayBuffer, length: filled };
    worker.postMessage(request, [request.buffer]);
    fill = null;
    filled = 0;
  };
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    // Whatever waits is told now, not when (or whether) the worker gets to it.
    fail(new Error('the hash was closed'));
    await worker.terminate();
  };

  const update = (chunk: Buffer): Promise<void> | undefined => {
    if (digest !== null) throw new Error('the hash was already finished');
    if (failure !== null) throw failure;
    if (waiting !== null) throw new Error('update called before the previous one was done');
    let offset = 0;
    while (offset < chunk.length) {
      if (fill === null) {
        if (free.length === 0 && unallocated > 0) {
          unallocated -= 1;
          free.push(new ArrayBuffer(batchBytes));
        }
        const buffer = free.pop();
        if (buffer === undefined) {
          // Every batch is with the worker: wait for one, then take the rest of this chunk.
          const rest = chunk.subarray(offset);
          return new Promise<void>((resolve, reject) => {
            waiting = { resolve, reject };
          }).then(() => update(rest));
        }
        fill = new Uint8Array(buffer);
      }
      const taken = Math.min(chunk.length - offset, batchBytes - filled);
      fill.set(chunk.subarray(offset, offset + taken), filled);
      filled += taken;
      offset += taken;
      if (filled === batchBytes) send();
    }
    return undefined;
  };
  const hashInPlace = (block: Buffer): Promise<void> => {
    if (!(block.buffer instanceof SharedArrayBuffer)) return update(block) ?? Promise.resolve();
    if (digest !== null) throw new Error('the hash was already finished');
    if (failure !== null) return Promise.reject(failure);
    if (waiting !== null) throw new Error('hashInPlace called before the previous update was done');
    // Whatever update() gathered goes first: the worker hashes in message order.
    send();
    const request: HashRequest = {
      type: 'shared',
      buffer: block.buffer,
      offset: block.byteOffset,
      length: block.length,
    };
    worker.postMessage(request);
    return new Promise<void>((resolve, reject) => inPlace.push({ resolve, reject }));
  };
  const digestHex = (): Promise<string> => {
    digest ??= (async () => {
      if (failure !== null) throw failure;
      send();
      const hex = new Promise<string>((resolve, reject) => {
        digestWaiter = { resolve, reject };
      });
      worker.postMessage({ type: 'digest' } satisfies HashRequest);
      try {
        return await hex;
      } finally {
        await close();
      }
    })();
    return digest;
  };
  return {
    algorithm,
    update,
    hashInPlace,
    digestHex,
    verify: async () => checkDigest(expected, algorithm, await digestHex()),
    close,
  };
};

/**
 * createHasher behind the same interface: for compressed images, where the hash covers fewer
 * bytes and a worker would only compete with the decompressor process for the same cores
 * (measured: no gain for zstd on two cores, and 15 MiB more).
 */
export const createInlineHasher = (expected: ExpectedChecksum | null): AsyncHasher => {
  const hasher = createHasher(expected);
  return {
    algorithm: hasher.algorithm,
    update: (chunk) => {
      hasher.update(chunk);
      return undefined;
    },
    hashInPlace: async (block) => hasher.update(block),
    digestHex: async () => hasher.digestHex(),
    verify: async () => hasher.verify(),
    close: async () => undefined,
  };
};
