/**
 * The clean and deploy steps the agent offers Ironic (ipa.md §3.3), and which registry command
 * each one runs. BlueField steps are offered only when a BlueField is present; their `argsinfo`
 * lists every arg the registry command takes, because Ironic refuses a manual step's args that
 * the agent did not advertise.
 */
import { InstallBfbParams, SetHostPrivilegeParams, SetModeParams } from '../commands/bluefield.js';
import { AgentError } from '../util/errors.js';
import type { IpaCommandContext } from './command-context.js';
import type { IpaStep } from './contracts.js';
import type { JsonObject } from './node.js';
import { runWriteImage } from './write-image-step.js';

export const HARDWARE_MANAGERS = {
  generic: { className: 'GenericHardwareManager', versionKey: 'generic_hardware_manager', version: '1.1' },
  bluefield: {
    className: 'BlueFieldHardwareManager',
    versionKey: 'bluefield_hardware_manager',
    version: '1.0',
  },
} as const;

type Manager = keyof typeof HARDWARE_MANAGERS;

export type StepKind = 'clean' | 'deploy';

type ArgsInfo = NonNullable<IpaStep['argsinfo']>;

interface StepAction {
  manager: Manager;
  name: string;
  argsinfo?: ArgsInfo;
  run: (args: JsonObject, node: JsonObject | null, context: IpaCommandContext) => Promise<unknown>;
}

interface OfferedStep {
  action: StepAction;
  priority: number;
  /** Clean steps only: whether Ironic may abort cleaning while this step runs. */
  abortable?: boolean;
}

/** A generic step runs one registry command with fixed params: Ironic's args have nothing to add. */
const fixedStep = (name: string, command: string, params: JsonObject): StepAction => ({
  manager: 'generic',
  name,
  run: async (args, _node, context) => {
    if (Object.keys(args).length > 0)
      throw new AgentError(
        'INVALID_PARAMS',
        `step ${name} takes no args; got ${Object.keys(args).join(', ')}`,
        {
          details: { field: 'step.args' },
        },
      );
    return context.runRegistry(command, params);
  },
});

interface SchemaWithProperties {
  properties: Record<string, unknown>;
  required?: string[];
}

/**
 * argsinfo from a registry command's schema: every property, required as the schema says. The
 * descriptions table is typed by the schema's keys, so a new param cannot go unadvertised.
 */
const argsinfoOf = <K extends string>(
  schema: SchemaWithProperties,
  descriptions: Record<K, string>,
): ArgsInfo =>
  Object.fromEntries(
    Object.keys(schema.properties).map((key) => [
      key,
      {
        description: descriptions[key as K],
        required: schema.required?.includes(key) ?? false,
      },
    ]),
  );

/** A BlueField step passes Ironic's args to its registry command, which validates them. */
const bluefieldStep = (name: string, command: string, argsinfo: ArgsInfo): StepAction => ({
  manager: 'bluefield',
  name,
  argsinfo,
  run: (args, _node, context) => context.runRegistry(command, args),
});

const DEVICE_ARG = 'PCI address or rshim name of one BlueField; all of them when left out';

const INSTALL_BFB_ARGS: Record<keyof InstallBfbParams, string> = {
  url: 'http(s) URL of the BFB bundle to install',
  checksum: 'checksum of the BFB: "sha256:<hex>", a bare hex, or the URL of a checksums file',
  bf_cfg: 'bf.cfg contents passed to the installer',
  device: DEVICE_ARG,
  timeout_s: 'seconds to wait for the DPU to report the install finished (10 to 21600)',
  force: 'install even when the same BFB version is already running',
};

const SET_MODE_ARGS: Record<keyof SetModeParams, string> = {
  mode: '"nic" or "dpu": the mode for the next power cycle',
  hide_port2_pf: 'hide the second port physical function from the host',
  device: DEVICE_ARG,
};

const SET_HOST_PRIVILEGE_ARGS: Record<keyof SetHostPrivilegeParams, string> = {
  level: '"restricted" or "privileged": what the x86 host may change on the DPU',
  disable_port_owner: 'with restricted: take port ownership away from the host',
  disable_rshim: 'with restricted: disable the host rshim (refused before a BFB was installed, unless force)',
  disable_tracer: 'with restricted: disable the firmware tracer for the host',
  disable_counter_rd: 'with restricted: stop the host reading counters',
  device: DEVICE_ARG,
  force: 'disable the rshim even though no BFB was installed by this agent',
};

const ERASE_DEVICES = fixedStep('erase_devices', 'disk.erase', { all: true });
const ERASE_DEVICES_METADATA = fixedStep('erase_devices_metadata', 'disk.erase_metadata', { all: true });

const WRITE_IMAGE: StepAction = {
  manager: 'generic',
  name: 'write_image',
  run: (args, node, context) => runWriteImage(args, node, context),
};

const BLUEFIELD_STEPS: StepAction[] = [
  bluefieldStep(
    'bluefield_install_bfb',
    'bluefield.install_bfb',
    argsinfoOf(InstallBfbParams, INSTALL_BFB_ARGS),
  ),
  bluefieldStep('bluefield_set_mode', 'bluefield.set_mode', argsinfoOf(SetModeParams, SET_MODE_ARGS)),
  bluefieldStep(
    'bluefield_set_host_privilege',
    'bluefield.set_host_privilege',
    argsinfoOf(SetHostPrivilegeParams, SET_HOST_PRIVILEGE_ARGS),
  ),
];

const OFFERED: Record<StepKind, OfferedStep[]> = {
  clean: [
    { action: ERASE_DEVICES, priority: 10, abortable: true },
    { action: ERASE_DEVICES_METADATA, priority: 99, abortable: true },
    // Firmware and BFB changes are not cut short safely: Ironic may not abort them.
    ...BLUEFIELD_STEPS.map((action) => ({ action, priority: 0, abortable: false })),
  ],
  deploy: [
    { action: WRITE_IMAGE, priority: 0 },
    { action: ERASE_DEVICES_METADATA, priority: 0 },
    ...BLUEFIELD_STEPS.map((action) => ({ action, priority: 0 })),
  ],
};

const STEP_INTERFACE = 'deploy';

const managersFor = (bluefield: boolean): Manager[] => (bluefield ? ['generic', 'bluefield'] : ['generic']);

const offeredFor = (kind: StepKind, bluefield: boolean): OfferedStep[] =>
  OFFERED[kind].filter((offered) => managersFor(bluefield).includes(offered.action.manager));

/** `{"GenericHardwareManager": [...], "BlueFieldHardwareManager": [...]}`, as get_*_steps answers. */
export const advertisedSteps = (kind: StepKind, bluefield: boolean): Record<string, IpaStep[]> => {
  const byManager: Record<string, IpaStep[]> = {};
  for (const manager of managersFor(bluefield)) byManager[HARDWARE_MANAGERS[manager].className] = [];
  for (const { action, priority, abortable } of offeredFor(kind, bluefield)) {
    byManager[HARDWARE_MANAGERS[action.manager].className]?.push({
      step: action.name,
      priority,
      interface: STEP_INTERFACE,
      reboot_requested: false,
      ...(abortable === undefined ? {} : { abortable }),
      ...(action.argsinfo ? { argsinfo: action.argsinfo } : {}),
    });
  }
  return byManager;
};

/** `hardware_manager_version`: Ironic sends it back with each step as clean_version/deploy_version. */
export const hardwareManagerVersions = (bluefield: boolean): Record<string, string> =>
  Object.fromEntries(
    managersFor(bluefield).map((manager) => [
      HARDWARE_MANAGERS[manager].versionKey,
      HARDWARE_MANAGERS[manager].version,
    ]),
  );

const sameVersions = (a: Record<string, unknown>, b: Record<string, string>): boolean =>
  Object.keys(a).length === Object.keys(b).length &&
  Object.entries(b).every(([key, value]) => a[key] === value);

/**
 * IPA's check: the versions Ironic cached with the steps must be the agent's own, or the steps it
 * holds may not be the ones offered now. Nothing sent means nothing to check.
 */
export const checkVersions = (
  provided: Record<string, unknown> | null | undefined,
  actual: Record<string, string>,
): void => {
  if (!provided || Object.keys(provided).length === 0) return;
  if (sameVersions(provided, actual)) return;
  throw new AgentError(
    'VERSION_MISMATCH',
    `Ironic's hardware manager versions ${JSON.stringify(provided)} are not this agent's ${JSON.stringify(actual)}; Ironic refreshes its cached steps`,
    { details: { provided, actual } },
  );
};

/** The action for a step Ironic asked for, or UNKNOWN_STEP naming what is offered. */
export const findStep = (
  kind: StepKind,
  request: { step: string; interface: string },
  bluefield: boolean,
): StepAction => {
  const offered = offeredFor(kind, bluefield);
  const match = offered.find(
    ({ action }) => action.name === request.step && request.interface === STEP_INTERFACE,
  );
  if (match) return match.action;
  const name = `${request.interface}.${request.step}`;
  const hidden = OFFERED[kind].some(
    ({ action }) => action.name === request.step && action.manager === 'bluefield',
  );
  const known = offered.map(({ action }) => `${STEP_INTERFACE}.${action.name}`).join(', ');
  throw new AgentError(
    'UNKNOWN_STEP',
    hidden && request.interface === STEP_INTERFACE
      ? `${kind} step ${name} needs a BlueField, and this host has none`
      : `${kind} step ${name} is not offered by this agent; it offers ${known}`,
    { details: { step: request.step, interface: request.interface, offered: known.split(', ') } },
  );
};
