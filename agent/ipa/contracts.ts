/**
 * The shapes ironic-python-agent's protocol uses, shared by the three parts of the IPA front door:
 * the Ironic client (lookup, heartbeat, inspection), the agent API server that Ironic calls, and
 * the extensions that map IPA's command names onto the command registry. Nothing here runs
 * anything: the registry stays the one implementation of every action.
 */

/** IPA's command statuses; CLEAN_VERSION_MISMATCH tells Ironic to refresh its cached steps. */
export type IpaCommandStatus = 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'CLEAN_VERSION_MISMATCH';

/** A failed command's error as Ironic reads it: it shows `details`, else `message`. */
export interface IpaCommandError {
  type: string;
  code: number;
  message: string;
  details: string;
}

/** One element of `GET /v1/commands/`, and the answer to `POST /v1/commands/`. */
export interface IpaCommandResult {
  id: string;
  /** The short name, without the extension: Ironic matches on it. */
  command_name: string;
  command_status: IpaCommandStatus;
  command_error: IpaCommandError | null;
  command_result: Record<string, unknown> | null;
}

/** A clean or deploy step as the agent advertises it. */
export interface IpaStep {
  step: string;
  priority: number;
  interface: string;
  reboot_requested: boolean;
  abortable?: boolean;
  argsinfo?: Record<string, { description: string; required: boolean }>;
}

/**
 * What the agent learned from Ironic and must keep between the parts: the token Ironic hands
 * out once, the node (root device hints live in its properties), and the heartbeat period.
 */
export class IpaSession {
  token: string | null = null;
  nodeUuid: string | null = null;
  /** The node as the last successful lookup returned it. */
  node: Record<string, unknown> | null = null;
  heartbeatTimeoutS = 300;
  /** Whether Ironic requires the token on commands (it always does from 1.62 on). */
  tokenRequired = false;

  constructor(init: { token?: string | null; nodeUuid?: string | null } = {}) {
    this.token = init.token ?? null;
    this.nodeUuid = init.nodeUuid ?? null;
  }

  /** Ironic wiped the token (reboot, power off, end of cleaning): the next lookup brings a new one. */
  forgetToken(): void {
    this.token = null;
  }
}
