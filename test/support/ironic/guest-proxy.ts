/**
 * An HTTP forward proxy that lets Ironic on the host reach URLs written for a VM's guest network.
 * Under QEMU's user networking the guest reaches the host's services at 10.0.2.100:PORT, an
 * address that exists only inside slirp. Ironic checks some URLs it hands to the agent with a
 * HEAD of its own (`[deploy] http_url` with image_download_source `local`), so those URLs must
 * answer on the host too. Ironic's HTTP client (python-requests) honours `http_proxy`: this proxy
 * maps each guest-side `host:port` onto the service on the host's 127.0.0.1 behind it, and
 * `no_proxy` keeps every other request of Ironic's (the agent API, image_source) direct.
 *
 * Only absolute-form requests for routed addresses are served: anything else gets an error
 * status, so a request that should not have come here shows in the log and fails loudly.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface ProxiedRequest {
  method: string;
  /** The absolute URL as the client asked for it. */
  url: string;
  /** The port on 127.0.0.1 it went to; null when it was refused. */
  target: number | null;
  /** The status sent back (the upstream's, or the proxy's own 400/405/502). */
  status: number;
  /** Host epoch milliseconds. */
  at: number;
}

/** `host:port` as a route key, with the scheme's default port spelt out. */
const routeKey = (host: string, port: number): string => `${host.toLowerCase()}:${port}`;

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

const endToEnd = (headers: http.IncomingHttpHeaders): http.OutgoingHttpHeaders =>
  Object.fromEntries(Object.entries(headers).filter(([name]) => !HOP_BY_HOP.has(name.toLowerCase())));

export class GuestUrlProxy {
  readonly requests: ProxiedRequest[] = [];
  private readonly routes = new Map<string, number>();
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: http.Server) {}

  static async start(): Promise<GuestUrlProxy> {
    const server = http.createServer();
    const proxy = new GuestUrlProxy(server);
    server.on('request', (req, res) => proxy.handle(req, res));
    // CONNECT (https through the proxy) is not routed: refuse it rather than leave it hanging.
    server.on('connect', (req: http.IncomingMessage, socket: Socket) => {
      proxy.record(req.method ?? 'CONNECT', req.url ?? '', null, 405);
      socket.end('HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    });
    server.on('connection', (socket) => {
      proxy.sockets.add(socket);
      socket.once('close', () => proxy.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    return proxy;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** `http://127.0.0.1:<port>`, the value for `http_proxy`. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /**
   * The environment that sends a python-requests client's http:// requests here, except those for
   * loopback (Ironic's own API, the agent API forwarded from the guest, the image server).
   */
  env(): Record<string, string> {
    const noProxy = 'localhost,127.0.0.1,127.0.0.0/8,::1';
    return { http_proxy: this.url, HTTP_PROXY: this.url, no_proxy: noProxy, NO_PROXY: noProxy };
  }

  /** Requests for `http://<host>:<port>/...` go to 127.0.0.1:`target`; a later call replaces it. */
  route(host: string, port: number, target: number): void {
    for (const [what, value] of [
      ['port', port],
      ['target', target],
    ] as const) {
      if (!Number.isInteger(value) || value < 1 || value > 65_535)
        throw new TypeError(`Expected ${what} to be a port number (1-65535), got ${String(value)}`);
    }
    this.routes.set(routeKey(host, port), target);
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private record(method: string, url: string, target: number | null, status: number): void {
    this.requests.push({ method, url, target, status, at: Date.now() });
  }

  private refuse(req: http.IncomingMessage, res: http.ServerResponse, status: number, why: string): void {
    this.record(req.method ?? '?', req.url ?? '', null, status);
    res.writeHead(status, { 'Content-Type': 'text/plain', Connection: 'close' }).end(`${why}\n`);
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    let url: URL;
    try {
      url = new URL(req.url ?? '');
    } catch {
      this.refuse(req, res, 400, `not an absolute URL: ${JSON.stringify(req.url)} (this is a proxy)`);
      return;
    }
    if (url.protocol !== 'http:') {
      this.refuse(req, res, 400, `only http:// is proxied, not ${url.protocol}`);
      return;
    }
    const target = this.routes.get(routeKey(url.hostname, Number(url.port || 80)));
    if (target === undefined) {
      this.refuse(
        req,
        res,
        502,
        `no route for ${url.host}: routed are ${[...this.routes.keys()].join(', ')}`,
      );
      return;
    }
    const upstream = http.request({
      host: '127.0.0.1',
      port: target,
      method: req.method,
      path: `${url.pathname}${url.search}`,
      headers: { ...endToEnd(req.headers), host: url.host },
    });
    upstream.once('response', (answer) => {
      this.record(req.method ?? '?', url.href, target, answer.statusCode ?? 0);
      res.writeHead(answer.statusCode ?? 502, endToEnd(answer.headers));
      answer.pipe(res);
    });
    upstream.once('error', (error) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      this.refuse(req, res, 502, `127.0.0.1:${target} failed: ${error.message}`);
    });
    req.pipe(upstream);
  }
}
