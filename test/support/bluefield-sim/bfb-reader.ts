/**
 * The simulated DPU's own view of a boot stream: it walks the BFB image headers as they arrive
 * (24-byte little-endian headers, magic 0x13026642, version 1.x with minor <= 2, 3 header words,
 * CRC32 over data plus padding), stops at the image whose "following" bitmap is empty, and keeps
 * whatever comes after it as the trailer (bf.cfg). Written apart from the agent's validator on
 * purpose: a shared bug would make the simulator accept what real hardware rejects.
 */
import { crc32 } from 'node:zlib';

const MAGIC = 0x13026642;
const HEADER_BYTES = 24;
/** What the installer reads of the boot FIFO for bf.cfg (dd bs=4096 count=32). */
export const TRAILER_LIMIT = 128 * 1024;

/** mlx-mkbfb's image names, for readable records. */
const IMAGE_NAMES: Record<number, string> = {
  1: 'bl2',
  2: 'bl30',
  3: 'bl31',
  4: 'bl32',
  5: 'bl33',
  6: 'bl2-cert',
  29: 'sys',
  30: 'bl2r',
  31: 'bl2r-cert',
  32: 'ddr_ini',
  36: 'psc-bl',
  37: 'psc-fw',
  41: 'nicfw',
  50: 'info',
  52: 'capsule',
  54: 'ramdisk',
  59: 'boot-args',
  62: 'image',
  63: 'initramfs',
};

export interface SimBfbImage {
  id: number;
  name: string;
  /** Offset of the image's header in the stream. */
  offset: number;
  length: number;
  crc32: number;
}

export type BfbReadState = 'header' | 'data' | 'done' | 'invalid';

export interface BfbReadResult {
  valid: boolean;
  error: string | null;
  /** Bytes of the BFB proper (through the last image's padding) when it validated. */
  bfbBytes: number | null;
  images: SimBfbImage[];
  /** `Version` of the info image's JSON. */
  version: string | null;
  /** Bytes after the last image, up to TRAILER_LIMIT. */
  trailer: Buffer;
  trailerBytes: number;
}

const padded = (length: number): number => Math.ceil(length / 8) * 8;

export class BfbStreamReader {
  private state: BfbReadState = 'header';
  private error: string | null = null;
  private offset = 0;
  private header = Buffer.alloc(0);
  private current: SimBfbImage | null = null;
  private remaining = 0;
  private crc = 0;
  private following: bigint | null = null;
  private infoChunks: Buffer[] | null = null;
  private bfbBytes: number | null = null;
  private readonly images: SimBfbImage[] = [];
  private readonly trailerChunks: Buffer[] = [];
  private trailerKept = 0;
  private trailerBytes = 0;
  private version: string | null = null;

  /** Called as each image is complete and intact, in stream order. */
  constructor(private readonly onImage: (image: SimBfbImage, index: number) => void = () => {}) {}

  get status(): BfbReadState {
    return this.state;
  }

  /** Length of the BFB proper once its last image is in, else null. */
  get bfbLength(): number | null {
    return this.bfbBytes;
  }

  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.state === 'invalid') return;
      if (this.state === 'done') {
        this.keepTrailer(chunk.subarray(at));
        return;
      }
      if (this.state === 'header') {
        const take = Math.min(HEADER_BYTES - this.header.length, chunk.length - at);
        this.header = Buffer.concat([this.header, chunk.subarray(at, at + take)]);
        at += take;
        if (this.header.length === HEADER_BYTES) this.startImage();
        continue;
      }
      const take = Math.min(this.remaining, chunk.length - at);
      const part = chunk.subarray(at, at + take);
      this.crc = crc32(part, this.crc);
      this.infoChunks?.push(Buffer.from(part));
      this.remaining -= take;
      at += take;
      if (this.remaining === 0) this.finishImage();
    }
  }

  /** The stream ended: anything short of the last image is a truncated BFB. */
  end(): BfbReadResult {
    if (this.state === 'header' && this.header.length === 0 && this.images.length === 0)
      this.fail('empty stream');
    else if (this.state === 'header' && this.header.length > 0)
      this.fail(`image header truncated at byte ${this.offset + this.header.length}`);
    else if (this.state === 'header') this.fail('stream ended before the last image');
    else if (this.state === 'data')
      this.fail(`image ${this.current?.id ?? '?'} truncated: ${this.remaining} bytes missing`);
    return {
      valid: this.state === 'done',
      error: this.error,
      bfbBytes: this.bfbBytes,
      images: [...this.images],
      version: this.version,
      trailer: Buffer.concat(this.trailerChunks),
      trailerBytes: this.trailerBytes,
    };
  }

  private fail(reason: string): void {
    if (this.state === 'invalid' || this.state === 'done') return;
    this.state = 'invalid';
    this.error = reason;
  }

  private startImage(): void {
    const w0 = this.header.readBigUInt64LE(0);
    const w1 = this.header.readBigUInt64LE(8);
    const following = this.header.readBigUInt64LE(16);
    const magic = Number(w0 & 0xffffffffn);
    const major = Number((w0 >> 32n) & 0xfn);
    const minor = Number((w0 >> 36n) & 0xfn);
    const words = Number((w0 >> 52n) & 0xfn);
    const id = Number((w0 >> 56n) & 0xffn);
    const at = this.offset;
    if (magic !== MAGIC) return this.fail(`bad magic 0x${magic.toString(16)} at byte ${at}`);
    if (major !== 1 || minor > 2)
      return this.fail(`unsupported header version ${major}.${minor} at byte ${at}`);
    if (words !== 3) return this.fail(`header length ${words} words at byte ${at}`);
    if (this.following !== null && (this.following & (1n << BigInt(id))) === 0n)
      return this.fail(`image ${id} at byte ${at} was not announced by the previous header`);
    const length = Number(w1 & 0xffffffffn);
    this.current = { id, name: IMAGE_NAMES[id] ?? `id-${id}`, offset: at, length, crc32: Number(w1 >> 32n) };
    this.following = following;
    this.remaining = padded(length);
    this.crc = 0;
    this.infoChunks = id === 50 ? [] : null;
    this.offset += HEADER_BYTES;
    this.header = Buffer.alloc(0);
    this.state = 'data';
    if (this.remaining === 0) this.finishImage();
  }

  private finishImage(): void {
    const image = this.current;
    if (image === null) return;
    this.offset += padded(image.length);
    if (this.crc >>> 0 !== image.crc32 >>> 0)
      return this.fail(
        `image ${image.id} (${image.name}) CRC mismatch: header 0x${image.crc32.toString(16)}, data 0x${(this.crc >>> 0).toString(16)}`,
      );
    if (this.infoChunks) this.version = readVersion(Buffer.concat(this.infoChunks).subarray(0, image.length));
    this.images.push(image);
    this.current = null;
    this.onImage(image, this.images.length - 1);
    if (this.following === 0n) {
      this.state = 'done';
      this.bfbBytes = this.offset;
    } else this.state = 'header';
  }

  private keepTrailer(bytes: Buffer): void {
    this.trailerBytes += bytes.length;
    const room = TRAILER_LIMIT - this.trailerKept;
    if (room <= 0) return;
    const kept = Buffer.from(bytes.subarray(0, room));
    this.trailerChunks.push(kept);
    this.trailerKept += kept.length;
  }
}

const readVersion = (json: Buffer): string | null => {
  try {
    const parsed = JSON.parse(json.toString('utf8')) as { Version?: unknown };
    return typeof parsed.Version === 'string' ? parsed.Version : null;
  } catch {
    return null;
  }
};

/** One-shot check of a whole buffer. */
export const readBfb = (stream: Buffer): BfbReadResult => {
  const reader = new BfbStreamReader();
  reader.push(stream);
  return reader.end();
};
