/**
 * The callback URL the agent gives Ironic in every heartbeat: `protocol://host:port`. The host is
 * ipa-advertise-host when set, else the source address the kernel would use to reach Ironic
 * (`ip route get`), as IPA does; link-local sources are skipped, since Ironic could not call them
 * back without a zone.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError, CancelledError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { runProcess as defaultRunProcess, type RunProcess } from '../util/run-process.js';

export type AdvertiseProtocol = 'http' | 'https';

export const DEFAULT_ADVERTISE_PORT = 9999;
/** IPA's ip_lookup_attempts and ip_lookup_sleep. */
export const DEFAULT_IP_LOOKUP_ATTEMPTS = 6;
export const DEFAULT_IP_LOOKUP_SLEEP_MS = 10_000;
const IP_TIMEOUT_MS = 10_000;

export interface CallbackUrlOptions {
  /** ipa-api-url: the route to its host gives the source address. */
  apiUrl: string;
  /** ipa-advertise-protocol. */
  protocol?: AdvertiseProtocol;
  /** ipa-advertise-host: used as is (IPv6 with or without brackets). */
  host?: string | null;
  /** ipa-advertise-port. */
  port?: number;
  /** ipa-ip-lookup-attempts: rounds of route lookups before giving up. */
  attempts?: number;
  /** ipa-ip-lookup-timeout: the wait between rounds. */
  retryDelayMs?: number;
  signal?: AbortSignal;
  logger?: Logger;
  runProcess?: RunProcess;
  /** Resolves a host name to addresses; node's resolver by default. */
  resolve?: (host: string) => Promise<string[]>;
}

/** `protocol://host:port`, an IPv6 address in brackets. */
export const formatCallbackUrl = (protocol: AdvertiseProtocol, host: string, port: number): string => {
  const bare = host.replace(/^\[(.*)\]$/, '$1');
  return `${protocol}://${net.isIPv6(bare) ? `[${bare}]` : bare}:${port}`;
};

/** fe80::/10 and 169.254.0.0/16. */
export const isLinkLocal = (address: string): boolean => {
  if (net.isIPv4(address)) return address.startsWith('169.254.');
  if (net.isIPv6(address)) return /^fe[89ab][0-9a-f]:/i.test(address);
  return false;
};

/**
 * The source address out of `ip -j route get` output: the first route's `prefsrc` when it is an
 * IP that Ironic could call back; null otherwise (no route, link-local, output not understood).
 */
export const parseRouteSource = (stdout: string): string | null => {
  let parsed: unknown;
  try {
    parsed = JSON.parse(stdout) as unknown;
  } catch {
    return null;
  }
  if (!Array.isArray(parsed)) return null;
  const first: unknown = parsed[0];
  if (typeof first !== 'object' || first === null) return null;
  const source = (first as Record<string, unknown>).prefsrc;
  if (typeof source !== 'string' || net.isIP(source) === 0 || isLinkLocal(source)) return null;
  return source;
};

const defaultResolve = async (host: string): Promise<string[]> =>
  (await dnsLookup(host, { all: true })).map((entry) => entry.address);

const validatePort = (port: number): number => {
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new AgentError('INVALID_CONFIG', `ipa-advertise-port ${port} is not a port number (1-65535)`, {
      details: { setting: 'ipa-advertise-port' },
    });
  return port;
};

const ironicHost = (apiUrl: string): string => {
  try {
    return new URL(apiUrl).hostname.replace(/^\[(.*)\]$/, '$1');
  } catch (error) {
    throw new AgentError('INVALID_CONFIG', `ipa-api-url ${JSON.stringify(apiUrl)} is not a URL`, {
      details: { setting: 'ipa-api-url' },
      cause: error,
    });
  }
};

/** One round: resolve Ironic's host, then the first address with a usable route source wins. */
const findSourceOnce = async (
  host: string,
  options: CallbackUrlOptions,
  problems: string[],
): Promise<string | null> => {
  const run = options.runProcess ?? defaultRunProcess;
  let addresses: string[];
  if (net.isIP(host) !== 0) addresses = [host];
  else {
    try {
      addresses = await (options.resolve ?? defaultResolve)(host);
    } catch (error) {
      problems.push(`cannot resolve ${host}: ${error instanceof Error ? error.message : String(error)}`);
      return null;
    }
  }
  for (const address of addresses) {
    try {
      const result = await run('ip', ['-j', 'route', 'get', address], {
        timeoutMs: IP_TIMEOUT_MS,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      const source = parseRouteSource(result.stdout);
      if (source) return source;
      problems.push(`route to ${address}: no usable source address`);
    } catch (error) {
      if (AgentError.is(error) && error.code === 'TOOL_NOT_FOUND') throw error;
      if (options.signal?.aborted) throw new CancelledError('callback URL lookup cancelled');
      problems.push(`route to ${address}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  return null;
};

/**
 * The callback URL. Without ipa-advertise-host, asks for the route to Ironic's host up to
 * `attempts` times, `retryDelayMs` apart (the network may still be coming up); throws
 * ADVERTISE_ADDRESS_NOT_FOUND when no round found an address.
 */
export const resolveCallbackUrl = async (options: CallbackUrlOptions): Promise<string> => {
  const protocol = options.protocol ?? 'http';
  const port = validatePort(options.port ?? DEFAULT_ADVERTISE_PORT);
  const logger = options.logger ?? silentLogger();
  if (options.host) return formatCallbackUrl(protocol, options.host, port);

  const host = ironicHost(options.apiUrl);
  const attempts = Math.max(1, options.attempts ?? DEFAULT_IP_LOOKUP_ATTEMPTS);
  const delayMs = options.retryDelayMs ?? DEFAULT_IP_LOOKUP_SLEEP_MS;
  const problems: string[] = [];
  for (let round = 1; round <= attempts; round += 1) {
    if (options.signal?.aborted) throw new CancelledError('callback URL lookup cancelled');
    const source = await findSourceOnce(host, options, problems);
    if (source) {
      const url = formatCallbackUrl(protocol, source, port);
      logger.info({ callbackUrl: url, ironicHost: host }, 'callback URL from the route to Ironic');
      return url;
    }
    if (round < attempts) {
      logger.warn(
        { ironicHost: host, round, problems: problems.slice(-3) },
        'no source address towards Ironic yet',
      );
      try {
        await sleep(delayMs, undefined, options.signal ? { signal: options.signal } : {});
      } catch {
        throw new CancelledError('callback URL lookup cancelled');
      }
    }
  }
  throw new AgentError(
    'ADVERTISE_ADDRESS_NOT_FOUND',
    `no address to give Ironic as the callback URL: no route to ${host} with a usable (not link-local) source ` +
      `address after ${attempts} attempts; set ipa-advertise-host, or check the network towards Ironic`,
    { details: { ironicHost: host, attempts, problems: problems.slice(-10) } },
  );
};
