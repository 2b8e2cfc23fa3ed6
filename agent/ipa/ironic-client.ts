/**
 * The agent's client of Ironic's API: the headers every ramdisk call carries, microversion
 * discovery, and Ironic's error format turned into a typed error. Lookup and heartbeat policy
 * (retries, timing, tokens) live in lookup.ts and heartbeater.ts.
 */
import { readCaBundle } from '../image/read-ca.js';
import { AgentError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { sendJson, type RawResponse, type TlsTrust } from './http-json.js';

/** `[major, minor]` of an Ironic API microversion. */
export type ApiVersion = readonly [number, number];

/** What IPA assumes when Ironic's root document cannot be read. */
export const FALLBACK_API_VERSION: ApiVersion = [1, 31];
/** `agent_version` in a heartbeat is accepted from here on. */
export const AGENT_VERSION_API_VERSION: ApiVersion = [1, 36];
/** Ironic generates, hands out and checks the agent token from here on. */
export const AGENT_TOKEN_API_VERSION: ApiVersion = [1, 62];
/** `agent_verify_ca` in a heartbeat is accepted from here on. */
export const AGENT_VERIFY_CA_API_VERSION: ApiVersion = [1, 68];

export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

export const parseApiVersion = (value: unknown): ApiVersion | null => {
  if (typeof value !== 'string') return null;
  const match = /^(\d{1,4})\.(\d{1,4})$/.exec(value.trim());
  return match ? [Number(match[1]), Number(match[2])] : null;
};

export const formatApiVersion = (version: ApiVersion): string => `${version[0]}.${version[1]}`;

export const compareApiVersions = (a: ApiVersion, b: ApiVersion): number => a[0] - b[0] || a[1] - b[1];

export const minApiVersion = (a: ApiVersion, b: ApiVersion): ApiVersion =>
  compareApiVersions(a, b) <= 0 ? a : b;

export const atLeast = (version: ApiVersion, floor: ApiVersion): boolean =>
  compareApiVersions(version, floor) >= 0;

/** The fields of Ironic's fault, read from `{"error_message": "<JSON string>"}` or its older forms. */
export interface IronicFault {
  faultcode: string | null;
  faultstring: string | null;
  /** What to show: the faultstring (or `title`), else the raw body, cut short. */
  text: string;
}

const RAW_TEXT_LIMIT = 1000;

const asRecord = (value: unknown): Record<string, unknown> | null =>
  typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : null;

const tryJson = (text: string): unknown => {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
};

/**
 * Ironic's parsable-error middleware puts the fault, itself serialized as JSON, in
 * `error_message`; some paths leave it as an object, and other services answer `title`.
 */
export const parseIronicFault = (body: string): IronicFault => {
  const raw = body.trim().slice(0, RAW_TEXT_LIMIT);
  const outer = asRecord(tryJson(body));
  if (!outer) return { faultcode: null, faultstring: null, text: raw };
  const wrapped = outer.error_message ?? outer;
  const fault = typeof wrapped === 'string' ? asRecord(tryJson(wrapped)) : asRecord(wrapped);
  const pick = (key: string): string | null => {
    const value = fault?.[key];
    return typeof value === 'string' && value !== '' ? value : null;
  };
  const faultstring = pick('faultstring');
  return { faultcode: pick('faultcode'), faultstring, text: faultstring ?? pick('title') ?? raw };
};

/** Ironic answered with a status of 400 or more; `status` and `faultstring` tell what it meant. */
export class IronicApiError extends AgentError {
  readonly status: number;
  readonly faultstring: string | null;

  constructor(method: string, path: string, status: number, fault: IronicFault) {
    super(
      'IRONIC_API_ERROR',
      `Ironic answered ${status} to ${method} ${path}: ${fault.text || '(empty body)'}`,
      {
        details: { method, path, status, faultcode: fault.faultcode, faultstring: fault.faultstring },
      },
    );
    this.status = status;
    this.faultstring = fault.faultstring;
  }
}

export interface IronicResponse {
  status: number;
  text: string;
}

/** The body as JSON, or IRONIC_BAD_RESPONSE naming the call. */
export const parseJsonBody = (response: IronicResponse, what: string): unknown => {
  try {
    return JSON.parse(response.text) as unknown;
  } catch (error) {
    throw new AgentError('IRONIC_BAD_RESPONSE', `${what}: the answer (${response.status}) is not JSON`, {
      details: { status: response.status, excerpt: response.text.slice(0, 200) },
      cause: error,
    });
  }
};

export interface IronicClientOptions {
  /** ipa-api-url: http(s)://host:port[/prefix]. */
  apiUrl: string;
  /** ipa-ironic-api-version: the maximum microversion to use, instead of asking Ironic. */
  apiVersion?: string | null;
  /** PEM bundle to verify an https Ironic with; null or absent means the system store. */
  caPath?: string | null;
  /** ipa-insecure: do not verify Ironic's certificate. */
  insecure?: boolean;
  /** ipa-global-request-id (`req-<uuid>`), sent as X-OpenStack-Request-ID. */
  requestId?: string | null;
  /** Per request, everything included; 30 s by default. */
  timeoutMs?: number;
  logger?: Logger;
}

export interface IronicRequest {
  method: 'GET' | 'POST';
  /** Below the API URL, e.g. `/v1/lookup`. */
  path: string;
  query?: Readonly<Record<string, string>>;
  body?: unknown;
  /** Sent as X-OpenStack-Ironic-API-Version; null sends none (the root document wants none). */
  apiVersion: ApiVersion | null;
  signal?: AbortSignal;
  timeoutMs?: number;
}

const REQUEST_ID = /^req-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

const parseApiUrl = (apiUrl: string): URL => {
  let url: URL;
  try {
    url = new URL(apiUrl);
  } catch (error) {
    throw new AgentError('INVALID_CONFIG', `ipa-api-url ${JSON.stringify(apiUrl)} is not a URL`, {
      details: { setting: 'ipa-api-url' },
      cause: error,
    });
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.search !== '' || url.hash !== '')
    throw new AgentError(
      'INVALID_CONFIG',
      `ipa-api-url ${apiUrl} must be http(s)://host[:port][/path] without a query (mDNS discovery is not supported)`,
      { details: { setting: 'ipa-api-url' } },
    );
  return url;
};

export class IronicClient {
  /** The API URL as given, without trailing slashes. */
  readonly apiUrl: string;
  private readonly root: URL;
  private readonly tls: TlsTrust;
  private readonly requestId: string | null;
  /** The per-request timeout used when a call names none. */
  readonly requestTimeoutMs: number;
  private readonly logger: Logger;
  private readonly fixedVersion: ApiVersion | null;
  private discovered: ApiVersion | null = null;

  /** Reads the CA bundle; throws INVALID_CONFIG for a bad URL or an unreadable bundle. */
  static async create(options: IronicClientOptions): Promise<IronicClient> {
    return new IronicClient(
      options,
      await readCaBundle(options.caPath, 'bma-conductor-ca', "Ironic's certificate"),
    );
  }

  constructor(options: IronicClientOptions, ca: Buffer | null = null) {
    this.root = parseApiUrl(options.apiUrl);
    this.apiUrl = options.apiUrl.replace(/\/+$/, '');
    this.tls = { ca, insecure: options.insecure ?? false };
    this.requestTimeoutMs = options.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.logger = options.logger ?? silentLogger();
    // Ironic ignores a malformed global request id; saying so here beats a silent mismatch in its logs.
    if (options.requestId && !REQUEST_ID.test(options.requestId))
      this.logger.warn(
        { requestId: options.requestId },
        'ipa-global-request-id is not req-<uuid>; it is not sent to Ironic',
      );
    this.requestId = options.requestId && REQUEST_ID.test(options.requestId) ? options.requestId : null;
    this.fixedVersion = options.apiVersion ? parseApiVersion(options.apiVersion) : null;
    if (options.apiVersion && !this.fixedVersion)
      this.logger.warn(
        { apiVersion: options.apiVersion },
        'ipa-ironic-api-version is not major.minor; asking Ironic for its version instead',
      );
  }

  /**
   * The highest microversion to use: the configured one, else Ironic's `default_version.version`
   * (its maximum), else 1.31 as IPA does. Only a discovered version is kept, so a failed
   * discovery (Ironic not up yet) is tried again on the next call.
   */
  async maxApiVersion(signal?: AbortSignal): Promise<ApiVersion> {
    if (this.fixedVersion) return this.fixedVersion;
    if (this.discovered) return this.discovered;
    return this.discover(signal);
  }

  /**
   * Lookup at min(max, 1.62), heartbeats at min(max, 1.68), as IPA (ipa.md §2.2). 1.62 is where
   * Ironic starts generating the token and handing it out once; the lookup needs nothing added
   * after it. Ironic 21.4 was seen to treat lookups at 1.62 and 1.68 alike (token given once, then
   * "******"), so the lower version loses nothing and also works with Ironics between the two.
   * Below 1.62 (an old Ironic, or discovery failing into 1.31) Ironic hands out no token.
   */
  async lookupApiVersion(signal?: AbortSignal): Promise<ApiVersion> {
    return minApiVersion(await this.maxApiVersion(signal), AGENT_TOKEN_API_VERSION);
  }

  /** 1.68 is the first version that takes `agent_verify_ca`; the heartbeat body is cut to fit lower ones. */
  async heartbeatApiVersion(signal?: AbortSignal): Promise<ApiVersion> {
    return minApiVersion(await this.maxApiVersion(signal), AGENT_VERIFY_CA_API_VERSION);
  }

  /** The microversion last discovered or configured; null before any discovery succeeded. */
  knownApiVersion(): ApiVersion | null {
    return this.fixedVersion ?? this.discovered;
  }

  private async discover(signal: AbortSignal | undefined): Promise<ApiVersion> {
    try {
      const response = await this.send({
        method: 'GET',
        path: '',
        apiVersion: null,
        ...(signal ? { signal } : {}),
      });
      const body = asRecord(parseJsonBody(response, `GET ${this.apiUrl}`));
      const version = parseApiVersion(asRecord(body?.default_version)?.version);
      if (!version)
        throw new AgentError(
          'IRONIC_BAD_RESPONSE',
          `GET ${this.apiUrl}: the answer has no default_version.version; is ipa-api-url Ironic's API?`,
          { details: { excerpt: response.text.slice(0, 200) } },
        );
      this.discovered = version;
      this.logger.info({ apiVersion: formatApiVersion(version) }, 'Ironic API version discovered');
      return version;
    } catch (error) {
      if (AgentError.is(error) && error.code === 'CANCELLED') throw error;
      this.logger.warn(
        { err: error, fallback: formatApiVersion(FALLBACK_API_VERSION) },
        'Ironic API version discovery failed; using the fallback version for this call',
      );
      return FALLBACK_API_VERSION;
    }
  }

  /** One call to Ironic; a status of 400 or more throws IronicApiError, no answer IRONIC_UNREACHABLE. */
  async send(request: IronicRequest): Promise<IronicResponse> {
    const url = request.path === '' ? new URL(this.root) : new URL(`${this.apiUrl}${request.path}`);
    for (const [key, value] of Object.entries(request.query ?? {})) url.searchParams.set(key, value);
    const headers: Record<string, string> = {
      Accept: 'application/json',
      'Content-Type': 'application/json',
    };
    if (request.apiVersion) headers['X-OpenStack-Ironic-API-Version'] = formatApiVersion(request.apiVersion);
    if (this.requestId) headers['X-OpenStack-Request-ID'] = this.requestId;
    const raw: RawResponse = await sendJson({
      method: request.method,
      url,
      headers,
      ...(request.body === undefined ? {} : { body: request.body }),
      timeoutMs: request.timeoutMs ?? this.requestTimeoutMs,
      ...(request.signal ? { signal: request.signal } : {}),
      tls: this.tls,
    });
    if (raw.status >= 400)
      throw new IronicApiError(request.method, request.path || '/', raw.status, parseIronicFault(raw.text));
    return { status: raw.status, text: raw.text };
  }
}
