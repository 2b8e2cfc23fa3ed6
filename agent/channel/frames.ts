import {
  CONDUCTOR_METHODS,
  RpcErrorCode,
  RpcRequest,
  RpcResponse,
  type ConductorMethod,
} from '../protocol/schema.js';
import { validate, type SchemaViolation } from '../protocol/validate.js';

export type RpcId = string | number | null;

export interface RpcErrorReply {
  id: RpcId;
  code: number;
  message: string;
  data?: unknown;
}

/** What one incoming frame turned out to be once checked against the protocol. */
export type IncomingFrame =
  | { kind: 'request'; id: RpcId; method: ConductorMethod; params: unknown }
  | { kind: 'notification'; method: string }
  | {
      kind: 'response';
      id: RpcId;
      result?: unknown;
      error?: { code: number; message: string; data?: unknown };
    }
  | { kind: 'invalid'; reply: RpcErrorReply | null };

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** An id we may echo back: anything else is answered with `id: null`. */
const usableId = (value: unknown): RpcId =>
  (typeof value === 'string' && value.length <= 256) ||
  (typeof value === 'number' && Number.isSafeInteger(value))
    ? value
    : null;

const invalid = (id: RpcId, code: number, message: string, data?: unknown): IncomingFrame => ({
  kind: 'invalid',
  reply: data === undefined ? { id, code, message } : { id, code, message, data },
});

const violationData = (violation: SchemaViolation): Record<string, string> => ({
  field: violation.field,
  expected: violation.expected,
});

/**
 * Classifies one text frame. It never throws: whatever a conductor sends ends as a request to
 * serve, a response to match, or an error reply (null where JSON-RPC says not to answer).
 */
export const classifyFrame = (data: string, isBinary: boolean): IncomingFrame => {
  if (isBinary) return invalid(null, RpcErrorCode.INVALID_REQUEST, 'binary frames are not JSON-RPC requests');
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    return invalid(null, RpcErrorCode.PARSE_ERROR, 'frame is not valid JSON');
  }
  if (Array.isArray(parsed)) return invalid(null, RpcErrorCode.INVALID_REQUEST, 'batches are not supported');
  if (!isRecord(parsed))
    return invalid(null, RpcErrorCode.INVALID_REQUEST, 'a JSON-RPC request must be an object');

  const id = usableId(parsed.id);
  if (!('method' in parsed) && ('result' in parsed || 'error' in parsed)) {
    const response = validate(RpcResponse, parsed, 'response');
    if (!response.ok)
      return invalid(
        id,
        RpcErrorCode.INVALID_REQUEST,
        'malformed JSON-RPC response',
        violationData(response.violation),
      );
    return 'error' in response.value
      ? { kind: 'response', id: response.value.id, error: response.value.error }
      : { kind: 'response', id: response.value.id, result: response.value.result };
  }

  const envelope = validate(RpcRequest, parsed, 'request');
  if (!envelope.ok) {
    return invalid(
      id,
      RpcErrorCode.INVALID_REQUEST,
      'not a JSON-RPC 2.0 request',
      violationData(envelope.violation),
    );
  }
  const request: RpcRequest = envelope.value;
  const isNotification = !('id' in request);
  const schema = CONDUCTOR_METHODS[request.method as ConductorMethod] as
    (typeof CONDUCTOR_METHODS)[ConductorMethod] | undefined;
  if (!Object.hasOwn(CONDUCTOR_METHODS, request.method) || !schema) {
    // JSON-RPC never answers a notification, not even with an error.
    if (isNotification) return { kind: 'notification', method: request.method };
    return invalid(id, RpcErrorCode.METHOD_NOT_FOUND, `unknown method ${request.method}`, {
      known: Object.keys(CONDUCTOR_METHODS),
    });
  }
  if (isNotification) return { kind: 'notification', method: request.method };
  const params = validate(schema, request.params ?? {}, 'params');
  if (!params.ok)
    return invalid(id, RpcErrorCode.INVALID_PARAMS, 'invalid params', violationData(params.violation));
  return { kind: 'request', id, method: request.method as ConductorMethod, params: params.value };
};
