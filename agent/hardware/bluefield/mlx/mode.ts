/**
 * DPU / NIC mode through the NV parameters of the internal CPU (mstflint's mlxconfig_host.db):
 *   BF1  INTERNAL_CPU_MODEL: EMBEDDED_CPU(1) = DPU, SEPARATED_HOST(0) = the SmartNIC's other mode
 *   BF2  DPU = MODEL EMBEDDED_CPU, PAGE_SUPPLIER/ESWITCH_MANAGER/IB_VPORT0 ECPF, OFFLOAD_ENGINE ENABLED
 *        NIC = MODEL EMBEDDED_CPU, those three EXT_HOST_PF, OFFLOAD_ENGINE DISABLED
 *   BF3  INTERNAL_CPU_OFFLOAD_ENGINE ENABLED(0) = DPU, DISABLED(1) = NIC
 * A change is written to the next-boot configuration and takes effect after a full power cycle.
 */
import { AgentError } from '../../../util/errors.js';
import type {
  BlueFieldGeneration,
  DpuMode,
  MlxToolSet,
  ModeState,
  NvValue,
  ToolRunner,
} from '../contracts.js';
import { nvValueIs, parseConfigQuery, parseConfigSet, splitNvValue } from './parse-config.js';
import { errorLines, outputOf, runTool, toolFailed, type ToolRunOptions } from './tools.js';

export type ModeTarget = 'nic' | 'dpu';

interface EnumValue {
  name: string;
  number: number;
}

const EMBEDDED_CPU: EnumValue = { name: 'EMBEDDED_CPU', number: 1 };
const SEPARATED_HOST: EnumValue = { name: 'SEPARATED_HOST', number: 0 };
const ECPF: EnumValue = { name: 'ECPF', number: 0 };
const EXT_HOST_PF: EnumValue = { name: 'EXT_HOST_PF', number: 1 };
const ENABLED: EnumValue = { name: 'ENABLED', number: 0 };
const DISABLED: EnumValue = { name: 'DISABLED', number: 1 };
const TRUE: EnumValue = { name: 'True', number: 1 };
const FALSE: EnumValue = { name: 'False', number: 0 };

export const MODEL = 'INTERNAL_CPU_MODEL';
export const PAGE_SUPPLIER = 'INTERNAL_CPU_PAGE_SUPPLIER';
export const ESWITCH_MANAGER = 'INTERNAL_CPU_ESWITCH_MANAGER';
export const IB_VPORT0 = 'INTERNAL_CPU_IB_VPORT0';
export const OFFLOAD_ENGINE = 'INTERNAL_CPU_OFFLOAD_ENGINE';
export const HIDE_PORT2_PF = 'HIDE_PORT2_PF';

const OWNERS = [PAGE_SUPPLIER, ESWITCH_MANAGER, IB_VPORT0] as const;

export interface ModeParamOptions {
  /** Also read (and, when setting, write) HIDE_PORT2_PF. */
  hidePort2Pf?: boolean;
}

/** The NV parameters that make up the mode of a generation, in the order they are queried. */
export const modeParams = (generation: BlueFieldGeneration, options: ModeParamOptions = {}): string[] => {
  const base =
    generation === 'BF1'
      ? [MODEL]
      : generation === 'BF2'
        ? [MODEL, ...OWNERS, OFFLOAD_ENGINE]
        : [MODEL, OFFLOAD_ENGINE];
  return options.hidePort2Pf === undefined ? base : [...base, HIDE_PORT2_PF];
};

const targetEnums = (
  generation: BlueFieldGeneration,
  mode: ModeTarget,
  options: ModeParamOptions,
): Record<string, EnumValue> => {
  const values: Record<string, EnumValue> = {};
  if (generation === 'BF1') {
    values[MODEL] = mode === 'dpu' ? EMBEDDED_CPU : SEPARATED_HOST;
  } else if (generation === 'BF2') {
    values[MODEL] = EMBEDDED_CPU;
    for (const owner of OWNERS) values[owner] = mode === 'dpu' ? ECPF : EXT_HOST_PF;
    values[OFFLOAD_ENGINE] = mode === 'dpu' ? ENABLED : DISABLED;
  } else {
    values[MODEL] = EMBEDDED_CPU;
    values[OFFLOAD_ENGINE] = mode === 'dpu' ? ENABLED : DISABLED;
  }
  if (options.hidePort2Pf !== undefined) values[HIDE_PORT2_PF] = options.hidePort2Pf ? TRUE : FALSE;
  return values;
};

/** What `set` must write for a mode, as `NAME=VALUE` pairs by parameter (enum names, as mlxconfig takes them). */
export const modeTarget = (
  generation: BlueFieldGeneration,
  mode: ModeTarget,
  options: ModeParamOptions = {},
): Record<string, string> =>
  Object.fromEntries(Object.entries(targetEnums(generation, mode, options)).map(([k, v]) => [k, v.name]));

/** The mode a set of parameter values means; `get` returns the shown value or null. */
export const classifyMode = (
  generation: BlueFieldGeneration,
  get: (param: string) => string | null,
): DpuMode => {
  const model = get(MODEL);
  if (nvValueIs(model, SEPARATED_HOST)) return 'separated_host';
  if (generation === 'BF1') return nvValueIs(model, EMBEDDED_CPU) ? 'dpu' : 'unknown';
  const offload = get(OFFLOAD_ENGINE);
  if (generation === 'BF3') {
    if (model !== null && !nvValueIs(model, EMBEDDED_CPU)) return 'unknown';
    if (nvValueIs(offload, ENABLED)) return 'dpu';
    if (nvValueIs(offload, DISABLED)) return 'nic';
    return 'unknown';
  }
  if (!nvValueIs(model, EMBEDDED_CPU)) return 'unknown';
  const owners = OWNERS.map((owner) => get(owner));
  if (owners.every((v) => nvValueIs(v, ECPF)) && nvValueIs(offload, ENABLED)) return 'dpu';
  if (owners.every((v) => nvValueIs(v, EXT_HOST_PF)) && nvValueIs(offload, DISABLED)) return 'nic';
  return 'unknown';
};

const sameNvValue = (a: string, b: string): boolean => {
  const x = splitNvValue(a);
  const y = splitNvValue(b);
  if (x.number !== null && y.number !== null) return x.number === y.number;
  return a.trim().toLowerCase() === b.trim().toLowerCase();
};

/** A change waits for a power cycle when any parameter's next-boot value differs from its current one. */
const pendingChange = (state: ModeState): boolean => {
  const known = Object.values(state.params).filter(
    (v): v is NvValue & { current: string } => v.current !== null,
  );
  if (known.length === 0) return state.current !== state.next;
  return known.some((v) => !sameNvValue(v.current, v.next));
};

const NV_ACCESS_HINT =
  'the NV configuration is half-applied: a full power cycle (not a warm reboot) is needed after an mlxconfig set';

export type ReadModeOptions = ModeParamOptions & ToolRunOptions;

/** Current and next-boot mode from `-e q` of just the mode parameters. */
export const readMode = async (
  runner: ToolRunner,
  tools: MlxToolSet,
  device: string,
  generation: BlueFieldGeneration,
  options: ReadModeOptions = {},
): Promise<ModeState> => {
  const params = modeParams(generation, options);
  const result = await runTool(runner, tools.config, ['-d', device, '-e', 'q', ...params], options);
  const query = parseConfigQuery(result.stdout);
  const missing = params.filter((p) => query.params[p] === undefined);
  if (result.exitCode !== 0 || missing.length === params.length) {
    const nvAccess = errorLines(outputOf(result)).some((e) => /NV access registers/i.test(e));
    throw toolFailed(result, `${tools.config} could not read the mode of ${device}`, {
      device,
      where: runner.where,
      ...(nvAccess ? { hint: NV_ACCESS_HINT } : {}),
    });
  }
  const current = (param: string): string | null => query.params[param]?.current ?? null;
  const next = (param: string): string | null => query.params[param]?.next ?? null;
  const read: Record<string, NvValue> = {};
  for (const param of params) {
    const value = query.params[param];
    if (value) read[param] = value;
  }
  return {
    current: query.columns.includes('current') ? classifyMode(generation, current) : 'unknown',
    next: classifyMode(generation, next),
    params: read,
  };
};

const REFUSAL_PATTERNS = [
  /operation is not permitted/i,
  /not permitted/i,
  /embedded CPU/i,
  /only .*(from|on) the (ARM|embedded)/i,
  /Failed to set nv_internal_cpu_conf settings/i,
];

/**
 * Whether a tool's output is the firmware refusing, from the host, what only the DPU's Arm may
 * change (INTERNAL_CPU_MODEL per the mstflint DB, host privileges): such a change can be retried
 * through SSH on the DPU.
 */
export const isHostRefusalText = (text: string): boolean =>
  errorLines(text).some((line) => REFUSAL_PATTERNS.some((pattern) => pattern.test(line)));

/** Whether an error from setMode/setPrivilege is a refusal that running on the DPU may get past. */
export const isHostRefusal = (error: unknown): boolean =>
  AgentError.is(error) && error.code === 'OPERATION_NOT_PERMITTED';

export interface SetModeResult {
  changed: boolean;
  before: ModeState;
  after: ModeState;
  power_cycle_required: boolean;
  /** The parameters written, `NAME -> VALUE`; empty when nothing had to change. */
  set: Record<string, string>;
}

export type SetModeOptions = ModeParamOptions & ToolRunOptions;

/**
 * Writes only the parameters whose next-boot value differs from the target, then reads them back.
 * A refusal on the host throws OPERATION_NOT_PERMITTED (isHostRefusal) so the caller can run the
 * same call with a runner on the DPU; a read-back that differs throws MODE_VERIFY_FAILED.
 */
export const setMode = async (
  runner: ToolRunner,
  tools: MlxToolSet,
  device: string,
  generation: BlueFieldGeneration,
  mode: ModeTarget,
  options: SetModeOptions = {},
): Promise<SetModeResult> => {
  const before = await readMode(runner, tools, device, generation, options);
  const target = targetEnums(generation, mode, options);
  const differing = Object.entries(target).filter(([param, value]) => {
    const shown = before.params[param]?.next ?? null;
    return !nvValueIs(shown, value);
  });
  if (differing.length === 0) {
    return { changed: false, before, after: before, power_cycle_required: pendingChange(before), set: {} };
  }

  const assignments = differing.map(([param, value]) => `${param}=${value.name}`);
  const result = await runTool(runner, tools.config, ['-d', device, '-y', 'set', ...assignments], options);
  const outcome = parseConfigSet(
    result.stdout + (result.stderr ? `\n${result.stderr}` : ''),
    result.exitCode,
  );
  if (outcome.status !== 'applied') {
    const output = outputOf(result);
    if (runner.where === 'host' && isHostRefusalText(output)) {
      throw new AgentError(
        'OPERATION_NOT_PERMITTED',
        `the firmware refused ${assignments.join(' ')} from the host (${errorLines(output).at(-1) ?? 'refused'}); it must be run on the DPU's Arm system`,
        {
          details: { device, generation, mode, errors: errorLines(output), argv: result.argv, where: 'host' },
        },
      );
    }
    throw toolFailed(result, `${tools.config} could not set ${mode} mode on ${device}`, {
      device,
      generation,
      mode,
      where: runner.where,
      status: outcome.status,
    });
  }

  const after = await readMode(runner, tools, device, generation, options);
  const mismatched = Object.entries(target)
    .filter(([param, value]) => !nvValueIs(after.params[param]?.next ?? null, value))
    .map(([param]) => param);
  if (mismatched.length > 0) {
    throw new AgentError(
      'MODE_VERIFY_FAILED',
      `after setting ${mode} mode on ${device}, the next-boot configuration reads ${mismatched
        .map((p) => `${p}=${after.params[p]?.next ?? 'missing'}`)
        .join(' ')}`,
      {
        details: {
          device,
          generation,
          mode,
          expected: modeTarget(generation, mode, options),
          mismatched,
          before: before.params,
          after: after.params,
        },
      },
    );
  }
  return {
    changed: true,
    before,
    after,
    power_cycle_required: pendingChange(after),
    set: Object.fromEntries(differing.map(([param, value]) => [param, value.name])),
  };
};
