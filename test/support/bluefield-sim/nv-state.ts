/**
 * The simulated NV state of BlueField cards, shared by the fake NVIDIA tools (fake-mlx.ts) and the
 * tests: one JSON file per card, `$BMA_SIM_STATE/cards/<slot>/nv.json`, with the default, current
 * and next-boot value of each NV parameter, the host privilege, and failures to inject.
 *
 * Identity strings come from real captures (../../fixtures/bluefield/mlx/README.md): BF1 from an
 * mlxfwmanager listing of an MBF1M332A, BF2 from an mlxfwmanager listing of an MBF2M516A (NVIDIA's
 * bf2_facts test fixture), BF3 from a B3220 `mstconfig q`. Dates, MACs and ROM versions that no
 * capture gave are made up.
 */
import { mkdir, readFile, readdir, rename, writeFile, chmod } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BlueFieldGeneration } from '../../../agent/hardware/bluefield/contracts.js';

export type SimSide = 'host' | 'arm';
export type SimFlavour = 'mft' | 'mstflint';

export interface SimNvParam {
  default: string;
  current: string;
  next: string;
}

export interface SimPrivilege {
  level: 'PRIVILEGED' | 'RESTRICTED';
  disable_rshim: boolean;
  disable_tracer: boolean;
  disable_port_owner: boolean;
  disable_counter_rd: boolean;
}

/** Which invocation a failure is for; `any` is the next call of any tool. */
export type SimCommand = 'query' | 'set' | 'privhost' | 'privhost-query' | 'flint' | 'mst' | 'any';

export interface SimFailure {
  command: SimCommand;
  stdout?: string;
  stderr?: string;
  exit: number;
  /**
   * The call prints its normal output and exits 0 but changes nothing, as firmware that accepts a
   * write and drops it; stdout, stderr and exit are then ignored.
   */
  silent?: boolean;
  /** Only on this side; both when absent. */
  side?: SimSide;
}

export interface SimCall {
  tool: string;
  args: string[];
  side: SimSide;
  exit: number;
}

export interface SimCardState {
  slot: string;
  generation: BlueFieldGeneration;
  device_type: string;
  name: string;
  description: string;
  psid: string;
  fw_version: string;
  fw_release_date: string;
  /** Set when new firmware was flashed and not yet loaded (flint shows `FW Version(Running)`). */
  fw_version_running: string | null;
  base_mac: string;
  base_guid: string;
  /** Host-side PCI addresses of the NIC functions. */
  functions: string[];
  /** MFT's name of function 0; function N is `<name>.N`. */
  mst_device: string;
  /** In the order the tools list them. */
  params: Record<string, SimNvParam>;
  /** What the privilege query shows: the tools write it at once. */
  privilege: SimPrivilege;
  /** What the hardware enforces: disable_rshim and the other flags need a power cycle or FW reset. */
  privilege_applied: SimPrivilege;
  /** One failure, or a queue of them, consumed by the next matching call. */
  fail_next: SimFailure | SimFailure[] | null;
  /** Every mlxconfig call prints the NV-access error until the next power cycle (mstflint #1191). */
  nv_access_error: boolean;
  calls: SimCall[];
}

interface EnumType {
  kind: 'enum';
  values: Record<string, number>;
}
interface UintType {
  kind: 'uint';
}
export type SimParamType = EnumType | UintType;

const enumOf = (values: Record<string, number>): EnumType => ({ kind: 'enum', values });
const CPU_MODEL = enumOf({ SEPARATED_HOST: 0, EMBEDDED_CPU: 1 });
const OWNER = enumOf({ ECPF: 0, EXT_HOST_PF: 1 });
const ENABLED_DISABLED = enumOf({ ENABLED: 0, DISABLED: 1 });
const BOOL = enumOf({ False: 0, True: 1 });
const LINK_TYPE = enumOf({ IB: 1, ETH: 2 });
// The deprecated BF1-era knobs encode the owner the other way round.
const ECPF_OWNER = enumOf({ EXTERNAL_HOST_PF: 0, ECPF: 1 });
const UINT: UintType = { kind: 'uint' };

/** Parameter name -> type, for every name the fake tools know (their DB). */
export const SIM_PARAM_TYPES: Record<string, SimParamType> = {
  INTERNAL_CPU_MODEL: CPU_MODEL,
  INTERNAL_CPU_PAGE_SUPPLIER: OWNER,
  INTERNAL_CPU_ESWITCH_MANAGER: OWNER,
  INTERNAL_CPU_IB_VPORT0: OWNER,
  INTERNAL_CPU_OFFLOAD_ENGINE: ENABLED_DISABLED,
  INTERNAL_CPU_RSHIM: ENABLED_DISABLED,
  ECPF_ESWITCH_MANAGER: ECPF_OWNER,
  ECPF_PAGE_SUPPLIER: ECPF_OWNER,
  NUM_OF_VFS: UINT,
  NUM_OF_PF: UINT,
  HIDE_PORT2_PF: BOOL,
  SRIOV_EN: BOOL,
  LINK_TYPE_P1: LINK_TYPE,
  LINK_TYPE_P2: LINK_TYPE,
};

/** `EMBEDDED_CPU(1)` for enums, `16` for numbers, as the tools print them. */
export const formatSimValue = (param: string, raw: string | number): string => {
  const type = SIM_PARAM_TYPES[param];
  if (type === undefined) throw new Error(`unknown simulated parameter ${param}`);
  if (type.kind === 'uint') return String(raw);
  const entry = Object.entries(type.values).find(([name, number]) =>
    typeof raw === 'number'
      ? number === raw
      : name.toLowerCase() === raw.toLowerCase() || String(number) === raw,
  );
  if (!entry) throw new Error(`unknown value ${String(raw)} for ${param}`);
  return `${entry[0]}(${entry[1]})`;
};

export interface SimGenerationProfile {
  device_type: string;
  name: string;
  description: string;
  psid: string;
  fw_version: string;
  fw_release_date: string;
  base_mac: string;
  /** MFT names devices mt<PCI device id in decimal>_pciconf<N>. */
  mst_prefix: string;
  /** Parameters the card has, with the value they take in DPU mode and, when different, in NIC mode. */
  params: Array<{ name: string; dpu: string | number; nic?: string | number }>;
}

export const SIM_GENERATIONS: Record<BlueFieldGeneration, SimGenerationProfile> = {
  BF1: {
    device_type: 'BlueField',
    name: 'MBF1M332A-ASCA_Ax',
    description:
      'BlueField(TM) SmartNIC 25GbE dual-port SFP28; PCIe Gen3.0/4.0 x8; BlueField(TM) G-Series 16 Cores; Crypto enabled; 16GB on-board DDR; HHHL; ROHS R6',
    psid: 'MT_0000000230',
    fw_version: '18.26.4012',
    fw_release_date: '1.4.2020',
    base_mac: '98039bcc223c',
    mst_prefix: 'mt41682',
    params: [
      { name: 'INTERNAL_CPU_MODEL', dpu: 'EMBEDDED_CPU', nic: 'SEPARATED_HOST' },
      { name: 'ECPF_ESWITCH_MANAGER', dpu: 'ECPF' },
      { name: 'ECPF_PAGE_SUPPLIER', dpu: 'ECPF' },
      { name: 'NUM_OF_VFS', dpu: 8 },
      { name: 'SRIOV_EN', dpu: 'True' },
      { name: 'LINK_TYPE_P1', dpu: 'ETH' },
      { name: 'LINK_TYPE_P2', dpu: 'ETH' },
    ],
  },
  BF2: {
    device_type: 'BlueField2',
    name: 'MBF2M516A-EEEO_Ax',
    description:
      'BlueField-2 E-Series SmartNIC 100GbE/EDR VPI Dual-Port QSFP56; PCIe Gen4 x16; Crypto Enabled; 16GB on-board DDR; 1GbE OOB management; FHHL',
    psid: 'MT_0000000559',
    fw_version: '24.29.2008',
    fw_release_date: '23.11.2020',
    base_mac: '043f72a45a9c',
    mst_prefix: 'mt41686',
    params: [
      { name: 'INTERNAL_CPU_MODEL', dpu: 'EMBEDDED_CPU' },
      { name: 'INTERNAL_CPU_PAGE_SUPPLIER', dpu: 'ECPF', nic: 'EXT_HOST_PF' },
      { name: 'INTERNAL_CPU_ESWITCH_MANAGER', dpu: 'ECPF', nic: 'EXT_HOST_PF' },
      { name: 'INTERNAL_CPU_IB_VPORT0', dpu: 'ECPF', nic: 'EXT_HOST_PF' },
      { name: 'INTERNAL_CPU_OFFLOAD_ENGINE', dpu: 'ENABLED', nic: 'DISABLED' },
      { name: 'INTERNAL_CPU_RSHIM', dpu: 'ENABLED' },
      { name: 'NUM_OF_VFS', dpu: 16 },
      { name: 'NUM_OF_PF', dpu: 2 },
      { name: 'HIDE_PORT2_PF', dpu: 'False' },
      { name: 'SRIOV_EN', dpu: 'True' },
      { name: 'LINK_TYPE_P1', dpu: 'ETH' },
      { name: 'LINK_TYPE_P2', dpu: 'ETH' },
    ],
  },
  BF3: {
    device_type: 'BlueField3',
    name: '900-9D3B6-00CV-A_Ax',
    description:
      'NVIDIA BlueField-3 B3220 P-Series FHHL DPU; 200GbE (default mode) / NDR200 IB; Dual-port QSFP112; PCIe Gen5.0 x16 with x16 PCIe extension option; 16 Arm cores; 32GB on-board DDR; integrated BMC; Crypto Enabled',
    psid: 'MT_0000000884',
    fw_version: '32.43.1014',
    fw_release_date: '7.11.2024',
    base_mac: 'a088c2f1e2d0',
    mst_prefix: 'mt41692',
    params: [
      { name: 'INTERNAL_CPU_MODEL', dpu: 'EMBEDDED_CPU' },
      { name: 'INTERNAL_CPU_PAGE_SUPPLIER', dpu: 'ECPF' },
      { name: 'INTERNAL_CPU_ESWITCH_MANAGER', dpu: 'ECPF' },
      { name: 'INTERNAL_CPU_IB_VPORT0', dpu: 'ECPF' },
      { name: 'INTERNAL_CPU_OFFLOAD_ENGINE', dpu: 'ENABLED', nic: 'DISABLED' },
      { name: 'INTERNAL_CPU_RSHIM', dpu: 'ENABLED' },
      { name: 'NUM_OF_VFS', dpu: 16 },
      { name: 'NUM_OF_PF', dpu: 2 },
      { name: 'HIDE_PORT2_PF', dpu: 'False' },
      { name: 'SRIOV_EN', dpu: 'True' },
      { name: 'LINK_TYPE_P1', dpu: 'ETH' },
      { name: 'LINK_TYPE_P2', dpu: 'ETH' },
    ],
  },
};

export const cardStatePath = (stateDir: string, slot: string): string =>
  path.join(stateDir, 'cards', slot, 'nv.json');

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

export const readCardState = async (stateDir: string, slot: string): Promise<SimCardState> => {
  const parsed: unknown = JSON.parse(await readFile(cardStatePath(stateDir, slot), 'utf8'));
  if (!isRecord(parsed) || typeof parsed.slot !== 'string' || !isRecord(parsed.params)) {
    throw new Error(`${cardStatePath(stateDir, slot)} is not a simulated card state`);
  }
  return parsed as unknown as SimCardState;
};

/** Written to a temporary name and renamed, so a tool never reads half a file. */
export const writeCardState = async (stateDir: string, state: SimCardState): Promise<void> => {
  const file = cardStatePath(stateDir, state.slot);
  await mkdir(path.dirname(file), { recursive: true });
  const temporary = `${file}.${process.pid}.tmp`;
  await writeFile(temporary, `${JSON.stringify(state, null, 2)}\n`);
  await rename(temporary, file);
};

export const listCardSlots = async (stateDir: string): Promise<string[]> => {
  try {
    return (await readdir(path.join(stateDir, 'cards'))).sort();
  } catch {
    return [];
  }
};

export const updateCardState = async (
  stateDir: string,
  slot: string,
  change: (state: SimCardState) => void,
): Promise<SimCardState> => {
  const state = await readCardState(stateDir, slot);
  change(state);
  await writeCardState(stateDir, state);
  return state;
};

export interface CreateCardOptions {
  /** PCI domain:bus:device, e.g. `0000:03:00`. */
  slot: string;
  generation: BlueFieldGeneration;
  mode: 'dpu' | 'nic';
  privilege?: 'privileged' | 'restricted' | Partial<SimPrivilege>;
  /** Function numbers of the NIC PFs; [0, 1] when absent. */
  functions?: number[];
  /** N of `_pciconf<N>`; 0 when absent. */
  mstIndex?: number;
}

const privilegeOf = (option: CreateCardOptions['privilege']): SimPrivilege => {
  const base: SimPrivilege = {
    level: 'PRIVILEGED',
    disable_rshim: false,
    disable_tracer: false,
    disable_port_owner: false,
    disable_counter_rd: false,
  };
  if (option === undefined || option === 'privileged') return base;
  if (option === 'restricted') return { ...base, level: 'RESTRICTED' };
  return { ...base, ...option };
};

/** Writes the initial nv.json of a card in `mode`, nothing pending; returns the state. */
export const createCardState = async (
  stateDir: string,
  options: CreateCardOptions,
): Promise<SimCardState> => {
  if (!/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}$/.test(options.slot)) {
    throw new TypeError(
      `Expected slot to be a PCI domain:bus:device such as 0000:03:00, got ${options.slot}`,
    );
  }
  const profile = SIM_GENERATIONS[options.generation];
  const params: Record<string, SimNvParam> = {};
  for (const param of profile.params) {
    const factory = formatSimValue(param.name, param.dpu);
    const value = formatSimValue(param.name, options.mode === 'nic' ? (param.nic ?? param.dpu) : param.dpu);
    params[param.name] = { default: factory, current: value, next: value };
  }
  const privilege = privilegeOf(options.privilege);
  const mac = profile.base_mac;
  const state: SimCardState = {
    slot: options.slot,
    generation: options.generation,
    device_type: profile.device_type,
    name: profile.name,
    description: profile.description,
    psid: profile.psid,
    fw_version: profile.fw_version,
    fw_release_date: profile.fw_release_date,
    fw_version_running: null,
    base_mac: mac,
    base_guid: `${mac.slice(0, 6)}0300${mac.slice(6)}`,
    functions: (options.functions ?? [0, 1]).map((fn) => `${options.slot}.${fn}`),
    mst_device: `/dev/mst/${profile.mst_prefix}_pciconf${options.mstIndex ?? 0}`,
    params,
    privilege,
    privilege_applied: { ...privilege },
    fail_next: null,
    nv_access_error: false,
    calls: [],
  };
  await writeCardState(stateDir, state);
  return state;
};

/**
 * What an AC power cycle does: next-boot values become current, the privilege the query showed is
 * enforced, and a half-applied configuration (the NV-access error) is gone.
 */
export const simulatePowerCycle = (stateDir: string, slot: string): Promise<SimCardState> =>
  updateCardState(stateDir, slot, (state) => {
    for (const param of Object.values(state.params)) param.current = param.next;
    state.privilege_applied = { ...state.privilege };
    state.nv_access_error = false;
    if (state.fw_version_running !== null) state.fw_version_running = null;
  });

/** Queues a failure for the next matching call. */
export const injectFailure = (stateDir: string, slot: string, failure: SimFailure): Promise<SimCardState> =>
  updateCardState(stateDir, slot, (state) => {
    const queue =
      state.fail_next === null ? [] : Array.isArray(state.fail_next) ? state.fail_next : [state.fail_next];
    state.fail_next = [...queue, failure];
  });

/** The line mlxconfig prints for every call on a card whose NV change was half-applied by a warm reboot. */
export const NV_ACCESS_ERROR = '-E- Error when trying to check if NV access registers are supported';

const TOOL_NAMES: Record<SimFlavour, string[]> = {
  mft: ['mlxconfig', 'mlxprivhost', 'flint', 'mst'],
  mstflint: ['mstconfig', 'mstprivhost', 'mstflint'],
};

const shellQuote = (value: string): string => `'${value.replaceAll("'", `'\\''`)}'`;

export interface InstallFakeMlxOptions {
  flavour: SimFlavour;
  stateDir: string;
  /** The side the wrappers default to; BMA_SIM_SIDE in their environment overrides it. */
  side: SimSide;
}

/**
 * Writes one shell wrapper per tool of the flavour into binDir. Each runs the compiled fake with
 * this node binary (a test PATH may hold nothing but binDir), defaulting BMA_SIM_STATE and
 * BMA_SIM_SIDE to the install options. Returns the wrappers' paths.
 */
export const installFakeMlxTools = async (
  binDir: string,
  options: InstallFakeMlxOptions,
): Promise<string[]> => {
  const program = fileURLToPath(new URL('./fake-mlx.js', import.meta.url));
  await mkdir(binDir, { recursive: true });
  await mkdir(path.join(options.stateDir, 'cards'), { recursive: true });
  const written: string[] = [];
  for (const tool of TOOL_NAMES[options.flavour]) {
    const file = path.join(binDir, tool);
    const script = [
      '#!/bin/sh',
      `[ -n "\${BMA_SIM_STATE:-}" ] || BMA_SIM_STATE=${shellQuote(options.stateDir)}`,
      `[ -n "\${BMA_SIM_SIDE:-}" ] || BMA_SIM_SIDE=${options.side}`,
      'export BMA_SIM_STATE BMA_SIM_SIDE',
      `exec ${shellQuote(process.execPath)} ${shellQuote(program)} ${tool} "$@"`,
      '',
    ].join('\n');
    await writeFile(file, script);
    await chmod(file, 0o755);
    written.push(file);
  }
  return written;
};
