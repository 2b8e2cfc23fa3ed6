/**
 * The HTTP server a PXE-booted VM sees through the relay: boot script, kernel, initramfs and disk
 * images, each a file on the host published under a URL path. GET and HEAD with Content-Length,
 * ETag, Last-Modified and single byte ranges (what iPXE and the agent's resumable fetch use), and a
 * log of every request with host times, which the phase timings read.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface BootRequest {
  method: string;
  path: string;
  status: number;
  /** Bytes of body sent (or to be sent, when the transfer was cut). */
  bytes: number;
  /** Host epoch milliseconds. */
  startedAt: number;
  /** When the last byte was handed to the socket, or null while running or when cut. */
  finishedAt: number | null;
  range: string | null;
}

export class BootServer {
  readonly requests: BootRequest[] = [];
  private readonly files = new Map<string, string>();
  private readonly sockets = new Set<Socket>();
  private readonly listeners = new Set<(request: BootRequest) => void>();

  private constructor(private readonly server: http.Server) {}

  static async start(): Promise<BootServer> {
    const server = http.createServer();
    const boot = new BootServer(server);
    server.on('request', (req, res) => void boot.handle(req, res));
    server.on('connection', (socket) => {
      boot.sockets.add(socket);
      socket.once('close', () => boot.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    return boot;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** Publishes `file` at `urlPath` ("/vmlinuz"); a later call for the same path replaces it. */
  publish(urlPath: string, file: string): void {
    this.files.set(urlPath.startsWith('/') ? urlPath : `/${urlPath}`, file);
  }

  /** Called for every request when it finishes (or is cut). */
  onRequest(listener: (request: BootRequest) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://boot').pathname;
    const entry: BootRequest = {
      method: req.method ?? '?',
      path,
      status: 0,
      bytes: 0,
      startedAt: Date.now(),
      finishedAt: null,
      range: typeof req.headers.range === 'string' ? req.headers.range : null,
    };
    this.requests.push(entry);
    const done = (): void => {
      for (const listener of this.listeners) listener(entry);
    };
    // A relay per connection costs a process start in the guest's path; one request per
    // connection keeps nothing idle behind it.
    res.setHeader('Connection', 'close');
    const file = this.files.get(path);
    const info = file === undefined ? null : await stat(file).catch(() => null);
    if (file === undefined || info === null || !info.isFile()) {
      entry.status = 404;
      res.writeHead(404, { 'Content-Length': 0 }).end(done);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      entry.status = 405;
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Length': 0 }).end(done);
      return;
    }
    const etag = `"${info.size.toString(16)}-${Math.floor(info.mtimeMs).toString(16)}"`;
    const headers: http.OutgoingHttpHeaders = {
      'Content-Type': 'application/octet-stream',
      'Accept-Ranges': 'bytes',
      ETag: etag,
      'Last-Modified': info.mtime.toUTCString(),
    };
    let start = 0;
    let end = info.size - 1;
    const range = parseRange(entry.range, info.size);
    const ifRange = req.headers['if-range'];
    const rangeApplies = range !== null && (ifRange === undefined || ifRange === etag);
    if (range === 'unsatisfiable') {
      entry.status = 416;
      res
        .writeHead(416, { ...headers, 'Content-Range': `bytes */${info.size}`, 'Content-Length': 0 })
        .end(done);
      return;
    }
    if (rangeApplies && range !== null) {
      [start, end] = range;
      entry.status = 206;
      headers['Content-Range'] = `bytes ${start}-${end}/${info.size}`;
    } else {
      entry.status = 200;
    }
    const length = Math.max(0, end - start + 1);
    headers['Content-Length'] = length;
    res.writeHead(entry.status, headers);
    if (req.method === 'HEAD' || length === 0) {
      res.end(done);
      return;
    }
    entry.bytes = length;
    const stream = createReadStream(file, { start, end, highWaterMark: 1024 * 1024 });
    stream.on('error', () => res.destroy());
    res.once('close', () => {
      stream.destroy();
      done();
    });
    res.once('finish', () => (entry.finishedAt = Date.now()));
    stream.pipe(res);
  }
}

/** One `bytes=a-b`, `bytes=a-` or `bytes=-n` range; null for none or a form not served. */
const parseRange = (header: string | null, size: number): [number, number] | 'unsatisfiable' | null => {
  if (header === null) return null;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === '' && match[2] === '')) return null;
  let start: number;
  let end: number;
  if (match[1] === '') {
    start = Math.max(0, size - Number(match[2]));
    end = size - 1;
  } else {
    start = Number(match[1]);
    end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
  }
  if (start >= size || start > end) return 'unsatisfiable';
  return [start, end];
};
