/**
 * An incremental HTTP/1.1 response parser for one response on a connection that closes after it
 * (the client always sends `Connection: close`). It exists so the image download can read its
 * socket into large reusable buffers: node:http allocates a fresh 64 KiB buffer per socket read
 * and runs every piece through two streams, which cost about three times the CPU of the bytes'
 * own reception (bench/README.md, "image-write"). Body bytes are reported as ranges of the
 * buffer they arrived in, so nothing is copied here.
 *
 * Strict where leniency would let a response be misread: bare CR, obsolete line folding, a
 * Content-Length that is not one decimal value, Transfer-Encoding together with Content-Length
 * (RFC 9112 §6.3: a smuggling sign), and any byte after the end of the body are errors.
 */

/** Node's default limit is 16 KiB; object stores and CDNs sometimes send more. */
export const MAX_HEAD_BYTES = 64 * 1024;
/** A chunk-size line with extensions; anything longer is not a sane server. */
const MAX_CHUNK_LINE_BYTES = 4096;
const MAX_CHUNK_HEX_DIGITS = 13;

export interface ResponseHead {
  status: number;
  /** Lower-case names. Repeats are joined with ", ", except those that must be single. */
  headers: Readonly<Record<string, string>>;
}

/** The response broke HTTP/1.1 framing; `overrun` when the bytes came after a complete body. */
export class HttpProtocolError extends Error {
  constructor(
    message: string,
    readonly overrun = false,
  ) {
    super(message);
    Object.defineProperty(this, 'name', { value: 'HttpProtocolError', enumerable: false });
  }
}

/** Headers whose repeats node keeps the first of (they cannot be lists). */
const SINGLE = new Set([
  'age',
  'authorization',
  'content-length',
  'content-type',
  'etag',
  'expires',
  'from',
  'host',
  'if-modified-since',
  'if-unmodified-since',
  'last-modified',
  'location',
  'max-forwards',
  'proxy-authorization',
  'referer',
  'retry-after',
  'server',
  'user-agent',
]);

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})(?: [^\r\n]*)?$/;

type State = 'head' | 'length' | 'chunk-size' | 'chunk-data' | 'chunk-end' | 'trailers' | 'close' | 'done';

export interface ParserEvents {
  /** The final (non-1xx) head; interim 1xx responses are skipped. */
  onHead(head: ResponseHead): void;
  /** Body bytes `buffer[start, end)`; the buffer is the caller's, passed back as given. */
  onBody(buffer: Buffer, start: number, end: number): void;
}

const splitLines = (text: string): string[] => {
  if (/\r(?!\n)/.test(text)) throw new HttpProtocolError('a bare CR in the response head');
  return text.split(/\r?\n/);
};

const parseHead = (text: string): ResponseHead => {
  const lines = splitLines(text);
  const statusLine = lines[0] ?? '';
  const match = STATUS_LINE.exec(statusLine);
  if (!match)
    throw new HttpProtocolError(`not an HTTP/1.x status line: ${JSON.stringify(statusLine.slice(0, 80))}`);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    if (line === '') continue;
    if (line.startsWith(' ') || line.startsWith('\t'))
      throw new HttpProtocolError('obsolete line folding in the response head');
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon) : '';
    if (!TOKEN.test(name))
      throw new HttpProtocolError(`a malformed header line: ${JSON.stringify(line.slice(0, 80))}`);
    const key = name.toLowerCase();
    const value = line.slice(colon + 1).trim();
    const previous = headers[key];
    if (key === 'content-length' && previous !== undefined && previous !== value)
      throw new HttpProtocolError(`two different Content-Length values (${previous}, ${value})`);
    if (previous === undefined) headers[key] = value;
    else if (!SINGLE.has(key)) headers[key] = `${previous}, ${value}`;
  }
  return { status: Number(match[1]), headers };
};

const contentLength = (raw: string): number => {
  // "5, 5" is one value repeated in a list, which RFC 9110 §8.6 allows a recipient to accept.
  const values = new Set(raw.split(',').map((part) => part.trim()));
  const [only] = values;
  if (
    values.size !== 1 ||
    only === undefined ||
    !/^\d{1,16}$/.test(only) ||
    !Number.isSafeInteger(Number(only))
  )
    throw new HttpProtocolError(`an unusable Content-Length ${JSON.stringify(raw)}`);
  return Number(only);
};

export class ResponseParser {
  private state: State = 'head';
  /** The head (or a chunk line, or trailers) so far, as latin1 text. */
  private pending = '';
  private remaining = 0;
  private trailerBytes = 0;

  constructor(private readonly events: ParserEvents) {}

  /** True once the whole body has arrived. */
  get complete(): boolean {
    return this.state === 'done';
  }

  /** True once the final head has been parsed. */
  get headParsed(): boolean {
    return this.state !== 'head';
  }

  /**
   * True while the body comes without framing (a length, or up to the close): the next bytes read
   * are body bytes, so they may be read straight to where the body goes.
   */
  get rawBody(): boolean {
    return this.state === 'length' || this.state === 'close';
  }

  /**
   * Parses `buffer[start, end)`, the body's ranges going to `onBody` (this call's own, or the
   * events'). Throws HttpProtocolError; the parser is then unusable.
   */
  feed(
    buffer: Buffer,
    start: number,
    end: number,
    onBody: (start: number, end: number) => void = (from, to) => this.events.onBody(buffer, from, to),
  ): void {
    let at = start;
    while (at < end) {
      switch (this.state) {
        case 'head':
          at = this.readHead(buffer, at, end);
          break;
        case 'length': {
          const take = Math.min(this.remaining, end - at);
          onBody(at, at + take);
          at += take;
          this.remaining -= take;
          if (this.remaining === 0) this.state = 'done';
          break;
        }
        case 'close':
          onBody(at, end);
          at = end;
          break;
        case 'chunk-size':
          at = this.readChunkSize(buffer, at, end);
          break;
        case 'chunk-data': {
          const take = Math.min(this.remaining, end - at);
          onBody(at, at + take);
          at += take;
          this.remaining -= take;
          if (this.remaining === 0) this.state = 'chunk-end';
          break;
        }
        case 'chunk-end':
          at = this.readChunkEnd(buffer, at, end);
          break;
        case 'trailers':
          at = this.readTrailers(buffer, at, end);
          break;
        case 'done':
          throw new HttpProtocolError('bytes past the end of the body', true);
      }
    }
  }

  /**
   * The connection ended. A close-delimited body is then complete; any other unfinished state is
   * a cut-short response, which the caller reports (false).
   */
  finish(): boolean {
    if (this.state === 'close') this.state = 'done';
    return this.state === 'done';
  }

  private readHead(buffer: Buffer, start: number, end: number): number {
    const before = this.pending.length;
    // Only the head's bytes are ever turned into text: a large first read is mostly body.
    const limit = Math.min(end, start + MAX_HEAD_BYTES + 4 - before);
    this.pending += buffer.toString('latin1', start, limit);
    const from = Math.max(0, before - 3);
    const crlf = this.pending.indexOf('\r\n\r\n', from);
    const lf = this.pending.indexOf('\n\n', from);
    const [index, length] = crlf >= 0 && (lf < 0 || crlf + 2 <= lf) ? [crlf, 4] : lf >= 0 ? [lf, 2] : [-1, 0];
    if (index < 0) {
      if (this.pending.length > MAX_HEAD_BYTES)
        throw new HttpProtocolError(`a response head over ${MAX_HEAD_BYTES} bytes`);
      return limit;
    }
    const used = index + length - before;
    const head = parseHead(this.pending.slice(0, index));
    this.pending = '';
    if (head.status >= 100 && head.status < 200) {
      if (head.status === 101) throw new HttpProtocolError('101 Switching Protocols was not asked for');
      // An interim response (100 Continue, 103 Early Hints): the real one follows.
      return start + used;
    }
    this.frame(head);
    this.events.onHead(head);
    return start + used;
  }

  private frame(head: ResponseHead): void {
    const transferEncoding = head.headers['transfer-encoding'];
    const length = head.headers['content-length'];
    if (head.status === 204 || head.status === 304) {
      this.state = 'done';
      return;
    }
    if (transferEncoding !== undefined) {
      if (length !== undefined)
        throw new HttpProtocolError('both Transfer-Encoding and Content-Length (RFC 9112 §6.3)');
      const codings = transferEncoding
        .toLowerCase()
        .split(',')
        .map((coding) => coding.trim());
      // A response whose last coding is not chunked runs until the connection closes.
      this.state = codings[codings.length - 1] === 'chunked' ? 'chunk-size' : 'close';
      return;
    }
    if (length !== undefined) {
      this.remaining = contentLength(length);
      this.state = this.remaining === 0 ? 'done' : 'length';
      return;
    }
    this.state = 'close';
  }

  /** Reads up to the end of a line into `pending`; the line (without CRLF), or null if incomplete. */
  private readLine(
    buffer: Buffer,
    start: number,
    end: number,
    maxBytes: number,
    what: string,
  ): { line: string | null; next: number } {
    // Searched within [start, end) only: past `end` the buffer holds stale bytes.
    const found = buffer.subarray(start, end).indexOf(0x0a);
    const stop = found >= 0 ? start + found + 1 : end;
    this.pending += buffer.toString('latin1', start, stop);
    if (this.pending.length > maxBytes) throw new HttpProtocolError(`${what} over ${maxBytes} bytes`);
    if (found < 0) return { line: null, next: stop };
    const raw = this.pending;
    this.pending = '';
    const line = raw.endsWith('\r\n') ? raw.slice(0, -2) : raw.slice(0, -1);
    if (line.includes('\r')) throw new HttpProtocolError(`a bare CR in ${what}`);
    return { line, next: stop };
  }

  private readChunkSize(buffer: Buffer, start: number, end: number): number {
    const { line, next } = this.readLine(buffer, start, end, MAX_CHUNK_LINE_BYTES, 'a chunk-size line');
    if (line === null) return next;
    const size = (line.split(';')[0] ?? '').trim();
    if (!/^[0-9a-fA-F]+$/.test(size) || size.length > MAX_CHUNK_HEX_DIGITS)
      throw new HttpProtocolError(`a malformed chunk size ${JSON.stringify(line.slice(0, 40))}`);
    this.remaining = parseInt(size, 16);
    this.state = this.remaining === 0 ? 'trailers' : 'chunk-data';
    return next;
  }

  private readChunkEnd(buffer: Buffer, start: number, end: number): number {
    const { line, next } = this.readLine(buffer, start, end, 2, 'the end of a chunk');
    if (line === null) return next;
    if (line !== '') throw new HttpProtocolError('chunk data longer than its size');
    this.state = 'chunk-size';
    return next;
  }

  private readTrailers(buffer: Buffer, start: number, end: number): number {
    const { line, next } = this.readLine(buffer, start, end, MAX_HEAD_BYTES, 'the trailers');
    this.trailerBytes += next - start;
    if (this.trailerBytes > MAX_HEAD_BYTES)
      throw new HttpProtocolError(`trailers over ${MAX_HEAD_BYTES} bytes`);
    if (line === null) return next;
    // Trailers are read and dropped: nothing in them matters for an image.
    if (line === '') this.state = 'done';
    return next;
  }
}
