/**
 * A real HTTP server on 127.0.0.1 that misbehaves on purpose, per request number, the way servers
 * and networks do in the field: cut bodies, resets, lying Content-Length, ignored Range, an image
 * replaced mid-download, slow or silent bodies, error statuses, chunked bodies without a length.
 * Every request is recorded (headers included) so a test can assert what the client asked for.
 *
 * Responses are written straight onto the socket rather than through ServerResponse: node's
 * response object refuses to send a body that disagrees with its Content-Length, and lying is the
 * point here. Every response closes its connection, so no request can inherit a broken one.
 *
 * Also the benchmark source: served from a file in large reads, it sends 1 GiB well over 1 GB/s.
 * Test support only; nothing in agent/ may import it.
 */
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import http, { STATUS_CODES, type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';

export type Fault =
  /** Sends the headers and this many body bytes, then closes the connection (FIN). */
  | { kind: 'truncate'; afterBytes: number }
  /** Resets the connection (RST): before the headers, or after about this many body bytes. */
  | { kind: 'reset'; afterBytes?: number }
  /** Declares the body's length plus delta, sends the true body, closes: >0 short, <0 overrun. */
  | { kind: 'wrong-length'; declaredDelta: number }
  /** Answers a Range request with 200 and the whole body. */
  | { kind: 'ignore-range' }
  /** The image is replaced from this request on: new ETag and Last-Modified, same bytes. */
  | { kind: 'change-etag' }
  /** Paces the body to this rate. */
  | { kind: 'slow'; bytesPerSecond: number }
  /** Sends this many body bytes, then nothing, keeping the connection open. */
  | { kind: 'stall'; afterBytes: number }
  /** Accepts the connection and reads the request, then never answers. */
  | { kind: 'stall-headers' }
  /** Answers with this status (and Retry-After, other headers, body) instead of the image. */
  | { kind: 'status'; status: number; retryAfter?: string; body?: string; headers?: Record<string, string> }
  /** Serves a Range request from this many bytes later than asked, with a truthful Content-Range. */
  | { kind: 'shift-range'; by: number }
  /** Transfer-Encoding: chunked, no Content-Length. */
  | { kind: 'chunked' };

/** Faults by the image request's number, counted from 1; a function can fault every request. */
export type FaultPlan =
  | Readonly<Record<number, Fault | readonly Fault[]>>
  | ((requestNumber: number) => Fault | readonly Fault[] | undefined);

export interface FaultyServerOptions {
  /** The image: a file (streamed, for large images) or a buffer. */
  file?: string;
  data?: Buffer;
  /** Send an ETag (default true). */
  etag?: boolean;
  /** Send Last-Modified (default true). */
  lastModified?: boolean;
  /** Honour Range and advertise Accept-Ranges (default true). */
  ranges?: boolean;
  faults?: FaultPlan;
  /** Other paths served as-is with 200 and no faults (checksums files). */
  documents?: Readonly<Record<string, string | Buffer>>;
  /** Bytes per socket write (default 4 MiB): large writes keep the server off the critical path. */
  chunkBytes?: number;
  /** Serve https with this key and certificate. */
  tls?: { key: string; cert: string };
}

export interface RecordedRequest {
  /** 1-based number among image requests; 0 for documents. */
  number: number;
  method: string;
  path: string;
  headers: Record<string, string>;
  range: string | null;
  ifRange: string | null;
  /** Status sent, or 0 when the request got no answer (reset or stall before headers). */
  status: number;
  faults: string[];
}

const DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024;
/** Slow bodies are paced in slices this far apart. */
const PACE_MS = 20;
/** Fixed so that Last-Modified is stable across test runs; each version moves it on a minute. */
const BASE_MODIFIED_MS = Date.UTC(2026, 0, 1);

interface Entity {
  size: number;
  read(start: number, end: number): AsyncIterable<Buffer>;
}

const bufferEntity = (data: Buffer, chunkBytes: number): Entity => ({
  size: data.length,
  async *read(start, end) {
    for (let at = start; at < end; at += chunkBytes) yield data.subarray(at, Math.min(end, at + chunkBytes));
  },
});

const fileEntity = (file: string, size: number, chunkBytes: number): Entity => ({
  size,
  async *read(start, end) {
    if (start >= end) return;
    // Large reads: each one becomes a single large socket write.
    yield* createReadStream(file, {
      start,
      end: end - 1,
      highWaterMark: chunkBytes,
    }) as AsyncIterable<Buffer>;
  },
});

const asList = (value: Fault | readonly Fault[] | undefined): readonly Fault[] =>
  value === undefined ? [] : Array.isArray(value) ? value : [value as Fault];

const flatHeaders = (request: IncomingMessage): Record<string, string> => {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(request.headers)) {
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return headers;
};

/** Resolves when the socket can take more, or false once it is gone (the client left). */
const drained = async (socket: Socket): Promise<boolean> => {
  if (socket.destroyed) return false;
  if (!socket.writableNeedDrain) return true;
  // Plain listeners, both removed whichever fires: events.once() would leave the loser behind
  // on every one of a thousand writes.
  return new Promise((resolve) => {
    const settle = (writable: boolean): void => {
      socket.off('drain', onDrain).off('close', onClose);
      resolve(writable);
    };
    const onDrain = (): void => settle(true);
    const onClose = (): void => settle(false);
    socket.on('drain', onDrain).on('close', onClose);
  });
};

export class FaultyHttpServer {
  readonly requests: RecordedRequest[] = [];
  private imageRequests = 0;
  private version = 0;
  private readonly sockets = new Set<Socket>();
  /** TCP connections accepted so far, TLS handshakes that failed included. */
  acceptedConnections = 0;

  private constructor(
    private readonly server: http.Server,
    private readonly entity: Entity,
    private readonly options: FaultyServerOptions,
  ) {}

  static async start(options: FaultyServerOptions): Promise<FaultyHttpServer> {
    const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    let entity: Entity;
    if (options.file !== undefined)
      entity = fileEntity(options.file, (await stat(options.file)).size, chunkBytes);
    else if (options.data !== undefined) entity = bufferEntity(options.data, chunkBytes);
    else throw new Error('FaultyHttpServer needs a file or data');
    const server = options.tls
      ? https.createServer({ key: options.tls.key, cert: options.tls.cert })
      : http.createServer();
    const instance = new FaultyHttpServer(server, entity, options);
    server.on('request', (request: IncomingMessage) => {
      instance.handle(request).catch(() => request.socket.destroy());
    });
    server.on('connection', () => (instance.acceptedConnections += 1));
    server.on(options.tls ? 'secureConnection' : 'connection', (socket: Socket) => {
      instance.sockets.add(socket);
      socket.on('close', () => instance.sockets.delete(socket));
      // A client that goes away mid-body is normal here; it must not crash the test process.
      socket.on('error', () => undefined);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return instance;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** URL of the image at this path (any path not in `documents` serves the image). */
  url(path = '/image.img'): string {
    return `${this.options.tls ? 'https' : 'http'}://127.0.0.1:${this.port}${path}`;
  }

  get etag(): string {
    return `"bma-${this.entity.size.toString(16)}-v${this.version}"`;
  }

  get lastModified(): string {
    return new Date(BASE_MODIFIED_MS + this.version * 60_000).toUTCString();
  }

  /** Connections open right now (a cancelled client must leave none behind). */
  get connections(): number {
    return this.sockets.size;
  }

  /** Image requests only, in order. */
  get imageRequestLog(): RecordedRequest[] {
    return this.requests.filter((request) => request.number > 0);
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(request: IncomingMessage): Promise<void> {
    const socket = request.socket;
    const path = (request.url ?? '/').split('?')[0] ?? '/';
    const headers = flatHeaders(request);
    const record: RecordedRequest = {
      number: 0,
      method: request.method ?? 'GET',
      path,
      headers,
      range: headers.range ?? null,
      ifRange: headers['if-range'] ?? null,
      status: 0,
      faults: [],
    };
    this.requests.push(record);
    const document = this.options.documents?.[path];
    if (document !== undefined) {
      const body = Buffer.from(document);
      record.status = 200;
      socket.end(Buffer.concat([this.head(200, { 'Content-Length': String(body.length) }), body]));
      return;
    }
    record.number = ++this.imageRequests;
    const plan = this.options.faults;
    const faults = asList(typeof plan === 'function' ? plan(record.number) : plan?.[record.number]);
    record.faults = faults.map((fault) => fault.kind);
    const find = <K extends Fault['kind']>(kind: K): Extract<Fault, { kind: K }> | undefined =>
      faults.find((fault): fault is Extract<Fault, { kind: K }> => fault.kind === kind);

    if (find('change-etag')) this.version += 1;
    const reset = find('reset');
    if (reset && reset.afterBytes === undefined) {
      socket.resetAndDestroy();
      return;
    }
    if (find('stall-headers')) return;
    const status = find('status');
    if (status) {
      const body = Buffer.from(status.body ?? `${status.status} ${STATUS_CODES[status.status] ?? ''}\n`);
      const extra: Record<string, string> = { ...status.headers, 'Content-Length': String(body.length) };
      if (status.retryAfter !== undefined) extra['Retry-After'] = status.retryAfter;
      record.status = status.status;
      socket.end(Buffer.concat([this.head(status.status, extra), body]));
      return;
    }

    const { size } = this.entity;
    let start = 0;
    let end = size;
    let code = 200;
    const extra: Record<string, string> = {};
    if (this.options.etag !== false) extra.ETag = this.etag;
    if (this.options.lastModified !== false) extra['Last-Modified'] = this.lastModified;
    if (this.options.ranges !== false) extra['Accept-Ranges'] = 'bytes';
    const range = this.rangeOf(record, find('ignore-range') !== undefined);
    if (range === 'unsatisfiable') {
      record.status = 416;
      socket.end(this.head(416, { 'Content-Range': `bytes */${size}`, 'Content-Length': '0' }));
      return;
    }
    if (range) {
      ({ start, end } = range);
      start = Math.min(end, start + (find('shift-range')?.by ?? 0));
      code = 206;
      extra['Content-Range'] = `bytes ${start}-${end - 1}/${size}`;
    }
    const chunked = find('chunked') !== undefined;
    const wrongLength = find('wrong-length');
    if (chunked) extra['Transfer-Encoding'] = 'chunked';
    else extra['Content-Length'] = String(end - start + (wrongLength?.declaredDelta ?? 0));
    record.status = code;
    socket.write(this.head(code, extra));

    const truncate = find('truncate');
    const stall = find('stall');
    const limit = Math.min(
      truncate?.afterBytes ?? Infinity,
      stall?.afterBytes ?? Infinity,
      reset?.afterBytes ?? Infinity,
    );
    const sent = await this.sendBody(
      socket,
      start,
      end,
      limit,
      chunked,
      find('slow')?.bytesPerSecond ?? null,
    );
    if (sent === null) return;
    if (sent < limit || limit === Infinity) {
      if (chunked) socket.write('0\r\n\r\n');
      socket.end();
    } else if (reset?.afterBytes !== undefined && sent >= reset.afterBytes) {
      socket.resetAndDestroy();
    } else if (truncate) {
      socket.end();
    }
    // A stall leaves the socket open and silent until the client or stop() closes it.
  }

  /** The Range to serve, null for the whole body, honouring If-Range against the current version. */
  private rangeOf(
    record: RecordedRequest,
    ignore: boolean,
  ): { start: number; end: number } | 'unsatisfiable' | null {
    if (this.options.ranges === false || ignore || record.range === null) return null;
    if (record.ifRange !== null && record.ifRange !== this.etag && record.ifRange !== this.lastModified)
      return null;
    const match = /^bytes=(\d*)-(\d*)$/.exec(record.range.trim());
    if (!match || (match[1] === '' && match[2] === '')) return null;
    const size = this.entity.size;
    let start: number;
    let end: number;
    if (match[1] === '') {
      start = Math.max(0, size - Number(match[2]));
      end = size;
    } else {
      start = Number(match[1]);
      end = match[2] === '' ? size : Math.min(size, Number(match[2]) + 1);
    }
    if (start >= size || start >= end) return 'unsatisfiable';
    return { start, end };
  }

  /** Sends [start, end) up to `limit` bytes; the byte count sent, or null if the client left. */
  private async sendBody(
    socket: Socket,
    start: number,
    end: number,
    limit: number,
    chunked: boolean,
    bytesPerSecond: number | null,
  ): Promise<number | null> {
    let sent = 0;
    for await (const piece of this.entity.read(start, end)) {
      let rest = piece.subarray(0, Math.max(0, Math.min(piece.length, limit - sent)));
      while (rest.length > 0) {
        const sliceBytes =
          bytesPerSecond === null ? rest.length : Math.max(1, Math.floor((bytesPerSecond * PACE_MS) / 1000));
        const slice = rest.subarray(0, sliceBytes);
        rest = rest.subarray(slice.length);
        if (chunked) {
          socket.cork();
          socket.write(`${slice.length.toString(16)}\r\n`);
          socket.write(slice);
          socket.write('\r\n');
          socket.uncork();
        } else {
          socket.write(slice);
        }
        sent += slice.length;
        if (!(await drained(socket))) return null;
        if (bytesPerSecond !== null) await sleep(PACE_MS);
      }
      if (sent >= limit) break;
    }
    return sent;
  }

  private head(status: number, headers: Record<string, string>): Buffer {
    const lines = [`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}`];
    for (const [name, value] of Object.entries({ ...headers, Connection: 'close' }))
      lines.push(`${name}: ${value}`);
    return Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
  }
}

/**
 * `node dist/test/support/faulty-http-server.js FILE` serves FILE without faults in its own process
 * (benchmarks: the client under test must not share the server's event loop) and prints one JSON
 * line `{"url": ...}`; it stops when its stdin closes or on SIGTERM.
 */
const runMain = async (file: string): Promise<void> => {
  const server = await FaultyHttpServer.start({ file });
  process.stdout.write(`${JSON.stringify({ url: server.url(`/${file.split('/').pop() ?? 'image'}`) })}\n`);
  const stop = (): void => {
    void server.stop().then(() => process.exit(0));
  };
  process.stdin.on('end', stop).on('close', stop).resume();
  process.on('SIGTERM', stop);
};

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const file = process.argv[2];
  if (file === undefined) {
    process.stderr.write('usage: faulty-http-server.js FILE\n');
    process.exit(2);
  }
  await runMain(file);
}
