/**
 * One JSON HTTP exchange with Ironic or the inspector, on a connection of its own. It only
 * reports how the exchange went: a status and a body, or a typed IRONIC_UNREACHABLE saying why no
 * answer came. What a status means is the caller's business.
 *
 * node:http rather than the global fetch(): Node 20's fetch takes a CA bundle or "insecure" only
 * through an undici dispatcher, and Node does not export undici's classes (undici is not a
 * dependency). node:https takes both per request.
 *
 * No keep-alive: heartbeats are minutes apart, and a pooled connection that the server closed in
 * the meantime would turn the next heartbeat into a spurious ECONNRESET.
 */
import http, { type IncomingHttpHeaders } from 'node:http';
import https from 'node:https';
import { AgentError, CancelledError } from '../util/errors.js';

/** Answers beyond this are not Ironic's: a lookup with a large node is a few hundred KiB. */
export const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

export interface TlsTrust {
  /** PEM bundle to verify the server with; null means the system store. */
  ca: Buffer | null;
  /** Skip certificate verification (ipa-insecure). */
  insecure: boolean;
}

export interface JsonRequest {
  method: 'GET' | 'POST';
  url: URL;
  headers: Readonly<Record<string, string>>;
  /** Serialized as JSON when present. */
  body?: unknown;
  /** The whole exchange: connect, send, headers and body. */
  timeoutMs: number;
  signal?: AbortSignal;
  tls: TlsTrust;
  maxResponseBytes?: number;
}

export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The body as UTF-8 text. */
  text: string;
}

/** Why no answer came; retry policies look at it, the status screen shows it. */
export type UnreachableReason = 'connection' | 'timeout' | 'tls' | 'too-large';

const TLS_ERROR_CODES = new Set([
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_SSL_WRONG_VERSION_NUMBER',
]);

const errnoOf = (error: unknown): string | null => {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : null;
};

const describeTarget = (request: JsonRequest): string =>
  `${request.method} ${request.url.origin}${request.url.pathname}`;

const unreachable = (
  request: JsonRequest,
  reason: UnreachableReason,
  what: string,
  cause?: unknown,
): AgentError =>
  new AgentError('IRONIC_UNREACHABLE', `${describeTarget(request)} failed: ${what}`, {
    // The query is left out: a token must never reach a log through an error.
    details: { method: request.method, url: `${request.url.origin}${request.url.pathname}`, reason },
    ...(cause === undefined ? {} : { cause }),
  });

const classify = (request: JsonRequest, error: unknown): AgentError => {
  if (AgentError.is(error)) return error;
  const code = errnoOf(error);
  const message = error instanceof Error ? error.message : String(error);
  if (
    code !== null &&
    (TLS_ERROR_CODES.has(code) || code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_'))
  )
    return unreachable(request, 'tls', `TLS: ${message}; check the CA bundle or ipa-insecure`, error);
  return unreachable(request, 'connection', code ? `${code}: ${message}` : message, error);
};

const cancelled = (signal: AbortSignal): AgentError => {
  const reason: unknown = signal.reason;
  return AgentError.is(reason) && reason.code === 'CANCELLED' ? reason : new CancelledError();
};

/** Sends one request and reads the whole answer; throws IRONIC_UNREACHABLE or CANCELLED, never on a status. */
export const sendJson = (request: JsonRequest): Promise<RawResponse> => {
  const { url, signal } = request;
  if (signal?.aborted) return Promise.reject(cancelled(signal));
  const limit = request.maxResponseBytes ?? MAX_RESPONSE_BYTES;
  const payload = request.body === undefined ? null : Buffer.from(JSON.stringify(request.body), 'utf8');
  const headers: Record<string, string> = { ...request.headers };
  if (payload) headers['Content-Length'] = String(payload.length);

  return new Promise<RawResponse>((resolve, reject) => {
    let settled = false;
    const options: https.RequestOptions = {
      method: request.method,
      headers,
      agent: false,
      ...(url.protocol === 'https:'
        ? { rejectUnauthorized: !request.tls.insecure, ...(request.tls.ca ? { ca: request.tls.ca } : {}) }
        : {}),
    };
    const client = url.protocol === 'https:' ? https : http;
    const req = client.request(url, options);

    const finish = (outcome: { error: AgentError } | { response: RawResponse }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if ('error' in outcome) {
        req.destroy();
        reject(outcome.error);
      } else resolve(outcome.response);
    };
    const onAbort = (): void => finish({ error: cancelled(signal as AbortSignal) });
    const timer = setTimeout(
      () =>
        finish({
          error: unreachable(request, 'timeout', `no complete answer within ${request.timeoutMs} ms`),
        }),
      request.timeoutMs,
    );
    signal?.addEventListener('abort', onAbort, { once: true });

    req.on('error', (error) => finish({ error: classify(request, error) }));
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let received = 0;
      res.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (received > limit) {
          finish({ error: unreachable(request, 'too-large', `the answer exceeds ${limit} bytes`) });
          return;
        }
        chunks.push(chunk);
      });
      res.on('error', (error) => finish({ error: classify(request, error) }));
      res.on('close', () => {
        if (!res.complete)
          finish({
            error: unreachable(request, 'connection', 'the connection closed in the middle of the answer'),
          });
      });
      res.on('end', () =>
        finish({
          response: {
            status: res.statusCode ?? 0,
            headers: res.headers,
            text: Buffer.concat(chunks).toString('utf8'),
          },
        }),
      );
    });
    req.end(payload ?? undefined);
  });
};
