/**
 * One HTTP GET on its own connection, read as a pull stream of the body's chunks. It knows nothing
 * of retries or resumes (fetch.ts decides those); it only reports precisely how the exchange
 * ended, because "complete", "cut short", "stalled" and "overran" lead to different decisions.
 *
 * Built on node's http/https rather than fetch(): the policy above needs the raw status before any
 * body is read, Range requests, socket-level cancellation and a say in back-pressure.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import https from 'node:https';
import { performance } from 'node:perf_hooks';

/**
 * Received chunks are queued up to this many bytes before the socket is paused. Large enough that
 * the network keeps filling while the consumer hashes and writes a big block, small enough to keep
 * memory flat whatever the image size.
 */
const QUEUE_HIGH_BYTES = 8 * 1024 * 1024;
const QUEUE_LOW_BYTES = 2 * 1024 * 1024;

/**
 * Why an attempt failed, as the retry policy needs it:
 * - network: connection refused/reset, or closed before the end of the body; worth retrying;
 * - stall: no byte within the stall timeout; worth retrying;
 * - tls: the certificate was refused; retrying cannot help;
 * - too-long: bytes followed the declared end of the body;
 * - cancelled: the caller's signal fired.
 */
export type TransferFailureKind = 'network' | 'stall' | 'tls' | 'too-long' | 'cancelled';

export class TransferError extends Error {
  constructor(
    readonly kind: TransferFailureKind,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    Object.defineProperty(this, 'name', { value: 'TransferError', enumerable: false });
  }
}

export interface AttemptOptions {
  url: URL;
  headers: Record<string, string>;
  signal: AbortSignal;
  ca: Buffer | null;
  insecure: boolean;
  stallTimeoutMs: number;
}

/** OpenSSL verification failures: the same certificate will be refused on every attempt. */
const TLS_ERROR_CODES = new Set([
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
]);

const errorCode = (error: unknown): string =>
  typeof error === 'object' && error !== null && typeof (error as { code?: unknown }).code === 'string'
    ? (error as { code: string }).code
    : '';

const describe = (error: unknown): string => {
  const code = errorCode(error);
  const message = error instanceof Error ? error.message : String(error);
  return code && !message.includes(code) ? `${code}: ${message}` : message;
};

interface Waiter {
  resolve: (chunk: Buffer | null) => void;
  reject: (error: Error) => void;
}

export class HttpAttempt {
  private readonly request: http.ClientRequest;
  private response: IncomingMessage | null = null;
  private readonly queue: Buffer[] = [];
  private queuedBytes = 0;
  private paused = false;
  private waiter: Waiter | null = null;
  private failure: TransferError | null = null;
  private responseEnded = false;
  private requestClosed = false;
  private done = false;
  private lastByteAt = performance.now();
  private watchdog: NodeJS.Timeout | null = null;
  private readonly headersReceived: Promise<void>;
  private settleHeaders: { resolve: () => void; reject: (error: Error) => void } | null = null;
  private readonly onAbort = (): void =>
    this.fail(new TransferError('cancelled', 'the download was cancelled'));

  /** Sends the request and waits for the status line and headers (or a failure). */
  static async open(options: AttemptOptions): Promise<HttpAttempt> {
    const attempt = new HttpAttempt(options);
    await attempt.headersReceived;
    return attempt;
  }

  private constructor(private readonly options: AttemptOptions) {
    this.headersReceived = new Promise((resolve, reject) => (this.settleHeaders = { resolve, reject }));
    // The rejection is delivered through open(); this keeps a failure after open() from being unhandled.
    this.headersReceived.catch(() => undefined);
    const { url, headers, ca, insecure } = options;
    const transport = url.protocol === 'https:' ? https : http;
    // agent: false gives each attempt its own connection (and Connection: close): a resume must
    // never inherit a socket the previous, failed attempt left in an unknown state.
    this.request = transport.request(url, {
      method: 'GET',
      headers,
      agent: false,
      ...(url.protocol === 'https:' ? { rejectUnauthorized: !insecure, ...(ca ? { ca } : {}) } : {}),
    });
    this.request.on('response', (response) => this.onResponse(response));
    this.request.on('error', (error) => this.onRequestError(error));
    this.request.on('close', () => this.onRequestClose());
    this.request.end();
    if (options.signal.aborted) this.onAbort();
    else options.signal.addEventListener('abort', this.onAbort, { once: true });
    this.armWatchdog(options.stallTimeoutMs);
  }

  get status(): number {
    return this.response?.statusCode ?? 0;
  }

  get headers(): IncomingHttpHeaders {
    return this.response?.headers ?? {};
  }

  get url(): URL {
    return this.options.url;
  }

  /**
   * The next chunk of the body, or null once the body ended at its declared length with nothing
   * after it. Chunks received before a failure are still handed out first, so the caller can
   * resume exactly after the last byte it got.
   */
  next(): Promise<Buffer | null> {
    const chunk = this.queue.shift();
    if (chunk !== undefined) {
      this.queuedBytes -= chunk.length;
      if (this.paused && this.queuedBytes <= QUEUE_LOW_BYTES) this.resumeSocket();
      return Promise.resolve(chunk);
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.done) return Promise.resolve(null);
    if (this.paused) this.resumeSocket();
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  /** Up to maxBytes of the body as text, for error messages; never fails and never waits long. */
  async excerpt(maxBytes: number, waitMs: number): Promise<string> {
    const parts: Buffer[] = [];
    let size = 0;
    const deadline = new Promise<null>((resolve) => setTimeout(resolve, waitMs, null).unref());
    try {
      while (size < maxBytes) {
        const chunk = await Promise.race([this.next(), deadline]);
        if (chunk === null) break;
        parts.push(chunk);
        size += chunk.length;
      }
    } catch {
      // A broken error body is still an error response; the status says enough.
    }
    const text = Buffer.concat(parts).subarray(0, maxBytes).toString('utf8');
    return text.replace(/\s+/g, ' ').trim();
  }

  /** Tears the connection down (idempotent). Later next() calls reject. */
  close(): void {
    if (!this.done && !this.failure) this.fail(new TransferError('network', 'the attempt was closed'));
    this.cleanup();
    this.request.destroy();
  }

  private onResponse(response: IncomingMessage): void {
    this.response = response;
    this.lastByteAt = performance.now();
    response.on('data', (chunk: Buffer) => this.onData(chunk));
    response.on('end', () => {
      this.responseEnded = true;
      this.maybeFinish();
    });
    // Node reports a body cut short (fewer bytes than Content-Length, a chunked body without its
    // last chunk) as ECONNRESET "aborted" on the response.
    response.on('error', (error) => this.onRequestError(error));
    this.settleHeaders?.resolve();
    this.settleHeaders = null;
  }

  private onData(chunk: Buffer): void {
    this.lastByteAt = performance.now();
    if (this.failure?.kind === 'cancelled') return;
    if (this.waiter) {
      const { resolve } = this.waiter;
      this.waiter = null;
      resolve(chunk);
      return;
    }
    this.queue.push(chunk);
    this.queuedBytes += chunk.length;
    if (!this.paused && this.queuedBytes >= QUEUE_HIGH_BYTES) {
      this.paused = true;
      this.response?.pause();
    }
  }

  private resumeSocket(): void {
    this.paused = false;
    // Time spent paused for the consumer is not the server's silence.
    this.lastByteAt = performance.now();
    this.response?.resume();
  }

  private onRequestError(error: Error): void {
    if (this.response?.complete === true && errorCode(error).startsWith('HPE_')) {
      // The parser finished the message and then found more bytes on a connection that should
      // have closed: the server sent more than it declared.
      this.fail(
        new TransferError(
          'too-long',
          'the server sent bytes past the declared end of the body (Content-Length)',
          {
            cause: error,
          },
        ),
      );
      return;
    }
    const code = errorCode(error);
    const kind = TLS_ERROR_CODES.has(code) || code.startsWith('ERR_SSL_') ? 'tls' : 'network';
    this.fail(new TransferError(kind, describe(error), { cause: error }));
  }

  private onRequestClose(): void {
    this.requestClosed = true;
    if (this.response === null || this.response.complete) {
      this.maybeFinish();
      if (this.response === null) {
        this.fail(new TransferError('network', 'the connection closed before the response headers'));
      }
      return;
    }
    this.fail(new TransferError('network', 'the connection closed before the end of the body'));
  }

  /**
   * The body counts as complete only once the connection is gone too: bytes after the declared
   * end show up as a parser error between the response's end and the request's close.
   */
  private maybeFinish(): void {
    if (!this.responseEnded || !this.requestClosed || this.failure || this.done) return;
    this.done = true;
    this.cleanup();
    if (this.waiter) {
      const { resolve } = this.waiter;
      this.waiter = null;
      resolve(null);
    }
  }

  /**
   * Records the first failure. Chunks already received stay deliverable, except after a cancel,
   * which must stop at once. An overrun leaves the socket to node (it is closing it anyway) so
   * that the declared bytes still parsed are handed out before the error.
   */
  private fail(error: TransferError): void {
    if (this.failure || this.done) return;
    this.failure = error;
    if (error.kind === 'cancelled') {
      this.queue.length = 0;
      this.queuedBytes = 0;
    }
    this.settleHeaders?.reject(error);
    this.settleHeaders = null;
    if (this.waiter) {
      const { reject } = this.waiter;
      this.waiter = null;
      reject(error);
    }
    this.cleanup();
    if (error.kind !== 'too-long') this.request.destroy();
  }

  private cleanup(): void {
    if (this.watchdog) clearTimeout(this.watchdog);
    this.watchdog = null;
    this.options.signal.removeEventListener('abort', this.onAbort);
  }

  /**
   * One timer for the whole attempt, re-armed for the remaining time instead of reset per chunk
   * (tens of thousands of chunks a second would otherwise each cost a timer).
   */
  private armWatchdog(delayMs: number): void {
    this.watchdog = setTimeout(() => {
      if (this.done || this.failure) return;
      const now = performance.now();
      if (this.paused || this.queue.length > 0) this.lastByteAt = now;
      const idle = now - this.lastByteAt;
      const limit = this.options.stallTimeoutMs;
      if (idle + 1 >= limit) {
        const phase = this.response ? 'body' : 'response headers';
        this.fail(new TransferError('stall', `no byte of the ${phase} for ${Math.round(idle)} ms`));
        return;
      }
      this.armWatchdog(limit - idle);
    }, delayMs);
  }
}
