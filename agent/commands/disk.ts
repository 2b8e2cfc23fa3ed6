import { Type } from '@sinclair/typebox';
import type { RootDeviceHints } from '../image/contracts.js';
import { selectTargetDisk, type SelectDeps } from '../hardware/generic/disks/select.js';
import { wipeSignatures } from '../hardware/generic/disks/wipe.js';
import type { HardwarePaths } from '../hardware/paths.js';
import { AgentError } from '../util/errors.js';
import { defineCommand, type AnyCommandDefinition } from './definition.js';

export interface DiskCommandDeps {
  paths: HardwarePaths;
  /** Tests list their own loop devices as candidates. */
  select?: SelectDeps;
}

const HintValue = Type.Union([Type.String({ maxLength: 1024 }), Type.Number(), Type.Boolean()]);

// Field names and expressions are checked by the hints parser, whose messages name the field.
export const RootDeviceHintsSchema = Type.Record(Type.String({ maxLength: 64 }), HintValue, {
  maxProperties: 32,
});

const EraseParams = Type.Object(
  {
    device: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
    root_device_hints: Type.Optional(RootDeviceHintsSchema),
  },
  { additionalProperties: false },
);

export const diskCommands = (deps: DiskCommandDeps): AnyCommandDefinition[] => [
  defineCommand({
    name: 'disk.erase_metadata',
    summary:
      'Wipe partition-table and filesystem signatures at both ends of one disk (device or root device hints)',
    exclusive: true,
    params: EraseParams,
    handler: async (params, context) => {
      // Erasing is never aimed by default: the caller names the disk one way or the other
      // (`root_device_hints: {}` asks for the disk image.write would choose).
      if ((params.device === undefined) === (params.root_device_hints === undefined))
        throw new AgentError('INVALID_PARAMS', 'give exactly one of device or root_device_hints', {
          details: { field: 'params' },
        });
      const started = performance.now();
      context.progress({ phase: 'select', done: 0, total: 2, unit: 'steps' });
      const disk = await selectTargetDisk(
        {
          paths: deps.paths,
          signal: context.signal,
          ...(params.device === undefined ? {} : { device: params.device }),
          ...(params.root_device_hints === undefined
            ? {}
            : { hints: params.root_device_hints as RootDeviceHints }),
        },
        deps.select,
      );
      context.log.info({ device: disk.path, size_bytes: disk.sizeBytes }, 'erasing disk metadata');
      context.progress({ phase: 'wipe', done: 1, total: 2, unit: 'steps', message: disk.path });
      const { wiped } = await wipeSignatures(disk, {
        paths: deps.paths,
        signal: context.signal,
        logger: context.log,
      });
      context.progress({ phase: 'wipe', done: 2, total: 2, unit: 'steps', message: disk.path });
      return { device: disk.path, wiped, seconds: Number(((performance.now() - started) / 1000).toFixed(3)) };
    },
  }),
];
