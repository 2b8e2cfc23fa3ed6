/**
 * The BFB container format as mlx-mkbfb writes and reads it: a run of images, each a 24-byte
 * little-endian header (three u64 words) followed by its data zero-padded to 8 bytes.
 *
 *   w0: bits 0-31 magic 0x13026642, 32-35 major (1), 36-39 minor (<= 2), 52-55 header length in
 *       8-byte words (3), 56-63 image ID
 *   w1: bits 0-31 image length (without padding), 32-63 CRC32 of data plus padding
 *   w2: bitmap of the IDs of the images that follow
 */

export const BFB_MAGIC = 0x13026642;
export const BFB_HEADER_BYTES = 24;
export const BFB_MAJOR = 1;
export const BFB_MAX_MINOR = 2;
export const BFB_HEADER_WORDS = 3;
/** The `info` image: JSON describing what the BFB installs. */
export const BFB_INFO_IMAGE_ID = 50;

/** Names as mlx-mkbfb's table gives them. */
const IMAGE_NAMES: ReadonlyMap<number, string> = new Map([
  [1, 'bl2'],
  [2, 'bl30'],
  [3, 'bl31'],
  [4, 'bl32'],
  [5, 'bl33'],
  [6, 'bl2-cert'],
  [7, 'trusted-key-cert'],
  [8, 'bl30-key-cert'],
  [9, 'bl31-key-cert'],
  [10, 'bl32-key-cert'],
  [11, 'bl33-key-cert'],
  [12, 'bl30-cert'],
  [13, 'bl31-cert'],
  [14, 'bl32-cert'],
  [15, 'bl33-cert'],
  [29, 'sys'],
  [30, 'bl2r'],
  [31, 'bl2r-cert'],
  [32, 'ddr_ini'],
  [33, 'snps_images'],
  [34, 'ddr_ate_imem'],
  [35, 'ddr_ate_dmem'],
  [36, 'psc-bl'],
  [37, 'psc-fw'],
  [38, 'ddr-cert'],
  [39, 'psc-app'],
  [40, 'ddr5_snps_images'],
  [41, 'nicfw'],
  [42, 'auth-cert'],
  [43, 'auth-cert'],
  [48, 'cfg-gi'],
  [49, 'dpu-gi'],
  [50, 'info'],
  [51, 'upgrade-image'],
  [52, 'capsule'],
  [53, 'psc-certs'],
  [54, 'ramdisk'],
  [55, 'boot-acpi'],
  [56, 'boot-dtb'],
  [57, 'boot-desc'],
  [58, 'boot-path'],
  [59, 'boot-args'],
  [60, 'boot-timeout'],
  [61, 'uefi-tests'],
  [62, 'image'],
  [63, 'initramfs'],
]);

/** The image's name, or `id-N` for an ID the table does not know (newer BFBs add some). */
export const bfbImageName = (id: number): string => IMAGE_NAMES.get(id) ?? `id-${id}`;

export const paddedLength = (length: number): number => Math.ceil(length / 8) * 8;

export interface BfbHeader {
  magic: number;
  major: number;
  minor: number;
  headerWords: number;
  id: number;
  length: number;
  crc32: number;
  following: bigint;
}

/** The fields of one header; `bytes` must hold 24 bytes from `offset`. */
export const parseBfbHeader = (bytes: Buffer, offset = 0): BfbHeader => {
  // Word 0 is read as two u32 halves: no BigInt needed for the fields that matter.
  const low = bytes.readUInt32LE(offset);
  const high = bytes.readUInt32LE(offset + 4);
  return {
    magic: low,
    major: high & 0xf,
    minor: (high >>> 4) & 0xf,
    headerWords: (high >>> 20) & 0xf,
    id: (high >>> 24) & 0xff,
    length: bytes.readUInt32LE(offset + 8),
    crc32: bytes.readUInt32LE(offset + 12),
    following: bytes.readBigUInt64LE(offset + 16),
  };
};

/** The magic as it appears on disk: `42 66 02 13`. */
export const BFB_MAGIC_BYTES: readonly number[] = [0x42, 0x66, 0x02, 0x13];
