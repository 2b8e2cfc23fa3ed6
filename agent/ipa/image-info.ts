/**
 * Ironic's write_image step args (`image_info`, `configdrive`; ipa.md §3.2) turned into image.write
 * params, one set per image URL. Anything the agent cannot honour is refused with a message that
 * says so, rather than ignored: a config drive, a partition image, proxies, image server auth.
 */
import { Type, type Static } from '@sinclair/typebox';
import type { ImageWriteParams } from '../commands/image.js';
import { validate } from '../protocol/validate.js';
import { AgentError } from '../util/errors.js';
import { rootDeviceHintsOf, type JsonObject } from './node.js';

export type ImageWriteRequest = Static<typeof ImageWriteParams>;

export interface ImageWritePlan {
  /** Ironic's image id (the last segment of image_source), for the result text. */
  imageId: string;
  /** image.write params for each URL, in the order IPA tries them. */
  attempts: ImageWriteRequest[];
  /** Where the root device hints came from, when there were any. */
  hintsSource: string | null;
}

const Text = (maxLength: number) => Type.Union([Type.String({ maxLength }), Type.Null()]);

// Unlisted keys pass: newer Ironic releases add fields, and the ones that change the meaning are
// checked by name below.
const ImageInfo = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 1024 }),
  urls: Type.Array(Type.String({ minLength: 1, maxLength: 8192 }), { minItems: 1, maxItems: 32 }),
  disk_format: Type.Optional(Text(64)),
  container_format: Type.Optional(Text(64)),
  stream_raw_images: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
  checksum: Type.Optional(Text(8192)),
  os_hash_algo: Type.Optional(Text(64)),
  os_hash_value: Type.Optional(Text(8192)),
  proxies: Type.Optional(Type.Union([Type.Record(Type.String(), Text(8192)), Type.Null()])),
  no_proxy: Type.Optional(Text(8192)),
  node_uuid: Type.Optional(Text(256)),
  image_type: Type.Optional(Text(64)),
  image_server_auth_strategy: Type.Optional(Text(64)),
});
type ImageInfo = Static<typeof ImageInfo>;

const WriteImageArgs = Type.Object(
  { image_info: Type.Unknown(), configdrive: Type.Optional(Type.Unknown()) },
  { additionalProperties: false },
);

/** Fields only a partition image carries (IPA builds partitions for those; a whole-disk image has its own). */
const PARTITION_IMAGE_FIELDS = ['kernel', 'ramdisk', 'root_mb', 'root_gb', 'swap_mb', 'ephemeral_mb'];

const SUPPORTED_HASHES = ['md5', 'sha256', 'sha512'];

/** Glance disk formats and how image.write takes them; an ISO is written byte for byte, as qemu-img would. */
const DISK_FORMATS: Record<string, ImageWriteRequest['disk_format']> = {
  raw: 'raw',
  iso: 'raw',
  qcow2: 'qcow2',
};

const refuse = (message: string, details: Record<string, unknown> = {}): AgentError =>
  new AgentError('INVALID_PARAMS', message, { details });

const checked = <T>(
  result: { ok: true; value: T } | { ok: false; violation: { field: string; expected: string } },
): T => {
  if (result.ok) return result.value;
  throw refuse(`${result.violation.field}: ${result.violation.expected}`, { ...result.violation });
};

const present = (value: unknown): boolean => value !== undefined && value !== null && value !== '';

/**
 * The checksum to verify, with IPA's rules: `checksum` and the os_hash pair must be non-empty when
 * given, one of them must be given, and os_hash wins when the agent can compute its algorithm.
 * A bare legacy checksum names its algorithm by its length (32 hex digits is md5, as in IPA).
 */
export const chooseChecksum = (info: ImageInfo): ImageWriteRequest['checksum'] => {
  const field = 'step.args.image_info';
  if (info.checksum !== undefined && info.checksum !== null && info.checksum.trim() === '')
    throw refuse(`${field}.checksum is empty: give the image's checksum or leave it out`);
  const algo = info.os_hash_algo;
  const value = info.os_hash_value;
  if (present(algo) !== present(value))
    throw refuse(`${field}: os_hash_algo and os_hash_value come together; one of them is missing or empty`);
  const legacy = info.checksum?.trim() || null;
  if (present(algo) && typeof algo === 'string' && typeof value === 'string') {
    const name = algo.trim().toLowerCase().replace(/-/g, '');
    if (SUPPORTED_HASHES.includes(name)) return { os_hash_algo: name, os_hash_value: value.trim() };
    // IPA falls back to the legacy checksum when it cannot compute os_hash_algo.
    if (legacy === null)
      throw refuse(
        `${field}.os_hash_algo ${JSON.stringify(algo)} is not supported: use md5, sha256 or sha512`,
      );
  }
  if (legacy === null)
    throw refuse(
      `${field} has no checksum: the image cannot be verified (set the node's image_checksum or image_os_hash_algo and image_os_hash_value)`,
    );
  return legacy;
};

const diskFormatOf = (info: ImageInfo): ImageWriteRequest['disk_format'] => {
  if (info.disk_format === undefined || info.disk_format === null || info.disk_format === '') return 'auto';
  const format = DISK_FORMATS[info.disk_format.toLowerCase()];
  if (!format)
    throw refuse(
      `step.args.image_info.disk_format ${JSON.stringify(info.disk_format)} cannot be written: use raw, qcow2 or iso, or leave it unset to detect the format from the image`,
      { disk_format: info.disk_format },
    );
  return format;
};

const refuseUnsupported = (info: ImageInfo & JsonObject, configdrive: unknown): void => {
  if (present(configdrive) || present(info.configdrive))
    throw refuse(
      'a config drive is not supported yet: deploy without one (leave instance_info.configdrive unset), or put the configuration into the image',
    );
  const partitionFields = PARTITION_IMAGE_FIELDS.filter((name) => present(info[name]));
  if (info.image_type === 'partition' || partitionFields.length > 0)
    throw refuse('partition images are not supported: deploy a whole-disk image (image_type whole-disk)', {
      fields: partitionFields,
    });
  const proxies = Object.entries(info.proxies ?? {}).filter(([, url]) => present(url));
  if (proxies.length > 0)
    throw refuse(
      `image download proxies (${proxies.map(([scheme]) => scheme).join(', ')}) are not supported: the image server must be reachable directly`,
    );
  const auth = info.image_server_auth_strategy;
  if (present(auth) && auth !== 'noauth')
    throw refuse(`image server authentication (${auth}) is not supported: serve the image without it`);
};

/** image.write params for Ironic's write_image args; `node` supplies the root device hints. */
export const planImageWrite = (args: unknown, node: JsonObject | null): ImageWritePlan => {
  const { image_info: rawInfo, configdrive } = checked(validate(WriteImageArgs, args ?? {}, 'step.args'));
  const info = checked(validate(ImageInfo, rawInfo, 'step.args.image_info')) as ImageInfo & JsonObject;
  refuseUnsupported(info, configdrive);
  info.urls.forEach((url, index) => {
    if (!/^https?:\/\/./i.test(url))
      throw refuse(`step.args.image_info.urls[${index}] ${JSON.stringify(url)} is not an http or https URL`);
  });
  const checksum = chooseChecksum(info);
  const diskFormat = diskFormatOf(info);
  const root = rootDeviceHintsOf(node);
  return {
    imageId: info.id,
    hintsSource: root?.source ?? null,
    attempts: info.urls.map((url) => ({
      url,
      ...(checksum === undefined ? {} : { checksum }),
      disk_format: diskFormat,
      ...(root ? { root_device_hints: root.hints } : {}),
    })),
  };
};
