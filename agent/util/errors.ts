/**
 * Typed errors with stable codes. A conductor branches on `code`, never on message text, so
 * codes are part of the public contract and listed in the README.
 */

const kAgentError = Symbol.for('bm-agent.error');

export const ERROR_CODES = {
  INVALID_PARAMS: 'the params of a command are well-formed but cannot be carried out as given',
  INVALID_CONFIG: 'a flag or environment variable is malformed',
  CANCELLED: 'the command was cancelled',
  TOOL_NOT_FOUND: 'a required program is not on PATH',
  TOOL_FAILED: 'a program exited non-zero, was killed or timed out',
  POWER_ACTION_FAILED: 'the power backend could not carry out the action',
  INVENTORY_FAILED: 'the hardware inventory could not be collected',
  LLDP_CAPTURE_FAILED: 'LLDP collection could not start (the network interfaces could not be listed)',
  RESULT_TOO_LARGE: 'the result would not fit in one 16 MiB frame; the record went without it',
  TLS_PIN_MISMATCH: "the conductor's public key does not match the configured pin",
  DOWNLOAD_FAILED:
    'the image could not be downloaded: a 4xx, or connection errors, 5xx or stalls past the retries',
  DOWNLOAD_TRUNCATED:
    'the connection closed before the whole body arrived and resuming failed past the retries',
  DOWNLOAD_TOO_LONG: 'the server sent more bytes than it declared',
  DOWNLOAD_RESTART_REQUIRED:
    'a dropped download cannot be resumed (no validator, Range ignored, or the image changed); start over from byte 0',
  INVALID_URL: 'a URL is unparsable or not http/https',
  CHECKSUM_MISMATCH: 'the checksum of the downloaded bytes differs from the expected one',
  CHECKSUM_NOT_FOUND:
    'the expected checksum could not be obtained (checksums file unreadable, empty, or without the image name)',
  UNSUPPORTED_FORMAT: 'the image format cannot be written this way (or the image refers to other files)',
  DECOMPRESS_FAILED: 'the compressed image is corrupt or truncated',
  WRITE_FAILED: 'writing the image to the device failed',
  INSUFFICIENT_MEMORY: 'an image that must be staged in memory does not fit in the memory available',
  DEVICE_NOT_FOUND: 'the named device does not exist under the configured /dev root',
  NO_MATCHING_DISK: 'no disk matches the root device hints, or none is large enough for the default choice',
  INVALID_DEVICE: 'the named device is not a whole block device under the configured /dev root',
  DEVICE_BUSY:
    'the disk is mounted, holds active swap, is part of an active RAID/LVM/device-mapper device or is held open exclusively',
  DEVICE_READ_ONLY: 'the disk is read-only',
  DEVICE_TOO_SMALL: 'the disk is smaller than what must be written to it',
  WIPE_FAILED: 'the partition-table and filesystem signatures could not all be wiped',
  ERASE_FAILED:
    'a disk could not be overwritten with zeros to its end (blkdiscard and the fallback writes both failed, or the device took fewer bytes than its size)',
  BLUEFIELD_NOT_FOUND: 'no BlueField matches: none in the host, or the `device` param names none of them',
  BFB_INVALID:
    'the file is not a complete, intact BFB (bad magic or header, an image CRC mismatch, truncated, trailing bytes)',
  RSHIM_NOT_FOUND:
    "the card's /dev/rshimN is missing: rshim not running, rshim disabled for the host, or the card in separated-host mode",
  RSHIM_BUSY:
    "another process holds the card's rshim boot device open (EBUSY); stop it (bfb-install, an rshim console) and retry",
  RSHIM_OWNED_BY_BMC:
    "the rshim is driven by another backend (the DPU's BMC): drop mode; hand it to the host (BMC HostRshim or FORCE_CMD) first",
  RSHIM_LOCKED: 'the card is in secure NIC mode: the PCIe rshim refuses boot streams (EPERM)',
  RSHIM_TIMEOUT: 'the DPU stopped taking the boot stream until the rshim boot timeout ran out',
  BFB_INSTALL_FAILED:
    'the DPU logged a failure while installing the BFB (CRITICAL ERROR, ERR[...], PANIC, Exception)',
  BFB_INSTALL_TIMEOUT: 'the DPU did not report ready (or a failure) within the install timeout',
  MODE_VERIFY_FAILED:
    'after setting the mode, the next-boot configuration read back differs from what was set',
  PRIVILEGE_VERIFY_FAILED:
    'after setting the host privilege, the level read back differs from what was asked',
  OPERATION_NOT_PERMITTED:
    'the firmware refused the change from the host and it could not be run on the DPU either (no SSH to its Arm system)',
  DPU_UNREACHABLE:
    "the DPU's Arm system did not answer SSH over tmfifo (not installed yet, not booted, or no key)",
  DPU_SCRIPT_FAILED: 'the script run on the DPU exited non-zero or was killed by a signal',
  DPU_SCRIPT_TIMEOUT: 'the script run on the DPU did not finish within timeout_s',
  NAT_FAILED:
    'the tmfifo NAT could not be set up: no default-route interface, no nft or iptables, or the rules failed',
  RSHIM_DISABLE_REFUSED:
    'disable_rshim would cut the host off the rshim before a BFB was installed by this agent; pass force to do it anyway',
  IRONIC_UNREACHABLE:
    'Ironic (or the inspector) could not be reached: connection refused or reset, DNS, TLS, or no answer within the request timeout',
  IRONIC_API_ERROR: "Ironic answered with an HTTP error; details carry the status and Ironic's faultstring",
  IRONIC_BAD_RESPONSE: 'Ironic answered, but not with the JSON or status its API defines',
  LOOKUP_FAILED:
    "the node was not found in Ironic before ipa-lookup-timeout: check the node's provision state, its ports' MACs and ipa-api-url",
  ADVERTISE_ADDRESS_NOT_FOUND:
    'no address for the callback URL: no route to Ironic with a usable source address; set ipa-advertise-host',
  VERSION_MISMATCH:
    "the hardware manager versions Ironic cached differ from the agent's: Ironic refreshes its steps and retries",
  UNKNOWN_STEP: 'the clean or deploy step is not one this agent offers (or its hardware is not in this host)',
  AGENT_BUSY: 'another command that changes a disk, the DPU or the power state is still running',
  DISK_READ_FAILED: 'the disk could not be read: missing, unreadable, or shorter than its first sectors',
  PARTITION_TABLE_MISSING:
    'the disk holds no partition table with a partition (the image is not a whole-disk image)',
  ROOT_UUID_MISMATCH: 'the root uuid Ironic sent is not the disk identifier of the disk this agent wrote',
  NO_IMAGE_WRITTEN:
    'the command needs the disk this agent wrote, and no image was written since the agent started',
  INTERNAL: 'a bug in the agent: report it with the logs',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface SerializedError {
  code: string;
  message: string;
  details: Record<string, unknown>;
}

export class AgentError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;

  constructor(
    code: ErrorCode,
    message: string,
    options: { details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
    Object.defineProperty(this, 'name', { value: 'AgentError', enumerable: false });
    Object.defineProperty(this, kAgentError, { value: true, enumerable: false });
  }

  // Works across copies of this module (a bundled CLI and a test loading the sources).
  static is(value: unknown): value is AgentError {
    return (
      typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[kAgentError] === true
    );
  }
}

export class CancelledError extends AgentError {
  constructor(reason = 'cancelled on request') {
    super('CANCELLED', reason);
  }
}

/** Causes are flattened to a short list so a conductor sees the chain without a stack. */
const describeCauses = (error: unknown): string[] => {
  const chain: string[] = [];
  let current: unknown = error instanceof Error ? error.cause : undefined;
  while (current !== undefined && chain.length < 5) {
    if (current instanceof Error) {
      const code = (current as { code?: unknown }).code;
      chain.push(typeof code === 'string' ? `${code}: ${current.message}` : current.message);
      current = current.cause;
    } else {
      chain.push(String(current));
      break;
    }
  }
  return chain;
};

export const serializeError = (error: unknown): SerializedError => {
  if (AgentError.is(error)) {
    const causes = describeCauses(error);
    return {
      code: error.code,
      message: error.message,
      details: causes.length > 0 ? { ...error.details, causes } : { ...error.details },
    };
  }
  if (error instanceof Error) {
    return { code: 'INTERNAL', message: error.message, details: { name: error.name } };
  }
  return { code: 'INTERNAL', message: String(error), details: {} };
};

export const errorMessage = (error: unknown): string =>
  error instanceof Error ? error.message : String(error);
