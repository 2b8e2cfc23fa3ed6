/**
 * BFB validation in one streaming pass: every header checked, every image's CRC32 computed, the
 * end of the file required at an image boundary. It runs inline on a download (so staging and
 * validating are one read of the bytes) or over a staged file. A BFB that fails here is never
 * pushed: opening the rshim boot device resets the DPU, and a corrupt stream leaves it unbootable
 * until the next push.
 */
import { open } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { crc32 } from 'node:zlib';
import { AgentError } from '../../../util/errors.js';
import { abortError } from '../../../util/tool-process.js';
import type { BfbImage, BfbSummary } from '../contracts.js';
import {
  BFB_HEADER_BYTES,
  BFB_HEADER_WORDS,
  BFB_INFO_IMAGE_ID,
  BFB_MAGIC,
  BFB_MAGIC_BYTES,
  BFB_MAJOR,
  BFB_MAX_MINOR,
  bfbImageName,
  paddedLength,
  parseBfbHeader,
  type BfbHeader,
} from './format.js';
import { bfbVersionFromInfo } from './info.js';

export interface BfbValidatorOptions {
  /** An `info` image larger than this is checked but not parsed for a version. */
  maxInfoBytes?: number;
}

const DEFAULT_MAX_INFO_BYTES = 1024 * 1024;
/** Large reads keep the per-call overhead small next to the CRC, which runs at several GB/s. */
const FILE_READ_BYTES = 4 * 1024 * 1024;

interface OpenImage {
  image: BfbImage;
  /** Data plus padding still to come. */
  remaining: number;
  /** Unpadded data bytes still to come (the info image keeps only those). */
  dataLeft: number;
  crc: number;
  info: Buffer[] | null;
}

const hex32 = (value: number): string => `0x${value.toString(16).padStart(8, '0')}`;
const hexBytes = (bytes: Buffer): string => [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(' ');

const invalid = (message: string, details: Record<string, unknown>): AgentError =>
  new AgentError('BFB_INVALID', message, { details });

const snippet = (head: Buffer): string =>
  head
    .toString('latin1')
    .replace(/[^\x20-\x7e]+/g, ' ')
    .trim()
    .slice(0, 40);

/** What the first bytes are, when they are not a BFB: the usual culprit is an HTTP error page. */
const describeStart = (head: Buffer): string => {
  const text = head.toString('latin1');
  if (/^\s*<(!doctype|html|\?xml|head|body|title)/i.test(text)) return `an HTML page ("${snippet(head)}")`;
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip data (a compressed BFB must be decompressed first)';
  const printable = [...head].filter(
    (b) => b === 0x09 || b === 0x0a || b === 0x0d || (b >= 0x20 && b < 0x7f),
  );
  if (head.length > 0 && printable.length === head.length) return `text ("${snippet(head)}")`;
  return `the bytes ${hexBytes(head.subarray(0, 8))}`;
};

const isMagicPrefix = (bytes: Buffer): boolean =>
  [...bytes.subarray(0, 4)].every((b, i) => b === BFB_MAGIC_BYTES[i]);

/**
 * Walks a BFB pushed to it in chunks of any size. `push` throws BFB_INVALID as soon as the bytes
 * seen so far cannot be a BFB; `end` throws when the file stopped anywhere but at an image
 * boundary, and otherwise returns the images and the declared version. After a failure every
 * further call throws the same error.
 */
export class BfbValidator {
  private readonly maxInfoBytes: number;
  private offset = 0;
  private readonly header = Buffer.alloc(BFB_HEADER_BYTES);
  private headerFill = 0;
  private current: OpenImage | null = null;
  private readonly images: BfbImage[] = [];
  private version: string | null = null;
  private failure: AgentError | null = null;

  constructor(options: BfbValidatorOptions = {}) {
    this.maxInfoBytes = options.maxInfoBytes ?? DEFAULT_MAX_INFO_BYTES;
  }

  /** Bytes taken so far. */
  get bytes(): number {
    return this.offset;
  }

  push(chunk: Buffer): void {
    if (this.failure) throw this.failure;
    try {
      this.consume(chunk);
    } catch (error) {
      if (AgentError.is(error)) this.failure = error;
      throw error;
    }
  }

  end(): BfbSummary {
    if (this.failure) throw this.failure;
    this.failure = this.endFailure();
    if (this.failure) throw this.failure;
    return { bytes: this.offset, images: [...this.images], version: this.version };
  }

  private consume(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      const open = this.current;
      if (open === null) {
        const headerAt = this.offset - this.headerFill;
        if (this.headerFill === 0 && chunk.length - pos >= BFB_HEADER_BYTES) {
          // The common case: the whole header inside this chunk, parsed in place.
          this.offset += BFB_HEADER_BYTES;
          this.startImage(parseBfbHeader(chunk, pos), chunk.subarray(pos, pos + BFB_HEADER_BYTES), headerAt);
          pos += BFB_HEADER_BYTES;
          continue;
        }
        const take = Math.min(BFB_HEADER_BYTES - this.headerFill, chunk.length - pos);
        chunk.copy(this.header, this.headerFill, pos, pos + take);
        this.headerFill += take;
        this.offset += take;
        pos += take;
        if (this.headerFill === BFB_HEADER_BYTES) {
          this.headerFill = 0;
          this.startImage(parseBfbHeader(this.header), this.header, headerAt);
        }
        continue;
      }
      const take = Math.min(open.remaining, chunk.length - pos);
      const piece = chunk.subarray(pos, pos + take);
      open.crc = crc32(piece, open.crc);
      if (open.info !== null && open.dataLeft > 0) {
        // Copied: the caller may reuse its buffer for the next chunk.
        open.info.push(Buffer.from(piece.subarray(0, Math.min(open.dataLeft, piece.length))));
      }
      open.dataLeft = Math.max(0, open.dataLeft - take);
      open.remaining -= take;
      this.offset += take;
      pos += take;
      if (open.remaining === 0) this.finishImage(open);
    }
  }

  private startImage(header: BfbHeader, raw: Buffer, at: number): void {
    if (header.magic !== BFB_MAGIC) {
      const found = raw.subarray(0, 4);
      if (at === 0) {
        throw invalid(
          `not a BFB: the file starts with ${describeStart(raw)} instead of the BFB magic 42 66 02 13 (offset 0)`,
          { offset: 0, found: hexBytes(found) },
        );
      }
      const last = this.images.at(-1);
      throw invalid(
        `no image header at offset ${at}: found ${hexBytes(found)} instead of the magic 42 66 02 13; ` +
          `trailing bytes after the last image${last ? ` (${last.name}, ID ${last.id})` : ''} or a corrupt header`,
        { offset: at, found: hexBytes(found), images: this.images.length },
      );
    }
    if (header.major !== BFB_MAJOR || header.minor > BFB_MAX_MINOR) {
      throw invalid(
        `unsupported BFB header version ${header.major}.${header.minor} at offset ${at} (1.0 to 1.${BFB_MAX_MINOR} are known)`,
        { offset: at, major: header.major, minor: header.minor },
      );
    }
    if (header.headerWords !== BFB_HEADER_WORDS) {
      throw invalid(
        `bad header length at offset ${at}: ${header.headerWords} words where 3 (24 bytes) are required`,
        { offset: at, headerWords: header.headerWords },
      );
    }
    const image: BfbImage = {
      id: header.id,
      name: bfbImageName(header.id),
      offset: at,
      length: header.length,
      crc32: header.crc32,
    };
    const open: OpenImage = {
      image,
      remaining: paddedLength(header.length),
      dataLeft: header.length,
      crc: 0,
      info: header.id === BFB_INFO_IMAGE_ID && header.length <= this.maxInfoBytes ? [] : null,
    };
    this.current = open;
    if (open.remaining === 0) this.finishImage(open);
  }

  private finishImage(open: OpenImage): void {
    this.current = null;
    const { image } = open;
    const actual = open.crc >>> 0;
    if (actual !== image.crc32) {
      throw invalid(
        `CRC mismatch in image ${image.name} (ID ${image.id}) whose header is at offset ${image.offset}: ` +
          `the header says ${hex32(image.crc32)}, the data gives ${hex32(actual)}`,
        {
          offset: image.offset,
          image: image.name,
          id: image.id,
          expected: hex32(image.crc32),
          actual: hex32(actual),
        },
      );
    }
    this.images.push(image);
    if (open.info !== null && this.version === null)
      this.version = bfbVersionFromInfo(Buffer.concat(open.info));
  }

  private endFailure(): AgentError | null {
    if (this.offset === 0) return invalid('not a BFB: the file is empty (offset 0)', { offset: 0, bytes: 0 });
    const open = this.current;
    if (open !== null) {
      const { image } = open;
      const dataAt = image.offset + BFB_HEADER_BYTES;
      const want = paddedLength(image.length);
      return invalid(
        `truncated: the file ends at offset ${this.offset} inside image ${image.name} (ID ${image.id}, header at ` +
          `offset ${image.offset}), ${want - open.remaining} of its ${want} bytes present`,
        {
          offset: this.offset,
          image: image.name,
          id: image.id,
          dataOffset: dataAt,
          expected: want,
          got: want - open.remaining,
        },
      );
    }
    if (this.headerFill > 0) {
      const at = this.offset - this.headerFill;
      const partial = this.header.subarray(0, this.headerFill);
      if (at === 0 && !isMagicPrefix(partial)) {
        return invalid(
          `not a BFB: the file is ${this.headerFill} bytes of ${describeStart(partial)}, not the BFB magic 42 66 02 13 (offset 0)`,
          { offset: 0, bytes: this.headerFill },
        );
      }
      if (isMagicPrefix(partial)) {
        return invalid(
          `truncated: the file ends at offset ${this.offset} inside an image header that starts at offset ${at} ` +
            `(${this.headerFill} of 24 bytes)`,
          { offset: at, got: this.headerFill },
        );
      }
      return invalid(
        `${this.headerFill} trailing byte${this.headerFill === 1 ? '' : 's'} at offset ${at} after the last image ` +
          `${this.headerFill === 1 ? 'is' : 'are'} not an image header ` +
          `(${hexBytes(partial.subarray(0, 8))})`,
        { offset: at, bytes: this.headerFill },
      );
    }
    return null;
  }
}

/**
 * A pass-through stage that validates what flows through it: put it between a download and the
 * staged file, and the file is known good once the pipeline finishes. A bad BFB fails the
 * pipeline with BFB_INVALID, at the first bad byte when possible.
 */
export class BfbValidatingStream extends Transform {
  private readonly validator: BfbValidator;
  /** Set once the whole stream ended as a valid BFB. */
  summary: BfbSummary | null = null;

  constructor(options: BfbValidatorOptions = {}) {
    super();
    this.validator = new BfbValidator(options);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.validator.push(chunk);
    } catch (error) {
      callback(error as Error);
      return;
    }
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.summary = this.validator.end();
    } catch (error) {
      callback(error as Error);
      return;
    }
    callback();
  }
}

export interface ValidateFileOptions extends BfbValidatorOptions {
  signal?: AbortSignal;
}

/**
 * Validates a BFB file. Reads are double-buffered so the next read is in flight while the CRC of
 * the current block runs.
 */
export const validateBfbFile = async (
  file: string,
  options: ValidateFileOptions = {},
): Promise<BfbSummary> => {
  const { signal } = options;
  if (signal?.aborted) throw abortError(signal, 'validating the BFB');
  let handle;
  try {
    handle = await open(file, 'r');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? null;
    throw new AgentError('INVALID_PARAMS', `the BFB ${file} cannot be read: ${(error as Error).message}`, {
      details: { file, errno: code },
      cause: error,
    });
  }
  const validator = new BfbValidator(options);
  const buffers = [Buffer.allocUnsafe(FILE_READ_BYTES), Buffer.allocUnsafe(FILE_READ_BYTES)] as const;
  let which: 0 | 1 = 0;
  let position = 0;
  let pending = handle.read(buffers[0], 0, FILE_READ_BYTES, 0);
  try {
    while (true) {
      const { bytesRead } = await pending;
      if (bytesRead === 0) break;
      if (signal?.aborted) throw abortError(signal, 'validating the BFB');
      const current = buffers[which].subarray(0, bytesRead);
      position += bytesRead;
      which = which === 0 ? 1 : 0;
      pending = handle.read(buffers[which], 0, FILE_READ_BYTES, position);
      validator.push(current);
    }
    return validator.end();
  } catch (error) {
    if (AgentError.is(error)) throw error;
    throw new AgentError('INVALID_PARAMS', `the BFB ${file} cannot be read: ${(error as Error).message}`, {
      details: { file, errno: (error as NodeJS.ErrnoException).code ?? null },
      cause: error,
    });
  } finally {
    // A read still in flight must finish before its handle closes.
    await pending.catch(() => undefined);
    await handle.close();
  }
};
