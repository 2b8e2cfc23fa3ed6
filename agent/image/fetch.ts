/**
 * Image download policy: retries with full-jitter backoff, resume after a drop, and the integrity
 * guards that make a resume safe (undici's RetryHandler habits, style.md §2). IPA restarts every
 * failed download from byte 0 (ipa.md §7.2); over a flaky link a multi-GiB image then may never
 * finish, so a drop after some bytes resumes with `Range: bytes=N-` guarded by `If-Range`. When in
 * doubt the download fails loudly (DOWNLOAD_RESTART_REQUIRED) rather than splicing two versions
 * of an image together.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { FetchOptions, FetchStats, ImageStream, OutputSink } from './contracts.js';
import { HttpAttempt, TransferError } from './http-attempt.js';
import { Backoff } from '../channel/backoff.js';
import { AgentError, CancelledError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { AGENT_VERSION } from '../version.js';

const DEFAULT_RETRIES = 9;
const DEFAULT_RETRY_BASE_MS = 1000;
const DEFAULT_RETRY_MAX_MS = 30_000;
const DEFAULT_STALL_TIMEOUT_MS = 60_000;
const MAX_REDIRECTS = 5;
/**
 * An attempt that delivered this much earns a fresh retry budget: a link that drops now and then
 * still finishes a 10 GiB image, while a server that sends a trickle and then stalls, over and
 * over, runs out of retries instead of resuming forever.
 */
const PROGRESS_RESET_BYTES = 1024 * 1024;
/** Enough of an error page to say what went wrong, short enough for a log line. */
const EXCERPT_BYTES = 512;
const EXCERPT_WAIT_MS = 2000;
/** fetchText is for checksum files; anything bigger is not one. */
const TEXT_LIMIT_BYTES = 1024 * 1024;
/** A small document is simply fetched again when a resume is impossible. */
const TEXT_RESTARTS = 3;

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** Server-side trouble that a later attempt may not meet; every other 4xx is final. */
const RETRYABLE_STATUSES = new Set([408, 429]);

interface Settings {
  url: URL;
  signal: AbortSignal;
  ca: Buffer | null;
  insecure: boolean;
  retries: number;
  retryBaseMs: number;
  retryMaxMs: number;
  stallTimeoutMs: number;
  borrowChunks: boolean;
  logger: Logger;
}

/** The header that lets a resumed range be checked against the original entity. */
interface Validator {
  header: 'etag' | 'last-modified';
  value: string;
}

export const parseHttpUrl = (raw: string): URL => {
  let url: URL;
  try {
    url = new URL(raw);
  } catch (error) {
    throw new AgentError('INVALID_URL', `cannot parse the URL ${JSON.stringify(raw)}`, {
      cause: error,
      details: { url: raw },
    });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new AgentError(
      'INVALID_URL',
      `unsupported URL scheme ${url.protocol} in ${raw}: use http or https`,
      {
        details: { url: raw },
      },
    );
  }
  return url;
};

/** Redacts credentials so URLs can go into logs and error details. */
const printable = (url: URL): string => {
  if (!url.username && !url.password) return url.href;
  const copy = new URL(url.href);
  copy.username = '';
  copy.password = '';
  return copy.href;
};

const settingsOf = (options: FetchOptions): Settings => ({
  url: parseHttpUrl(options.url),
  signal: options.signal,
  ca: options.ca,
  insecure: options.insecure,
  retries: options.retries ?? DEFAULT_RETRIES,
  retryBaseMs: options.retryBaseMs ?? DEFAULT_RETRY_BASE_MS,
  retryMaxMs: options.retryMaxMs ?? DEFAULT_RETRY_MAX_MS,
  stallTimeoutMs: options.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS,
  borrowChunks: options.borrowChunks ?? false,
  logger: options.logger,
});

const headerValue = (value: string | string[] | undefined): string | null =>
  (Array.isArray(value) ? value[0] : value)?.trim() || null;

/** If-Range needs a strong validator (RFC 9110 §13.1.5): a weak ETag falls back to Last-Modified. */
const validatorOf = (attempt: HttpAttempt): Validator | null => {
  const etag = headerValue(attempt.headers.etag);
  if (etag && !etag.startsWith('W/')) return { header: 'etag', value: etag };
  const lastModified = headerValue(attempt.headers['last-modified']);
  return lastModified ? { header: 'last-modified', value: lastModified } : null;
};

const contentLengthOf = (attempt: HttpAttempt): number | null => {
  const raw = headerValue(attempt.headers['content-length']);
  return raw !== null && /^\d+$/.test(raw) ? Number(raw) : null;
};

/** Retry-After as a delay: delta-seconds or an HTTP date (RFC 9110 §10.2.3). */
export const parseRetryAfter = (raw: string | null, now = Date.now()): number | null => {
  if (raw === null) return null;
  if (/^\d+$/.test(raw)) return Number(raw) * 1000;
  const date = Date.parse(raw);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
};

interface ContentRange {
  start: number;
  end: number;
  total: number | null;
}

export const parseContentRange = (raw: string | null): ContentRange | null => {
  const match = raw === null ? null : /^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i.exec(raw);
  if (!match) return null;
  return {
    start: Number(match[1]),
    end: Number(match[2]),
    total: match[3] === '*' ? null : Number(match[3]),
  };
};

class Download {
  private readonly backoff: Backoff;
  /** Failed attempts since bytes last arrived; the retry budget is per stretch without progress. */
  private failuresInARow = 0;
  private delivered = 0;
  /** Bytes the current attempt delivered: a failure with none counts as a retry. */
  private attemptDelivered = 0;
  private resumes = 0;
  private retries = 0;
  private current: HttpAttempt | null = null;
  /** Fixed by the first response; every later response must describe the same entity. */
  private total: number | null = null;
  private validator: Validator | null = null;
  private rangesRefused = false;

  constructor(private readonly settings: Settings) {
    this.backoff = new Backoff(settings.retryBaseMs, settings.retryMaxMs);
  }

  stats(): FetchStats {
    return { bytes: this.delivered, resumes: this.resumes, retries: this.retries };
  }

  get totalBytes(): number | null {
    return this.total;
  }

  /** Releases the socket; the body generator's own cleanup does not run if it never started. */
  close(): void {
    this.current?.close();
    this.current = null;
  }

  async open(): Promise<void> {
    const attempt = await this.connect(null);
    this.current = attempt;
    this.total = contentLengthOf(attempt);
    this.validator = validatorOf(attempt);
    this.rangesRefused = headerValue(attempt.headers['accept-ranges'])?.toLowerCase() === 'none';
  }

  async *body(): AsyncGenerator<Buffer, void, undefined> {
    try {
      while (true) {
        const attempt = this.current;
        if (attempt === null) return;
        let chunk: Buffer | null;
        try {
          // A borrowed chunk is given back by this very call: the consumer asked for the next.
          chunk = await (this.settings.borrowChunks ? attempt.nextBorrowed() : attempt.next());
        } catch (error) {
          attempt.close();
          this.current = null;
          this.current = await this.recover(error);
          continue;
        }
        if (chunk === null) {
          // Node reports a short body as an error, so this is a guard, not an expected path.
          if (this.total !== null && this.delivered < this.total) {
            attempt.close();
            this.current = null;
            this.current = await this.recover(
              new TransferError('network', `the body ended after ${this.delivered} of ${this.total} bytes`),
            );
            continue;
          }
          attempt.close();
          this.current = null;
          return;
        }
        this.count(chunk.length);
        yield chunk;
      }
    } finally {
      // Also runs when the consumer stops early (break, throw): the socket must not linger.
      this.current?.close();
      this.current = null;
    }
  }

  /**
   * The rest of the body into `sink`, read straight into its space where the response allows
   * (HttpAttempt.pipeTo), with the same resumes, retries and guards as body(). For a consumer that
   * takes every byte in order (the block writer); body() must not be iterated any further.
   */
  async pipeTo(sink: OutputSink, onBytes: (bytes: number) => void): Promise<void> {
    try {
      while (true) {
        const attempt = this.current;
        if (attempt === null) return;
        try {
          await attempt.pipeTo(sink, (bytes) => {
            this.count(bytes);
            onBytes(bytes);
          });
        } catch (error) {
          attempt.close();
          this.current = null;
          // The sink's own failure (or our count's) ends the download; only a transfer is retried.
          if (!(error instanceof TransferError)) throw error;
          this.current = await this.recover(error);
          continue;
        }
        attempt.close();
        this.current = null;
        if (this.total !== null && this.delivered < this.total) {
          this.current = await this.recover(
            new TransferError('network', `the body ended after ${this.delivered} of ${this.total} bytes`),
          );
          continue;
        }
        return;
      }
    } finally {
      this.current?.close();
      this.current = null;
    }
  }

  /** Bytes handed on; throws DOWNLOAD_TOO_LONG before any byte past the declared total goes. */
  private count(bytes: number): void {
    if (this.total !== null && this.delivered + bytes > this.total) {
      throw this.tooLong(`the server sent more than the ${this.total} bytes declared`);
    }
    this.delivered += bytes;
    this.attemptDelivered += bytes;
    if (this.failuresInARow > 0 && this.attemptDelivered >= PROGRESS_RESET_BYTES) {
      this.failuresInARow = 0;
      this.backoff.reset();
    }
  }

  /** After a failed body read: resume, retry from zero (nothing delivered yet) or give up. */
  private async recover(error: unknown): Promise<HttpAttempt> {
    const failure = this.asTransferError(error);
    if (failure.kind === 'too-long') throw this.tooLong(failure.message, failure);
    if (failure.kind === 'cancelled') throw new CancelledError('the download was cancelled');
    if (this.attemptDelivered === 0) this.retries += 1;
    this.attemptDelivered = 0;
    const where = `${this.delivered} of ${this.total ?? 'an unknown number of'} bytes`;
    if (this.delivered === 0) {
      await this.pause(failure, null, true);
      const attempt = await this.connect(null);
      if (contentLengthOf(attempt) !== this.total || !sameValidator(validatorOf(attempt), this.validator)) {
        attempt.close();
        throw this.restartRequired('the image changed between attempts (length or validator differ)');
      }
      return attempt;
    }
    if (this.validator === null) {
      throw this.restartRequired(
        `the connection dropped after ${where} and the server sent no ETag or Last-Modified to resume against`,
        failure,
      );
    }
    if (this.rangesRefused) {
      throw this.restartRequired(
        `the connection dropped after ${where} and the server refuses ranges`,
        failure,
      );
    }
    this.settings.logger.warn(
      { url: printable(this.settings.url), bytes: this.delivered, total: this.total, err: failure.message },
      'image download dropped; resuming with a Range request',
    );
    await this.pause(failure, null, true);
    const attempt = await this.connect(this.delivered);
    this.resumes += 1;
    return attempt;
  }

  /**
   * One logical request: retries connection failures, stalls and retryable statuses until an
   * acceptable response arrives. `resumeFrom` asks for the rest of the body from that offset.
   */
  private async connect(resumeFrom: number | null): Promise<HttpAttempt> {
    while (true) {
      let attempt: HttpAttempt;
      try {
        attempt = await this.request(resumeFrom);
      } catch (error) {
        const failure = this.asTransferError(error);
        if (failure.kind === 'cancelled') throw new CancelledError('the download was cancelled');
        if (failure.kind === 'tls') {
          throw new AgentError(
            'DOWNLOAD_FAILED',
            `TLS error fetching ${printable(this.settings.url)}: ${failure.message} (check the CA bundle, or allow insecure)`,
            {
              cause: failure.cause ?? failure,
              details: { url: printable(this.settings.url) },
            },
          );
        }
        this.retries += 1;
        await this.pause(failure, null, resumeFrom !== null);
        continue;
      }
      const status = attempt.status;
      if (status === 200) {
        if (resumeFrom === null) return attempt;
        attempt.close();
        throw this.restartRequired(
          `asked to resume at byte ${resumeFrom}, the server sent the whole body again (it ignores Range, or the image changed)`,
        );
      }
      if (status === 206) {
        if (resumeFrom === null) {
          attempt.close();
          throw this.failed(`the server sent 206 Partial Content to a request without Range`, { status });
        }
        this.checkResumedRange(attempt, resumeFrom);
        return attempt;
      }
      if (status === 416 && resumeFrom !== null) {
        attempt.close();
        throw this.unsatisfiable(attempt, resumeFrom);
      }
      const excerpt = await attempt.excerpt(
        EXCERPT_BYTES,
        Math.min(EXCERPT_WAIT_MS, this.settings.stallTimeoutMs),
      );
      attempt.close();
      const details = { status, excerpt };
      if (status >= 500 || RETRYABLE_STATUSES.has(status)) {
        this.retries += 1;
        const failure = new TransferError('network', `HTTP ${status}${excerpt ? `: ${excerpt}` : ''}`);
        const retryAfter = parseRetryAfter(headerValue(attempt.headers['retry-after']));
        await this.pause(failure, retryAfter, resumeFrom !== null, details);
        continue;
      }
      throw this.failed(
        `HTTP ${status} fetching ${printable(this.settings.url)}${excerpt ? `: ${excerpt}` : ''}`,
        details,
      );
    }
  }

  /** Sends one request, following redirects (a CDN or object store often answers with one). */
  private async request(resumeFrom: number | null): Promise<HttpAttempt> {
    const headers: Record<string, string> = {
      'user-agent': `bm-agent/${AGENT_VERSION}`,
      // Hash what the server stores, never a transfer-encoded variant of it.
      'accept-encoding': 'identity',
    };
    if (resumeFrom !== null && this.validator !== null) {
      headers.range = `bytes=${resumeFrom}-`;
      headers['if-range'] = this.validator.value;
    }
    let url = this.settings.url;
    for (let hop = 0; ; hop += 1) {
      const attempt = await HttpAttempt.open({
        url,
        headers,
        signal: this.settings.signal,
        ca: this.settings.ca,
        insecure: this.settings.insecure,
        stallTimeoutMs: this.settings.stallTimeoutMs,
      });
      const location = headerValue(attempt.headers.location);
      if (!REDIRECT_STATUSES.has(attempt.status) || location === null) return attempt;
      attempt.close();
      if (hop >= MAX_REDIRECTS) throw this.failed(`more than ${MAX_REDIRECTS} redirects`, { location });
      try {
        url = new URL(location, url);
      } catch (error) {
        throw this.failed(`unparsable redirect Location ${JSON.stringify(location)}`, { location }, error);
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw this.failed(`redirect to unsupported scheme ${url.protocol}`, { location: printable(url) });
      }
    }
  }

  /** A 206 is accepted only for exactly the bytes asked for, of exactly the same entity. */
  private checkResumedRange(attempt: HttpAttempt, resumeFrom: number): void {
    const raw = headerValue(attempt.headers['content-range']);
    const range = parseContentRange(raw);
    // The validator the 206 carries, if any, must be the one If-Range named (undici checks the same).
    const validator = this.validator === null ? null : headerValue(attempt.headers[this.validator.header]);
    let problem: string | null = null;
    if (range === null) problem = `an unusable Content-Range ${JSON.stringify(raw)}`;
    else if (range.start !== resumeFrom)
      problem = `Content-Range starting at ${range.start}, not ${resumeFrom}`;
    else if (this.total !== null && range.total !== this.total)
      problem = `Content-Range total ${range.total ?? '*'}, not the original ${this.total}`;
    else if (range.total !== null && range.end !== range.total - 1)
      problem = `Content-Range ending at ${range.end}, not at the end of the image`;
    else if (this.validator !== null && validator !== null && validator !== this.validator.value)
      problem = `${this.validator.header} ${validator}, not the original ${this.validator.value}`;
    if (problem !== null) {
      attempt.close();
      throw this.restartRequired(`the resumed response has ${problem}`);
    }
    if (this.total === null && range?.total != null) {
      // Learned late (the first response was chunked); still guards against an overrun.
      this.total = range.total;
    }
  }

  /** Waits before the next attempt, or throws when the budget for this stretch is spent. */
  private async pause(
    failure: TransferError,
    retryAfterMs: number | null,
    afterBytes: boolean,
    details: Record<string, unknown> = {},
  ): Promise<void> {
    if (failure.kind === 'cancelled') throw new CancelledError('the download was cancelled');
    this.failuresInARow += 1;
    if (this.failuresInARow > this.settings.retries) {
      const attempts = this.failuresInARow;
      const base = {
        url: printable(this.settings.url),
        attempts,
        bytes: this.delivered,
        total: this.total,
        ...details,
      };
      if (afterBytes || this.delivered > 0) {
        throw new AgentError(
          'DOWNLOAD_TRUNCATED',
          `${printable(this.settings.url)}: got ${this.delivered} of ${this.total ?? 'an unknown number of'} bytes; ${attempts} attempts to get the rest failed, the last with: ${failure.message}`,
          { cause: failure.cause ?? failure, details: base },
        );
      }
      throw new AgentError(
        'DOWNLOAD_FAILED',
        `${printable(this.settings.url)}: ${attempts} attempts failed, the last with: ${failure.message}`,
        { cause: failure.cause ?? failure, details: base },
      );
    }
    const backoffMs = this.backoff.next();
    // The server's Retry-After wins over our jitter, capped so that it cannot park a deploy.
    const delayMs = retryAfterMs === null ? backoffMs : Math.min(retryAfterMs, this.settings.retryMaxMs);
    this.settings.logger.warn(
      { url: printable(this.settings.url), attempt: this.failuresInARow, delayMs, err: failure.message },
      'image download attempt failed; retrying',
    );
    try {
      await sleep(delayMs, undefined, { signal: this.settings.signal });
    } catch {
      throw new CancelledError('the download was cancelled');
    }
  }

  private asTransferError(error: unknown): TransferError {
    if (error instanceof TransferError) return error;
    if (AgentError.is(error)) throw error;
    return new TransferError('network', error instanceof Error ? error.message : String(error), {
      cause: error,
    });
  }

  private restartRequired(message: string, cause?: unknown): AgentError {
    return new AgentError(
      'DOWNLOAD_RESTART_REQUIRED',
      `${printable(this.settings.url)}: ${message}; start over from byte 0`,
      {
        ...(cause === undefined ? {} : { cause }),
        details: { url: printable(this.settings.url), bytes: this.delivered, total: this.total },
      },
    );
  }

  /**
   * A 416 to `Range: bytes=N-`: the entity has no byte N. If it is exactly N bytes long, the first
   * response promised more than the server holds (its Content-Length lied); starting over would
   * meet the same lie, so that is a truncation. Any other size means the image changed.
   */
  private unsatisfiable(attempt: HttpAttempt, resumeFrom: number): AgentError {
    const range = /^bytes\s+\*\/(\d+)$/i.exec(headerValue(attempt.headers['content-range']) ?? '');
    const size = range ? Number(range[1]) : null;
    if (size === resumeFrom && this.total !== null && this.total > size) {
      return new AgentError(
        'DOWNLOAD_TRUNCATED',
        `${printable(this.settings.url)}: the server declared ${this.total} bytes but holds only ${size}`,
        { details: { url: printable(this.settings.url), bytes: this.delivered, total: this.total, size } },
      );
    }
    return this.restartRequired(
      `the server cannot serve bytes from ${resumeFrom} on (416, size ${size ?? 'unknown'}): the image changed`,
    );
  }

  private tooLong(message: string, cause?: unknown): AgentError {
    return new AgentError('DOWNLOAD_TOO_LONG', `${printable(this.settings.url)}: ${message}`, {
      ...(cause === undefined ? {} : { cause }),
      details: { url: printable(this.settings.url), bytes: this.delivered, total: this.total },
    });
  }

  private failed(message: string, details: Record<string, unknown>, cause?: unknown): AgentError {
    return new AgentError('DOWNLOAD_FAILED', message, {
      ...(cause === undefined ? {} : { cause }),
      details: { url: printable(this.settings.url), ...details },
    });
  }
}

const sameValidator = (a: Validator | null, b: Validator | null): boolean =>
  a === null || b === null ? a === b : a.header === b.header && a.value === b.value;

/**
 * Opens the download: resolves once a 200 arrived (after retries), so the size is known before a
 * byte is written. Iterate `body` to the end, or abort the signal: either releases the socket.
 */
export const openImageStream = async (options: FetchOptions): Promise<ImageStream> => {
  const download = new Download(settingsOf(options));
  await download.open();
  return {
    totalBytes: download.totalBytes,
    body: download.body(),
    pipeTo: (sink, onBytes) => download.pipeTo(sink, onBytes),
    stats: () => download.stats(),
  };
};

export type FetchTextOptions = Omit<FetchOptions, 'url'> & { maxBytes?: number };

/** A small document (a checksums file) as UTF-8 text; same TLS settings and retries as images. */
export const fetchText = async (url: string, options: FetchTextOptions): Promise<string> => {
  const maxBytes = options.maxBytes ?? TEXT_LIMIT_BYTES;
  for (let restart = 0; ; restart += 1) {
    try {
      // The parts are kept until the end: they must be copies.
      return await readText(
        new Download(settingsOf({ ...options, url, borrowChunks: false })),
        url,
        maxBytes,
      );
    } catch (error) {
      // Small enough to fetch again whole: a restart is no reason to fail.
      if (!(AgentError.is(error) && error.code === 'DOWNLOAD_RESTART_REQUIRED') || restart >= TEXT_RESTARTS)
        throw error;
    }
  }
};

const readText = async (download: Download, url: string, maxBytes: number): Promise<string> => {
  await download.open();
  const body = download.body();
  try {
    if (download.totalBytes !== null && download.totalBytes > maxBytes) {
      throw tooBig(url, maxBytes, download.totalBytes);
    }
    const parts: Buffer[] = [];
    let size = 0;
    for await (const chunk of body) {
      size += chunk.length;
      if (size > maxBytes) throw tooBig(url, maxBytes, null);
      parts.push(chunk);
    }
    return Buffer.concat(parts, size).toString('utf8');
  } finally {
    // Releases the socket when the loop stopped early or never started.
    download.close();
  }
};

const tooBig = (url: string, maxBytes: number, size: number | null): AgentError =>
  new AgentError(
    'DOWNLOAD_FAILED',
    `${url} is ${size === null ? 'larger than' : `${size} bytes, over`} the ${maxBytes}-byte limit for a text document`,
    { details: { url, maxBytes, size } },
  );
