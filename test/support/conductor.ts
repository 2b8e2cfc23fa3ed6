/**
 * The reference conductor: the other end of the channel in shared/protocol.md, for integration
 * tests and `make demo`. Test support only; nothing in agent/ may import it.
 *
 * It is deliberately strict about what it records (every frame, every schema violation) and
 * lenient about what it accepts, so that a test can assert on an agent's misbehaviour instead of
 * watching the conductor fall over.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TSchema } from '@sinclair/typebox';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import {
  CommandRecord,
  HeartbeatParams,
  HelloParams,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  ProgressParams,
  RpcErrorCode,
  SUBPROTOCOL,
} from '../../agent/protocol/schema.js';
import { validate } from '../../agent/protocol/validate.js';

/** Codes the conductor uses to refuse a hello; the protocol leaves them to the conductor. */
export const ConductorErrorCode = {
  BAD_TOKEN: -32010,
  HELLO_REJECTED: -32011,
} as const;

export interface ConductorOptions {
  host?: string;
  /** 0 picks an ephemeral port. */
  port?: number;
  /** Serve wss:// instead of ws://. */
  tls?: { key: string | Buffer; cert: string | Buffer };
  heartbeatIntervalS?: number;
  /** Where nodes and results survive a restart of the conductor; in memory only when unset. */
  statePath?: string;
  requireToken?: boolean;
  /** Answer every hello with this message as a JSON-RPC error. */
  rejectHello?: string;
  /** When false the server selects no subprotocol, which a correct agent must refuse. */
  echoSubprotocol?: boolean;
  /** When false, `command.result` goes unanswered, so the agent must keep and re-send it. */
  autoAck?: boolean;
  path?: string;
}

export interface ConductorEvent {
  at: number;
  dir: 'in' | 'out';
  connection: number;
  /** Parsed JSON when the frame parsed, else the text; a Buffer for binary frames. */
  frame: unknown;
  /** Why an incoming frame is not usable JSON-RPC, when it is not. */
  malformed?: string;
}

/** Params of an agent frame as received. Typed by the schema, but only as trustworthy as `violations` is empty. */
export interface Received<T> {
  at: number;
  connection: number;
  nodeUuid: string | null;
  params: T;
}

export interface HelloRecord extends Received<HelloParams> {
  accepted: boolean;
}

export interface SchemaViolation {
  at: number;
  connection: number;
  method: string;
  field: string;
  expected: string;
}

export interface ConnectionInfo {
  connection: number;
  remoteAddress: string | null;
  /** The subprotocol the server selected, '' for none. */
  protocol: string;
}

export interface ConnectionClose {
  at: number;
  connection: number;
  nodeUuid: string | null;
  code: number;
  reason: string;
  /** A socket-level error seen before the close (for example a frame over the size limit). */
  error: string | null;
}

export interface RpcErrorShape {
  code: number;
  message: string;
  data?: unknown;
}

export interface RpcOutcome {
  result?: unknown;
  error?: RpcErrorShape;
}

export type LogRecord = Record<string, unknown>;

export type ConductorEvents = {
  connection: [ConnectionInfo];
  hello: [HelloRecord];
  heartbeat: [Received<HeartbeatParams>];
  progress: [Received<ProgressParams>];
  result: [Received<CommandRecord>];
  log: [Received<LogRecord>];
  close: [ConnectionClose];
  frame: [ConductorEvent];
};

interface NodeState {
  token: string;
  macs: string[];
}

interface Connection {
  id: number;
  socket: WebSocket;
  /** Set once a hello on this connection has been accepted. */
  nodeUuid: string | null;
  open: boolean;
  error: string | null;
}

interface PendingCall {
  connection: number;
  resolve: (outcome: RpcOutcome) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

interface Waiter {
  check: () => void;
  fail: (error: Error) => void;
}

type RpcId = string | number | null;

type Incoming =
  | { kind: 'request'; method: string; id: RpcId; params: unknown }
  | { kind: 'notification'; method: string; params: unknown }
  | { kind: 'response'; id: unknown; outcome: RpcOutcome }
  | { kind: 'malformed'; reason: string };

/** What the agent may send, whether it expects an answer, and the schema its params must match. */
const AGENT_METHODS: Record<string, { request: boolean; schema: TSchema | null }> = {
  hello: { request: true, schema: HelloParams },
  heartbeat: { request: false, schema: HeartbeatParams },
  'command.progress': { request: false, schema: ProgressParams },
  'command.result': { request: true, schema: CommandRecord },
  // The protocol fixes only that a log record is an object; its fields follow the logger.
  log: { request: false, schema: null },
};

const DEFAULT_TIMEOUT_MS = 10_000;

export class ReferenceConductor extends EventEmitter<ConductorEvents> {
  readonly events: ConductorEvent[] = [];
  readonly violations: SchemaViolation[] = [];
  /** Exceptions thrown while handling a frame (a bug here or in a listener); kept rather than crashing. */
  readonly internalErrors: unknown[] = [];
  readonly nodes = new Map<string, NodeState>();
  readonly resultsById = new Map<string, CommandRecord>();
  readonly heartbeatIntervalS: number;
  /** These three may be changed while the conductor runs. */
  requireToken: boolean;
  rejectHello: string | undefined;
  autoAck: boolean;

  private readonly server: http.Server;
  private readonly wss: WebSocketServer;
  private readonly path: string;
  private readonly statePath: string | undefined;
  private readonly secure: boolean;
  private readonly host: string;
  private readonly connections = new Map<number, Connection>();
  private readonly rawSockets = new Set<Socket>();
  private readonly pending = new Map<number, PendingCall>();
  private readonly waiters = new Set<Waiter>();
  private readonly helloList: HelloRecord[] = [];
  private readonly heartbeatList: Received<HeartbeatParams>[] = [];
  private readonly progressList: Received<ProgressParams>[] = [];
  private readonly resultList: Received<CommandRecord>[] = [];
  private readonly logList: Received<LogRecord>[] = [];
  private readonly closeList: ConnectionClose[] = [];
  private connectionSeq = 0;
  private rpcSeq = 0;
  private stopped = false;

  private constructor(options: ConductorOptions) {
    super();
    this.host = options.host ?? '127.0.0.1';
    this.heartbeatIntervalS = options.heartbeatIntervalS ?? 10;
    this.requireToken = options.requireToken ?? true;
    this.rejectHello = options.rejectHello;
    this.autoAck = options.autoAck ?? true;
    this.path = options.path ?? '/v1/agent';
    this.statePath = options.statePath;
    this.secure = options.tls !== undefined;
    this.loadState();

    const echo = options.echoSubprotocol ?? true;
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: MAX_FRAME_BYTES,
      handleProtocols: (offered) => (echo && offered.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
    });
    this.server = options.tls
      ? https.createServer({ key: options.tls.key, cert: options.tls.cert })
      : http.createServer();
    this.server.on('request', (_req, res) => res.writeHead(426, { Connection: 'close' }).end());
    this.server.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket, head));
    // Tracked so that stop() can free the port at once, the way a crash would.
    this.server.on('connection', (socket) => {
      this.rawSockets.add(socket);
      socket.once('close', () => this.rawSockets.delete(socket));
    });
  }

  static async start(options: ConductorOptions = {}): Promise<ReferenceConductor> {
    const conductor = new ReferenceConductor(options);
    await conductor.listen(options.port ?? 0);
    return conductor;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get url(): string {
    const host = this.host.includes(':') ? `[${this.host}]` : this.host;
    return `${this.secure ? 'wss' : 'ws'}://${host}:${this.port}${this.path}`;
  }

  // ---- recorded traffic ----

  /** Every hello received, accepted or not. */
  hellos(): HelloRecord[] {
    return [...this.helloList];
  }

  heartbeats(): Received<HeartbeatParams>[] {
    return [...this.heartbeatList];
  }

  progress(commandId?: string): Received<ProgressParams>[] {
    return this.progressList.filter((p) => commandId === undefined || p.params.command_id === commandId);
  }

  /** Every command.result received, re-sends included; `resultsById` holds one per command. */
  results(): Received<CommandRecord>[] {
    return [...this.resultList];
  }

  logs(): Received<LogRecord>[] {
    return [...this.logList];
  }

  closes(): ConnectionClose[] {
    return [...this.closeList];
  }

  // ---- driving the agent ----

  /** Sends a request to the agent (the latest accepted connection, or the one of nodeUuid) and waits for its response. */
  call(
    method: string,
    params: unknown,
    options: { timeoutMs?: number; nodeUuid?: string } = {},
  ): Promise<RpcOutcome> {
    const conn = this.agentConnection(options.nodeUuid);
    if (!conn) {
      const whom = options.nodeUuid === undefined ? 'an agent' : `node ${options.nodeUuid}`;
      return Promise.reject(new Error(`${method}: no connection from ${whom}`));
    }
    const id = ++this.rpcSeq;
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise<RpcOutcome>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method} (id ${id}): no response within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { connection: conn.id, resolve, reject, timer });
      this.send(conn, { jsonrpc: '2.0', id, method, params });
    });
  }

  async runCommand(
    name: string,
    params: Record<string, unknown> = {},
    commandId: string = `cmd-${randomUUID()}`,
  ): Promise<RpcOutcome & { commandId: string }> {
    const outcome = await this.call('command.run', { command_id: commandId, name, params });
    return { ...outcome, commandId };
  }

  /** Resolves with the stored record, at once when it already arrived (or was loaded from the state file). */
  waitForResult(commandId: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<CommandRecord> {
    return this.waitFor(() => this.resultsById.get(commandId), timeoutMs, `the result of ${commandId}`);
  }

  /** Resolves once an agent is connected and its hello was accepted; at once if one already is. */
  waitForConnection(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<{ connection: number; nodeUuid: string }> {
    return this.waitFor(
      () => {
        const conn = this.agentConnection();
        return conn?.nodeUuid ? { connection: conn.id, nodeUuid: conn.nodeUuid } : undefined;
      },
      timeoutMs,
      'an accepted hello',
    );
  }

  /**
   * Re-evaluates `predicate` now and after every frame or connection change; resolves with its
   * first value that is not undefined, null or false.
   */
  waitFor<T>(
    predicate: (events: readonly ConductorEvent[]) => T | undefined | null | false,
    timeoutMs = DEFAULT_TIMEOUT_MS,
    what = 'the condition',
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const finish = (): void => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
      };
      const waiter: Waiter = {
        check: () => {
          try {
            const value = predicate(this.events);
            if (value !== undefined && value !== null && value !== false) {
              finish();
              resolve(value);
            }
          } catch (error) {
            finish();
            reject(error instanceof Error ? error : new Error(String(error)));
          }
        },
        fail: (error) => {
          finish();
          reject(error);
        },
      };
      const timer = setTimeout(
        () => waiter.fail(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)),
        timeoutMs,
      );
      this.waiters.add(waiter);
      waiter.check();
    });
  }

  /** Sends any frame, valid or not, to the latest open connection. */
  sendRaw(data: string | Buffer, options: { binary?: boolean } = {}): void {
    const conn = this.latestOpen();
    if (!conn) throw new Error('sendRaw: no open connection');
    this.record({ dir: 'out', connection: conn.id, frame: data });
    conn.socket.send(data, { binary: options.binary ?? false }, () => undefined);
  }

  /** The next frame received after this call that passes `filter` (heartbeats interleave with everything). */
  async nextFrame(
    timeoutMs = DEFAULT_TIMEOUT_MS,
    filter: (frame: unknown) => boolean = () => true,
  ): Promise<unknown> {
    let cursor = this.events.length;
    const event = await this.waitFor(
      (events) => {
        for (; cursor < events.length; cursor++) {
          const candidate = events[cursor];
          if (candidate?.dir === 'in' && filter(candidate.frame)) return candidate;
        }
        return undefined;
      },
      timeoutMs,
      'the next frame',
    );
    return event.frame;
  }

  /** Cuts every connection without a close handshake, as a network failure would. */
  dropConnections(): void {
    for (const conn of this.connections.values()) {
      if (!conn.open) continue;
      this.markClosed(conn, 1006, 'dropped by the conductor');
      conn.socket.terminate();
    }
  }

  /** Goes away like a crashed process: sockets cut, port free for a new instance at once. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.dropConnections();
    for (const socket of this.rawSockets) socket.destroy();
    const stoppedError = new Error('the conductor was stopped');
    for (const waiter of [...this.waiters]) waiter.fail(stoppedError);
    this.wss.close();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ---- connection handling ----

  private listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, this.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  private onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => undefined);
    const path = new URL(req.url ?? '/', 'http://conductor').pathname;
    if (path !== this.path) {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, req));
  }

  private onConnection(socket: WebSocket, req: http.IncomingMessage): void {
    const conn: Connection = { id: ++this.connectionSeq, socket, nodeUuid: null, open: true, error: null };
    this.connections.set(conn.id, conn);
    socket.on('message', (data, isBinary) => this.onMessage(conn, data, isBinary));
    socket.on('error', (error) => (conn.error = error.message));
    socket.on('close', (code, reason) => this.markClosed(conn, code, reason.toString()));
    this.emit('connection', {
      connection: conn.id,
      remoteAddress: req.socket.remoteAddress ?? null,
      protocol: socket.protocol,
    });
    this.notify();
  }

  private markClosed(conn: Connection, code: number, reason: string): void {
    if (!conn.open) return;
    conn.open = false;
    const closed = new Error(`connection ${conn.id} closed (${code})`);
    for (const [id, call] of this.pending) {
      if (call.connection !== conn.id) continue;
      this.pending.delete(id);
      clearTimeout(call.timer);
      call.reject(closed);
    }
    const info: ConnectionClose = {
      at: Date.now(),
      connection: conn.id,
      nodeUuid: conn.nodeUuid,
      code,
      reason,
      error: conn.error,
    };
    this.closeList.push(info);
    this.emit('close', info);
    this.notify();
  }

  private latestOpen(): Connection | undefined {
    return [...this.connections.values()].reverse().find((conn) => conn.open);
  }

  private agentConnection(nodeUuid?: string): Connection | undefined {
    return [...this.connections.values()]
      .reverse()
      .find(
        (conn) =>
          conn.open && conn.nodeUuid !== null && (nodeUuid === undefined || conn.nodeUuid === nodeUuid),
      );
  }

  // ---- frames ----

  private onMessage(conn: Connection, data: RawData, isBinary: boolean): void {
    try {
      const bytes = toBuffer(data);
      if (isBinary) {
        this.record({ dir: 'in', connection: conn.id, frame: bytes, malformed: 'binary frame' });
        return;
      }
      const text = bytes.toString('utf8');
      const parsed = parseJson(text);
      if (!parsed.ok) {
        this.record({ dir: 'in', connection: conn.id, frame: text, malformed: 'not JSON' });
        return;
      }
      const incoming = classify(parsed.value);
      const malformed = incoming.kind === 'malformed' ? incoming.reason : undefined;
      this.record({ dir: 'in', connection: conn.id, frame: parsed.value, malformed });
      this.dispatch(conn, incoming);
    } catch (error) {
      this.internalErrors.push(error);
    }
  }

  private dispatch(conn: Connection, incoming: Incoming): void {
    if (incoming.kind === 'malformed') return;
    if (incoming.kind === 'response') {
      this.settle(conn, incoming.id, incoming.outcome);
      return;
    }
    const id = incoming.kind === 'request' ? incoming.id : undefined;
    const spec = AGENT_METHODS[incoming.method];
    if (!spec) {
      if (id !== undefined)
        this.replyError(conn, id, RpcErrorCode.METHOD_NOT_FOUND, `unknown method ${incoming.method}`);
      return;
    }
    this.checkShape(conn, incoming.method, spec, id !== undefined, incoming.params);
    if (incoming.method === 'hello') {
      if (id !== undefined) this.onHello(conn, id, incoming.params);
      return;
    }
    if (conn.nodeUuid === null) {
      this.violation(conn, incoming.method, 'method', 'hello as the first frame');
      if (id !== undefined) this.replyError(conn, id, RpcErrorCode.INVALID_REQUEST, 'hello first');
      return;
    }
    this.onAgentMessage(conn, incoming.method, id, incoming.params);
  }

  /** Records where the agent strays from the schema; the frame is still handled where possible. */
  private checkShape(
    conn: Connection,
    method: string,
    spec: { request: boolean; schema: TSchema | null },
    isRequest: boolean,
    params: unknown,
  ): void {
    if (spec.request !== isRequest) {
      this.violation(conn, method, 'id', spec.request ? 'a request (with an id)' : 'a notification (no id)');
    }
    if (spec.schema === null) {
      if (!isObject(params)) this.violation(conn, method, 'params', 'an object');
      return;
    }
    const checked = validate(spec.schema, params);
    if (!checked.ok) this.violation(conn, method, checked.violation.field, checked.violation.expected);
  }

  private onAgentMessage(conn: Connection, method: string, id: RpcId | undefined, params: unknown): void {
    const received = <T>(): Received<T> => ({
      at: Date.now(),
      connection: conn.id,
      nodeUuid: conn.nodeUuid,
      params: params as T,
    });
    switch (method) {
      case 'heartbeat': {
        const entry = received<HeartbeatParams>();
        this.heartbeatList.push(entry);
        this.emit('heartbeat', entry);
        break;
      }
      case 'command.progress': {
        const entry = received<ProgressParams>();
        this.progressList.push(entry);
        this.emit('progress', entry);
        break;
      }
      case 'log': {
        const entry = received<LogRecord>();
        this.logList.push(entry);
        this.emit('log', entry);
        break;
      }
      case 'command.result':
        this.onResult(conn, id, received<CommandRecord>());
        break;
    }
    this.notify();
  }

  private onResult(conn: Connection, id: RpcId | undefined, entry: Received<CommandRecord>): void {
    const record: unknown = entry.params;
    if (!isObject(record) || typeof record.command_id !== 'string') {
      if (id !== undefined)
        this.replyError(conn, id, RpcErrorCode.INVALID_PARAMS, 'command.result needs a command_id');
      return;
    }
    this.resultList.push(entry);
    // The first copy wins: a re-send after reconnect must be the same record.
    if (!this.resultsById.has(record.command_id)) {
      this.resultsById.set(record.command_id, entry.params);
      this.saveState();
    }
    this.emit('result', entry);
    if (this.autoAck && id !== undefined) this.reply(conn, id, {});
  }

  private onHello(conn: Connection, id: RpcId, params: unknown): void {
    const hello = readHello(params);
    if (typeof hello === 'string') {
      this.replyError(conn, id, RpcErrorCode.INVALID_PARAMS, hello);
      return;
    }
    const nodeUuid = hello.nodeUuid ?? nodeUuidFor(hello.macs);
    const token = this.rejectHello === undefined ? this.admit(nodeUuid, hello.token, hello.macs) : null;
    const record: HelloRecord = {
      at: Date.now(),
      connection: conn.id,
      nodeUuid,
      params: params as HelloParams,
      accepted: token !== null,
    };
    this.helloList.push(record);
    if (this.rejectHello !== undefined) {
      this.replyError(conn, id, ConductorErrorCode.HELLO_REJECTED, this.rejectHello);
    } else if (token === null) {
      this.replyError(conn, id, ConductorErrorCode.BAD_TOKEN, 'bad token');
    } else {
      conn.nodeUuid = nodeUuid;
      this.reply(conn, id, { node_uuid: nodeUuid, token, heartbeat_interval_s: this.heartbeatIntervalS });
    }
    this.emit('hello', record);
    this.notify();
  }

  /** The token the node may use from now on, or null when the one it presented is wrong. */
  private admit(nodeUuid: string, presented: string | null, macs: string[]): string | null {
    const known = this.nodes.get(nodeUuid);
    // A null token means a fresh boot of the ramdisk: it gets a new token, the old one is void.
    let token: string;
    if (presented === null) token = randomBytes(24).toString('base64url');
    else if (presented === known?.token || !this.requireToken) token = presented;
    else return null;
    if (known?.token !== token || known.macs.join() !== macs.join()) {
      this.nodes.set(nodeUuid, { token, macs });
      this.saveState();
    }
    return token;
  }

  private settle(conn: Connection, id: unknown, outcome: RpcOutcome): void {
    const call = typeof id === 'number' ? this.pending.get(id) : undefined;
    if (!call || call.connection !== conn.id || typeof id !== 'number') {
      this.violation(conn, '(response)', 'id', 'the id of a pending conductor request');
      return;
    }
    this.pending.delete(id);
    clearTimeout(call.timer);
    call.resolve(outcome);
  }

  private reply(conn: Connection, id: RpcId, result: unknown): void {
    this.send(conn, { jsonrpc: '2.0', id, result });
  }

  private replyError(conn: Connection, id: RpcId, code: number, message: string, data?: unknown): void {
    const error: RpcErrorShape = data === undefined ? { code, message } : { code, message, data };
    this.send(conn, { jsonrpc: '2.0', id, error });
  }

  private send(conn: Connection, frame: Record<string, unknown>): void {
    this.record({ dir: 'out', connection: conn.id, frame });
    // Errors after a close surface through the close event; nothing to do here.
    conn.socket.send(JSON.stringify(frame), () => undefined);
  }

  private record(event: Omit<ConductorEvent, 'at'>): void {
    const entry: ConductorEvent = { at: Date.now(), ...event };
    if (entry.malformed === undefined) delete entry.malformed;
    this.events.push(entry);
    this.emit('frame', entry);
    this.notify();
  }

  private violation(conn: Connection, method: string, field: string, expected: string): void {
    this.violations.push({ at: Date.now(), connection: conn.id, method, field, expected });
  }

  private notify(): void {
    for (const waiter of [...this.waiters]) waiter.check();
  }

  // ---- state file ----

  private loadState(): void {
    if (this.statePath === undefined) return;
    let text: string;
    try {
      text = readFileSync(this.statePath, 'utf8');
    } catch (error) {
      if (isObject(error) && error.code === 'ENOENT') return;
      throw error;
    }
    const state: unknown = JSON.parse(text);
    if (!isObject(state)) throw new Error(`${this.statePath}: not a conductor state file`);
    for (const [uuid, node] of Object.entries(isObject(state.nodes) ? state.nodes : {})) {
      if (isObject(node) && typeof node.token === 'string') {
        this.nodes.set(uuid, { token: node.token, macs: stringArray(node.macs) });
      }
    }
    for (const [commandId, record] of Object.entries(isObject(state.results) ? state.results : {})) {
      if (isObject(record)) this.resultsById.set(commandId, record as CommandRecord);
    }
  }

  /** Write-then-rename, so that a conductor killed mid-write leaves the previous state intact. */
  private saveState(): void {
    if (this.statePath === undefined) return;
    const state = {
      nodes: Object.fromEntries(this.nodes),
      results: Object.fromEntries(this.resultsById),
    };
    const temp = `${this.statePath}.${process.pid}.tmp`;
    writeFileSync(temp, `${JSON.stringify(state, null, 2)}\n`);
    renameSync(temp, this.statePath);
  }
}

// ---- helpers ----

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const stringArray = (value: unknown): string[] =>
  Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : [];

const toBuffer = (data: RawData): Buffer => {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
};

const parseJson = (text: string): { ok: true; value: unknown } | { ok: false } => {
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return { ok: false };
  }
};

const isRpcId = (value: unknown): value is RpcId =>
  value === null || typeof value === 'string' || (typeof value === 'number' && Number.isInteger(value));

const classify = (frame: unknown): Incoming => {
  if (Array.isArray(frame)) return { kind: 'malformed', reason: 'batch' };
  if (!isObject(frame)) return { kind: 'malformed', reason: 'not an object' };
  if (frame.jsonrpc !== '2.0') return { kind: 'malformed', reason: 'jsonrpc is not "2.0"' };
  if (typeof frame.method === 'string') {
    if (!('id' in frame)) return { kind: 'notification', method: frame.method, params: frame.params };
    if (!isRpcId(frame.id)) return { kind: 'malformed', reason: 'bad id' };
    return { kind: 'request', method: frame.method, id: frame.id, params: frame.params };
  }
  if ('result' in frame) return { kind: 'response', id: frame.id, outcome: { result: frame.result } };
  const error = frame.error;
  if (isObject(error) && typeof error.code === 'number' && typeof error.message === 'string') {
    const shape: RpcErrorShape = { code: error.code, message: error.message };
    if ('data' in error) shape.data = error.data;
    return { kind: 'response', id: frame.id, outcome: { error: shape } };
  }
  return { kind: 'malformed', reason: 'neither a request nor a response' };
};

/** The loose reading of a hello: what the conductor needs, or why it cannot go on. */
const readHello = (
  params: unknown,
): { nodeUuid: string | null; token: string | null; macs: string[] } | string => {
  if (!isObject(params)) return 'hello params must be an object';
  if (params.protocol !== PROTOCOL_VERSION) return `protocol must be ${PROTOCOL_VERSION}`;
  return {
    nodeUuid: typeof params.node_uuid === 'string' && params.node_uuid !== '' ? params.node_uuid : null,
    token: typeof params.token === 'string' ? params.token : null,
    macs: stringArray(params.macs).map((mac) => mac.toLowerCase()),
  };
};

/** Same MAC, same node: a name-based (v5-style) UUID, so a re-booted machine keeps its identity. */
const nodeUuidFor = (macs: string[]): string => {
  const mac = macs[0];
  if (mac === undefined) return randomUUID();
  const hash = createHash('sha1').update(`bm-agent-node:${mac}`).digest().subarray(0, 16);
  hash.writeUInt8((hash.readUInt8(6) & 0x0f) | 0x50, 6);
  hash.writeUInt8((hash.readUInt8(8) & 0x3f) | 0x80, 8);
  const hex = hash.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
};
