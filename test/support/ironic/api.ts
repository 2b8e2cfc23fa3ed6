/**
 * A small typed client for the parts of Ironic's REST API the tests drive: enrolling fake-hardware
 * nodes and ports, provision-state moves, maintenance, and the ramdisk lookup. noauth, so no token;
 * every request names an API version because Ironic serves 1.1 semantics to requests without one.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { IronicHarnessError } from './errors.js';

export const VERSION_HEADER = 'X-OpenStack-Ironic-API-Version';
/** What IPA 9.x sends for lookup and heartbeat: the newest version whose ramdisk API it knows. */
export const RAMDISK_API_VERSION = '1.68';

/** States a node is left in when an action failed; waiting for something else stops on them. */
export const FAILED_PROVISION_STATES = [
  'clean failed',
  'deploy failed',
  'inspect failed',
  'rescue failed',
  'unrescue failed',
  'adopt failed',
  'service failed',
  'error',
] as const;

export type ProvisionTarget =
  | 'manage'
  | 'provide'
  | 'clean'
  | 'active'
  | 'rebuild'
  | 'deleted'
  | 'inspect'
  | 'abort'
  | 'adopt'
  | 'rescue'
  | 'unrescue'
  | 'unhold';

export interface Step {
  interface: string;
  step: string;
  args?: Record<string, unknown>;
  priority?: number;
}

export interface JsonPatchOperation {
  op: 'add' | 'replace' | 'remove';
  path: string;
  value?: unknown;
}

export interface IronicNode {
  uuid: string;
  name: string | null;
  driver: string;
  provisionState: string;
  targetProvisionState: string | null;
  powerState: string | null;
  lastError: string | null;
  maintenance: boolean;
  maintenanceReason: string | null;
  /** Why Ironic put the node in maintenance itself, e.g. `clean failure`. */
  fault: string | null;
  properties: Record<string, unknown>;
  instanceInfo: Record<string, unknown>;
  driverInfo: Record<string, unknown>;
  driverInternalInfo: Record<string, unknown>;
  cleanStep: Record<string, unknown> | null;
  deployStep: Record<string, unknown> | null;
  /** The whole JSON object as Ironic sent it. */
  raw: Record<string, unknown>;
}

export interface IronicPort {
  uuid: string;
  address: string;
  nodeUuid: string;
  pxeEnabled: boolean;
  raw: Record<string, unknown>;
}

export interface LookupResult {
  nodeUuid: string;
  node: Record<string, unknown>;
  /** In clear text on the first lookup after each (fake) reboot, `******` afterwards (API >= 1.62). */
  agentToken: string | null;
  heartbeatTimeoutS: number;
  config: Record<string, unknown>;
}

export type InterfaceName =
  | 'boot'
  | 'deploy'
  | 'power'
  | 'management'
  | 'network'
  | 'raid'
  | 'bios'
  | 'console'
  | 'inspect'
  | 'rescue'
  | 'storage'
  | 'vendor';

export interface CreateNodeOptions {
  name?: string;
  driver?: string;
  /** Merged over the defaults (including the vendor and boot mode fake-hardware needs to deploy). */
  properties?: Record<string, unknown>;
  /** Root device hints, stored as `properties.root_device`. */
  rootDevice?: Record<string, unknown>;
  instanceInfo?: Record<string, unknown>;
  driverInfo?: Record<string, unknown>;
  /** Merged over the defaults: fake boot/power/management, direct deploy, noop network, agent RAID. */
  interfaces?: Partial<Record<InterfaceName, string>>;
}

export interface SetProvisionStateOptions {
  cleanSteps?: Step[];
  deploySteps?: Step[];
  configdrive?: string | Record<string, unknown>;
  disableRamdisk?: boolean;
}

export interface WaitForProvisionStateOptions {
  timeoutMs: number;
  /** States that end the wait with IRONIC_NODE_FAILED; by default the failed states not wanted. */
  failOn?: string[];
  intervalMs?: number;
}

export interface IronicClientOptions {
  /** The version every request names; by default the server's maximum. */
  apiVersion?: string;
  requestTimeoutMs?: number;
}

/**
 * The default node properties. fake-hardware's `fake` management interface knows only the `pxe` boot
 * device, so setting `disk` at the end of a deploy fails; Ironic 21.4.4 skips that call for Lenovo
 * machines in UEFI mode (bug 2053064), and UEFI is also what makes it ask the agent to install a
 * bootloader.
 */
export const DEFAULT_NODE_PROPERTIES: Readonly<Record<string, unknown>> = {
  cpu_arch: 'x86_64',
  cpus: 1,
  memory_mb: 1024,
  local_gb: 10,
  vendor: 'lenovo',
  capabilities: 'boot_mode:uefi',
};

export const DEFAULT_NODE_INTERFACES: Readonly<Partial<Record<InterfaceName, string>>> = {
  boot: 'fake',
  deploy: 'direct',
  power: 'fake',
  management: 'fake',
  network: 'noop',
  raid: 'agent',
};

export class IronicApiError extends IronicHarnessError {
  readonly status: number;
  readonly faultstring: string;

  constructor(method: string, urlPath: string, status: number, faultstring: string, body: string) {
    super('IRONIC_API_ERROR', `${method} ${urlPath} answered ${status}: ${faultstring}`, {
      details: { method, path: urlPath, status, body: body.slice(0, 4096) },
    });
    this.status = status;
    this.faultstring = faultstring;
  }
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const tryJson = (text: string): unknown => {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
};

/**
 * The readable message of an Ironic error body. Ironic wraps its fault as a JSON string inside JSON:
 * `{"error_message": "{\"faultcode\": ..., \"faultstring\": ..., \"debuginfo\": ...}"}`; some paths
 * send the inner object directly, and a proxy or webob may send plain text.
 */
export const parseIronicError = (text: string): string => {
  const outer = tryJson(text);
  const wrapped = isRecord(outer) ? outer.error_message : undefined;
  const inner = typeof wrapped === 'string' ? (tryJson(wrapped) ?? wrapped) : (wrapped ?? outer);
  if (isRecord(inner) && typeof inner.faultstring === 'string') return inner.faultstring;
  if (typeof inner === 'string' && inner.trim() !== '') return inner.trim();
  const plain = text.trim();
  return plain === '' ? '(empty body)' : plain.slice(0, 500);
};

/** Compares `major.minor` versions numerically: 1.9 < 1.68. */
export const compareApiVersions = (a: string, b: string): number => {
  const parse = (version: string): [number, number] => {
    const match = /^(\d+)\.(\d+)$/.exec(version);
    if (!match) throw new TypeError(`Expected an API version like 1.68, got ${JSON.stringify(version)}`);
    return [Number(match[1]), Number(match[2])];
  };
  const [aMajor, aMinor] = parse(a);
  const [bMajor, bMinor] = parse(b);
  return aMajor - bMajor || aMinor - bMinor;
};

const badResponse = (what: string, body: unknown): IronicHarnessError =>
  new IronicHarnessError('IRONIC_BAD_RESPONSE', `${what}: ${JSON.stringify(body)?.slice(0, 500)}`);

const field = {
  string(object: Record<string, unknown>, key: string, where: string): string {
    const value = object[key];
    if (typeof value !== 'string') throw badResponse(`${where}.${key} is not a string`, object);
    return value;
  },
  nullableString(object: Record<string, unknown>, key: string, where: string): string | null {
    const value = object[key] ?? null;
    if (value !== null && typeof value !== 'string')
      throw badResponse(`${where}.${key} is not a string`, object);
    return value;
  },
  record(object: Record<string, unknown>, key: string, where: string): Record<string, unknown> {
    const value = object[key] ?? {};
    if (!isRecord(value)) throw badResponse(`${where}.${key} is not an object`, object);
    return value;
  },
  nullableRecord(
    object: Record<string, unknown>,
    key: string,
    where: string,
  ): Record<string, unknown> | null {
    const value = object[key] ?? null;
    if (value !== null && !isRecord(value)) throw badResponse(`${where}.${key} is not an object`, object);
    // Ironic reports "no step" as {}.
    return value === null || Object.keys(value).length === 0 ? null : value;
  },
};

export const parseNode = (body: unknown): IronicNode => {
  if (!isRecord(body)) throw badResponse('a node is not an object', body);
  const maintenance = body.maintenance ?? false;
  if (typeof maintenance !== 'boolean') throw badResponse('node.maintenance is not a boolean', body);
  return {
    uuid: field.string(body, 'uuid', 'node'),
    name: field.nullableString(body, 'name', 'node'),
    driver: field.string(body, 'driver', 'node'),
    provisionState: field.string(body, 'provision_state', 'node'),
    targetProvisionState: field.nullableString(body, 'target_provision_state', 'node'),
    powerState: field.nullableString(body, 'power_state', 'node'),
    lastError: field.nullableString(body, 'last_error', 'node'),
    maintenance,
    maintenanceReason: field.nullableString(body, 'maintenance_reason', 'node'),
    fault: field.nullableString(body, 'fault', 'node'),
    properties: field.record(body, 'properties', 'node'),
    instanceInfo: field.record(body, 'instance_info', 'node'),
    driverInfo: field.record(body, 'driver_info', 'node'),
    driverInternalInfo: field.record(body, 'driver_internal_info', 'node'),
    cleanStep: field.nullableRecord(body, 'clean_step', 'node'),
    deployStep: field.nullableRecord(body, 'deploy_step', 'node'),
    raw: body,
  };
};

const parsePort = (body: unknown): IronicPort => {
  if (!isRecord(body)) throw badResponse('a port is not an object', body);
  const pxeEnabled = body.pxe_enabled ?? true;
  if (typeof pxeEnabled !== 'boolean') throw badResponse('port.pxe_enabled is not a boolean', body);
  return {
    uuid: field.string(body, 'uuid', 'port'),
    address: field.string(body, 'address', 'port'),
    nodeUuid: field.string(body, 'node_uuid', 'port'),
    pxeEnabled,
    raw: body,
  };
};

const parseLookup = (body: unknown): LookupResult => {
  if (!isRecord(body)) throw badResponse('the lookup answer is not an object', body);
  const node = field.record(body, 'node', 'lookup');
  const config = field.record(body, 'config', 'lookup');
  const heartbeatTimeoutS = config.heartbeat_timeout;
  if (typeof heartbeatTimeoutS !== 'number')
    throw badResponse('lookup config.heartbeat_timeout is not a number', body);
  return {
    nodeUuid: field.string(node, 'uuid', 'lookup.node'),
    node,
    agentToken: field.nullableString(config, 'agent_token', 'lookup.config'),
    heartbeatTimeoutS,
    config,
  };
};

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const expectIdent = (ident: string): string => {
  if (ident === '' || /[/\s]/.test(ident)) {
    throw new TypeError(`Expected a node UUID or name, got ${JSON.stringify(ident)}`);
  }
  return encodeURIComponent(ident);
};

const interfaceFields = (interfaces: Partial<Record<InterfaceName, string>>): Record<string, string> =>
  Object.fromEntries(
    Object.entries(interfaces)
      .filter((entry): entry is [string, string] => typeof entry[1] === 'string')
      .map(([name, value]) => [`${name}_interface`, value]),
  );

/** Deploy-log tarballs Ironic stored for a node (newest last): `<uuid>_<name>[_cleaning]_<date>.tar.gz`. */
export const listDeployLogs = async (deployLogsDir: string, nodeUuid: string): Promise<string[]> => {
  if (!UUID.test(nodeUuid)) throw new TypeError(`Expected a node UUID, got ${JSON.stringify(nodeUuid)}`);
  let names: string[];
  try {
    names = await readdir(deployLogsDir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  // The date in the name sorts as text (ISO-like), so sorting by name is sorting by time.
  return names
    .filter((name) => name.startsWith(`${nodeUuid}_`) && name.endsWith('.tar.gz'))
    .sort()
    .map((name) => path.join(deployLogsDir, name));
};

interface Answer {
  status: number;
  body: unknown;
}

export class IronicClient {
  readonly apiUrl: string;
  readonly apiVersion: string;
  /** The server's maximum API version, from GET /v1. */
  readonly maxVersion: string;
  readonly minVersion: string;
  private readonly requestTimeoutMs: number;

  private constructor(
    apiUrl: string,
    versions: { api: string; min: string; max: string },
    timeoutMs: number,
  ) {
    this.apiUrl = apiUrl;
    this.apiVersion = versions.api;
    this.minVersion = versions.min;
    this.maxVersion = versions.max;
    this.requestTimeoutMs = timeoutMs;
  }

  /** Reads the server's versions from GET /v1 and speaks its maximum (or `apiVersion`). */
  static async connect(apiUrl: string, options: IronicClientOptions = {}): Promise<IronicClient> {
    const base = apiUrl.replace(/\/+$/, '');
    const url = new URL(base);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new TypeError(`Expected an http(s) URL, got ${JSON.stringify(apiUrl)}`);
    }
    const timeoutMs = options.requestTimeoutMs ?? 30_000;
    const bootstrap = new IronicClient(base, { api: '1.1', min: '1.1', max: '1.1' }, timeoutMs);
    const { body } = await bootstrap.request('GET', '/v1', { expect: [200], apiVersion: null });
    const version = isRecord(body) ? body.version : undefined;
    if (!isRecord(version)) throw badResponse('GET /v1 has no version', body);
    const max = field.string(version, 'version', 'v1.version');
    const min = field.string(version, 'min_version', 'v1.version');
    const api = options.apiVersion ?? max;
    if (compareApiVersions(api, min) < 0 || compareApiVersions(api, max) > 0) {
      throw new TypeError(`API version ${api} is outside the server's ${min}..${max}`);
    }
    return new IronicClient(base, { api, min, max }, timeoutMs);
  }

  /**
   * One request. A status outside `expect` throws IronicApiError with Ironic's fault string;
   * `apiVersion: null` sends no version header.
   */
  async request(
    method: string,
    urlPath: string,
    options: { body?: unknown; expect?: number[]; apiVersion?: string | null } = {},
  ): Promise<Answer> {
    const { body, expect = [200], apiVersion = this.apiVersion } = options;
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (apiVersion !== null) headers[VERSION_HEADER] = apiVersion;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response: Response;
    try {
      response = await fetch(`${this.apiUrl}${urlPath}`, {
        method,
        headers,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(this.requestTimeoutMs),
      });
    } catch (error) {
      throw new IronicHarnessError('IRONIC_API_ERROR', `${method} ${urlPath} failed: ${String(error)}`, {
        cause: error,
      });
    }
    const text = await response.text();
    if (!expect.includes(response.status)) {
      throw new IronicApiError(method, urlPath, response.status, parseIronicError(text), text);
    }
    if (text.trim() === '') return { status: response.status, body: null };
    const parsed = tryJson(text);
    if (parsed === undefined) throw badResponse(`${method} ${urlPath} answered non-JSON`, text);
    return { status: response.status, body: parsed };
  }

  async createNode(options: CreateNodeOptions = {}): Promise<IronicNode> {
    const properties: Record<string, unknown> = { ...DEFAULT_NODE_PROPERTIES, ...options.properties };
    if (options.rootDevice !== undefined) properties.root_device = options.rootDevice;
    const body: Record<string, unknown> = {
      driver: options.driver ?? 'fake-hardware',
      properties,
      ...interfaceFields({ ...DEFAULT_NODE_INTERFACES, ...options.interfaces }),
    };
    if (options.name !== undefined) body.name = options.name;
    if (options.instanceInfo !== undefined) body.instance_info = options.instanceInfo;
    if (options.driverInfo !== undefined) body.driver_info = options.driverInfo;
    return parseNode((await this.request('POST', '/v1/nodes', { body, expect: [201] })).body);
  }

  async createPort(
    nodeUuid: string,
    mac: string,
    options: { pxeEnabled?: boolean } = {},
  ): Promise<IronicPort> {
    if (!UUID.test(nodeUuid)) throw new TypeError(`Expected a node UUID, got ${JSON.stringify(nodeUuid)}`);
    if (!MAC.test(mac))
      throw new TypeError(`Expected a MAC address like 52:54:00:12:34:56, got ${JSON.stringify(mac)}`);
    const body = { node_uuid: nodeUuid, address: mac.toLowerCase(), pxe_enabled: options.pxeEnabled ?? true };
    return parsePort((await this.request('POST', '/v1/ports', { body, expect: [201] })).body);
  }

  async getNode(ident: string): Promise<IronicNode> {
    return parseNode((await this.request('GET', `/v1/nodes/${expectIdent(ident)}`)).body);
  }

  async patchNode(ident: string, patch: JsonPatchOperation[]): Promise<IronicNode> {
    return parseNode((await this.request('PATCH', `/v1/nodes/${expectIdent(ident)}`, { body: patch })).body);
  }

  async deleteNode(ident: string): Promise<void> {
    await this.request('DELETE', `/v1/nodes/${expectIdent(ident)}`, { expect: [204] });
  }

  /** Starts a move; Ironic answers 202 and carries it out in the background. */
  async setProvisionState(
    ident: string,
    target: ProvisionTarget,
    options: SetProvisionStateOptions = {},
  ): Promise<void> {
    const body: Record<string, unknown> = { target };
    if (options.cleanSteps !== undefined) body.clean_steps = options.cleanSteps;
    if (options.deploySteps !== undefined) body.deploy_steps = options.deploySteps;
    if (options.configdrive !== undefined) body.configdrive = options.configdrive;
    if (options.disableRamdisk !== undefined) body.disable_ramdisk = options.disableRamdisk;
    await this.request('PUT', `/v1/nodes/${expectIdent(ident)}/states/provision`, { body, expect: [202] });
  }

  /**
   * Polls until the node's provision state is one of `wanted`. Landing in a failed state first ends the
   * wait at once with the node's last_error, so a test fails with Ironic's reason, not a timeout.
   */
  async waitForProvisionState(
    ident: string,
    wanted: string[],
    options: WaitForProvisionStateOptions,
  ): Promise<IronicNode> {
    const { timeoutMs, intervalMs = 500 } = options;
    const failOn = options.failOn ?? FAILED_PROVISION_STATES.filter((state) => !wanted.includes(state));
    const deadline = Date.now() + timeoutMs;
    const seen: string[] = [];
    for (;;) {
      const node = await this.getNode(ident);
      if (seen.at(-1) !== node.provisionState) seen.push(node.provisionState);
      if (wanted.includes(node.provisionState)) return node;
      const details = {
        node: node.uuid,
        wanted,
        seen,
        lastError: node.lastError,
        maintenance: node.maintenance,
      };
      if (failOn.includes(node.provisionState)) {
        throw new IronicHarnessError(
          'IRONIC_NODE_FAILED',
          `node ${node.uuid} went to "${node.provisionState}" while waiting for ${wanted.join(' or ')}: ${node.lastError ?? '(no last_error)'}`,
          { details },
        );
      }
      if (Date.now() >= deadline) {
        throw new IronicHarnessError(
          'IRONIC_WAIT_TIMEOUT',
          `node ${node.uuid} is still "${node.provisionState}" (target ${node.targetProvisionState ?? 'none'}) after ${timeoutMs} ms waiting for ${wanted.join(' or ')}; states seen: ${seen.join(' -> ')}; last_error: ${node.lastError ?? 'none'}`,
          { details },
        );
      }
      await sleep(Math.min(intervalMs, Math.max(0, deadline - Date.now())));
    }
  }

  async setMaintenance(ident: string, reason?: string): Promise<void> {
    await this.request('PUT', `/v1/nodes/${expectIdent(ident)}/maintenance`, {
      body: reason === undefined ? {} : { reason },
      expect: [202],
    });
  }

  async clearMaintenance(ident: string): Promise<void> {
    await this.request('DELETE', `/v1/nodes/${expectIdent(ident)}/maintenance`, { expect: [202] });
  }

  /**
   * The ramdisk's lookup, as IPA sends it. A node in a state without lookup (anything but cleaning,
   * deploying, inspecting, rescuing and their wait states) or an unknown MAC throws IronicApiError 404.
   */
  async lookup(
    addresses: string[],
    options: { nodeUuid?: string; apiVersion?: string } = {},
  ): Promise<LookupResult> {
    const query = new URLSearchParams();
    query.set('addresses', addresses.join(','));
    if (options.nodeUuid !== undefined) query.set('node_uuid', options.nodeUuid);
    const { body } = await this.request('GET', `/v1/lookup?${query.toString()}`, {
      apiVersion: options.apiVersion ?? RAMDISK_API_VERSION,
    });
    return parseLookup(body);
  }
}
