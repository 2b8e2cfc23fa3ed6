/**
 * IPA's command names (ironic-protocol.md §2.1), each mapped onto registry commands. The API
 * server knows none of these names: it looks them up in this table through IpaExtensions.
 */
import { Type, type TSchema, type Static } from '@sinclair/typebox';
import { readDiskIdentifier } from '../hardware/generic/disks/disk-identifier.js';
import { readPartitionTable } from '../hardware/generic/disks/partition-table.js';
import { validate } from '../protocol/validate.js';
import { AgentError, serializeError } from '../util/errors.js';
import type { IpaCommandContext } from './command-context.js';
import { chooseNode, type JsonObject } from './node.js';
import type { IpaErrorType } from './results.js';
import { advertisedSteps, checkVersions, findStep, hardwareManagerVersions, type StepKind } from './steps.js';

export interface IpaCommandEntry {
  extension: string;
  command: string;
  /** IPA's sync commands answer with their result whatever `wait` says; async ones answer RUNNING. */
  sync: boolean;
  /** Runs registry commands that change a disk, the DPU or the power: refused while the engine is busy. */
  exclusive: boolean;
  /** The IPA error class of a failure whose code has no class of its own. */
  failureType: IpaErrorType;
  /**
   * An async command Ironic polls right after posting it (install_bootloader): the answer to the
   * POST waits this long for it to end, so the first poll finds it done instead of costing Ironic
   * a whole command_wait_interval (6 s by default).
   */
  settleMs?: number;
  run: (params: JsonObject, context: IpaCommandContext) => Promise<JsonObject | null>;
}

/** Checks a command's params; a bad one fails the command (InvalidCommandParamsError), as in IPA. */
const parse = <S extends TSchema>(schema: S, params: JsonObject): Static<S> => {
  const checked = validate(schema, params);
  if (checked.ok) return checked.value;
  throw new AgentError('INVALID_PARAMS', `${checked.violation.field}: ${checked.violation.expected}`, {
    details: { ...checked.violation },
  });
};

const JsonObjectSchema = Type.Record(Type.String(), Type.Unknown());
const Ports = Type.Optional(Type.Union([Type.Array(Type.Unknown()), Type.Null()]));
const Versions = Type.Optional(Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]));

const NoParams = Type.Object({}, { additionalProperties: false });

const GetStepsParams = Type.Object(
  { node: Type.Optional(Type.Unknown()), ports: Ports },
  { additionalProperties: false },
);

// Ironic's step carries more (priority, abortable, requires_ramdisk...): kept and sent back as is.
const StepRequest = Type.Object({
  step: Type.String({ minLength: 1, maxLength: 256 }),
  interface: Type.String({ minLength: 1, maxLength: 64 }),
  args: Type.Optional(Type.Union([JsonObjectSchema, Type.Null()])),
});

const ExecuteCleanStepParams = Type.Object(
  { step: StepRequest, node: Type.Optional(Type.Unknown()), ports: Ports, clean_version: Versions },
  { additionalProperties: false },
);

const ExecuteDeployStepParams = Type.Object(
  { step: StepRequest, node: Type.Optional(Type.Unknown()), ports: Ports, deploy_version: Versions },
  { additionalProperties: false },
);

const NullableText = Type.Optional(Type.Union([Type.String({ maxLength: 256 }), Type.Null()]));

const InstallBootloaderParams = Type.Object(
  {
    root_uuid: NullableText,
    efi_system_part_uuid: NullableText,
    prep_boot_part_uuid: NullableText,
    target_boot_mode: Type.Optional(Type.Union([Type.Literal('uefi'), Type.Literal('bios'), Type.Null()])),
    ignore_bootloader_failure: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
  },
  { additionalProperties: false },
);

const getSteps = (kind: StepKind) => async (params: JsonObject, context: IpaCommandContext) => {
  const parsed = parse(GetStepsParams, params);
  chooseNode(parsed.node, context.session.node);
  const bluefield = await context.bluefieldPresent();
  return {
    [`${kind}_steps`]: advertisedSteps(kind, bluefield),
    hardware_manager_version: hardwareManagerVersions(bluefield),
  };
};

const executeStep =
  (kind: StepKind) =>
  async (params: JsonObject, context: IpaCommandContext): Promise<JsonObject> => {
    const parsed =
      kind === 'clean'
        ? { ...parse(ExecuteCleanStepParams, params), versions: params.clean_version }
        : { ...parse(ExecuteDeployStepParams, params), versions: params.deploy_version };
    const node = chooseNode(parsed.node, context.session.node);
    const bluefield = await context.bluefieldPresent();
    checkVersions(
      parsed.versions as Record<string, unknown> | null | undefined,
      hardwareManagerVersions(bluefield),
    );
    const action = findStep(kind, parsed.step, bluefield);
    context.log.info({ step: `${parsed.step.interface}.${parsed.step.step}`, kind }, 'running step');
    const result = await action.run(parsed.step.args ?? {}, node, context);
    // Ironic accepts the step as done only when the step it gets back is the one it sent.
    return { [`${kind}_result`]: result ?? null, [`${kind}_step`]: params.step };
  };

const getPartitionUuids = async (params: JsonObject, context: IpaCommandContext): Promise<JsonObject> => {
  parse(NoParams, params);
  const device = context.deploy.writtenDevice;
  if (device === null) return {};
  return { 'root uuid': await readDiskIdentifier(device) };
};

/**
 * For a whole-disk image the boot loader is inside the image: what is left is to check the disk
 * still carries the image's partition table (and the identifier Ironic recorded). It does not add
 * EFI NVRAM boot entries; the firmware finds the image's loader at the removable-media path, or
 * Ironic's management interface sets the boot device.
 */
const installBootloader = async (params: JsonObject, context: IpaCommandContext): Promise<null> => {
  const parsed = parse(InstallBootloaderParams, params);
  try {
    const device = context.deploy.writtenDevice;
    if (device === null)
      throw new AgentError(
        'NO_IMAGE_WRITTEN',
        'no image was written since the agent started, so there is no disk whose boot loader to check; run write_image first',
      );
    const table = await readPartitionTable(device);
    if (!table || table.partitions === 0)
      throw new AgentError(
        'PARTITION_TABLE_MISSING',
        `no partitions found on ${device} after the image was written: the image is not a bootable whole-disk image`,
        { details: { device, table } },
      );
    const identifier = await readDiskIdentifier(device);
    const rootUuid = parsed.root_uuid?.trim().toLowerCase();
    if (rootUuid && rootUuid !== identifier)
      throw new AgentError(
        'ROOT_UUID_MISMATCH',
        `root uuid ${parsed.root_uuid} is not the disk identifier ${identifier} of ${device}, the disk this agent wrote`,
        { details: { device, root_uuid: parsed.root_uuid, identifier } },
      );
    context.log.info(
      { device, table, target_boot_mode: parsed.target_boot_mode ?? null },
      'whole-disk image: its boot loader is in the image; no EFI boot entry was added',
    );
  } catch (error) {
    if (!parsed.ignore_bootloader_failure) throw error;
    context.log.warn({ error: serializeError(error) }, 'boot loader check failed; ignored as asked');
  }
  return null;
};

/** A registry command whose result IPA does not report. */
const registryOnly =
  (command: string) =>
  async (params: JsonObject, context: IpaCommandContext): Promise<null> => {
    await context.runRegistry(command, parse(NoParams, params));
    return null;
  };

const collectSystemLogs = async (params: JsonObject, context: IpaCommandContext): Promise<JsonObject> => {
  const result = await context.runRegistry('system.collect_logs', parse(NoParams, params));
  if (typeof result.archive !== 'string')
    throw new AgentError('INTERNAL', 'system.collect_logs returned no archive', {
      details: { keys: Object.keys(result) },
    });
  return { system_logs: result.archive };
};

/** Every IPA command this agent serves. */
export const ipaCommands = (): IpaCommandEntry[] => [
  {
    extension: 'clean',
    command: 'get_clean_steps',
    sync: true,
    exclusive: false,
    failureType: 'CommandExecutionError',
    run: getSteps('clean'),
  },
  {
    extension: 'clean',
    command: 'execute_clean_step',
    sync: false,
    exclusive: true,
    failureType: 'CleaningError',
    run: executeStep('clean'),
  },
  {
    extension: 'deploy',
    command: 'get_deploy_steps',
    sync: true,
    exclusive: false,
    failureType: 'CommandExecutionError',
    run: getSteps('deploy'),
  },
  {
    extension: 'deploy',
    command: 'execute_deploy_step',
    sync: false,
    exclusive: true,
    failureType: 'DeploymentError',
    run: executeStep('deploy'),
  },
  {
    extension: 'standby',
    command: 'get_partition_uuids',
    sync: true,
    exclusive: false,
    failureType: 'CommandExecutionError',
    run: getPartitionUuids,
  },
  {
    extension: 'standby',
    command: 'power_off',
    sync: false,
    exclusive: true,
    failureType: 'CommandExecutionError',
    run: registryOnly('system.power_off'),
  },
  {
    extension: 'standby',
    command: 'run_image',
    sync: false,
    exclusive: true,
    failureType: 'CommandExecutionError',
    run: registryOnly('system.reboot'),
  },
  {
    extension: 'standby',
    command: 'sync',
    sync: true,
    exclusive: true,
    failureType: 'CommandExecutionError',
    run: registryOnly('system.sync'),
  },
  {
    extension: 'image',
    command: 'install_bootloader',
    sync: false,
    exclusive: false,
    failureType: 'CommandExecutionError',
    settleMs: 2_000,
    run: installBootloader,
  },
  {
    extension: 'log',
    command: 'collect_system_logs',
    sync: true,
    exclusive: false,
    failureType: 'CommandExecutionError',
    run: collectSystemLogs,
  },
];
