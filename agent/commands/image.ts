import { Type, type Static } from '@sinclair/typebox';
import type { HardwarePaths } from '../hardware/paths.js';
import type { RootDeviceHints } from '../image/contracts.js';
import { readImageCa } from '../image/read-ca.js';
import { writeImage, type WriteImageResult } from '../image/write-image.js';
import { defineCommand, type AnyCommandDefinition, type CommandContext } from './definition.js';
import { RootDeviceHintsSchema } from './disk.js';

export interface ImageCommandDeps {
  paths: HardwarePaths;
  caPath: string | null;
  insecure: boolean;
  stagingDir: string;
  direct: boolean;
  stallTimeoutS: number;
  retries: number;
  retryIntervalS: number;
  includeLoops?: boolean;
}

export const HttpUrl = Type.String({ minLength: 8, maxLength: 8192, pattern: '^[Hh][Tt][Tt][Pp][Ss]?://' });

/** `algo:hex`, a bare hex, a checksums-file URL, or IPA's `{os_hash_algo, os_hash_value}`. */
export const ChecksumParam = Type.Union([
  Type.String({ minLength: 1, maxLength: 8192 }),
  Type.Object(
    { os_hash_algo: Type.String({ maxLength: 32 }), os_hash_value: Type.String({ maxLength: 8192 }) },
    { additionalProperties: false },
  ),
]);

export const ImageWriteParams = Type.Object(
  {
    url: HttpUrl,
    checksum: Type.Optional(ChecksumParam),
    disk_format: Type.Optional(
      Type.Union([Type.Literal('raw'), Type.Literal('qcow2'), Type.Literal('auto')]),
    ),
    device: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
    root_device_hints: Type.Optional(RootDeviceHintsSchema),
  },
  { additionalProperties: false },
);

/** image.write's work, for deploy.run too. */
export const runImageWrite = async (
  deps: ImageCommandDeps,
  params: Static<typeof ImageWriteParams>,
  context: CommandContext,
): Promise<WriteImageResult> => {
  const result = await writeImage(
    {
      url: params.url,
      ...(params.checksum === undefined ? {} : { checksum: params.checksum }),
      ...(params.disk_format === undefined ? {} : { disk_format: params.disk_format }),
      ...(params.device === undefined ? {} : { device: params.device }),
      ...(params.root_device_hints === undefined
        ? {}
        : { root_device_hints: params.root_device_hints as RootDeviceHints }),
    },
    {
      paths: deps.paths,
      ca: await readImageCa(deps.caPath),
      insecure: deps.insecure,
      logger: context.log,
      stagingDir: deps.stagingDir,
      direct: deps.direct,
      retries: deps.retries,
      // IPA sleeps the interval between attempts; here it caps a jittered backoff from 1 s.
      retryBaseMs: Math.min(1000, deps.retryIntervalS * 1000),
      retryMaxMs: deps.retryIntervalS * 1000,
      stallTimeoutMs: deps.stallTimeoutS * 1000,
      includeLoops: deps.includeLoops ?? false,
    },
    { signal: context.signal, progress: context.progress },
  );
  return result;
};

export const imageCommands = (deps: ImageCommandDeps): AnyCommandDefinition[] => [
  defineCommand({
    name: 'image.write',
    summary: 'Stream an OS image onto the root disk, verified by checksum, wiped again if anything fails',
    exclusive: true,
    params: ImageWriteParams,
    handler: async (params, context) => ({ ...(await runImageWrite(deps, params, context)) }),
  }),
];
