/**
 * Finding this node in Ironic: `GET /v1/lookup` with the node's MACs, retried until Ironic answers
 * with a node or ipa-lookup-timeout runs out (ipa.md §2.3). Ironic answers 404 until the node is
 * in a state where lookup is allowed (clean wait, wait call-back, ...), so early failures are normal.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError, CancelledError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import type { IpaSession } from './contracts.js';
import { IronicApiError, formatApiVersion, parseJsonBody, type IronicClient } from './ironic-client.js';
import type { IronicStatusTracker } from './ironic-status.js';

export const DEFAULT_LOOKUP_MAX_INTERVAL_MS = 60_000;
/** Extra waits after a 409 (the conductor holds the node's lock): first, second, then every later one. */
export const DEFAULT_CONFLICT_DELAYS_MS: readonly number[] = [5_000, 10_000, 30_000];
/** Ironic's token is 43 characters; IPA refuses anything under 32 as not a token. */
export const MIN_TOKEN_LENGTH = 32;
export const MASKED_TOKEN = '******';
/** The shortest per-request timeout the last attempt gets, even at the deadline. */
const LAST_ATTEMPT_MIN_MS = 1_000;

/** Ironic's lookup-allowed states (restrict_lookup, the default), quoted in errors. */
export const LOOKUP_ALLOWED_STATES = [
  'cleaning',
  'clean wait',
  'deploying',
  'wait call-back',
  'inspecting',
  'inspect wait',
  'rescuing',
  'rescue wait',
] as const;

export interface LookupOptions {
  client: IronicClient;
  /** Filled on success: token, node UUID, node, heartbeat timeout, token requirement. */
  session: IpaSession;
  /** Every interface MAC of the inventory; invalid ones are dropped with a warning, as Ironic does. */
  macs: readonly string[];
  /** The UUID the inspector returned, if any. */
  nodeUuid?: string | null;
  /** ipa-lookup-timeout in ms: no new attempt starts after it. */
  timeoutMs: number;
  /** ipa-lookup-interval in ms: the shortest wait between attempts. */
  intervalMs: number;
  /** The longest wait between attempts (60 s). */
  maxIntervalMs?: number;
  conflictDelaysMs?: readonly number[];
  signal?: AbortSignal;
  logger: Logger;
  status?: IronicStatusTracker;
  random?: () => number;
}

export interface LookupResult {
  nodeUuid: string;
  /** The node as Ironic returned it (properties, instance_info, driver_internal_info, ...). */
  node: Record<string, unknown>;
  /** Ironic's `config` (heartbeat_timeout, permitted_image_formats, ...); {} from an old Ironic. */
  config: Record<string, unknown>;
  /** received: a new token; kept: Ironic masked it and the preset one stays; none: no token. */
  token: 'received' | 'kept' | 'none';
  apiVersion: string;
  /** Requests sent, the successful one included. */
  attempts: number;
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const asRecord = (value: unknown): Record<string, unknown> | null =>
  typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : null;

const normalizeMacs = (macs: readonly string[], logger: Logger): string[] => {
  const valid = new Set<string>();
  const dropped: string[] = [];
  for (const raw of macs) {
    const mac = raw.trim().toLowerCase();
    if (MAC.test(mac)) valid.add(mac);
    else if (mac !== '') dropped.push(raw);
  }
  if (dropped.length > 0) logger.warn({ dropped }, 'addresses that are not MACs are left out of the lookup');
  return [...valid];
};

/**
 * IPA's wait_random_exponential: uniform between the minimum and 2^(n-1) s, that ceiling itself
 * held between the minimum and the maximum.
 */
export const lookupBackoffMs = (
  failures: number,
  minMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number => {
  const ceiling = Math.min(maxMs, Math.max(minMs, 1000 * 2 ** Math.min(Math.max(failures - 1, 0), 30)));
  return minMs + random() * (ceiling - minMs);
};

const badAnswer = (message: string, details: Record<string, unknown> = {}): AgentError =>
  new AgentError('IRONIC_BAD_RESPONSE', `lookup: ${message}`, { details });

interface Accepted {
  nodeUuid: string;
  node: Record<string, unknown>;
  config: Record<string, unknown>;
  token: string | null;
  tokenOutcome: LookupResult['token'];
  tokenRequired: boolean;
  heartbeatTimeoutS: number | null;
}

const readHeartbeatTimeout = (
  config: Record<string, unknown>,
  body: Record<string, unknown>,
): number | null => {
  // An Ironic from before the `config` block put heartbeat_timeout at the top level.
  const value = config.heartbeat_timeout ?? body.heartbeat_timeout;
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : null;
};

/** Checks an answer and decides the token; throws (to retry) when the answer cannot be used. */
const accept = (body: unknown, session: IpaSession, logger: Logger): Accepted => {
  const record = asRecord(body);
  const node = asRecord(record?.node);
  if (!record || !node) throw badAnswer('the answer has no node object');
  const uuid = node.uuid;
  if (typeof uuid !== 'string' || !UUID.test(uuid))
    throw badAnswer('the node in the answer has no valid uuid', {
      uuid: typeof uuid === 'string' ? uuid : null,
    });
  const config = asRecord(record.config) ?? {};
  const tokenRequired = config.agent_token_required === true;
  const offered = config.agent_token;
  let token: string | null = session.token;
  let tokenOutcome: LookupResult['token'] = session.token ? 'kept' : 'none';
  if (typeof offered === 'string' && offered.length >= MIN_TOKEN_LENGTH) {
    token = offered;
    tokenOutcome = 'received';
  } else if (offered === MASKED_TOKEN) {
    if (!session.token && tokenRequired)
      // Heartbeats cannot succeed without it, and retrying the lookup is the only way a new token
      // can come: once Ironic wipes the old one (the node rebooted, or cleaning/deploy failed).
      throw new AgentError(
        'LOOKUP_FAILED',
        'Ironic already handed this node\'s agent token to an earlier agent (it answers "******") and requires it; ' +
          'reboot the node through Ironic so it wipes the token, or boot with ipa-agent-token',
        { details: { reason: 'token-masked', nodeUuid: uuid } },
      );
    logger.warn(
      { nodeUuid: uuid },
      session.token
        ? 'Ironic masked the agent token (already handed out); keeping the token given in advance'
        : 'Ironic masked the agent token (already handed out) and does not require one; going on without',
    );
  } else if (typeof offered === 'string' && offered !== '') {
    logger.warn(
      { nodeUuid: uuid, length: offered.length },
      'Ironic sent an agent token too short to be one; ignored',
    );
  }
  if (tokenRequired && !token)
    throw new AgentError(
      'LOOKUP_FAILED',
      'Ironic requires an agent token but sent none (a lookup below API 1.62 gets none); retrying',
      { details: { reason: 'token-missing', nodeUuid: uuid } },
    );
  return {
    nodeUuid: uuid,
    node,
    config,
    token,
    tokenOutcome,
    tokenRequired,
    heartbeatTimeoutS: readHeartbeatTimeout(config, record),
  };
};

/** What to check, from the last failure: the operator reads this on the console. */
const hintFor = (error: unknown, apiUrl: string, macs: readonly string[]): string => {
  if (AgentError.is(error) && error.code === 'IRONIC_UNREACHABLE')
    return `Check ipa-api-url (${apiUrl}), the network path to Ironic and, for https, its CA.`;
  if (AgentError.is(error) && error.details.reason === 'token-masked') return '';
  const enrolled = macs.length > 0 ? macs.join(', ') : '(none)';
  return (
    `Check that the node's provision state allows lookup (${LOOKUP_ALLOWED_STATES.join(', ')}; ` +
    `fast-track adds manageable and available) and that one of these MACs is enrolled as a port of the node: ${enrolled}.`
  );
};

/**
 * Looks the node up, filling the session on success. Retries connection errors, timeouts, any
 * status but 200, bad JSON and answers without a node UUID, with IPA's random exponential backoff
 * (a 409 waits longer); throws LOOKUP_FAILED after the timeout, CANCELLED when the signal fires.
 */
export const lookupNode = async (options: LookupOptions): Promise<LookupResult> => {
  try {
    return await runLookup(options);
  } catch (error) {
    // The agent gives up (or was stopped): the status screen must not go on showing a lookup.
    options.status?.update({ state: 'stopped', nextAttemptAt: null });
    throw error;
  }
};

const runLookup = async (options: LookupOptions): Promise<LookupResult> => {
  const { client, session, signal, logger, status } = options;
  const random = options.random ?? Math.random;
  const maxIntervalMs = options.maxIntervalMs ?? DEFAULT_LOOKUP_MAX_INTERVAL_MS;
  const conflictDelays = options.conflictDelaysMs ?? DEFAULT_CONFLICT_DELAYS_MS;
  const macs = normalizeMacs(options.macs, logger);
  let nodeUuid = options.nodeUuid ?? null;
  if (nodeUuid !== null && !UUID.test(nodeUuid)) {
    logger.warn({ nodeUuid }, 'the node UUID from inspection is not a UUID; looking up by MAC only');
    nodeUuid = null;
  }
  if (macs.length === 0 && nodeUuid === null)
    throw new AgentError(
      'LOOKUP_FAILED',
      'no MAC address to look the node up with: the inventory lists no network interface with a MAC',
      { details: { reason: 'no-macs', macs: [...options.macs] } },
    );

  const query: Record<string, string> = {};
  if (macs.length > 0) query.addresses = macs.join(',');
  if (nodeUuid !== null) query.node_uuid = nodeUuid;
  const started = performance.now();
  let attempts = 0;
  let failures = 0;
  let conflicts = 0;
  let lastError: unknown = null;
  status?.update({ state: 'looking-up', attempts: 0, nextAttemptAt: null });
  logger.info({ apiUrl: client.apiUrl, macs, nodeUuid }, 'looking the node up in Ironic');

  while (true) {
    if (signal?.aborted) throw new CancelledError('lookup cancelled');
    attempts += 1;
    const remaining = options.timeoutMs - (performance.now() - started);
    try {
      const version = await client.lookupApiVersion(signal);
      status?.update({ apiVersion: formatApiVersion(version), nextAttemptAt: null });
      const response = await client.send({
        method: 'GET',
        path: '/v1/lookup',
        query,
        apiVersion: version,
        timeoutMs: Math.min(client.requestTimeoutMs, Math.max(remaining, LAST_ATTEMPT_MIN_MS)),
        ...(signal ? { signal } : {}),
      });
      if (response.status !== 200)
        throw badAnswer(`expected 200, got ${response.status}`, { status: response.status });
      const accepted = accept(parseJsonBody(response, 'lookup'), session, logger);
      session.nodeUuid = accepted.nodeUuid;
      session.node = accepted.node;
      session.token = accepted.token;
      session.tokenRequired = accepted.tokenRequired;
      if (accepted.heartbeatTimeoutS !== null) session.heartbeatTimeoutS = accepted.heartbeatTimeoutS;
      else
        logger.warn({ kept: session.heartbeatTimeoutS }, 'the lookup answer has no usable heartbeat_timeout');
      status?.update({ nodeUuid: accepted.nodeUuid, attempts: 0, nextAttemptAt: null });
      logger.info(
        {
          nodeUuid: accepted.nodeUuid,
          attempts,
          token: accepted.tokenOutcome,
          heartbeatTimeoutS: session.heartbeatTimeoutS,
          apiVersion: formatApiVersion(version),
        },
        'Ironic knows this node',
      );
      return {
        nodeUuid: accepted.nodeUuid,
        node: accepted.node,
        config: accepted.config,
        token: accepted.tokenOutcome,
        apiVersion: formatApiVersion(version),
        attempts,
      };
    } catch (error) {
      if (AgentError.is(error) && error.code === 'CANCELLED') throw error;
      if (!AgentError.is(error)) throw error;
      lastError = error;
      failures += 1;
      const conflict = error instanceof IronicApiError && error.status === 409;
      const extra = conflict ? (conflictDelays[Math.min(conflicts, conflictDelays.length - 1)] ?? 0) : 0;
      if (conflict) conflicts += 1;
      const elapsed = performance.now() - started;
      const wait = Math.min(
        lookupBackoffMs(failures, options.intervalMs, maxIntervalMs, random) + extra,
        Math.max(0, options.timeoutMs - elapsed),
      );
      const finalAttempt = elapsed >= options.timeoutMs;
      status?.failed(error, {
        nextAttemptAt: finalAttempt ? null : new Date(Date.now() + wait).toISOString(),
      });
      logger.warn(
        { err: error, attempt: attempts, retryInMs: finalAttempt ? null : Math.round(wait) },
        conflict ? 'lookup: the node is locked by the conductor; waiting longer' : 'lookup failed',
      );
      if (finalAttempt) break;
      try {
        await sleep(wait, undefined, signal ? { signal } : {});
      } catch {
        throw new CancelledError('lookup cancelled');
      }
    }
  }

  const seconds = Math.round(options.timeoutMs / 100) / 10;
  const last = lastError instanceof Error ? lastError.message : String(lastError);
  const hint = hintFor(lastError, client.apiUrl, macs);
  throw new AgentError(
    'LOOKUP_FAILED',
    `could not look this node up in Ironic at ${client.apiUrl} within ${seconds} s (${attempts} attempts); ` +
      `last: ${last}${hint ? ` ${hint}` : ''}`,
    {
      details: {
        apiUrl: client.apiUrl,
        attempts,
        macs,
        nodeUuid,
        lastCode: AgentError.is(lastError) ? lastError.code : null,
        lastStatus: lastError instanceof IronicApiError ? lastError.status : null,
      },
      cause: lastError,
    },
  );
};
