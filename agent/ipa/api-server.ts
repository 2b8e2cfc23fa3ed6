/**
 * The agent REST API Ironic calls (ipa.md §2.7, ironic-protocol.md §2), on node:http or
 * node:https. It knows routes, tokens, bodies and IPA's error format; what the commands are and
 * do is IpaExtensions' business.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../util/logger.js';
import type { IpaSession } from './contracts.js';
import type { IpaExtensions } from './extensions.js';
import { isJsonObject } from './node.js';

export interface IpaApiServerOptions {
  /** Address to bind, e.g. `0.0.0.0` or `::`. */
  host: string;
  /** 0 picks a free port (tests). IPA listens on 9999. */
  port: number;
  /** Serve HTTPS with this certificate and key (PEM). */
  tls?: { cert: Buffer | string; key: Buffer | string };
  session: IpaSession;
  extensions: IpaExtensions;
  agentVersion: string;
  logger: Logger;
  /** Called when an async command leaves RUNNING: IPA heartbeats at once then. */
  onCommandFinished?: () => void;
  /** Seconds since the epoch reported as `started_at`; defaults to when the server started. */
  startedAt?: number;
  /** Largest request body accepted; Ironic's carry the whole node, 20 to 60 KiB. */
  maxBodyBytes?: number;
}

export interface IpaApiServer {
  /** `http(s)://host:port`, with the port actually bound. */
  url: string;
  port: number;
  close(): Promise<void>;
}

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
/** Past this much, a body is not drained to answer 413 politely: the connection is dropped. */
const DRAIN_LIMIT_FACTOR = 8;

class HttpFault extends Error {
  constructor(
    readonly status: number,
    readonly faultstring: string,
    readonly closeConnection = false,
  ) {
    super(faultstring);
  }
}

const sendJson = (res: ServerResponse, status: number, body: unknown, close = false): void => {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...(close ? { connection: 'close' } : {}),
  });
  res.end(text);
};

/** IPA's (WSME's) error body; Ironic reads `faultstring`. */
const sendFault = (res: ServerResponse, fault: HttpFault): void =>
  sendJson(
    res,
    fault.status,
    { faultcode: fault.status >= 500 ? 'Server' : 'Client', faultstring: fault.faultstring },
    fault.closeConnection,
  );

const digest = (text: string): Buffer => createHash('sha256').update(text).digest();

/** Compares hashes, so neither the length nor the content of the token leaks through timing. */
const sameToken = (a: string, b: string): boolean => timingSafeEqual(digest(a), digest(b));

/**
 * Whether a request may run commands. The token Ironic handed out at lookup must come back; before
 * lookup gave one, only an Ironic that does not require tokens is served.
 */
export const tokenAccepted = (session: IpaSession, presented: string | null): boolean => {
  if (session.token === null) return !session.tokenRequired;
  return presented !== null && sameToken(session.token, presented);
};

const readBody = (req: IncomingMessage, limit: number): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit * DRAIN_LIMIT_FACTOR) {
      reject(new HttpFault(413, `Request body too large: at most ${limit} bytes`, true));
      return;
    }
    const chunks: Buffer[] = [];
    let received = 0;
    req.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received <= limit) chunks.push(chunk);
      else if (received > limit * DRAIN_LIMIT_FACTOR) req.destroy();
    });
    req.on('end', () => {
      if (received > limit)
        reject(new HttpFault(413, `Request body too large: at most ${limit} bytes`, true));
      else resolve(Buffer.concat(chunks));
    });
    req.on('error', reject);
    req.on('close', () => reject(new HttpFault(400, 'Request body incomplete')));
  });

interface CommandRequest {
  name: string;
  params: Record<string, unknown>;
}

const parseCommandRequest = (body: Buffer): CommandRequest => {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch (error) {
    throw new HttpFault(400, `Invalid content: the body is not JSON (${(error as Error).message})`);
  }
  if (!isJsonObject(value)) throw new HttpFault(400, 'Invalid content: the body must be a JSON object');
  if (typeof value.name !== 'string' || value.name === '')
    throw new HttpFault(400, 'Invalid content: Missing command name: give "name": "<extension>.<command>"');
  if (value.name.length > 256) throw new HttpFault(400, 'Invalid content: the command name is too long');
  if (!('params' in value)) throw new HttpFault(400, 'Invalid content: Missing command params');
  if (!isJsonObject(value.params)) throw new HttpFault(400, 'Invalid content: params must be a JSON object');
  return { name: value.name, params: value.params };
};

type Route =
  | { kind: 'root' }
  | { kind: 'v1' }
  | { kind: 'status' }
  | { kind: 'commands' }
  | { kind: 'command'; id: string };

/** IPA's routes, with and without `/v1` and a trailing slash. */
const route = (pathname: string): Route | null => {
  const path = pathname.length > 1 ? pathname.replace(/\/+$/, '') : pathname;
  if (path === '' || path === '/') return { kind: 'root' };
  if (path === '/v1') return { kind: 'v1' };
  const rest = path.startsWith('/v1/') ? path.slice(3) : path;
  if (rest === '/status') return { kind: 'status' };
  if (rest === '/commands') return { kind: 'commands' };
  const match = /^\/commands\/([^/]{1,128})$/.exec(rest);
  if (match?.[1]) {
    try {
      return { kind: 'command', id: decodeURIComponent(match[1]) };
    } catch {
      return null;
    }
  }
  return null;
};

const ALLOWED: Record<Route['kind'], string[]> = {
  root: ['GET'],
  v1: ['GET'],
  status: ['GET'],
  commands: ['GET', 'POST'],
  command: ['GET'],
};

const isTrue = (value: string | null): boolean => value !== null && value.toLowerCase() === 'true';

// The Host header is the client's: only a plain host[:port] goes into the links.
const HOST_PATTERN = /^[A-Za-z0-9.-]{1,253}(:\d{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:\d{1,5})?$/;

/** Starts the API; resolves once it listens, rejects with the listen error (EADDRINUSE...). */
export const startIpaApiServer = async (options: IpaApiServerOptions): Promise<IpaApiServer> => {
  const { session, extensions, logger } = options;
  const maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const startedAt = options.startedAt ?? Date.now() / 1000;
  const scheme = options.tls ? 'https' : 'http';
  let boundAuthority = '';

  const unsubscribe = extensions.onFinished(({ sync }) => {
    if (sync || !options.onCommandFinished) return;
    try {
      options.onCommandFinished();
    } catch (error) {
      logger.error({ err: error }, 'onCommandFinished failed');
    }
  });

  const baseUrl = (req: IncomingMessage): string => {
    const host = req.headers.host;
    return `${scheme}://${host && HOST_PATTERN.test(host) ? host : boundAuthority}`;
  };

  const links = (base: string, path: string) => [
    { href: `${base}/v1/${path}`, rel: 'self' },
    { href: `${base}/${path}`, rel: 'bookmark' },
  ];

  const versionDocument = (base: string) => ({
    id: 'v1',
    links: [{ href: `${base}/v1/`, rel: 'self' }],
  });

  const handleCommandPost = async (req: IncomingMessage, res: ServerResponse, query: URLSearchParams) => {
    if (!tokenAccepted(session, query.get('agent_token')))
      throw new HttpFault(
        401,
        'Token invalid: the request carries no token, or not the one this agent received from Ironic at lookup',
      );
    const request = parseCommandRequest(await readBody(req, maxBody));
    const dispatch = extensions.execute(request.name, request.params);
    if (!dispatch.ok) throw new HttpFault(dispatch.status, dispatch.faultstring);
    if (dispatch.sync || isTrue(query.get('wait'))) {
      sendJson(res, 200, await extensions.wait(dispatch.id));
      return;
    }
    if (dispatch.settleMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        extensions.wait(dispatch.id),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, dispatch.settleMs))),
      ]);
      clearTimeout(timer);
    }
    sendJson(res, 200, extensions.get(dispatch.id));
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://agent.invalid');
    const target = route(url.pathname);
    if (!target) throw new HttpFault(404, 'Not found: no such resource');
    const allowed = ALLOWED[target.kind];
    if (!allowed.includes(req.method ?? '')) {
      res.setHeader('allow', allowed.join(', '));
      throw new HttpFault(405, `Method not allowed: use ${allowed.join(' or ')}`);
    }
    const base = baseUrl(req);
    // A token on a read is checked too: a newer Ironic sends it, a wrong one is a wrong caller.
    const token = url.searchParams.get('agent_token');
    if (req.method === 'GET' && token !== null && session.token !== null && !tokenAccepted(session, token))
      throw new HttpFault(401, 'Token invalid: not the token this agent received from Ironic at lookup');
    switch (target.kind) {
      case 'root':
        return sendJson(res, 200, {
          name: 'OpenStack Ironic Python Agent API',
          description: 'bm-agent, serving the ironic-python-agent API',
          versions: [versionDocument(base)],
          default_version: versionDocument(base),
        });
      case 'v1':
        return sendJson(res, 200, {
          ...versionDocument(base),
          commands: links(base, 'commands'),
          status: links(base, 'status'),
          media_types: [
            { base: 'application/json', type: 'application/vnd.openstack.ironic-python-agent.v1+json' },
          ],
        });
      case 'status':
        return sendJson(res, 200, { started_at: startedAt, version: options.agentVersion });
      case 'commands':
        if (req.method === 'POST') return handleCommandPost(req, res, url.searchParams);
        return sendJson(res, 200, { commands: extensions.list() });
      case 'command': {
        const result = isTrue(url.searchParams.get('wait'))
          ? await extensions.wait(target.id)
          : extensions.get(target.id);
        if (!result) throw new HttpFault(404, `Requested object not found: command ${target.id}`);
        return sendJson(res, 200, result);
      }
    }
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const started = performance.now();
    res.on('finish', () => {
      const url = new URL(req.url ?? '/', 'http://agent.invalid');
      // The token is a credential: it never reaches the log.
      url.searchParams.delete('agent_token');
      logger.debug(
        {
          method: req.method,
          path: url.pathname,
          query: url.search,
          status: res.statusCode,
          ms: Math.round(performance.now() - started),
        },
        'IPA API request',
      );
    });
    handle(req, res).catch((error: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (error instanceof HttpFault) return sendFault(res, error);
      logger.error({ err: error }, 'IPA API request failed');
      sendFault(res, new HttpFault(500, `Internal error: ${(error as Error)?.message ?? String(error)}`));
    });
  };

  const server: Server = options.tls
    ? createHttpsServer({ cert: options.tls.cert, key: options.tls.key }, onRequest)
    : createHttpServer(onRequest);
  // Ironic waits 60 s for an answer; a request that takes longer to arrive is not Ironic's.
  server.requestTimeout = 120_000;
  server.headersTimeout = 60_000;

  await new Promise<void>((resolve, reject) => {
    const onError = (error: Error) => {
      unsubscribe();
      reject(error);
    };
    server.once('error', onError);
    server.listen(options.port, options.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (error) => logger.error({ err: error }, 'IPA API server error'));
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  boundAuthority = `${host}:${address.port}`;
  const url = `${scheme}://${boundAuthority}`;
  logger.info({ url }, 'IPA API listening');

  return {
    url,
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        unsubscribe();
        server.close(() => resolve());
        // Open requests (a wait=true on a long command) end with the server.
        server.closeAllConnections();
      }),
  };
};
