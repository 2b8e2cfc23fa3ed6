/**
 * What the BlueField plugin offers to the commands and workflows above it. Params arrive already
 * validated against the command schemas; each operation takes the command's signal, progress and
 * logger and returns a JSON-ready result or throws an AgentError with a stable code.
 */
import type { ProgressUpdate } from '../../commands/definition.js';
import type { Logger } from '../../util/logger.js';

export interface OpContext {
  signal: AbortSignal;
  progress: (update: ProgressUpdate) => void;
  log: Logger;
}

export type ChecksumInput = string | { os_hash_algo: string; os_hash_value: string };

export interface InstallBfbRequest {
  url: string;
  checksum?: ChecksumInput | undefined;
  bf_cfg?: string | undefined;
  device?: string | undefined;
  timeout_s?: number | undefined;
  force?: boolean | undefined;
}

export interface SetModeRequest {
  mode: 'nic' | 'dpu';
  hide_port2_pf?: boolean | undefined;
  device?: string | undefined;
}

export interface SetHostPrivilegeRequest {
  level: 'restricted' | 'privileged';
  disable_port_owner?: boolean | undefined;
  disable_rshim?: boolean | undefined;
  disable_tracer?: boolean | undefined;
  disable_counter_rd?: boolean | undefined;
  device?: string | undefined;
  force?: boolean | undefined;
}

export interface DpuExecRequest {
  script: string;
  timeout_s?: number | undefined;
  device?: string | undefined;
}

export type OpResult = Record<string, unknown>;

export interface BlueFieldOps {
  /** Cards with their state; [] on a host without any (never an error for that). */
  list(context: OpContext): Promise<OpResult[]>;
  /**
   * Starts (or joins) the download and check of a BFB into the staging area, so a later
   * installBfb of the same URL and checksum pushes at once. Settles when the file is ready.
   */
  prefetchBfb(
    request: { url: string; checksum?: ChecksumInput | undefined },
    context: OpContext,
  ): Promise<void>;
  installBfb(request: InstallBfbRequest, context: OpContext): Promise<OpResult>;
  setMode(request: SetModeRequest, context: OpContext): Promise<OpResult>;
  setHostPrivilege(request: SetHostPrivilegeRequest, context: OpContext): Promise<OpResult>;
  configureNat(request: { device?: string | undefined }, context: OpContext): Promise<OpResult>;
  dpuExec(request: DpuExecRequest, context: OpContext): Promise<OpResult>;
}
