import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import WebSocket from 'ws';
import type { CommandEngine, Progress } from '../commands/engine.js';
import {
  HelloResult,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  RpcErrorCode,
  SUBPROTOCOL,
  type CommandRecord,
  type CommandRefParams,
  type CommandRunParams,
  type HeartbeatParams,
  type HelloParams,
} from '../protocol/schema.js';
import { validate } from '../protocol/validate.js';
import { AgentError, errorMessage } from '../util/errors.js';
import type { LogForwarder, LogRecord, Logger } from '../util/logger.js';
import { Backoff } from './backoff.js';
import { classifyFrame, type RpcErrorReply, type RpcId } from './frames.js';
import type { AgentIdentity } from './identity.js';
import { buildTlsOptions, checkTlsSettings, isSecureUrl, verifyPin } from './tls.js';

export type ChannelState = 'idle' | 'connecting' | 'ready' | 'waiting' | 'stopped';

export interface ChannelOptions {
  url: string;
  insecure: boolean;
  caPath: string | null;
  pin: string | null;
  engine: CommandEngine;
  identity: () => Promise<AgentIdentity>;
  logger: Logger;
  agentVersion: string;
  bootif: string | null;
  nodeUuid: string | null;
  logForwarder?: LogForwarder;
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** How long the conductor has to answer a request of ours before the connection is dropped. */
  requestTimeoutMs?: number;
  random?: () => number;
}

/** Any JSON-RPC frame the agent writes. */
interface OutgoingFrame {
  jsonrpc: '2.0';
  id?: RpcId;
  method?: string;
  params?: unknown;
  result?: unknown;
  error?: { code: number; message: string; data?: unknown };
}

interface Answer {
  result?: unknown;
  error?: { code: number; message: string; data?: unknown };
}

interface PendingRequest {
  resolve: (answer: Answer) => void;
  timer: NodeJS.Timeout;
}

export interface ChannelStatus {
  state: ChannelState;
  nodeUuid: string | null;
  connectedSince: string | null;
  lastError: string | null;
  /** Why the last connection ended; kept after a reconnect, unlike lastError. */
  lastDisconnect: string | null;
  reconnects: number;
  /** Connection attempts that failed since the conductor last accepted a hello. */
  attempts: number;
  /** When the next attempt is due, while waiting to reconnect. */
  retryAt: string | null;
}

/** Outgoing log records beyond this much unsent data are dropped rather than queued without bound. */
const LOG_BACKPRESSURE_BYTES = 1024 * 1024;

/**
 * The agent's end of the conductor channel (shared/protocol.md): dial, hello, heartbeats, serve
 * requests, deliver results until acknowledged, and reconnect with backoff for ever.
 */
export class AgentChannel {
  private ws: WebSocket | null = null;
  private stateValue: ChannelState = 'idle';
  private readonly backoff: Backoff;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private pingTimer: NodeJS.Timeout | null = null;
  private pongTimer: NodeJS.Timeout | null = null;
  private readonly pending = new Map<number, PendingRequest>();
  private nextRequestId = 1;
  private token: string | null = null;
  private nodeUuid: string | null;
  private heartbeatIntervalMs = 10_000;
  private heartbeatSeq = 0;
  private connectedSince: Date | null = null;
  private lastError: string | null = null;
  private lastDisconnect: string | null = null;
  /** A specific reason this connection attempt was refused, which later generic errors must not hide. */
  private refusal: string | null = null;
  private reconnects = 0;
  private retryAt: Date | null = null;
  /** Results sent on the current connection and not yet acknowledged, so none goes out twice. */
  private inflightResults = new Set<string>();
  private readonly unsubscribe: Array<() => void> = [];
  private readonly stateListeners = new Set<(status: ChannelStatus) => void>();

  constructor(private readonly options: ChannelOptions) {
    checkTlsSettings({
      url: options.url,
      insecure: options.insecure,
      caPath: options.caPath,
      pin: options.pin,
    });
    this.nodeUuid = options.nodeUuid;
    this.backoff = new Backoff(options.backoffMinMs ?? 1000, options.backoffMaxMs ?? 60_000, options.random);
  }

  get state(): ChannelState {
    return this.stateValue;
  }

  status(): ChannelStatus {
    return {
      state: this.stateValue,
      nodeUuid: this.nodeUuid,
      connectedSince: this.connectedSince?.toISOString() ?? null,
      lastError: this.lastError,
      lastDisconnect: this.lastDisconnect,
      reconnects: this.reconnects,
      attempts: this.backoff.attempts,
      retryAt: this.retryAt?.toISOString() ?? null,
    };
  }

  /**
   * Observes the link (connecting, ready, waiting with the attempt count and the last error,
   * stopped): the console status screen shows it. Called synchronously on every change.
   */
  onStateChange(listener: (status: ChannelStatus) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  start(): void {
    if (this.stateValue !== 'idle') return;
    const { engine } = this.options;
    this.unsubscribe.push(
      engine.on({
        progress: (commandId, progress) => this.sendProgress(commandId, progress),
        finished: (record) => {
          this.sendHeartbeat();
          this.deliverResult(record);
        },
      }),
    );
    if (this.options.logForwarder) {
      this.unsubscribe.push(this.options.logForwarder.subscribe((record) => this.forwardLog(record)));
    }
    void this.connect();
  }

  /** Closes the connection politely (1001, going away) so the conductor can tell a stop from a crash. */
  async stop(): Promise<void> {
    this.retryAt = null;
    this.setState('stopped');
    for (const off of this.unsubscribe.splice(0)) off();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          ws.terminate();
          resolve();
        }, 2000);
        ws.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
        ws.close(1001, 'agent stopping');
      });
    }
    this.teardown();
    if (ws && ws.readyState !== WebSocket.CLOSED) ws.terminate();
  }

  private stopped(): boolean {
    return this.stateValue === 'stopped';
  }

  private setState(state: ChannelState): void {
    if (this.stateValue === 'stopped') return;
    this.stateValue = state;
    const status = this.status();
    for (const listener of this.stateListeners) {
      try {
        listener(status);
      } catch (error) {
        // An observer must never take the connection down with it.
        this.options.logger.error({ err: error }, 'channel state listener failed');
      }
    }
  }

  private async connect(): Promise<void> {
    if (this.stateValue === 'stopped') return;
    this.setState('connecting');
    const { url, insecure, caPath, pin, logger } = this.options;
    let tls;
    try {
      tls = await buildTlsOptions({ url, insecure, caPath, pin });
    } catch (error) {
      this.fail(error);
      return;
    }
    if (this.stopped()) return;
    if (insecure && (!isSecureUrl(url) || (!tls.rejectUnauthorized && !pin))) {
      logger.warn({ url }, 'connecting to the conductor without verifying it (insecure)');
    }
    const ws = new WebSocket(url, SUBPROTOCOL, {
      ...tls,
      maxPayload: MAX_FRAME_BYTES,
      handshakeTimeout: this.options.requestTimeoutMs ?? 30_000,
      perMessageDeflate: false,
    });
    this.ws = ws;
    this.refusal = null;
    ws.on('upgrade', (response: IncomingMessage) => {
      if (!pin || !isSecureUrl(url)) return;
      try {
        verifyPin(response.socket as TLSSocket, pin);
      } catch (error) {
        this.refusal = describeChannelError(error);
        this.lastError = this.refusal;
        logger.error({ err: error }, 'refusing the conductor');
        ws.terminate();
      }
    });
    ws.on('open', () => void this.handshake(ws));
    ws.on('message', (data, isBinary) => this.onFrame(ws, data, isBinary));
    ws.on('pong', () => {
      if (this.pongTimer) clearTimeout(this.pongTimer);
      this.pongTimer = null;
    });
    ws.on('error', (error) => {
      this.lastError = this.refusal ?? errorMessage(error);
      logger.warn(
        { error: error.message, code: (error as { code?: unknown }).code },
        'conductor connection error',
      );
    });
    ws.on('close', (code, reason) => {
      if (ws !== this.ws) return;
      const why = reason.length > 0 ? reason.toString() : (this.lastError ?? `code ${code}`);
      this.lastDisconnect = `${new Date().toISOString()} ${why}${why.includes(String(code)) ? '' : ` (code ${code})`}`;
      logger.info({ code, reason: why }, 'conductor connection closed');
      this.teardown();
      this.scheduleReconnect();
    });
  }

  private fail(error: unknown): void {
    this.lastError = errorMessage(error);
    this.options.logger.error({ err: error }, 'cannot connect to the conductor');
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stateValue === 'stopped' || this.reconnectTimer) return;
    // The delay comes first so observers of `waiting` see the attempt count and when the next is due.
    const delay = this.backoff.next();
    this.retryAt = new Date(Date.now() + delay);
    this.setState('waiting');
    this.options.logger.info(
      { delay_ms: delay, attempt: this.backoff.attempts },
      'reconnecting to the conductor',
    );
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.retryAt = null;
      this.reconnects += 1;
      void this.connect();
    }, delay);
  }

  /** Clears everything that belongs to one connection. */
  private teardown(): void {
    for (const timer of [this.heartbeatTimer, this.pingTimer, this.pongTimer]) if (timer) clearTimeout(timer);
    this.heartbeatTimer = this.pingTimer = this.pongTimer = null;
    for (const [, request] of this.pending) {
      clearTimeout(request.timer);
      request.resolve({ error: { code: -1, message: 'connection closed' } });
    }
    this.pending.clear();
    this.inflightResults = new Set();
    this.connectedSince = null;
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState === WebSocket.OPEN) ws.terminate();
  }

  private async handshake(ws: WebSocket): Promise<void> {
    const { logger, engine } = this.options;
    this.startLiveness(ws);
    let identity: AgentIdentity;
    try {
      identity = await this.options.identity();
    } catch (error) {
      logger.error({ err: error }, 'cannot read the node identity');
      identity = { bootId: 'unknown', hostname: 'unknown', macs: [] };
    }
    const params: HelloParams = {
      protocol: PROTOCOL_VERSION,
      agent_version: this.options.agentVersion,
      boot_id: identity.bootId,
      hostname: identity.hostname,
      macs: identity.macs,
      bootif: this.options.bootif,
      node_uuid: this.nodeUuid,
      token: this.token,
      capabilities: engine.capabilities(),
      running: engine.running().map((command) => command.command_id),
    };
    if (ws !== this.ws) return;
    this.request(ws, 'hello', params, (answer) => this.completeHandshake(ws, answer));
  }

  private completeHandshake(ws: WebSocket, answer: Answer): void {
    const { logger, engine } = this.options;
    if (ws !== this.ws) return;
    if (answer.error) {
      if (answer.error.code < 0 && answer.error.code >= -2) return;
      this.lastError = `conductor refused hello: ${answer.error.message}`;
      logger.error(
        { code: answer.error.code, conductor_message: answer.error.message },
        'conductor refused hello; retrying',
      );
      ws.close(1000, 'hello refused');
      return;
    }
    const result = validate(HelloResult, answer.result, 'result');
    if (!result.ok) {
      this.lastError = `malformed hello result: ${result.violation.field} ${result.violation.expected}`;
      logger.error(
        { violation: result.violation },
        'conductor answered hello with a malformed result; retrying',
      );
      ws.close(1002, 'malformed hello result');
      return;
    }
    this.token = result.value.token;
    this.nodeUuid = result.value.node_uuid;
    this.heartbeatIntervalMs = result.value.heartbeat_interval_s * 1000;
    this.connectedSince = new Date();
    this.lastError = null;
    this.backoff.reset();
    this.setState('ready');
    logger.info(
      { node_uuid: this.nodeUuid, heartbeat_interval_s: result.value.heartbeat_interval_s },
      'conductor accepted hello',
    );
    this.sendHeartbeat();
    this.heartbeatTimer = setInterval(() => this.sendHeartbeat(), this.heartbeatIntervalMs);
    for (const record of engine.unacknowledged()) this.deliverResult(record);
  }

  private startLiveness(ws: WebSocket): void {
    const interval = this.options.pingIntervalMs ?? 15_000;
    const timeout = this.options.pongTimeoutMs ?? 30_000;
    this.pingTimer = setInterval(() => {
      if (ws.readyState !== WebSocket.OPEN) return;
      ws.ping();
      if (!this.pongTimer) {
        this.pongTimer = setTimeout(() => {
          this.lastError = `no pong within ${timeout} ms`;
          this.options.logger.warn(
            { timeout_ms: timeout },
            'conductor stopped answering pings; reconnecting',
          );
          ws.terminate();
        }, timeout);
      }
    }, interval);
  }

  /**
   * Sends a request; `onAnswer` runs synchronously when the response frame is read, so a frame
   * that follows the answer in the same read already sees its effect (the hello completing).
   */
  private request(ws: WebSocket, method: string, params: unknown, onAnswer: (answer: Answer) => void): void {
    const id = this.nextRequestId++;
    const timer = setTimeout(() => {
      this.pending.delete(id);
      this.options.logger.warn({ method }, 'conductor did not answer in time; reconnecting');
      onAnswer({ error: { code: -2, message: 'timed out' } });
      ws.terminate();
    }, this.options.requestTimeoutMs ?? 30_000);
    this.pending.set(id, { resolve: onAnswer, timer });
    if (!this.send(ws, { jsonrpc: '2.0', id, method, params })) {
      clearTimeout(timer);
      this.pending.delete(id);
      onAnswer({ error: { code: -1, message: 'not connected' } });
    }
  }

  private notify(method: string, params: unknown): void {
    if (this.stateValue !== 'ready' || !this.ws) return;
    this.send(this.ws, { jsonrpc: '2.0', method, params });
  }

  /**
   * Sends one frame. A frame the conductor would refuse (over the size limit, or not serialisable)
   * is never sent: a reply becomes an error reply, anything else is logged and dropped.
   */
  private send(ws: WebSocket, message: OutgoingFrame): boolean {
    if (ws.readyState !== WebSocket.OPEN) return false;
    let text: string;
    try {
      text = JSON.stringify(message);
    } catch (error) {
      this.options.logger.error(
        { err: error, method: message.method },
        'cannot serialise a frame for the conductor',
      );
      return this.sendTooLarge(ws, message, 'cannot be serialised');
    }
    if (Buffer.byteLength(text) > MAX_FRAME_BYTES) {
      this.options.logger.error(
        { method: message.method, bytes: Buffer.byteLength(text) },
        'frame over the 16 MiB limit not sent',
      );
      return this.sendTooLarge(ws, message, `is over the ${MAX_FRAME_BYTES} byte frame limit`);
    }
    ws.send(text);
    return true;
  }

  private sendTooLarge(ws: WebSocket, message: OutgoingFrame, why: string): boolean {
    if (message.method === 'command.result') {
      const record = message.params as CommandRecord;
      // The outcome must still reach the conductor, so the record goes without its payload.
      const reduced: CommandRecord = {
        ...record,
        params: {},
        status: 'FAILED',
        result: null,
        error: {
          code: 'RESULT_TOO_LARGE',
          message: `the result of ${record.command_id} ${why}; see the agent log`,
          details: { original_status: record.status },
        },
      };
      return this.send(ws, { ...message, params: reduced });
    }
    if (message.method === undefined && 'result' in message) {
      return this.send(ws, {
        jsonrpc: '2.0',
        id: message.id ?? null,
        error: { code: RpcErrorCode.INTERNAL_ERROR, message: `the reply ${why}` },
      });
    }
    return false;
  }

  private sendHeartbeat(): void {
    const running = this.options.engine.running();
    const params: HeartbeatParams = {
      seq: this.heartbeatSeq,
      uptime_s: Math.round(process.uptime() * 10) / 10,
      busy: this.options.engine.busy(),
      running,
    };
    if (this.stateValue !== 'ready') return;
    this.heartbeatSeq += 1;
    this.notify('heartbeat', params);
  }

  private sendProgress(commandId: string, progress: Progress): void {
    this.notify('command.progress', { command_id: commandId, ...progress });
  }

  private forwardLog(record: LogRecord): void {
    if (this.stateValue !== 'ready' || !this.ws || this.ws.bufferedAmount > LOG_BACKPRESSURE_BYTES) return;
    this.notify('log', record);
  }

  private deliverResult(record: CommandRecord): void {
    const ws = this.ws;
    if (this.stateValue !== 'ready' || !ws || this.inflightResults.has(record.command_id)) return;
    const inflight = this.inflightResults;
    inflight.add(record.command_id);
    this.request(ws, 'command.result', record, (answer) => {
      inflight.delete(record.command_id);
      if (answer.error) {
        // Kept in the outbox: it goes out again after the next reconnect.
        if (answer.error.code !== -1) {
          this.options.logger.warn(
            { command_id: record.command_id, error: answer.error },
            'conductor did not acknowledge a result',
          );
        }
        return;
      }
      this.options.engine.acknowledge(record.command_id);
    });
  }

  private onFrame(ws: WebSocket, data: WebSocket.RawData, isBinary: boolean): void {
    const text = isBinary
      ? ''
      : Array.isArray(data)
        ? Buffer.concat(data).toString('utf8')
        : data.toString('utf8');
    const frame = classifyFrame(text, isBinary);
    switch (frame.kind) {
      case 'invalid':
        if (frame.reply) this.replyError(ws, frame.reply);
        return;
      case 'notification':
        this.options.logger.debug({ method: frame.method }, 'ignoring a notification from the conductor');
        return;
      case 'response': {
        const pending = typeof frame.id === 'number' ? this.pending.get(frame.id) : undefined;
        if (!pending || typeof frame.id !== 'number') {
          this.options.logger.warn({ id: frame.id }, 'response to no request of ours; ignored');
          return;
        }
        clearTimeout(pending.timer);
        this.pending.delete(frame.id);
        pending.resolve(frame.error ? { error: frame.error } : { result: frame.result });
        return;
      }
      case 'request':
        this.serve(ws, frame.id, frame.method, frame.params);
    }
  }

  private serve(ws: WebSocket, id: RpcId, method: string, params: unknown): void {
    const { engine } = this.options;
    const reply = (result: unknown): void => void this.send(ws, { jsonrpc: '2.0', id, result });
    const unknownId = (commandId: string): void =>
      this.replyError(ws, {
        id,
        code: RpcErrorCode.UNKNOWN_COMMAND_ID,
        message: `unknown command_id ${commandId}`,
        data: { command_id: commandId },
      });
    switch (method) {
      case 'command.run': {
        const { command_id, name, params: commandParams } = params as CommandRunParams;
        const outcome = engine.run(command_id, name, commandParams ?? {});
        if (outcome.ok) {
          reply(outcome.record);
          return;
        }
        const rejection = outcome.rejection;
        if (rejection.kind === 'unknown_command') {
          this.replyError(ws, {
            id,
            code: RpcErrorCode.UNKNOWN_COMMAND,
            message: `unknown command ${rejection.name}`,
            data: { known: rejection.known },
          });
        } else if (rejection.kind === 'invalid_params') {
          this.replyError(ws, {
            id,
            code: RpcErrorCode.INVALID_PARAMS,
            message: `invalid params for ${name}: ${rejection.violation.field} ${rejection.violation.expected}`,
            data: {
              // The full path from the request: a command param called `name` is not command.run's own name.
              field: `params.${rejection.violation.field}`,
              expected: rejection.violation.expected,
            },
          });
        } else {
          this.replyError(ws, {
            id,
            code: RpcErrorCode.BUSY,
            message: `busy: exclusive command ${rejection.running} is running`,
            data: { running: rejection.running },
          });
        }
        return;
      }
      case 'command.status': {
        const { command_id } = params as CommandRefParams;
        const record = engine.get(command_id);
        if (record) reply(record);
        else unknownId(command_id);
        return;
      }
      case 'command.list':
        reply(engine.list());
        return;
      case 'command.cancel': {
        const { command_id } = params as CommandRefParams;
        const record = engine.cancel(command_id);
        if (record) reply(record);
        else unknownId(command_id);
        return;
      }
      default:
        this.replyError(ws, { id, code: RpcErrorCode.METHOD_NOT_FOUND, message: `unknown method ${method}` });
    }
  }

  private replyError(ws: WebSocket, reply: RpcErrorReply): void {
    const error =
      reply.data === undefined
        ? { code: reply.code, message: reply.message }
        : { code: reply.code, message: reply.message, data: reply.data };
    this.send(ws, { jsonrpc: '2.0', id: reply.id, error });
  }
}

export const describeChannelError = (error: unknown): string =>
  AgentError.is(error) ? `${error.code}: ${error.message}` : errorMessage(error);
