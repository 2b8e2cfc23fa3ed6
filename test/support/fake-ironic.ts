/**
 * A stand-in for Ironic's ramdisk endpoints on a real HTTP server (127.0.0.1, ephemeral port),
 * answering like Ironic 21.4 did when observed (shared reference, ironic-protocol.md §1): the root
 * version document, `GET /v1/lookup` and `POST /v1/heartbeat/<node>` with their status codes,
 * microversion rules, one-time token and JSON-in-JSON error bodies; plus the inspector's
 * `POST /v1/continue`. Node states, the token and the node lock are switchable, and faults can be
 * queued per route (reset, garbage, any status, slow answers). Every request is recorded.
 * Test support only; nothing in agent/ may import it.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';

export type FakeRoute = 'root' | 'lookup' | 'heartbeat' | 'continue' | 'other';

export type FakeFault =
  /** Destroys the connection without an answer (the client sees a reset). */
  | { kind: 'reset' }
  /** 200 with a body that is not JSON. */
  | { kind: 'garbage' }
  /** This status with Ironic's error body carrying `faultstring`. */
  | { kind: 'status'; status: number; faultstring?: string }
  /** This status and body, as they are. */
  | { kind: 'raw'; status: number; body: string; contentType?: string }
  /** Waits, then answers normally (or never, when the client gives up first). */
  | { kind: 'delay'; ms: number };

export interface FakeNode {
  uuid: string;
  name: string | null;
  macs: string[];
  provisionState: string;
  /** driver_internal_info.agent_secret_token: null when wiped or never handed out. */
  token: string | null;
  /** driver_internal_info.agent_url, stored by the first accepted heartbeat. */
  agentUrl: string | null;
  agentVersion: string | null;
  agentVerifyCa: string | null;
  /** A conductor holds the node's lock: lookup answers 409. */
  locked: boolean;
}

export interface FakeRequest {
  route: FakeRoute;
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string>;
  /** The body parsed as JSON, or the raw text when it is not JSON, or null when empty. */
  body: unknown;
  /** The status sent; 0 when the connection was reset instead. */
  status: number;
  /** performance.now() when the request arrived. */
  at: number;
}

export interface FakeIronicOptions {
  /** default_version.version of the root document. */
  maxVersion?: string;
  /** config.heartbeat_timeout handed out by lookups. */
  heartbeatTimeout?: number;
  /** Answer lookups the pre-1.x way: no `config`, heartbeat_timeout at the top level. */
  legacyLookup?: boolean;
  /** Lookup also allowed in enroll, manageable and available. */
  fastTrack?: boolean;
  tls?: { key: string; cert: string };
  /** What `POST /v1/continue` answers: the UUID of the node with one of the payload's MACs by default. */
  inspectorAnswer?: (payload: unknown) => { status: number; body: unknown };
}

const LOOKUP_ALLOWED = new Set([
  'cleaning',
  'clean wait',
  'deploying',
  'wait call-back',
  'inspecting',
  'inspect wait',
  'rescuing',
  'rescue wait',
]);
const FAST_TRACK_STATES = ['enroll', 'manageable', 'available'];
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

const versionOf = (header: string | undefined): [number, number] | null => {
  const match = /^(\d+)\.(\d+)$/.exec((header ?? '').trim());
  return match ? [Number(match[1]), Number(match[2])] : null;
};

const atLeast = (version: [number, number], major: number, minor: number): boolean =>
  version[0] > major || (version[0] === major && version[1] >= minor);

/** Ironic's parsable-error middleware: the fault serialized as JSON, inside JSON. */
export const ironicErrorBody = (faultstring: string, faultcode = 'Client'): string =>
  JSON.stringify({ error_message: JSON.stringify({ faultcode, faultstring, debuginfo: null }) });

const routeOf = (method: string, path: string): FakeRoute => {
  if (method === 'GET' && (path === '/' || path === '')) return 'root';
  if (method === 'GET' && path === '/v1/lookup') return 'lookup';
  if (method === 'POST' && path.startsWith('/v1/heartbeat/')) return 'heartbeat';
  if (method === 'POST' && path === '/v1/continue') return 'continue';
  return 'other';
};

const readBody = async (req: IncomingMessage): Promise<string> => {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
};

const parseBody = (text: string): unknown => {
  if (text === '') return null;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
};

interface Answer {
  status: number;
  body: string;
  contentType?: string;
}

const json = (status: number, body: unknown): Answer => ({ status, body: JSON.stringify(body) });
const fault = (status: number, faultstring: string): Answer => ({
  status,
  body: ironicErrorBody(faultstring, status >= 500 ? 'Server' : 'Client'),
});
const NOT_FOUND = (): Answer => fault(404, 'Resource could not be found.');

export class FakeIronic {
  readonly nodes: FakeNode[] = [];
  readonly recorded: FakeRequest[] = [];
  private readonly faults = new Map<FakeRoute, FakeFault[]>();
  private readonly listeners = new Set<(request: FakeRequest) => void>();
  private readonly timers = new Set<NodeJS.Timeout>();
  maxVersion: string;
  heartbeatTimeout: number;

  private constructor(
    private readonly server: http.Server,
    readonly url: string,
    private readonly options: FakeIronicOptions,
  ) {
    this.maxVersion = options.maxVersion ?? '1.82';
    this.heartbeatTimeout = options.heartbeatTimeout ?? 30;
  }

  static async start(options: FakeIronicOptions = {}): Promise<FakeIronic> {
    let self: FakeIronic | null = null;
    const handler = (req: IncomingMessage, res: ServerResponse): void => {
      void self?.handle(req, res);
    };
    const server = options.tls
      ? https.createServer({ key: options.tls.key, cert: options.tls.cert }, handler)
      : http.createServer(handler);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    self = new FakeIronic(server, `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`, options);
    return self;
  }

  async stop(): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  addNode(init: { macs: string[]; state?: string; uuid?: string; name?: string; token?: string }): FakeNode {
    const node: FakeNode = {
      uuid: init.uuid ?? randomUUID(),
      name: init.name ?? null,
      macs: init.macs.map((mac) => mac.toLowerCase()),
      provisionState: init.state ?? 'manageable',
      token: init.token ?? null,
      agentUrl: null,
      agentVersion: null,
      agentVerifyCa: null,
      locked: false,
    };
    this.nodes.push(node);
    return node;
  }

  node(uuid: string): FakeNode {
    const node = this.nodes.find((candidate) => candidate.uuid === uuid);
    if (!node) throw new Error(`no fake node ${uuid}`);
    return node;
  }

  /** What the conductor does on a reboot, power-off or the end of cleaning. */
  wipeToken(uuid: string): void {
    const node = this.node(uuid);
    node.token = null;
    node.agentUrl = null;
    node.agentVerifyCa = null;
  }

  /** Queues faults for the next requests of a route, one per request, in order. */
  fault(route: FakeRoute, ...faults: FakeFault[]): void {
    this.faults.set(route, [...(this.faults.get(route) ?? []), ...faults]);
  }

  clearFaults(): void {
    this.faults.clear();
  }

  requests(route?: FakeRoute): FakeRequest[] {
    return route ? this.recorded.filter((request) => request.route === route) : [...this.recorded];
  }

  /** Called once each request is answered (or reset). */
  onRequest(listener: (request: FakeRequest) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves when `count` requests of the route have been answered. */
  waitFor(route: FakeRoute, count: number, timeoutMs = 5000): Promise<FakeRequest[]> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const seen = this.requests(route);
        if (seen.length < count) return false;
        clearTimeout(timer);
        off();
        resolve(seen);
        return true;
      };
      const timer = setTimeout(() => {
        off();
        reject(
          new Error(
            `fake Ironic: ${this.requests(route).length} of ${count} ${route} requests in ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      const off = this.onRequest(() => void check());
      check();
    });
  }

  private record(request: FakeRequest): void {
    this.recorded.push(request);
    for (const listener of this.listeners) listener(request);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const at = performance.now();
    const url = new URL(req.url ?? '/', 'http://fake');
    const method = req.method ?? 'GET';
    const route = routeOf(method, url.pathname);
    const text = await readBody(req);
    const headers: Record<string, string> = {};
    for (const [key, value] of Object.entries(req.headers))
      if (typeof value === 'string') headers[key.toLowerCase()] = value;
    const request: FakeRequest = {
      route,
      method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers,
      body: parseBody(text),
      status: 0,
      at,
    };

    const planned = this.faults.get(route)?.shift();
    if (planned?.kind === 'delay') {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.timers.delete(timer);
          resolve();
        }, planned.ms);
        this.timers.add(timer);
      });
      if (res.destroyed || req.socket.destroyed) {
        this.record(request);
        return;
      }
    }
    if (planned?.kind === 'reset') {
      req.socket.resetAndDestroy();
      this.record(request);
      return;
    }
    let answer: Answer;
    if (planned?.kind === 'garbage') answer = { status: 200, body: '<html>not json{' };
    else if (planned?.kind === 'status')
      answer = fault(planned.status, planned.faultstring ?? 'Injected fault.');
    else if (planned?.kind === 'raw')
      answer = {
        status: planned.status,
        body: planned.body,
        ...(planned.contentType ? { contentType: planned.contentType } : {}),
      };
    else answer = this.answer(route, request);
    request.status = answer.status;
    res.writeHead(answer.status, {
      'Content-Type': answer.contentType ?? 'application/json',
      'Content-Length': Buffer.byteLength(answer.body),
      'Openstack-Api-Maximum-Version': this.maxVersion,
    });
    res.end(answer.body);
    this.record(request);
  }

  private answer(route: FakeRoute, request: FakeRequest): Answer {
    switch (route) {
      case 'root':
        return json(200, this.rootDocument());
      case 'lookup':
        return this.lookup(request);
      case 'heartbeat':
        return this.heartbeat(request);
      case 'continue':
        return this.inspectorContinue(request);
      default:
        return NOT_FOUND();
    }
  }

  private rootDocument(): unknown {
    const version = {
      id: 'v1',
      links: [{ href: `${this.url}/v1/`, rel: 'self' }],
      status: 'CURRENT',
      min_version: '1.1',
      version: this.maxVersion,
    };
    return {
      name: 'OpenStack Ironic API',
      description:
        'Ironic is an OpenStack project which enables the provision and management of baremetal machines.',
      default_version: version,
      versions: [version],
    };
  }

  private lookup(request: FakeRequest): Answer {
    const version = versionOf(request.headers['x-openstack-ironic-api-version']);
    // The ramdisk endpoints do not exist below 1.22: Ironic answers as for any unknown path.
    if (!version || !atLeast(version, 1, 22)) return NOT_FOUND();
    const macs = (request.query.addresses ?? '')
      .split(',')
      .map((mac) => mac.trim().toLowerCase())
      .filter((mac) => MAC.test(mac));
    const nodeUuid = request.query.node_uuid ?? null;
    if (macs.length === 0 && !nodeUuid)
      return fault(400, "At least one of 'addresses' and 'node_uuid' parameters is required");
    const node = nodeUuid
      ? this.nodes.find((candidate) => candidate.uuid === nodeUuid)
      : this.nodes.find((candidate) => candidate.macs.some((mac) => macs.includes(mac)));
    const allowed = (state: string): boolean =>
      LOOKUP_ALLOWED.has(state) || (this.options.fastTrack === true && FAST_TRACK_STATES.includes(state));
    if (!node || !allowed(node.provisionState)) return NOT_FOUND();
    if (node.locked)
      return fault(
        409,
        `Node ${node.uuid} is locked by host fake-ironic, please retry after the current operation is completed.`,
      );
    let token: string | null;
    if (atLeast(version, 1, 62)) {
      if (node.token === null) {
        node.token = randomBytes(32).toString('base64url');
        token = node.token;
      } else token = '******';
    } else token = node.token;
    const nodeBody = {
      uuid: node.uuid,
      properties: { cpu_arch: 'x86_64', local_gb: 10, memory_mb: 1024, cpus: 1 },
      instance_info: {},
      driver_internal_info: node.token ? { agent_secret_token: '******' } : {},
      links: [{ href: `${this.url}/v1/nodes/${node.uuid}`, rel: 'self' }],
    };
    if (this.options.legacyLookup)
      return json(200, { node: nodeBody, heartbeat_timeout: this.heartbeatTimeout });
    return json(200, {
      node: nodeBody,
      config: {
        metrics: {
          backend: 'noop',
          prepend_host: false,
          prepend_uuid: false,
          prepend_host_reverse: true,
          global_prefix: null,
        },
        metrics_statsd: { statsd_host: 'localhost', statsd_port: 8125 },
        heartbeat_timeout: this.heartbeatTimeout,
        agent_token: token,
        agent_token_required: true,
        disable_deep_image_inspection: false,
        permitted_image_formats: ['raw', 'qcow2', 'iso'],
      },
    });
  }

  private heartbeat(request: FakeRequest): Answer {
    const version = versionOf(request.headers['x-openstack-ironic-api-version']);
    if (!version || !atLeast(version, 1, 22)) return NOT_FOUND();
    const ident = decodeURIComponent(request.path.slice('/v1/heartbeat/'.length));
    const node = this.nodes.find((candidate) => candidate.uuid === ident || candidate.name === ident);
    if (!node) return NOT_FOUND();
    const body = (typeof request.body === 'object' && request.body !== null ? request.body : {}) as Record<
      string,
      unknown
    >;
    const gated: Array<[string, number, number]> = [
      ['agent_version', 1, 36],
      ['agent_token', 1, 62],
      ['agent_verify_ca', 1, 68],
      ['agent_status', 1, 72],
    ];
    for (const [field, major, minor] of gated)
      if (field in body && !atLeast(version, major, minor))
        return fault(400, `Field "${field}" not recognised`);
    const callbackUrl = body.callback_url;
    if (typeof callbackUrl !== 'string' || callbackUrl === '')
      return fault(400, 'Missing mandatory parameter: callback_url');
    if (typeof body.agent_version !== 'string')
      return fault(
        400,
        'Agent did not transmit a version, and a version is required. Please update the agent being used.',
      );
    if (atLeast(version, 1, 62) && typeof body.agent_token !== 'string')
      return fault(400, 'Agent token is required for heartbeat processing.');
    if (node.token === null || body.agent_token !== node.token)
      return fault(400, 'Invalid or missing agent token received.');
    if (node.agentUrl !== null && node.agentUrl !== callbackUrl)
      return fault(400, 'Detected change in ramdisk provided "callback_url"');
    node.agentUrl = callbackUrl;
    node.agentVersion = body.agent_version;
    if (typeof body.agent_verify_ca === 'string') node.agentVerifyCa = body.agent_verify_ca;
    return { status: 202, body: '' };
  }

  private inspectorContinue(request: FakeRequest): Answer {
    if (this.options.inspectorAnswer) {
      const { status, body } = this.options.inspectorAnswer(request.body);
      return json(status, body);
    }
    const payload = request.body as { inventory?: { interfaces?: Array<{ mac_address?: string }> } } | null;
    const macs = (payload?.inventory?.interfaces ?? []).map((nic) => (nic.mac_address ?? '').toLowerCase());
    const node = this.nodes.find((candidate) => candidate.macs.some((mac) => macs.includes(mac)));
    if (!node) return json(404, { error: { message: 'Could not find a node for attributes {"mac": ...}' } });
    return json(200, { uuid: node.uuid });
  }
}
