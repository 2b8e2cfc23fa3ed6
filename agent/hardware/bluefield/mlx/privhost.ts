/**
 * Host privilege (zero-trust) through mlxprivhost/mstprivhost. The firmware lets only the DPU's
 * Arm restrict or privilege the external host: from the host the tool prints `-E- Operation is not
 * permitted (refer to the DPU user manual)`, so a change is tried on the host first and then run on
 * the DPU through a runner that reaches its Arm (SSH over tmfifo). Restriction applies at once,
 * except disable_rshim (power cycle) and disable_tracer/counter_rd/port_owner (firmware reset).
 */
import { AgentError } from '../../../util/errors.js';
import type { HostPrivilegeState, MlxToolSet, PrivilegeLevel, ToolRunner } from '../contracts.js';
import { isHostRefusalText } from './mode.js';
import { errorLines, outputOf, runTool, toolFailed, type ToolRunOptions } from './tools.js';

export const PRIVILEGE_FLAGS = [
  'disable_rshim',
  'disable_tracer',
  'disable_port_owner',
  'disable_counter_rd',
] as const;
export type PrivilegeFlag = (typeof PRIVILEGE_FLAGS)[number];
export type PrivilegeFlags = Partial<Record<PrivilegeFlag, boolean>>;

/** How the DPU's Arm sees its own first ECPF (the same BDF on BF2 and BF3 Arm systems). */
export const DPU_SIDE_DEVICE = '0000:03:00.0';

const parseLevel = (value: string): PrivilegeLevel => {
  const upper = value.toUpperCase();
  if (upper === 'PRIVILEGED') return 'privileged';
  if (upper === 'RESTRICTED') return 'restricted';
  return 'unknown';
};

const parseBool = (value: string): boolean | null => {
  const upper = value.toUpperCase();
  if (upper === 'TRUE') return true;
  if (upper === 'FALSE') return false;
  return null;
};

/**
 * `q` output, under either title (`Current device configurations:` in MFT ~4.16, `Host
 * configurations` since): `level : PRIVILEGED|RESTRICTED` and the four `disable_*` TRUE/FALSE
 * lines. With `-f` on the Arm each line has one column per host; the first is host 0.
 */
export const parsePrivilegeQuery = (text: string): HostPrivilegeState => {
  const state: HostPrivilegeState = {
    level: 'unknown',
    disable_rshim: null,
    disable_tracer: null,
    disable_port_owner: null,
    disable_counter_rd: null,
  };
  for (const line of text.split('\n')) {
    const match =
      /^\s*(level|disable_rshim|disable_tracer|disable_port_owner|disable_counter_rd)\s*:\s*(\S+)/.exec(line);
    const key = match?.[1];
    const value = match?.[2];
    if (key === undefined || value === undefined) continue;
    if (key === 'level') state.level = parseLevel(value);
    else state[key as PrivilegeFlag] = parseBool(value);
  }
  return state;
};

export interface PrivilegeSetOutcome {
  ok: boolean;
  /** The tool refused because it does not run on the DPU's Arm. */
  notPermitted: boolean;
  /** `-I- preparing configuration file...Done!`, `-I- configuring device...Done!` (or `Failed`). */
  steps: Array<{ step: string; ok: boolean }>;
  errors: string[];
}

export const parsePrivilegeSet = (text: string, exitCode: number | null): PrivilegeSetOutcome => {
  const steps: Array<{ step: string; ok: boolean }> = [];
  for (const line of text.split('\n')) {
    const match = /-I-\s*(.*?)\.\.\.\s*(Done!|Failed)/.exec(line);
    if (match?.[1] !== undefined) steps.push({ step: match[1], ok: match[2] === 'Done!' });
  }
  const errors = errorLines(text);
  return {
    ok: exitCode === 0 && errors.length === 0 && steps.every((s) => s.ok),
    notPermitted: errors.some((e) => /not permitted/i.test(e)),
    steps,
    errors,
  };
};

export const readPrivilege = async (
  runner: ToolRunner,
  tools: MlxToolSet,
  device: string,
  options: ToolRunOptions = {},
): Promise<HostPrivilegeState> => {
  const result = await runTool(runner, tools.privhost, ['-d', device, 'q'], options);
  const state = parsePrivilegeQuery(result.stdout);
  if (result.exitCode !== 0 || state.level === 'unknown') {
    throw toolFailed(result, `${tools.privhost} could not read the host privilege of ${device}`, {
      device,
      where: runner.where,
    });
  }
  return state;
};

export interface SetPrivilegeOptions extends ToolRunOptions {
  /** The device as the DPU's Arm names it (its MST name or BDF); DPU_SIDE_DEVICE when absent. */
  dpuDevice?: string;
  /** The tools installed on the DPU (BlueField OS images ship MFT); the host's set when absent. */
  dpuTools?: MlxToolSet;
}

export interface SetPrivilegeResult {
  changed: boolean;
  before: HostPrivilegeState;
  after: HostPrivilegeState;
  /** disable_rshim changed: it takes effect at the next power cycle. */
  power_cycle_required: boolean;
  /** disable_tracer, disable_counter_rd or disable_port_owner changed: they take effect at a firmware reset. */
  fw_reset_required: boolean;
  ran_on: 'host' | 'dpu';
}

const targetState = (level: 'privileged' | 'restricted', flags: PrivilegeFlags): HostPrivilegeState => ({
  level,
  disable_rshim: level === 'restricted' && flags.disable_rshim === true,
  disable_tracer: level === 'restricted' && flags.disable_tracer === true,
  disable_port_owner: level === 'restricted' && flags.disable_port_owner === true,
  disable_counter_rd: level === 'restricted' && flags.disable_counter_rd === true,
});

const sameState = (a: HostPrivilegeState, b: HostPrivilegeState): boolean =>
  a.level === b.level && PRIVILEGE_FLAGS.every((flag) => a[flag] === b[flag]);

const commandArgs = (device: string, level: 'privileged' | 'restricted', flags: PrivilegeFlags): string[] => [
  '-d',
  device,
  ...PRIVILEGE_FLAGS.filter((flag) => level === 'restricted' && flags[flag] === true).map(
    (flag) => `--${flag}`,
  ),
  level === 'restricted' ? 'r' : 'p',
];

/**
 * Brings the host's privilege to `level` (with `flags` when restricting): nothing runs when it
 * already matches; else the tool runs on the host and, when the firmware refuses there, through
 * `dpuRunner` (OPERATION_NOT_PERMITTED without one); a read-back that differs throws
 * PRIVILEGE_VERIFY_FAILED.
 */
export const setPrivilege = async (
  hostRunner: ToolRunner,
  dpuRunner: ToolRunner | null,
  tools: MlxToolSet,
  device: string,
  level: 'privileged' | 'restricted',
  flags: PrivilegeFlags = {},
  options: SetPrivilegeOptions = {},
): Promise<SetPrivilegeResult> => {
  if (level === 'privileged' && PRIVILEGE_FLAGS.some((flag) => flags[flag] === true)) {
    throw new AgentError('INVALID_PARAMS', 'disable flags are only allowed when restricting the host', {
      details: { level, flags },
    });
  }
  if (dpuRunner !== null && dpuRunner.where !== 'dpu') {
    throw new TypeError(`Expected dpuRunner to run on the DPU, got a runner for ${dpuRunner.where}`);
  }
  const runOptions: ToolRunOptions = {
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
  };
  const before = await readPrivilege(hostRunner, tools, device, runOptions);
  const target = targetState(level, flags);
  if (sameState(before, target)) {
    return {
      changed: false,
      before,
      after: before,
      power_cycle_required: false,
      fw_reset_required: false,
      ran_on: 'host',
    };
  }

  let ranOn: 'host' | 'dpu' = 'host';
  const hostResult = await runTool(hostRunner, tools.privhost, commandArgs(device, level, flags), runOptions);
  const hostOutcome = parsePrivilegeSet(outputOf(hostResult), hostResult.exitCode);
  if (!hostOutcome.ok) {
    const refused = hostOutcome.notPermitted || isHostRefusalText(outputOf(hostResult));
    if (!refused) {
      throw toolFailed(hostResult, `${tools.privhost} could not set the host ${level}`, {
        device,
        where: 'host',
      });
    }
    if (dpuRunner === null) {
      throw new AgentError(
        'OPERATION_NOT_PERMITTED',
        `the firmware lets only the DPU's Arm set the host ${level} (${hostOutcome.errors.at(-1) ?? 'refused'}); SSH to the DPU is needed`,
        { details: { device, level, flags: target, errors: hostOutcome.errors, where: 'host' } },
      );
    }
    const dpuTools = options.dpuTools ?? tools;
    const dpuDevice = options.dpuDevice ?? DPU_SIDE_DEVICE;
    const dpuResult = await runTool(
      dpuRunner,
      dpuTools.privhost,
      commandArgs(dpuDevice, level, flags),
      runOptions,
    );
    const dpuOutcome = parsePrivilegeSet(outputOf(dpuResult), dpuResult.exitCode);
    if (!dpuOutcome.ok) {
      throw toolFailed(dpuResult, `${dpuTools.privhost} on the DPU could not set the host ${level}`, {
        device: dpuDevice,
        where: 'dpu',
      });
    }
    ranOn = 'dpu';
  }

  const after = await readPrivilege(hostRunner, tools, device, runOptions);
  if (!sameState(after, target)) {
    throw new AgentError(
      'PRIVILEGE_VERIFY_FAILED',
      `after setting the host ${level} on ${device}, it reads ${after.level}${PRIVILEGE_FLAGS.filter(
        (flag) => after[flag] !== target[flag],
      )
        .map((flag) => ` ${flag}=${String(after[flag])}`)
        .join('')}`,
      { details: { device, expected: target, before, after, ran_on: ranOn } },
    );
  }
  return {
    changed: true,
    before,
    after,
    power_cycle_required: before.disable_rshim !== after.disable_rshim,
    fw_reset_required: (['disable_tracer', 'disable_port_owner', 'disable_counter_rd'] as const).some(
      (flag) => before[flag] !== after[flag],
    ),
    ran_on: ranOn,
  };
};
