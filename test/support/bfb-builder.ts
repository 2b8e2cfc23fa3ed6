/**
 * Builds BFB files for tests, the simulator and the benchmark: the real layout (24-byte
 * little-endian image headers, magic 0x13026642, version 1.2, header length 3 words, image ID,
 * length, CRC32 over data plus padding, bitmap of the images that follow, data padded to 8 bytes).
 * Kept independent of the agent's reader so a test catches a reader that drifts from the format.
 */
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { crc32 } from 'node:zlib';

export const BFB_MAGIC = 0x13026642;

/** Image IDs as mlx-mkbfb names them (the ones tests use). */
export const BFB_IMAGE_IDS = {
  bl2: 1,
  bl31: 3,
  bl33: 5,
  sys: 29,
  info: 50,
  bootArgs: 59,
  image: 62,
  initramfs: 63,
} as const;

export interface BfbImageSpec {
  id: number;
  data: Buffer;
  /** Overrides for corrupting a header in tests. */
  crc32?: number;
  length?: number;
  magic?: number;
  major?: number;
  headerWords?: number;
}

const padded = (length: number): number => Math.ceil(length / 8) * 8;

export const bfbHeader = (image: BfbImageSpec, following: bigint): Buffer => {
  const data = Buffer.alloc(padded(image.data.length));
  image.data.copy(data);
  const crc = image.crc32 ?? crc32(data);
  const header = Buffer.alloc(24);
  const w0 =
    BigInt(image.magic ?? BFB_MAGIC) |
    (BigInt(image.major ?? 1) << 32n) |
    (2n << 36n) |
    (BigInt(image.headerWords ?? 3) << 52n) |
    (BigInt(image.id) << 56n);
  const w1 = BigInt(image.length ?? image.data.length) | (BigInt(crc >>> 0) << 32n);
  header.writeBigUInt64LE(w0, 0);
  header.writeBigUInt64LE(w1, 8);
  header.writeBigUInt64LE(following, 16);
  return header;
};

const followingBitmap = (images: readonly BfbImageSpec[], index: number): bigint => {
  let bitmap = 0n;
  for (const later of images.slice(index + 1)) bitmap |= 1n << BigInt(later.id);
  return bitmap;
};

/** The whole BFB in memory (small test files). */
export const buildBfb = (images: readonly BfbImageSpec[]): Buffer => {
  const parts: Buffer[] = [];
  images.forEach((image, index) => {
    parts.push(bfbHeader(image, followingBitmap(images, index)));
    const data = Buffer.alloc(padded(image.data.length));
    image.data.copy(data);
    parts.push(data);
  });
  return Buffer.concat(parts);
};

/** The JSON the `info` image carries: what the BFB says it installs. */
export const bfbInfo = (version: string): Buffer =>
  Buffer.from(
    JSON.stringify({
      Name: 'BlueField boot stream',
      Version: version,
      Members: [
        { Name: 'BF_OS', Version: version },
        { Name: 'BF_ATF', Version: '4.9.0-13417' },
      ],
    }),
  );

/** A small but complete BFB declaring `version`. */
export const sampleBfb = (
  version = 'bf-bundle-2.9.2-31_25.02_ubuntu-22.04_prod',
  payloadBytes = 64 * 1024,
): Buffer =>
  buildBfb([
    { id: BFB_IMAGE_IDS.bl2, data: Buffer.from('bl2 boot loader stage two\n') },
    { id: BFB_IMAGE_IDS.info, data: bfbInfo(version) },
    { id: BFB_IMAGE_IDS.image, data: patterned(payloadBytes, 1) },
    { id: BFB_IMAGE_IDS.initramfs, data: patterned(Math.max(1, payloadBytes >> 1) + 3, 2) },
  ]);

const patterned = (length: number, seed: number): Buffer => {
  const data = Buffer.alloc(length);
  let x = seed * 2654435761;
  for (let i = 0; i < length; i += 4) {
    x = (x * 1103515245 + 12345) >>> 0;
    if (i + 4 <= length) data.writeUInt32LE(x, i);
    else for (let j = i; j < length; j++) data[j] = x & 0xff;
  }
  return data;
};

/**
 * Writes a large BFB to `file` without holding it in memory: a few small images and one big
 * `image` of `bytes` pseudo-random bytes (generated in 4 MiB blocks; the CRC is computed first).
 */
export const writeLargeBfb = async (
  file: string,
  bytes: number,
  version = 'bf-bundle-2.9.2-31_25.02_ubuntu-22.04_prod',
): Promise<number> => {
  const block = patterned(4 * 1024 * 1024, 7);
  const big = padded(bytes);
  let crc = 0;
  for (let done = 0; done < big; done += block.length) {
    const take = Math.min(block.length, big - done);
    const last = done + take >= big;
    const slice = block.subarray(0, take);
    if (last && big !== bytes) {
      const tail = Buffer.from(slice);
      tail.fill(0, take - (big - bytes));
      crc = crc32(tail, crc);
    } else crc = crc32(slice, crc);
  }
  const head = buildBfb([
    { id: BFB_IMAGE_IDS.bl2, data: Buffer.from('bl2 boot loader stage two\n') },
    { id: BFB_IMAGE_IDS.info, data: bfbInfo(version) },
  ]);
  const out = createWriteStream(file);
  const write = async (chunk: Buffer): Promise<void> => {
    if (!out.write(chunk)) await once(out, 'drain');
  };
  await write(head);
  await write(bfbHeader({ id: BFB_IMAGE_IDS.image, data: Buffer.alloc(0), length: bytes, crc32: crc }, 0n));
  for (let done = 0; done < big; done += block.length) {
    const take = Math.min(block.length, big - done);
    const last = done + take >= big;
    if (last && big !== bytes) {
      const tail = Buffer.from(block.subarray(0, take));
      tail.fill(0, take - (big - bytes));
      await write(tail);
    } else await write(block.subarray(0, take));
  }
  out.end();
  await once(out, 'finish');
  return head.length + 24 + big;
};
