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
