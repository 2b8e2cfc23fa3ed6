/**
 * Errors of the Ironic test harness. Tests branch on `code`; the message says what to look at
 * (the log path, Ironic's own fault string, the node's last_error).
 */

export const IRONIC_HARNESS_ERROR_CODES = {
  IRONIC_INSTALL_FAILED:
    'apt-get could not install python3-ironic, or Ironic still does not import afterwards',
  IRONIC_START_FAILED: 'the schema could not be created, or the API did not answer before the start timeout',
  IRONIC_STOP_FAILED: 'members of the Ironic process group were still there after SIGKILL',
  IRONIC_API_ERROR: 'the Ironic API answered with an error status (faultstring in the message)',
  IRONIC_BAD_RESPONSE: 'the Ironic API answered with a body that is not the JSON shape expected',
  IRONIC_NODE_FAILED:
    'the node moved to a provision state the caller did not wait for (last_error in the message)',
  IRONIC_WAIT_TIMEOUT: 'the node did not reach one of the wanted provision states in time',
} as const;

export type IronicHarnessErrorCode = keyof typeof IRONIC_HARNESS_ERROR_CODES;

export class IronicHarnessError extends Error {
  readonly code: IronicHarnessErrorCode;
  readonly details: Record<string, unknown>;

  constructor(
    code: IronicHarnessErrorCode,
    message: string,
    options: { details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
    Object.defineProperty(this, 'name', { value: 'IronicHarnessError', enumerable: false });
  }
}
