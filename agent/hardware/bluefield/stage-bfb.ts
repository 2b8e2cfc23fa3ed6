/**
 * Brings a BFB into the staging area (a tmpfs in the ramdisk) in one pass: download (resumed on
 * drops), checksum and whole-file BFB validation over the same bytes as they are written. Only a
 * file that passed all three gets its final name, so the rshim never sees a partial or foreign
 * file: the push reads a file that is known good from its first byte to its last.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm, statfs } from 'node:fs/promises';
import path from 'node:path';
import type { ProgressUpdate } from '../../commands/definition.js';
import { createHasher, resolveChecksum, type ChecksumSpec } from '../../image/checksum.js';
import { fetchText, openImageStream, type FetchTextOptions } from '../../image/fetch.js';
import { withRestarts } from '../../image/restart.js';
import { AgentError } from '../../util/errors.js';
import type { BfbSummary } from './contracts.js';

export interface StreamValidator {
  push(chunk: Buffer): void;
  end(): BfbSummary;
}

export interface StagedBfb {
  file: string;
  url: string;
  bytes: number;
  /** `algo:hex` of the downloaded bytes, in the form the params take. */
  checksum: string;
  checksum_verified: boolean;
  summary: BfbSummary;
  seconds: number;
}

export interface StageBfbDeps {
  stagingDir: string;
  fetch: Omit<FetchTextOptions, 'signal'>;
  createValidator: () => StreamValidator;
}

// A server that cannot resume makes the download start over; more than this is not a blip.
// What else lives on the tmpfs (the bf.cfg, logs) needs room beside the BFB.
const HEADROOM_BYTES = 16 * 1024 * 1024;

const checkRoom = async (dir: string, bytes: number | null): Promise<void> => {
  if (bytes === null) return;
  const fs = await statfs(dir);
  const free = fs.bavail * fs.bsize;
  if (free < bytes + HEADROOM_BYTES) {
    throw new AgentError(
      'INSUFFICIENT_MEMORY',
      `the BFB is ${bytes} bytes but the staging area ${dir} has ${free} free; give the ramdisk more memory or point bma-staging-dir at a larger tmpfs`,
      { details: { bytes, free, staging_dir: dir } },
    );
  }
};

export const stageBfb = async (
  request: { url: string; checksum?: ChecksumSpec },
  deps: StageBfbDeps,
  context: { signal: AbortSignal; progress: (update: ProgressUpdate) => void },
): Promise<StagedBfb> => {
  const { signal } = context;
  const started = performance.now();
  const fetchOptions: FetchTextOptions = { ...deps.fetch, signal };
  const expected = await resolveChecksum(request.checksum, request.url, (url) =>
    fetchText(url, fetchOptions),
  );
  if (!expected) {
    deps.fetch.logger.warn({ url: request.url }, 'no checksum given for the BFB: only its own CRCs check it');
  }
  const final = path.join(deps.stagingDir, `bfb-${randomBytes(6).toString('hex')}.bfb`);
  const partial = `${final}.part`;
  try {
    return await withRestarts(
      async () => {
        const hasher = createHasher(expected);
        const validator = deps.createValidator();
        const file = await open(partial, 'w', 0o600);
        let bytes = 0;
        try {
          const stream = await openImageStream({ ...fetchOptions, url: request.url });
          await checkRoom(deps.stagingDir, stream.totalBytes);
          let lastReport = 0;
          for await (const chunk of stream.body) {
            hasher.update(chunk);
            validator.push(chunk);
            await file.write(chunk);
            bytes += chunk.length;
            const now = performance.now();
            if (now - lastReport > 250) {
              lastReport = now;
              const seconds = (now - started) / 1000;
              context.progress({
                phase: 'download',
                done: bytes,
                total: stream.totalBytes,
                unit: 'bytes',
                rate: Math.round(bytes / Math.max(seconds, 0.001)),
              });
            }
          }
          const summary = validator.end();
          const digest = hasher.verify();
          await file.sync();
          await file.close();
          await rename(partial, final);
          const seconds = (performance.now() - started) / 1000;
          context.progress({ phase: 'download', done: bytes, total: bytes, unit: 'bytes' });
          return {
            file: final,
            url: request.url,
            bytes,
            checksum: `${hasher.algorithm}:${digest}`,
            checksum_verified: expected !== null,
            summary,
            seconds: Math.round(seconds * 1000) / 1000,
          };
        } catch (error) {
          await file.close().catch(() => undefined);
          throw error;
        }
      },
      {
        signal,
        logger: deps.fetch.logger,
        message: 'the BFB server cannot resume: downloading again from byte 0',
      },
    );
  } finally {
    // Whatever failed, nothing half-downloaded stays on the tmpfs eating the ramdisk's memory.
    await rm(partial, { force: true });
  }
};
