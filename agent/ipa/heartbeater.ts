/**
 * Heartbeats to Ironic (`POST /v1/heartbeat/<uuid>`), timed like IPA Zed (ipa.md §2.4): the first
 * at once, then every heartbeat_timeout x U(0.3, 0.6); after a failure on the 5 s error tick; and
 * soon after each asynchronous command ends, since the conductor only moves a step on when a
 * heartbeat arrives. Ironic does its work after answering 202, so a heartbeat carries no state.
 */
import { performance } from 'node:perf_hooks';
import { AgentError, CancelledError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import type { IpaSession } from './contracts.js';
import {
  AGENT_TOKEN_API_VERSION,
  AGENT_VERIFY_CA_API_VERSION,
  AGENT_VERSION_API_VERSION,
  IronicApiError,
  atLeast,
  formatApiVersion,
  type IronicClient,
} from './ironic-client.js';
import { IronicStatusTracker, type IronicStatus } from './ironic-status.js';

/** IPA Zed's loop wakes every 5 s: a failed heartbeat is retried on that tick. */
export const DEFAULT_ERROR_RETRY_MS = 5_000;
/** A forced heartbeat waits until this long after the last accepted one. */
export const DEFAULT_FORCE_SPACING_MS = 5_000;

export interface HeartbeaterOptions {
  client: IronicClient;
  /** Read at every heartbeat: node UUID, token and heartbeat timeout come from the last lookup. */
  session: IpaSession;
  /**
   * The agent API's URL as Ironic should call it, read at every heartbeat. Ironic refuses a URL
   * that differs from the one it stored for the node, so it must stay the same once sent.
   */
  callbackUrl: () => string;
  /** Sent as agent_version; Ironic refuses heartbeats without one. */
  agentVersion: string;
  /** The PEM certificate the agent API serves, sent as agent_verify_ca (API 1.68 and later). */
  verifyCa?: (() => string | null) | string | null;
  /**
   * Ironic refused the token (it wipes it on a reboot, a power-off, the end of cleaning, a
   * failure). Heartbeats have stopped and the token is forgotten: look the node up again, then
   * start() again. A rejected promise or a throw is logged.
   */
  onTokenRejected: (error: IronicApiError) => void | Promise<void>;
  logger: Logger;
  /** Shared with lookup so one snapshot shows both; a private one is made when absent. */
  status?: IronicStatusTracker;
  errorRetryMs?: number;
  forceSpacingMs?: number;
  random?: () => number;
}

/** Ironic's answers when the token it holds is not the one sent (or there is none). */
export const isTokenRejection = (error: unknown): error is IronicApiError =>
  error instanceof IronicApiError && error.status === 400 && /agent token/i.test(error.faultstring ?? '');

export class Heartbeater {
  private readonly tracker: IronicStatusTracker;
  private readonly errorRetryMs: number;
  private readonly forceSpacingMs: number;
  private readonly random: () => number;
  private runningValue = false;
  /** Bumped by every start() and stop(), so a heartbeat that outlives a stop cannot schedule anything. */
  private generation = 0;
  private timer: NodeJS.Timeout | null = null;
  private dueAt: number | null = null;
  private inflight: Promise<void> | null = null;
  private abort: AbortController | null = null;
  private lastSuccessAt: number | null = null;
  private lastFailureAt: number | null = null;
  private forcePending = false;

  constructor(private readonly options: HeartbeaterOptions) {
    this.tracker = options.status ?? new IronicStatusTracker();
    this.errorRetryMs = options.errorRetryMs ?? DEFAULT_ERROR_RETRY_MS;
    this.forceSpacingMs = options.forceSpacingMs ?? DEFAULT_FORCE_SPACING_MS;
    this.random = options.random ?? Math.random;
  }

  get status(): IronicStatus {
    return this.tracker.snapshot();
  }

  get running(): boolean {
    return this.runningValue;
  }

  /**
   * Starts heartbeating: at once, or, when the last heartbeat failed less than the error tick
   * ago (a token rejection followed by a quick re-lookup), when that tick is up, so that a token
   * Ironic keeps refusing costs one request per tick and not a tight loop.
   */
  start(): void {
    if (this.runningValue) return;
    if (!this.options.session.nodeUuid)
      throw new AgentError('INTERNAL', 'heartbeats need the node UUID: look the node up first');
    this.runningValue = true;
    this.generation += 1;
    this.tracker.update({ state: 'heartbeating', nodeUuid: this.options.session.nodeUuid, attempts: 0 });
    const now = performance.now();
    this.schedule(this.lastFailureAt === null ? now : Math.max(now, this.lastFailureAt + this.errorRetryMs));
  }

  /** Stops the timer and cancels a heartbeat in flight; resolves once nothing is pending. */
  async stop(): Promise<void> {
    this.runningValue = false;
    this.generation += 1;
    this.clearTimer();
    this.abort?.abort(new CancelledError('heartbeats stopped'));
    const pending = this.inflight;
    this.tracker.update({ state: 'stopped', nextAttemptAt: null });
    if (pending) await pending;
  }

  /**
   * A command ended: heartbeat now if the last accepted one is at least the spacing old, else as
   * soon as it is. A heartbeat in flight does not count: it may have left before the command ended.
   */
  force(): void {
    if (!this.runningValue) return;
    this.forcePending = true;
    if (this.inflight) return;
    const due = this.forcedDue();
    if (this.dueAt === null || due < this.dueAt) this.schedule(due);
  }

  private forcedDue(): number {
    const now = performance.now();
    return this.lastSuccessAt === null ? now : Math.max(now, this.lastSuccessAt + this.forceSpacingMs);
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.dueAt = null;
  }

  private schedule(at: number): void {
    this.clearTimer();
    const delay = Math.max(0, at - performance.now());
    this.dueAt = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.dueAt = null;
      this.inflight = this.beat();
    }, delay);
    this.tracker.update({ nextAttemptAt: new Date(Date.now() + delay).toISOString() });
  }

  private intervalMs(): number {
    return this.options.session.heartbeatTimeoutS * 1000 * (0.3 + 0.3 * this.random());
  }

  private async beat(): Promise<void> {
    const generation = this.generation;
    this.forcePending = false;
    const controller = new AbortController();
    this.abort = controller;
    this.tracker.update({ nextAttemptAt: null });
    let failure: unknown = null;
    try {
      await this.send(controller.signal);
    } catch (error) {
      failure = error ?? new Error('heartbeat failed');
    }
    this.inflight = null;
    this.abort = null;
    if (generation !== this.generation || !this.runningValue) return;
    if (failure === null) this.succeeded();
    else this.failed(failure);
  }

  private async send(signal: AbortSignal): Promise<void> {
    const { client, session } = this.options;
    const version = await client.heartbeatApiVersion(signal);
    const body: Record<string, unknown> = { callback_url: this.options.callbackUrl() };
    // Each field only from the microversion that knows it: Ironic refuses unknown fields.
    if (atLeast(version, AGENT_TOKEN_API_VERSION) && session.token) body.agent_token = session.token;
    if (atLeast(version, AGENT_VERSION_API_VERSION)) body.agent_version = this.options.agentVersion;
    const verifyCa =
      typeof this.options.verifyCa === 'function' ? this.options.verifyCa() : (this.options.verifyCa ?? null);
    if (verifyCa && atLeast(version, AGENT_VERIFY_CA_API_VERSION)) body.agent_verify_ca = verifyCa;
    this.tracker.update({ apiVersion: formatApiVersion(version) });
    const response = await client.send({
      method: 'POST',
      path: `/v1/heartbeat/${encodeURIComponent(session.nodeUuid ?? '')}`,
      body,
      apiVersion: version,
      signal,
    });
    if (response.status !== 202)
      throw new AgentError('IRONIC_BAD_RESPONSE', `heartbeat: expected 202, got ${response.status}`, {
        details: { status: response.status },
      });
  }

  private succeeded(): void {
    const now = performance.now();
    this.lastSuccessAt = now;
    this.lastFailureAt = null;
    this.tracker.update({ state: 'heartbeating', attempts: 0, lastHeartbeatAt: new Date().toISOString() });
    this.options.logger.debug({ nodeUuid: this.options.session.nodeUuid }, 'heartbeat accepted');
    const next = now + this.intervalMs();
    this.schedule(this.forcePending ? Math.min(next, this.forcedDue()) : next);
  }

  private failed(error: unknown): void {
    const { logger, session } = this.options;
    this.lastFailureAt = performance.now();
    if (isTokenRejection(error)) {
      this.runningValue = false;
      this.generation += 1;
      session.forgetToken();
      this.tracker.failed(error, { state: 'stopped', nextAttemptAt: null });
      logger.warn(
        { nodeUuid: session.nodeUuid, faultstring: error.faultstring },
        'Ironic rejected the agent token (it wipes it on a reboot, power-off or the end of a clean); heartbeats stop until the node is looked up again',
      );
      this.notifyTokenRejected(error);
      return;
    }
    const conflict = error instanceof IronicApiError && error.status === 409;
    logger.warn(
      { err: error, nodeUuid: session.nodeUuid, retryInMs: this.errorRetryMs },
      conflict ? 'heartbeat refused: the node is locked by the conductor' : 'heartbeat failed',
    );
    this.tracker.failed(error, { state: 'retrying' });
    this.schedule(this.lastFailureAt + this.errorRetryMs);
  }

  private notifyTokenRejected(error: IronicApiError): void {
    const report = (failure: unknown): void =>
      this.options.logger.error({ err: failure }, 'the token-rejected handler failed');
    try {
      const result = this.options.onTokenRejected(error);
      if (result instanceof Promise) result.catch(report);
    } catch (failure) {
      report(failure);
    }
  }
}
