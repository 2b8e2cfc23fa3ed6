/**
 * The machine-readable form of the conductor channel contract (shared/protocol.md, version 1).
 * Every frame from the conductor is checked against these before anything acts on it.
 */
import { Type, type Static } from '@sinclair/typebox';

export const PROTOCOL_VERSION = 1;
export const SUBPROTOCOL = 'bm-agent.v1';
export const MAX_FRAME_BYTES = 16 * 1024 * 1024;

export const RpcErrorCode = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  UNKNOWN_COMMAND: -32000,
  BUSY: -32001,
  UNKNOWN_COMMAND_ID: -32002,
  /** JSON-RPC's own code, used only when a reply could not be sent as it was (over the frame limit). */
  INTERNAL_ERROR: -32603,
} as const;

const RpcId = Type.Union([
  Type.String({ maxLength: 256 }),
  // Beyond 2^53 an id cannot be echoed back exactly, so such a request is not accepted at all.
  Type.Integer({ minimum: -Number.MAX_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER }),
  Type.Null(),
]);

/** The largest command params accepted: they are kept in the record and sent back with the result. */
export const MAX_PARAMS_BYTES = 256 * 1024;
/** Deeper nesting than this in params is refused: nothing legitimate needs it, and it breaks serialisers. */
export const MAX_PARAMS_DEPTH = 32;

/** The envelope of any frame: a request, a notification or a response to one of ours. */
export const RpcRequest = Type.Object({
  jsonrpc: Type.Literal('2.0'),
  method: Type.String({ minLength: 1, maxLength: 128 }),
  params: Type.Optional(Type.Union([Type.Object({}), Type.Array(Type.Unknown())])),
  id: Type.Optional(RpcId),
});
export type RpcRequest = Static<typeof RpcRequest>;

export const RpcErrorObject = Type.Object({
  code: Type.Integer(),
  message: Type.String(),
  data: Type.Optional(Type.Unknown()),
});

export const RpcResponse = Type.Union([
  Type.Object({ jsonrpc: Type.Literal('2.0'), id: RpcId, result: Type.Unknown() }),
  Type.Object({ jsonrpc: Type.Literal('2.0'), id: RpcId, error: RpcErrorObject }),
]);
export type RpcResponse = Static<typeof RpcResponse>;

export const CommandId = Type.String({ minLength: 1, maxLength: 256 });

export const CommandStatus = Type.Union([
  Type.Literal('RUNNING'),
  Type.Literal('SUCCEEDED'),
  Type.Literal('FAILED'),
  Type.Literal('CANCELLED'),
]);
export type CommandStatus = Static<typeof CommandStatus>;

export const CommandError = Type.Object({
  code: Type.String(),
  message: Type.String(),
  details: Type.Record(Type.String(), Type.Unknown()),
});

export const CommandRecord = Type.Object({
  command_id: CommandId,
  name: Type.String(),
  params: Type.Record(Type.String(), Type.Unknown()),
  status: CommandStatus,
  started_at: Type.String({ format: 'date-time' }),
  finished_at: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  result: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
  error: Type.Union([CommandError, Type.Null()]),
});
export type CommandRecord = Static<typeof CommandRecord>;

// ---- agent -> conductor ----

export const HelloParams = Type.Object({
  protocol: Type.Literal(PROTOCOL_VERSION),
  agent_version: Type.String(),
  boot_id: Type.String(),
  hostname: Type.String(),
  macs: Type.Array(Type.String()),
  bootif: Type.Union([Type.String(), Type.Null()]),
  node_uuid: Type.Union([Type.String(), Type.Null()]),
  token: Type.Union([Type.String(), Type.Null()]),
  capabilities: Type.Array(Type.String()),
  running: Type.Array(CommandId),
});
export type HelloParams = Static<typeof HelloParams>;

export const HelloResult = Type.Object({
  node_uuid: Type.String({ minLength: 1, maxLength: 256 }),
  token: Type.String({ minLength: 1, maxLength: 4096 }),
  heartbeat_interval_s: Type.Number({ exclusiveMinimum: 0, maximum: 3600 }),
});
export type HelloResult = Static<typeof HelloResult>;

export const Unit = Type.Union([Type.Literal('bytes'), Type.Literal('steps')]);

export const ProgressParams = Type.Object({
  command_id: CommandId,
  phase: Type.String(),
  done: Type.Number(),
  total: Type.Union([Type.Number(), Type.Null()]),
  unit: Unit,
  rate: Type.Union([Type.Number(), Type.Null()]),
  message: Type.Union([Type.String(), Type.Null()]),
});
export type ProgressParams = Static<typeof ProgressParams>;

export const RunningEntry = Type.Object({
  command_id: CommandId,
  name: Type.String(),
  progress: Type.Union([Type.Omit(ProgressParams, ['command_id']), Type.Null()]),
});

export const HeartbeatParams = Type.Object({
  seq: Type.Integer({ minimum: 0 }),
  uptime_s: Type.Number(),
  busy: Type.Boolean(),
  running: Type.Array(RunningEntry),
});
export type HeartbeatParams = Static<typeof HeartbeatParams>;

// ---- conductor -> agent ----

export const CommandRunParams = Type.Object(
  {
    command_id: CommandId,
    name: Type.String({ minLength: 1, maxLength: 128 }),
    params: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  { additionalProperties: false },
);
export type CommandRunParams = Static<typeof CommandRunParams>;

export const CommandRefParams = Type.Object({ command_id: CommandId }, { additionalProperties: false });
export type CommandRefParams = Static<typeof CommandRefParams>;

export const CommandListParams = Type.Object({}, { additionalProperties: false });

/** Methods a conductor may call, with their params schema. */
export const CONDUCTOR_METHODS = {
  'command.run': CommandRunParams,
  'command.status': CommandRefParams,
  'command.list': CommandListParams,
  'command.cancel': CommandRefParams,
} as const;
export type ConductorMethod = keyof typeof CONDUCTOR_METHODS;
