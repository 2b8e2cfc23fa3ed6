import { Type } from '@sinclair/typebox';
import type { RootDeviceHints, TargetDisk } from '../image/contracts.js';
import {
  DEFAULT_ERASE_CONCURRENCY,
  eraseEach,
  planEraseAll,
  throwIfAnyFailed,
  type SkippedDisk,
} from '../hardware/generic/disks/erase-all.js';
import { selectTargetDisk, type SelectDeps } from '../hardware/generic/disks/select.js';
import { wipeSignatures } from '../hardware/generic/disks/wipe.js';
import { zeroFillDisk, type ZeroFillMethod } from '../hardware/generic/disks/zero-fill.js';
import type { HardwarePaths } from '../hardware/paths.js';
import { AgentError } from '../util/errors.js';
import type { RunProcess } from '../util/run-process.js';
import { defineCommand, type AnyCommandDefinition, type CommandContext } from './definition.js';

export interface DiskCommandDeps {
  paths: HardwarePaths;
  /** Tests list their own loop devices as candidates. */
  select?: SelectDeps;
  /**
   * Loop devices count as disks for `all` (and for hints and the default choice): lab rigs whose
   * disks are loop devices. Off on real hardware, where a loop device is never a disk to erase.
   */
  includeLoops?: boolean;
  /** Disks erased at once by `all`. */
  eraseConcurrency?: number;
  /** Where blkdiscard is looked up (the agent's PATH when absent); tests put fakes there. */
  toolPath?: string;
  /** Bytes per BLKZEROOUT call, and the time between SIGTERM and SIGKILL when cancelled. */
  zeroStepBytes?: number;
  killGraceMs?: number;
  runProcess?: RunProcess;
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
    all: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

interface EraseTarget {
  device?: string;
  root_device_hints?: Record<string, string | number | boolean>;
  all?: boolean;
}

const seconds = (started: number): number => Number(((performance.now() - started) / 1000).toFixed(3));

/**
 * Erasing is never aimed by default: the caller names the disk, gives hints (`{}` asks for the
 * disk image.write would choose), or asks for every disk.
 */
const checkOneWay = (params: EraseTarget): void => {
  const ways = [params.device !== undefined, params.root_device_hints !== undefined, params.all === true];
  if (ways.filter(Boolean).length !== 1)
    throw new AgentError('INVALID_PARAMS', 'give exactly one of device, root_device_hints or all: true', {
      details: { field: 'params' },
    });
};

const selectOne = (
  deps: DiskCommandDeps,
  params: EraseTarget,
  context: CommandContext,
): Promise<TargetDisk> =>
  selectTargetDisk(
    {
      paths: deps.paths,
      signal: context.signal,
      includeLoops: deps.includeLoops ?? false,
      ...(params.device === undefined ? {} : { device: params.device }),
      ...(params.root_device_hints === undefined
        ? {}
        : { hints: params.root_device_hints as RootDeviceHints }),
    },
    deps.select,
  );

/** The disks to erase: the one named, or every disk checked first (read-only ones skipped). */
const chooseTargets = async (
  deps: DiskCommandDeps,
  params: EraseTarget,
  context: CommandContext,
): Promise<{ targets: TargetDisk[]; skipped: SkippedDisk[] }> => {
  if (params.all !== true) return { targets: [await selectOne(deps, params, context)], skipped: [] };
  const plan = await planEraseAll(deps.paths, {
    signal: context.signal,
    includeLoops: deps.includeLoops ?? false,
    ...(deps.select?.listCandidates ? { listCandidates: deps.select.listCandidates } : {}),
  });
  if (plan.skipped.length > 0) context.log.warn({ skipped: plan.skipped }, 'disks skipped');
  // IPA succeeds with nothing to erase; the warning is what tells an operator.
  if (plan.targets.length === 0) context.log.warn({ skipped: plan.skipped }, 'no disk to erase was found');
  return plan;
};

export const diskCommands = (deps: DiskCommandDeps): AnyCommandDefinition[] => [
  defineCommand({
    name: 'disk.erase_metadata',
    summary:
      'Wipe partition-table and filesystem signatures at both ends of one disk (device or root device hints) or of every disk (all)',
    exclusive: true,
    params: EraseParams,
    handler: async (params, context) => {
      checkOneWay(params);
      const started = performance.now();
      context.progress({ phase: 'select', done: 0, total: null, unit: 'steps' });
      const { targets, skipped } = await chooseTargets(deps, params, context);
      const total = targets.length + 1;
      let finished = 1;
      context.progress({ phase: 'wipe', done: finished, total, unit: 'steps' });
      const outcome = await eraseEach(
        targets,
        deps.eraseConcurrency ?? DEFAULT_ERASE_CONCURRENCY,
        context.signal,
        async (disk) => {
          context.log.info({ device: disk.path, size_bytes: disk.sizeBytes }, 'erasing disk metadata');
          const { wiped } = await wipeSignatures(disk, {
            paths: deps.paths,
            signal: context.signal,
            logger: context.log,
            ...(deps.runProcess ? { runProcess: deps.runProcess } : {}),
          });
          finished += 1;
          context.progress({ phase: 'wipe', done: finished, total, unit: 'steps', message: disk.path });
          return wiped;
        },
      );
      throwIfAnyFailed(outcome, 'WIPE_FAILED', 'erasing disk metadata');
      const devices = outcome.done.map(({ disk, result }) => ({ device: disk.path, wiped: result }));
      if (params.all !== true) {
        // The one-disk form keeps its original result shape.
        const [only] = devices;
        return { device: only?.device, wiped: only?.wiped ?? [], seconds: seconds(started) };
      }
      return { devices, skipped, seconds: seconds(started) };
    },
  }),
  defineCommand({
    name: 'disk.erase',
    summary:
      'Overwrite one disk (device or root device hints) or every disk (all) with zeros, then wipe its metadata',
    exclusive: true,
    params: EraseParams,
    handler: async (params, context) => {
      checkOneWay(params);
      const started = performance.now();
      context.progress({ phase: 'select', done: 0, total: null, unit: 'steps' });
      const { targets, skipped } = await chooseTargets(deps, params, context);
      const total = targets.reduce((sum, disk) => sum + disk.sizeBytes, 0);
      const perDisk = new Map<string, number>();
      // A message only when a disk starts or ends: with disks side by side, a message on every
      // update would fill each progress notification with alternating device names.
      const report = (device: string, bytes: number, message?: string): void => {
        perDisk.set(device, bytes);
        const done = [...perDisk.values()].reduce((sum, value) => sum + value, 0);
        const elapsed = (performance.now() - started) / 1000;
        context.progress({
          phase: 'erase',
          done,
          total,
          unit: 'bytes',
          rate: elapsed > 0 ? Math.round(done / elapsed) : null,
          ...(message === undefined ? {} : { message }),
        });
      };
      context.progress({ phase: 'erase', done: 0, total, unit: 'bytes' });
      const outcome = await eraseEach(
        targets,
        deps.eraseConcurrency ?? DEFAULT_ERASE_CONCURRENCY,
        context.signal,
        async (disk) => {
          context.log.info({ device: disk.path, size_bytes: disk.sizeBytes }, 'zeroing disk');
          report(disk.path, 0, `zeroing ${disk.path}`);
          const result = await zeroFillDisk(disk, {
            paths: deps.paths,
            logger: context.log,
            signal: context.signal,
            onProgress: (bytes) => report(disk.path, bytes),
            ...(deps.toolPath === undefined ? {} : { toolPath: deps.toolPath }),
            ...(deps.zeroStepBytes === undefined ? {} : { stepBytes: deps.zeroStepBytes }),
            ...(deps.killGraceMs === undefined ? {} : { killGraceMs: deps.killGraceMs }),
            ...(deps.runProcess ? { runProcess: deps.runProcess } : {}),
          });
          report(disk.path, result.bytes, `zeroed ${disk.path} (${result.method})`);
          return result;
        },
      );
      throwIfAnyFailed(outcome, 'ERASE_FAILED', 'zeroing');
      const devices: Array<{ device: string; bytes: number; method: ZeroFillMethod }> = outcome.done.map(
        ({ result }) => ({ device: result.device, bytes: result.bytes, method: result.method }),
      );
      return { devices, skipped, seconds: seconds(started) };
    },
  }),
];
