import { nestingDepth, validate, type SchemaViolation } from '../protocol/validate.js';
import {
  MAX_PARAMS_BYTES,
  MAX_PARAMS_DEPTH,
  type CommandRecord,
  type ProgressParams,
} from '../protocol/schema.js';
import { AgentError, CancelledError, serializeError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { rfc3339 } from '../util/time.js';
import type { CommandContext, ProgressUpdate } from './definition.js';
import type { CommandRegistry } from './registry.js';

export type Progress = Omit<ProgressParams, 'command_id'>;

export type RunRejection =
  | { kind: 'unknown_command'; name: string; known: string[] }
  | { kind: 'invalid_params'; violation: SchemaViolation }
  | { kind: 'busy'; running: string };

export type RunOutcome =
  { ok: true; started: boolean; record: CommandRecord } | { ok: false; rejection: RunRejection };

export interface RunningCommand {
  command_id: string;
  name: string;
  progress: Progress | null;
}

/** Lines (DPU log, script output) one progress notification may carry, joined by newlines. */
const MAX_UNSENT_MESSAGES = 64;

interface Entry {
  record: CommandRecord;
  exclusive: boolean;
  controller: AbortController;
  progress: Progress | null;
  lastEmit: number;
  pendingEmit: NodeJS.Timeout | null;
  /** Messages not yet sent: a throttled update must not swallow the lines before it. */
  unsent: string[];
  startedMs: number;
  acknowledged: boolean;
  finishedSeq: number;
  afterDelivery: Array<() => Promise<void> | void>;
  done: Promise<CommandRecord>;
}

export interface EngineListener {
  started?: (record: CommandRecord) => void;
  progress?: (commandId: string, progress: Progress) => void;
  finished?: (record: CommandRecord) => void;
}

export interface EngineOptions {
  logger?: Logger;
  /** Least time between two progress events of one command (the protocol allows two a second). */
  progressIntervalMs?: number;
  /**
   * Results are delivered when somebody acknowledges them (the channel). A local caller has no
   * acknowledgement, so actions waiting for delivery run at once.
   */
  deliveryAcknowledged?: boolean;
  /** How long an after-delivery action (power off) waits for the acknowledgement before it runs anyway. */
  deliveryTimeoutMs?: number;
}

const snapshot = (record: CommandRecord): CommandRecord => ({ ...record });

/**
 * Runs commands and keeps their records for the life of the boot: idempotent ids, exclusivity,
 * cancellation, throttled progress, and the outbox of results that nobody acknowledged yet.
 */
export class CommandEngine {
  private readonly entries = new Map<string, Entry>();
  private finishedCount = 0;
  private readonly listeners = new Set<EngineListener>();
  private readonly logger: Logger;
  private readonly progressIntervalMs: number;
  private readonly deliveryAcknowledged: boolean;
  private readonly deliveryTimeoutMs: number;

  constructor(
    private readonly registry: CommandRegistry,
    options: EngineOptions = {},
  ) {
    this.logger = options.logger ?? silentLogger();
    this.progressIntervalMs = options.progressIntervalMs ?? 500;
    this.deliveryAcknowledged = options.deliveryAcknowledged ?? false;
    this.deliveryTimeoutMs = options.deliveryTimeoutMs ?? 30_000;
  }

  capabilities(): string[] {
    return this.registry.names();
  }

  on(listener: EngineListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  run(commandId: string, name: string, params: unknown = {}): RunOutcome {
    const existing = this.entries.get(commandId);
    if (existing) return { ok: true, started: false, record: snapshot(existing.record) };

    const definition = this.registry.get(name);
    if (!definition)
      return { ok: false, rejection: { kind: 'unknown_command', name, known: this.registry.names() } };

    const bounds = checkBounds(params ?? {});
    if (bounds) return { ok: false, rejection: { kind: 'invalid_params', violation: bounds } };
    const checked = validate(definition.params, params ?? {});
    if (!checked.ok)
      return { ok: false, rejection: { kind: 'invalid_params', violation: checked.violation } };

    if (definition.exclusive) {
      const holder = this.runningExclusive();
      if (holder) return { ok: false, rejection: { kind: 'busy', running: holder } };
    }

    const record: CommandRecord = {
      command_id: commandId,
      name,
      params: (params ?? {}) as Record<string, unknown>,
      status: 'RUNNING',
      started_at: rfc3339(),
      finished_at: null,
      result: null,
      error: null,
    };
    const controller = new AbortController();
    const entry: Entry = {
      record,
      exclusive: definition.exclusive,
      controller,
      progress: null,
      lastEmit: 0,
      pendingEmit: null,
      unsent: [],
      startedMs: Date.now(),
      acknowledged: false,
      finishedSeq: 0,
      afterDelivery: [],
      done: Promise.resolve(record),
    };
    this.entries.set(commandId, entry);

    const log = this.logger.child({ command_id: commandId, command: name });
    const context: CommandContext = {
      commandId,
      signal: controller.signal,
      log,
      progress: (update) => this.reportProgress(entry, update),
      afterDelivery: (action) => {
        entry.afterDelivery.push(action);
      },
    };

    log.info('command started');
    this.emit('started', snapshot(record));
    entry.done = this.execute(entry, () => definition.handler(checked.value, context), log);
    return { ok: true, started: true, record: snapshot(record) };
  }

  private async execute(
    entry: Entry,
    call: () => Promise<Record<string, unknown>>,
    log: Logger,
  ): Promise<CommandRecord> {
    const { record, controller } = entry;
    try {
      // Defer the handler so a synchronous throw still lands in the record, never in the caller.
      await Promise.resolve();
      const result = await call();
      if (controller.signal.aborted && result === undefined) throw new CancelledError();
      record.status = 'SUCCEEDED';
      // A JSON copy is what the conductor receives, and it holds no hidden references: a string
      // sliced from a big file would otherwise keep the whole file alive for the rest of the boot.
      record.result = detach(result ?? {});
    } catch (error) {
      const cancelled = controller.signal.aborted && (error instanceof CancelledError || isAbortError(error));
      record.status = cancelled ? 'CANCELLED' : 'FAILED';
      record.error = serializeError(
        cancelled && !(error instanceof CancelledError) ? new CancelledError() : error,
      );
      if (!cancelled && !AgentError.is(error))
        log.error({ err: error }, 'command failed with an unexpected error');
    }
    record.finished_at = rfc3339();
    entry.finishedSeq = ++this.finishedCount;
    this.dropPendingProgress(entry);
    const seconds = (Date.now() - entry.startedMs) / 1000;
    const fields = { status: record.status, seconds, error: record.error ?? undefined };
    if (record.status === 'SUCCEEDED') log.info(fields, 'command finished');
    else log.warn(fields, 'command finished');
    this.emit('finished', snapshot(record));
    if (!this.deliveryAcknowledged) this.runAfterDelivery(entry);
    else if (entry.afterDelivery.length > 0) {
      setTimeout(() => {
        if (entry.afterDelivery.length === 0) return;
        log.warn(
          { timeout_ms: this.deliveryTimeoutMs },
          'result not acknowledged in time; carrying on regardless',
        );
        this.runAfterDelivery(entry);
      }, this.deliveryTimeoutMs).unref();
    }
    return snapshot(record);
  }

  private runAfterDelivery(entry: Entry): void {
    const actions = entry.afterDelivery.splice(0);
    for (const action of actions) {
      Promise.resolve()
        .then(action)
        .catch((error: unknown) =>
          this.logger.error(
            { err: error, command_id: entry.record.command_id },
            'action after delivery failed',
          ),
        );
    }
  }

  private reportProgress(entry: Entry, update: ProgressUpdate): void {
    if (entry.record.status !== 'RUNNING') return;
    // A status repeated by every update (a format name, `setting dpu mode`) is one message, not many.
    if (update.message && update.message !== entry.unsent.at(-1)) {
      entry.unsent.push(update.message);
      // Bounded: a flood of lines keeps its newest.
      while (entry.unsent.length > MAX_UNSENT_MESSAGES) entry.unsent.shift();
    }
    entry.progress = {
      phase: update.phase,
      done: update.done,
      total: update.total ?? null,
      unit: update.unit ?? 'steps',
      rate: update.rate ?? null,
      message: entry.unsent.length > 0 ? entry.unsent.join('\n') : null,
    };
    const wait = entry.lastEmit + this.progressIntervalMs - Date.now();
    if (wait <= 0) {
      this.emitProgress(entry);
    } else if (!entry.pendingEmit) {
      // Trailing emit: the latest state always goes out, at most once per interval.
      entry.pendingEmit = setTimeout(() => this.emitProgress(entry), wait);
    }
  }

  private emitProgress(entry: Entry): void {
    if (entry.pendingEmit) clearTimeout(entry.pendingEmit);
    entry.pendingEmit = null;
    if (!entry.progress) return;
    entry.lastEmit = Date.now();
    entry.unsent = [];
    this.emit('progress', entry.record.command_id, { ...entry.progress });
  }

  /**
   * A trailing update still pending at the end is dropped rather than sent early: the limit of two
   * a second holds to the last, and the result says how it ended.
   */
  private dropPendingProgress(entry: Entry): void {
    if (entry.pendingEmit) clearTimeout(entry.pendingEmit);
    entry.pendingEmit = null;
  }

  get(commandId: string): CommandRecord | undefined {
    const entry = this.entries.get(commandId);
    return entry ? snapshot(entry.record) : undefined;
  }

  list(): CommandRecord[] {
    return [...this.entries.values()].map((entry) => snapshot(entry.record));
  }

  /** Asks a command to stop; it ends CANCELLED at its next safe point. */
  cancel(commandId: string): CommandRecord | undefined {
    const entry = this.entries.get(commandId);
    if (!entry) return undefined;
    if (entry.record.status === 'RUNNING' && !entry.controller.signal.aborted) {
      this.logger.info({ command_id: commandId }, 'cancel requested');
      entry.controller.abort(new CancelledError());
    }
    return snapshot(entry.record);
  }

  /** Resolves when the command has finished; for local callers and tests. */
  async wait(commandId: string): Promise<CommandRecord | undefined> {
    return this.entries.get(commandId)?.done;
  }

  running(): RunningCommand[] {
    return [...this.entries.values()]
      .filter((entry) => entry.record.status === 'RUNNING')
      .map((entry) => ({
        command_id: entry.record.command_id,
        name: entry.record.name,
        progress: entry.progress ? { ...entry.progress } : null,
      }));
  }

  busy(): boolean {
    return this.runningExclusive() !== undefined;
  }

  private runningExclusive(): string | undefined {
    for (const entry of this.entries.values()) {
      if (entry.exclusive && entry.record.status === 'RUNNING') return entry.record.command_id;
    }
    return undefined;
  }

  /** Finished records nobody has acknowledged yet, oldest first. */
  unacknowledged(): CommandRecord[] {
    return [...this.entries.values()]
      .filter((entry) => entry.record.status !== 'RUNNING' && !entry.acknowledged)
      .sort((a, b) => a.finishedSeq - b.finishedSeq)
      .map((entry) => snapshot(entry.record));
  }

  acknowledge(commandId: string): void {
    const entry = this.entries.get(commandId);
    if (!entry || entry.record.status === 'RUNNING' || entry.acknowledged) return;
    entry.acknowledged = true;
    this.runAfterDelivery(entry);
  }

  private emit(event: 'started' | 'finished', record: CommandRecord): void;
  private emit(event: 'progress', commandId: string, progress: Progress): void;
  private emit(event: keyof EngineListener, first: CommandRecord | string, progress?: Progress): void {
    for (const listener of this.listeners) {
      try {
        if (event === 'progress') listener.progress?.(first as string, progress as Progress);
        else listener[event]?.(first as CommandRecord);
      } catch (error) {
        this.logger.error({ err: error }, 'engine listener failed');
      }
    }
  }
}

/** Params are kept in the record and sent back with every result, so their size is bounded. */
const checkBounds = (params: unknown): SchemaViolation | null => {
  if (nestingDepth(params, MAX_PARAMS_DEPTH) > MAX_PARAMS_DEPTH) {
    return { field: 'params', expected: `at most ${MAX_PARAMS_DEPTH} levels of nesting` };
  }
  if (Buffer.byteLength(JSON.stringify(params)) > MAX_PARAMS_BYTES) {
    return { field: 'params', expected: `at most ${MAX_PARAMS_BYTES / 1024} KiB of JSON` };
  }
  return null;
};

const detach = (result: Record<string, unknown>): Record<string, unknown> => {
  try {
    return JSON.parse(JSON.stringify(result)) as Record<string, unknown>;
  } catch {
    // Not serialisable (a cycle, a BigInt): kept as is, and the channel reports it when sending.
    return result;
  }
};

const isAbortError = (error: unknown): boolean =>
  error instanceof Error &&
  (error.name === 'AbortError' || (error as { code?: unknown }).code === 'ABORT_ERR');
