/**
 * IPA's command result and error shapes, and how the agent's typed errors become them. Ironic
 * shows an error's `details` to the operator, so it carries the agent's stable code and message;
 * `type` is the IPA error class that fits, for anything that branches on it.
 */
import { AgentError, ERROR_CODES, type ErrorCode, type SerializedError } from '../util/errors.js';
import type { IpaCommandError, IpaCommandResult, IpaCommandStatus } from './contracts.js';

/** IPA's error classes this agent reports, with their HTTP-style code and fixed message. */
export const IPA_ERROR_CLASSES = {
  CommandExecutionError: { code: 500, message: 'Command execution failed' },
  InvalidCommandParamsError: { code: 400, message: 'Invalid command parameters' },
  ImageDownloadError: { code: 500, message: 'Error downloading image' },
  ImageChecksumError: { code: 500, message: 'Error verifying image checksum' },
  ImageWriteError: { code: 500, message: 'Error writing image to device' },
  BlockDeviceEraseError: { code: 500, message: 'Error erasing block device' },
  DeviceNotFound: { code: 404, message: 'Error finding devices' },
  VersionMismatch: {
    code: 409,
    message: 'Hardware managers version mismatch, reload agent with correct version',
  },
  AgentIsBusy: { code: 409, message: 'Agent is busy' },
  CleaningError: { code: 500, message: 'Clean step failed' },
  DeploymentError: { code: 500, message: 'Deploy step failed' },
} as const;

export type IpaErrorType = keyof typeof IPA_ERROR_CLASSES;

/** Codes whose IPA class is the same whatever command failed; the rest take the command's own. */
const TYPE_BY_CODE: Partial<Record<ErrorCode, IpaErrorType>> = {
  INVALID_PARAMS: 'InvalidCommandParamsError',
  UNKNOWN_STEP: 'InvalidCommandParamsError',
  INVALID_URL: 'InvalidCommandParamsError',
  CHECKSUM_MISMATCH: 'ImageChecksumError',
  CHECKSUM_NOT_FOUND: 'ImageDownloadError',
  DOWNLOAD_FAILED: 'ImageDownloadError',
  DOWNLOAD_TRUNCATED: 'ImageDownloadError',
  DOWNLOAD_TOO_LONG: 'ImageDownloadError',
  DOWNLOAD_RESTART_REQUIRED: 'ImageDownloadError',
  UNSUPPORTED_FORMAT: 'ImageWriteError',
  DECOMPRESS_FAILED: 'ImageWriteError',
  WRITE_FAILED: 'ImageWriteError',
  INSUFFICIENT_MEMORY: 'ImageWriteError',
  WIPE_FAILED: 'BlockDeviceEraseError',
  DEVICE_NOT_FOUND: 'DeviceNotFound',
  NO_MATCHING_DISK: 'DeviceNotFound',
  VERSION_MISMATCH: 'VersionMismatch',
  AGENT_BUSY: 'AgentIsBusy',
};

// Ironic copies `details` into the node's last_error; a bounded text keeps that field readable.
const MAX_DETAILS_CHARS = 4000;

/** `CODE: message`, then the causes the error carries: the text an operator reads in Ironic. */
export const describeError = (error: SerializedError): string => {
  const causes = Array.isArray(error.details.causes)
    ? error.details.causes.filter((cause): cause is string => typeof cause === 'string')
    : [];
  const text = `${error.code}: ${error.message}${causes.length > 0 ? ` (caused by: ${causes.join('; ')})` : ''}`;
  return text.length > MAX_DETAILS_CHARS ? `${text.slice(0, MAX_DETAILS_CHARS - 1)}…` : text;
};

export const toIpaError = (error: SerializedError, fallback: IpaErrorType): IpaCommandError => {
  const type = TYPE_BY_CODE[error.code as ErrorCode] ?? fallback;
  const ipaClass = IPA_ERROR_CLASSES[type];
  return { type, code: ipaClass.code, message: ipaClass.message, details: describeError(error) };
};

/** A version mismatch is its own status: Ironic refreshes its steps instead of failing the node. */
export const failureStatus = (error: SerializedError): IpaCommandStatus =>
  error.code === 'VERSION_MISMATCH' ? 'CLEAN_VERSION_MISMATCH' : 'FAILED';

/**
 * Turns an engine record's error back into an AgentError, so a registry command's failure travels
 * through an IPA command with its code, message and details unchanged.
 */
export const reviveError = (error: SerializedError): AgentError => {
  const known = Object.prototype.hasOwnProperty.call(ERROR_CODES, error.code);
  return new AgentError(known ? (error.code as ErrorCode) : 'INTERNAL', error.message, {
    details: known ? error.details : { ...error.details, code: error.code },
  });
};

export interface IpaCommandState {
  status: IpaCommandStatus;
  result: Record<string, unknown> | null;
  error: IpaCommandError | null;
}

export const ipaResult = (id: string, commandName: string, state: IpaCommandState): IpaCommandResult => ({
  id,
  command_name: commandName,
  command_status: state.status,
  command_error: state.error,
  command_result: state.result,
});
