/**
 * One HTTP GET on its own connection, read as a pull stream of the body's chunks. It knows nothing
 * of retries or resumes (fetch.ts decides those); it only reports precisely how the exchange
 * ended, because "complete", "cut short", "stalled" and "overran" lead to different decisions.
 *
 * A plain socket (TLS for https) and the small parser in http-response.ts rather than node:http
 * or fetch(): the policy above needs the raw status before any body is read, Range requests,
 * socket-level cancellation and a say in back-pressure, and the receive path is the CPU limit of
 * an image write on a small machine. The socket reads straight into a ring of reusable buffers
 * (`onread`), up to a slot's free space per read; node:http instead allocates a fresh 64 KiB
 * buffer per read and passes each through two streams, about three times the CPU per byte
 * (bench/README.md, "image-write").
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import type { OutputSink } from './contracts.js';
import { HttpProtocolError, ResponseParser, type ResponseHead } from './http-response.js';

/**
 * The receive ring: reads land in the current slot's free space, and a chunk handed out stays
 * valid until its slot comes round again. Four 1 MiB slots keep the socket busy while the
 * consumer copies a chunk or waits for a disk write, and bound what one download holds.
 */
const SLOT_BYTES = 1024 * 1024;
const SLOTS = 4;
/** Less free space than this in a slot moves reading on to the next one. */
const MIN_READ_BYTES = 64 * 1024;
/**
 * After the last declared byte, how long to wait for the server's close. Bytes that come in that
 * time are an overrun; a server that neither closes nor sends more is left behind.
 */
const CLOSE_GRACE_MS = 2000;

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

/** The request head. Values are ours or a validator the parser already checked for CR and LF. */
const requestHead = (url: URL, headers: Record<string, string>): string => {
  const lines = [`GET ${url.pathname || '/'}${url.search} HTTP/1.1`, `Host: ${url.host}`];
  if (url.username || url.password) {
    // As node:http does for credentials in the URL.
    const credentials = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`;
    lines.push(`Authorization: Basic ${Buffer.from(credentials).toString('base64')}`);
  }
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  // One response per connection: a resume must never inherit a socket the previous, failed
  // attempt left in an unknown state, and the server's close marks the end of the exchange.
  lines.push('Connection: close');
  return `${lines.join('\r\n')}\r\n\r\n`;
};

interface Piece {
  slot: number;
  start: number;
  end: number;
}

/** Where pipeTo() sends the body, and how far that got. */
interface Pipe {
  sink: OutputSink;
  onBytes: (bytes: number) => void;
  /** The sink's promise for the last bytes it was given; nothing more goes to it until then. */
  pending: Promise<void> | null;
  resolve: () => void;
  reject: (error: unknown) => void;
}

interface Waiter {
  borrowed: boolean;
  resolve: (chunk: Buffer | null) => void;
  reject: (error: Error) => void;
}

export class HttpAttempt {
  private readonly socket: net.Socket;
  private readonly parser: ResponseParser;
  private head: ResponseHead | null = null;
  private readonly slots: Buffer[] = [];
  /** Pieces queued or lent, per slot: a slot is refilled only once none are left. */
  private readonly users: number[] = new Array<number>(SLOTS).fill(0);
  private readSlot = 0;
  private readOffset = 0;
  /** The slot the bytes being parsed are in. */
  private parseSlot = 0;
  private readonly queue: Piece[] = [];
  private lent: Piece | null = null;
  /** Reading stopped until the slot it moves on to is given back. */
  private paused = false;
  private waiter: Waiter | null = null;
  private pipe: Pipe | null = null;
  /** Reading stopped until the pipe's sink takes more. */
  private waitingForSink = false;
  /** The sink's space the current read lands in, or null when it lands in the ring. */
  private direct: Buffer | null = null;
  private failure: TransferError | null = null;
  private done = false;
  private lastByteAt = performance.now();
  private watchdog: NodeJS.Timeout | null = null;
  private grace: NodeJS.Timeout | null = null;
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
    this.parser = new ResponseParser({
      onHead: (head) => {
        this.head = head;
        this.settleHeaders?.resolve();
        this.settleHeaders = null;
      },
      onBody: (_buffer, start, end) => this.onBody(start, end),
    });
    const { url, ca, insecure } = options;
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
    const onread: net.OnReadOpts = {
      buffer: () => this.readTarget(),
      callback: (bytes: number) => this.onRead(bytes),
    };
    // tls.connect takes onread as net.connect does (node's documentation); its types omit it.
    const secure: tls.ConnectionOptions & { onread: net.OnReadOpts } = {
      host,
      port,
      ...(net.isIP(host) === 0 ? { servername: host } : {}),
      rejectUnauthorized: !insecure,
      ...(ca ? { ca } : {}),
      ALPNProtocols: ['http/1.1'],
      onread,
    };
    this.socket = url.protocol === 'https:' ? tls.connect(secure) : net.connect({ host, port, onread });
    this.socket.on('error', (error) => this.onSocketError(error));
    this.socket.on('end', () => this.onEnd());
    this.socket.on('close', () => this.onClose());
    // Written before the connection is up: the socket queues it until then.
    this.socket.write(requestHead(url, options.headers), 'latin1');
    if (options.signal.aborted) this.onAbort();
    else options.signal.addEventListener('abort', this.onAbort, { once: true });
    this.armWatchdog(options.stallTimeoutMs);
  }

  get status(): number {
    return this.head?.status ?? 0;
  }

  get headers(): Readonly<Record<string, string>> {
    return this.head?.headers ?? {};
  }

  get url(): URL {
    return this.options.url;
  }

  /**
   * The next chunk of the body, the caller's to keep, or null once the body ended at its declared
   * length with nothing after it. Chunks received before a failure are still handed out first, so
   * the caller can resume exactly after the last byte it got.
   */
  next(): Promise<Buffer | null> {
    return this.take(false);
  }

  /**
   * Like next(), without the copy: the chunk is a view into the receive ring, valid only until
   * the next call to next(), nextBorrowed() or close(). For a consumer that is done with each
   * chunk (copied, hashed, written) before it asks for the next.
   */
  nextBorrowed(): Promise<Buffer | null> {
    return this.take(true);
  }

  /**
   * The rest of the body into `sink`, instead of next(): read straight into the sink's reserved
   * space where the framing allows (a body with a length, or up to the close), so the bytes are
   * copied only by the kernel; through the ring and sink.write() otherwise. `onBytes` counts what
   * the sink was given. Resolves at the end of the body; rejects with the attempt's TransferError
   * once everything received before it went to the sink, or with the sink's own error.
   */
  pipeTo(sink: OutputSink, onBytes: (bytes: number) => void): Promise<void> {
    if (this.lent !== null) {
      const lent = this.lent;
      this.lent = null;
      this.release(lent);
    }
    return new Promise<void>((resolve, reject) => {
      this.pipe = { sink, onBytes, pending: null, resolve, reject };
      this.pump();
    });
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
    this.socket.destroy();
  }

  private take(borrowed: boolean): Promise<Buffer | null> {
    if (this.lent !== null) {
      const lent = this.lent;
      this.lent = null;
      this.release(lent);
    }
    const piece = this.queue.shift();
    if (piece !== undefined) return Promise.resolve(this.handOut(piece, borrowed));
    if (this.failure) return Promise.reject(this.failure);
    if (this.done) return Promise.resolve(null);
    return new Promise((resolve, reject) => (this.waiter = { borrowed, resolve, reject }));
  }

  private handOut(piece: Piece, borrowed: boolean): Buffer {
    const view = (this.slots[piece.slot] as Buffer).subarray(piece.start, piece.end);
    if (borrowed) {
      this.lent = piece;
      return view;
    }
    const copy = Buffer.from(view);
    this.release(piece);
    return copy;
  }

  private release(piece: Piece): void {
    this.users[piece.slot] = (this.users[piece.slot] ?? 0) - 1;
    if (this.paused && piece.slot === this.readSlot && this.users[piece.slot] === 0) {
      this.paused = false;
      // Time spent paused for the consumer is not the server's silence.
      this.lastByteAt = performance.now();
      if (!this.waitingForSink && !this.socket.destroyed) this.socket.resume();
    }
  }

  /** Where the next socket read lands (node asks after each read). */
  private readTarget(): Buffer {
    const pipe = this.pipe;
    this.direct = null;
    // Straight into the sink only in order: nothing queued before it, nothing it still holds.
    if (pipe !== null && pipe.pending === null && this.queue.length === 0 && this.parser.rawBody) {
      const space = pipe.sink.reserve();
      if (space !== null && space.length > 0) {
        this.direct = space;
        return space;
      }
    }
    let slot = this.slots[this.readSlot];
    if (slot === undefined) {
      slot = Buffer.allocUnsafeSlow(SLOT_BYTES);
      this.slots[this.readSlot] = slot;
    }
    return slot.subarray(this.readOffset);
  }

  private onRead(bytes: number): boolean {
    this.lastByteAt = performance.now();
    if (this.done || this.failure) return false;
    if (this.direct !== null) return this.onDirectRead(this.direct, bytes);
    const start = this.readOffset;
    this.readOffset += bytes;
    this.parseSlot = this.readSlot;
    try {
      this.parser.feed(this.slots[this.readSlot] as Buffer, start, start + bytes);
    } catch (error) {
      this.onParseError(error);
      return false;
    }
    if (this.parser.complete) this.onComplete();
    if (SLOT_BYTES - this.readOffset >= MIN_READ_BYTES) return this.keepReading();
    this.readSlot = (this.readSlot + 1) % SLOTS;
    this.readOffset = 0;
    // The next slot may still hold pieces not yet taken: stop until they are given back. Node asks
    // for the target right after this returns; that slot's start is then where reading resumes.
    if ((this.users[this.readSlot] ?? 0) > 0) {
      this.paused = true;
      return false;
    }
    return this.keepReading();
  }

  /** A read that landed in the sink's space: handed over as it lies (commit), no copy. */
  private onDirectRead(space: Buffer, bytes: number): boolean {
    const pipe = this.pipe as Pipe;
    this.direct = null;
    let body = 0;
    let parseError: unknown = null;
    try {
      this.parser.feed(space, 0, bytes, (start, end) => (body += end - start));
    } catch (error) {
      parseError = error;
    }
    if (body > 0) {
      let result: Promise<void> | undefined;
      try {
        // Counted first: a count that refuses them keeps them out of the sink.
        pipe.onBytes(body);
        result = pipe.sink.commit(body);
      } catch (error) {
        this.failPipe(error);
        return false;
      }
      if (result !== undefined) this.await(pipe, result, null);
    }
    if (parseError !== null) {
      this.onParseError(parseError);
      return false;
    }
    if (this.parser.complete) this.onComplete();
    return this.keepReading();
  }

  /** Sends queued pieces to the pipe's sink, one at a time, and settles pipeTo() at the end. */
  private pump(): void {
    const pipe = this.pipe;
    if (pipe === null) return;
    while (pipe.pending === null) {
      const piece = this.queue.shift();
      if (piece === undefined) break;
      const view = (this.slots[piece.slot] as Buffer).subarray(piece.start, piece.end);
      let result: Promise<void> | undefined;
      try {
        pipe.onBytes(view.length);
        result = pipe.sink.write(view);
      } catch (error) {
        this.release(piece);
        this.failPipe(error);
        return;
      }
      if (result === undefined) this.release(piece);
      else this.await(pipe, result, piece);
    }
    if (pipe.pending !== null || this.queue.length > 0) return;
    if (this.done) {
      this.pipe = null;
      pipe.resolve();
    } else if (this.failure) {
      this.pipe = null;
      pipe.reject(this.failure);
    }
  }

  /** Holds the pipe until the sink's promise settles; the piece it was given is released then. */
  private await(pipe: Pipe, result: Promise<void>, piece: Piece | null): void {
    pipe.pending = result.then(
      () => {
        pipe.pending = null;
        if (piece !== null) this.release(piece);
        this.pump();
        if (this.waitingForSink && pipe.pending === null) {
          this.waitingForSink = false;
          if (!this.paused && !this.socket.destroyed) this.socket.resume();
        }
      },
      (error: unknown) => this.failPipe(error),
    );
  }

  /**
   * After a read, whether to go on reading: not while the sink makes us wait. The ring could take
   * more, but each byte read there is a byte copied later; the socket's own buffer holds them
   * instead, and reading resumes straight into the sink.
   */
  private keepReading(): boolean {
    if (this.pipe?.pending == null) return true;
    this.waitingForSink = true;
    return false;
  }

  /** The sink failed: the download stops, and pipeTo() rejects with the sink's own error. */
  private failPipe(error: unknown): void {
    const pipe = this.pipe;
    this.pipe = null;
    this.fail(new TransferError('cancelled', 'the image could not take more bytes', { cause: error }));
    pipe?.reject(error);
  }

  private onBody(start: number, end: number): void {
    if (start === end) return;
    const piece = { slot: this.parseSlot, start, end };
    this.users[piece.slot] = (this.users[piece.slot] ?? 0) + 1;
    if (this.pipe !== null) {
      this.queue.push(piece);
      this.pump();
      return;
    }
    if (this.waiter !== null) {
      const { borrowed, resolve } = this.waiter;
      this.waiter = null;
      resolve(this.handOut(piece, borrowed));
      return;
    }
    this.queue.push(piece);
  }

  private onParseError(error: unknown): void {
    if (error instanceof HttpProtocolError && error.overrun) {
      this.fail(
        new TransferError(
          'too-long',
          'the server sent bytes past the declared end of the body (Content-Length)',
          { cause: error },
        ),
      );
      return;
    }
    this.fail(new TransferError('network', `a malformed response: ${describe(error)}`, { cause: error }));
  }

  /** The last declared byte arrived: the exchange is over once the server closes. */
  private onComplete(): void {
    if (this.grace !== null || this.done) return;
    this.grace = setTimeout(() => this.finish(), CLOSE_GRACE_MS);
  }

  private onEnd(): void {
    if (this.done || this.failure) return;
    if (this.parser.finish()) {
      this.finish();
      return;
    }
    const phase = this.head === null ? 'the response headers' : 'the end of the body';
    this.fail(new TransferError('network', `the connection closed before ${phase}`));
  }

  private onClose(): void {
    if (this.done || this.failure) return;
    if (this.parser.complete) {
      this.finish();
      return;
    }
    const phase = this.head === null ? 'the response headers' : 'the end of the body';
    this.fail(new TransferError('network', `the connection closed before ${phase}`));
  }

  private onSocketError(error: Error): void {
    if (this.done || this.failure) return;
    // A reset after the last declared byte loses nothing.
    if (this.parser.complete) {
      this.finish();
      return;
    }
    const code = errorCode(error);
    const kind = TLS_ERROR_CODES.has(code) || code.startsWith('ERR_SSL_') ? 'tls' : 'network';
    this.fail(new TransferError(kind, describe(error), { cause: error }));
  }

  private finish(): void {
    if (this.done || this.failure) return;
    this.done = true;
    this.cleanup();
    this.socket.destroy();
    if (this.waiter) {
      const { resolve } = this.waiter;
      this.waiter = null;
      resolve(null);
    }
    this.pump();
  }

  /**
   * Records the first failure. Chunks already received stay deliverable, except after a cancel,
   * which must stop at once.
   */
  private fail(error: TransferError): void {
    if (this.failure || this.done) return;
    this.failure = error;
    this.paused = false;
    if (error.kind === 'cancelled') {
      for (const piece of this.queue.splice(0)) this.release(piece);
    }
    this.settleHeaders?.reject(error);
    this.settleHeaders = null;
    if (this.waiter) {
      const { reject } = this.waiter;
      this.waiter = null;
      reject(error);
    }
    this.cleanup();
    this.socket.destroy();
    if (error.kind === 'cancelled' && this.pipe !== null) {
      const pipe = this.pipe;
      this.pipe = null;
      pipe.reject(error);
    } else {
      this.pump();
    }
  }

  private cleanup(): void {
    if (this.watchdog) clearTimeout(this.watchdog);
    this.watchdog = null;
    if (this.grace) clearTimeout(this.grace);
    this.grace = null;
    this.options.signal.removeEventListener('abort', this.onAbort);
  }

  /**
   * One timer for the whole attempt, re-armed for the remaining time instead of reset per read
   * (thousands of reads a second would otherwise each cost a timer).
   */
  private armWatchdog(delayMs: number): void {
    this.watchdog = setTimeout(() => {
      if (this.done || this.failure) return;
      const now = performance.now();
      if (this.paused || this.waitingForSink || this.queue.length > 0 || this.pipe?.pending)
        this.lastByteAt = now;
      const idle = now - this.lastByteAt;
      const limit = this.options.stallTimeoutMs;
      if (idle + 1 >= limit) {
        const phase = this.head ? 'body' : 'response headers';
        this.fail(new TransferError('stall', `no byte of the ${phase} for ${Math.round(idle)} ms`));
        return;
      }
      this.armWatchdog(limit - idle);
    }, delayMs);
  }
}
