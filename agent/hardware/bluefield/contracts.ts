/**
 * The BlueField plugin's parts, as contracts between small modules:
 *   discover (sysfs PCI, VPD, rshim misc, mst) -> cards
 *   tools (MFT or mstflint) -> mode and host-privilege state, read and set
 *   bfb (validate, version, bf.cfg) -> rshim (preflight, push into boot, follow the log)
 *   dpu-shell (SSH over tmfifo) for what only the Arm side may do; nat for the Arm's way out
 * Nothing here knows about the channel or the command engine.
 */
import type { HardwarePaths } from '../paths.js';
import type { ProcessResult } from '../../util/run-process.js';

export type BlueFieldGeneration = 'BF1' | 'BF2' | 'BF3';

export interface RshimDevice {
  /** N of /dev/rshimN. */
  index: number;
  /** `<dev>/rshimN`, holding boot, misc, console. */
  path: string;
  /** misc's DEV_NAME, e.g. `pcie-0000:03:00.2` or `usb-1.0`. */
  devName: string;
  /** misc's DEV_INFO, e.g. `BlueField-2(Rev 1)`. */
  devInfo: string | null;
  /** The host side of the card's tmfifo network, `tmfifo_netN`. */
  tmfifo: string;
}

export interface BlueFieldCard {
  /** PCI domain:bus:device the card's functions share, e.g. `0000:03:00`; the card's identity. */
  slot: string;
  generation: BlueFieldGeneration;
  /** Host NIC physical functions (class 0200/0207), sorted; [0] is where NV config is read/set. */
  nicFunctions: string[];
  /** The rshim "SoC management" function, found by device ID or class 0801, never by function number. */
  rshimFunction: string | null;
  /** True when only a flash-recovery (livefish) function is present. */
  recovery: boolean;
  rshim: RshimDevice | null;
  /** `/dev/mst/mt41686_pciconf0` when MFT's mst names exist, else null (tools then take the BDF). */
  mstDevice: string | null;
  /** From the PCI VPD of nicFunctions[0] (SN, PN, ID string) when readable. */
  serial: string | null;
  partNumber: string | null;
  description: string | null;
  /** Host network interfaces of the NIC functions. */
  netdevs: string[];
}

export type ToolFlavour = 'mft' | 'mstflint';

/** Programs for one flavour: MFT (mlxconfig, mlxprivhost, flint) or mstflint (mstconfig, ...). */
export interface MlxToolSet {
  flavour: ToolFlavour;
  config: string;
  privhost: string;
  flint: string;
}

/** Runs a program on the host or, through SSH over tmfifo, on the DPU's Arm system. */
export interface ToolRunner {
  where: 'host' | 'dpu';
  run(
    program: string,
    args: string[],
    options?: { signal?: AbortSignal; timeoutMs?: number },
  ): Promise<ProcessResult>;
}

export type DpuMode = 'dpu' | 'nic' | 'separated_host' | 'unknown';

/** One NV parameter as the tool shows it: the enum text (`EMBEDDED_CPU(1)`) or number text. */
export interface NvValue {
  default: string | null;
  current: string | null;
  next: string;
}

export interface ModeState {
  current: DpuMode;
  next: DpuMode;
  /** The mode parameters that were read, by mlxconfig name. */
  params: Record<string, NvValue>;
}

export type PrivilegeLevel = 'privileged' | 'restricted' | 'unknown';

export interface HostPrivilegeState {
  level: PrivilegeLevel;
  disable_rshim: boolean | null;
  disable_tracer: boolean | null;
  disable_port_owner: boolean | null;
  disable_counter_rd: boolean | null;
}

/** One BFB image header, as walked by the validator. */
export interface BfbImage {
  id: number;
  name: string;
  offset: number;
  length: number;
  crc32: number;
}

export interface BfbSummary {
  bytes: number;
  images: BfbImage[];
  /** The version the BFB declares in its `info` image (ID 50), when it has one. */
  version: string | null;
}

export type RshimLogLevel = 'INFO' | 'WARN' | 'ERR' | 'ASSERT' | 'PANIC' | 'EXCEPTION' | 'OTHER';

export interface RshimLogLine {
  level: RshimLogLevel;
  /** BL2, BL31, UEFI, MISC, PSC ... or null for lines without one. */
  module: string | null;
  text: string;
  raw: string;
}

export type InstallOutcome =
  { kind: 'ready'; marker: string } | { kind: 'failed'; line: string } | { kind: 'pending' };

export interface BlueFieldDeps {
  paths: HardwarePaths;
  /** PATH used to find MFT/mstflint, ssh, nft/iptables. */
  toolPath: string;
}
