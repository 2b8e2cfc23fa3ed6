/**
 * The IPA-compatible agent API driven the way Zed Ironic drives it (ironic-protocol.md §3): a
 * real CommandEngine over a registry of small definitions under the real command names (they
 * record their params and can be told to fail or to block), served over real HTTP(S) on
 * 127.0.0.1. The power commands are the real ones over a recording power backend.
 */
import assert from 'node:assert/strict';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, beforeEach, afterEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Type, type TSchema } from '@sinclair/typebox';
import { pino } from 'pino';
import { InstallBfbParams, SetHostPrivilegeParams, SetModeParams } from '../../agent/commands/bluefield.js';
import { defineCommand, type AnyCommandDefinition } from '../../agent/commands/definition.js';
import { CommandEngine } from '../../agent/commands/engine.js';
import { ImageWriteParams } from '../../agent/commands/image.js';
import { CommandRegistry } from '../../agent/commands/registry.js';
import { systemCommands } from '../../agent/commands/system.js';
import type { PowerBackend } from '../../agent/hardware/generic/power.js';
import { startIpaApiServer, type IpaApiServer } from '../../agent/ipa/api-server.js';
import { IpaSession, type IpaCommandResult } from '../../agent/ipa/contracts.js';
import { IpaExtensions } from '../../agent/ipa/extensions.js';
import { AgentError } from '../../agent/util/errors.js';
import { silentLogger, type Logger } from '../../agent/util/logger.js';
import { findOnPath } from '../../agent/util/run-process.js';
import { createTestPki, type TestPki } from '../support/certs.js';
import { sh } from '../support/loop-lab.js';

const TOKEN = 'ofsqroQ25l9h_hwtt7KRm-s6G4-jUyjQjBbzdsFAfo4';
const NODE_UUID = '3e6bb5f3-c76b-45bd-a88d-d9a950bbe2ea';
const SHA256 = '4e29ad18ab9f42d7c233500771a39d7c852b200baf328fd00fbbe3fecea1eb56';

const TOOL_PATH = `${process.env.PATH ?? ''}:/usr/sbin:/sbin`;
const tool = async (name: string): Promise<string | null> => findOnPath(name, TOOL_PATH);
const partitionTools = await Promise.all([tool('parted'), tool('sgdisk'), tool('blkid')]);
const skipPartitionTools = partitionTools.includes(null) ? 'parted, sgdisk or blkid not installed' : false;
if (skipPartitionTools) process.stderr.write(`# skipping the partition-table cases: ${skipPartitionTools}\n`);

// ---- HTTP as Ironic speaks it -------------------------------------------------------------

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
}

const call = (
  url: string,
  method: 'GET' | 'POST' | 'PUT',
  options: { body?: string | Buffer; ca?: string } = {},
): Promise<Answer> =>
  new Promise((resolve, reject) => {
    const target = new URL(url);
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(
      target,
      {
        method,
        agent: false,
        headers: { 'content-type': 'application/json' },
        ...(options.ca ? { ca: options.ca } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          try {
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: JSON.parse(text) as Record<string, unknown>,
            });
          } catch {
            reject(new Error(`not JSON (${res.statusCode}): ${text.slice(0, 200)}`));
          }
        });
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });

/** A node dict of Ironic's size (it sends about 60 keys; `extra` pads it past 30 KiB). */
const ironicNode = (properties: Record<string, unknown> = {}): Record<string, unknown> => ({
  id: 1,
  uuid: NODE_UUID,
  name: 'peer-node-525400123456',
  driver: 'fake-hardware',
  driver_info: {},
  driver_internal_info: { agent_secret_token: '******', clean_steps: [] },
  properties: { cpu_arch: 'x86_64', local_gb: 10, memory_mb: 1024, cpus: 1, ...properties },
  instance_info: {},
  extra: { padding: 'x'.repeat(30_000) },
  provision_state: 'clean wait',
});

const PORTS = [{ id: 1, uuid: '54188d99-4f24-4d20-bd44-194a30d74638', address: '52:54:00:12:34:56' }];

// ---- the agent side ----------------------------------------------------------------------------

interface Behaviour {
  fail?: (params: Record<string, unknown>) => Error | null;
  gate?: Promise<void>;
}

const deferred = () => {
  let release!: () => void;
  const promise = new Promise<void>((resolve) => (release = resolve));
  return { promise, release };
};

/** An MBR disk with signature "BITS" (0x53544942, as in the transcript) and one partition. */
const bootableImage = (): Buffer => {
  const image = Buffer.alloc(64 * 1024);
  image.write('BITS', 440, 'latin1');
  image[446 + 4] = 0x83;
  image.set([0x55, 0xaa], 510);
  return image;
};

interface Harness {
  api: IpaApiServer;
  engine: CommandEngine;
  session: IpaSession;
  calls: Array<{ name: string; params: Record<string, unknown> }>;
  behaviour: Map<string, Behaviour>;
  power: string[];
  finished: () => number;
  bluefield: { present: boolean };
  /** The file image.write "writes" and names as the device. */
  device: string;
  deviceBytes: { next: Buffer };
  post: (name: string, params: Record<string, unknown>, query?: string) => Promise<Answer>;
  get: (pathname: string) => Promise<Answer>;
  close: () => Promise<void>;
}

let dir: string;
let pki: TestPki;

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'bm-agent-ipa-api-'));
  pki = await createTestPki();
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
  await pki?.cleanup();
});

let harnessCount = 0;

const startHarness = async (
  options: {
    token?: string | null;
    tokenRequired?: boolean;
    tls?: { cert: string; key: string };
    logger?: Logger;
  } = {},
): Promise<Harness> => {
  const calls: Harness['calls'] = [];
  const behaviour = new Map<string, Behaviour>();
  const power: string[] = [];
  const device = path.join(dir, `disk-${(harnessCount += 1)}.img`);
  const deviceBytes = { next: bootableImage() };
  const bluefield = { present: false };

  const recorded = (
    name: string,
    params: TSchema,
    exclusive: boolean,
    result: (params: Record<string, unknown>) => Promise<Record<string, unknown>>,
  ): AnyCommandDefinition =>
    defineCommand({
      name,
      summary: `test ${name}`,
      exclusive,
      params,
      handler: async (received: unknown) => {
        const asRecord = received as Record<string, unknown>;
        calls.push({ name, params: asRecord });
        const control = behaviour.get(name);
        if (control?.gate) await control.gate;
        const failure = control?.fail?.(asRecord);
        if (failure) throw failure;
        return result(asRecord);
      },
    });

  const powerBackend: PowerBackend = {
    name: 'none',
    sync: async () => {
      power.push('sync');
    },
    powerOff: async () => {
      power.push('powerOff');
    },
    reboot: async () => {
      power.push('reboot');
    },
  };
  const AllParams = Type.Object({ all: Type.Boolean() }, { additionalProperties: false });
  const registry = new CommandRegistry().register(
    recorded('disk.erase_metadata', AllParams, true, async () => ({
      devices: [{ device: '/dev/sda', wiped: ['gpt'] }],
    })),
    recorded('disk.erase', AllParams, true, async () => ({ devices: [{ device: '/dev/sda', passes: 1 }] })),
    recorded('image.write', ImageWriteParams, true, async () => {
      await writeFile(device, deviceBytes.next);
      return { device, bytes_written: deviceBytes.next.length, format: 'raw' };
    }),
    recorded('system.collect_logs', Type.Object({}, { additionalProperties: false }), false, async () => ({
      archive: Buffer.from('a tar.gz').toString('base64'),
    })),
    recorded('bluefield.install_bfb', InstallBfbParams, true, async () => ({ devices: [] })),
    recorded('bluefield.set_mode', SetModeParams, true, async (params) => ({ mode: params.mode })),
    recorded('bluefield.set_host_privilege', SetHostPrivilegeParams, true, async () => ({})),
    ...systemCommands({ power: powerBackend }),
  );
  // Acknowledged delivery with a long timeout: only the IPA layer's acknowledgement can release
  // the power action within a test.
  const engine = new CommandEngine(registry, { deliveryAcknowledged: true, deliveryTimeoutMs: 60_000 });
  const session = new IpaSession({
    token: options.token === undefined ? TOKEN : options.token,
    nodeUuid: NODE_UUID,
  });
  session.tokenRequired = options.tokenRequired ?? true;
  const logger = options.logger ?? silentLogger();
  const extensions = new IpaExtensions({
    engine,
    session,
    bluefieldPresent: async () => bluefield.present,
    logger,
  });
  let finished = 0;
  const api = await startIpaApiServer({
    host: '127.0.0.1',
    port: 0,
    ...(options.tls ? { tls: options.tls } : {}),
    session,
    extensions,
    agentVersion: '0.1.0-test',
    logger,
    onCommandFinished: () => (finished += 1),
  });
  const ca = options.tls?.cert;
  return {
    api,
    engine,
    session,
    calls,
    behaviour,
    power,
    finished: () => finished,
    bluefield,
    device,
    deviceBytes,
    post: (name, params, query = `wait=true&agent_token=${TOKEN}`) =>
      call(`${api.url}/v1/commands/?${query}`, 'POST', {
        body: JSON.stringify({ name, params }),
        ...(ca ? { ca } : {}),
      }),
    get: (pathname) => call(`${api.url}${pathname}`, 'GET', ca ? { ca } : {}),
    close: () => api.close(),
  };
};

const result = (answer: Answer): IpaCommandResult => {
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body as unknown as IpaCommandResult;
};

const ASYNC = `wait=false&agent_token=${TOKEN}`;

/** Ironic's way of learning a step ended: GET /v1/commands/ (no token) until the last one left RUNNING. */
const pollLast = async (harness: Harness, name: string): Promise<IpaCommandResult> => {
  for (let attempt = 0; attempt < 200; attempt += 1) {
    const { body } = await harness.get('/v1/commands/');
    const commands = body.commands as IpaCommandResult[];
    const last = commands.filter((command) => command.command_name === name).at(-1);
    if (last && last.command_status !== 'RUNNING') return last;
    await sleep(10);
  }
  throw new Error(`${name} never finished`);
};

const cleanStep = (step: string, args: Record<string, unknown> = {}) => ({
  interface: 'deploy',
  step,
  args,
  abortable: true,
  priority: 10,
});

const cleanParams = (
  step: Record<string, unknown>,
  version: Record<string, string> = { generic_hardware_manager: '1.1' },
) => ({
  step,
  node: ironicNode(),
  ports: PORTS,
  clean_version: version,
});

const writeImageStep = (imageInfo: Record<string, unknown> = {}, configdrive: unknown = null) => ({
  interface: 'deploy',
  step: 'write_image',
  args: {
    image_info: {
      id: 'disk.img',
      urls: ['http://127.0.0.1:8080/disk.img'],
      disk_format: 'raw',
      container_format: null,
      stream_raw_images: true,
      checksum: 'e6065c4aa2ab1603008fc18410f579d4',
      os_hash_algo: 'sha256',
      os_hash_value: SHA256,
      node_uuid: NODE_UUID,
      ...imageInfo,
    },
    configdrive,
  },
});

const deployParams = (step: Record<string, unknown>, properties: Record<string, unknown> = {}) => ({
  step,
  node: ironicNode(properties),
  ports: PORTS,
  deploy_version: { generic_hardware_manager: '1.1' },
});

// ---- the tests -------------------------------------------------------------------------------

describe('IPA API: documents and routes', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness();
  });
  after(() => harness.close());

  it('serves the version documents and the status', async () => {
    const root = await harness.get('/');
    assert.equal(root.status, 200);
    assert.equal(root.headers['content-type'], 'application/json');
    const version = root.body.default_version as { id: string; links: Array<{ href: string }> };
    assert.equal(version.id, 'v1');
    assert.equal(version.links[0]?.href, `${harness.api.url}/v1/`);
    const v1 = await harness.get('/v1/');
    assert.equal(v1.body.id, 'v1');
    assert.ok(Array.isArray(v1.body.commands));
    for (const pathname of ['/v1/status', '/status', '/status/']) {
      const status = await harness.get(pathname);
      assert.equal(status.status, 200, pathname);
      assert.equal(status.body.version, '0.1.0-test');
      const startedAt = status.body.started_at as number;
      assert.ok(Math.abs(startedAt - Date.now() / 1000) < 60, `started_at ${startedAt}`);
    }
  });

  it('answers the command list on every alias, without a token', async () => {
    for (const pathname of ['/v1/commands/', '/v1/commands', '/commands/', '/commands']) {
      const answer = await harness.get(pathname);
      assert.equal(answer.status, 200, pathname);
      assert.deepEqual(answer.body, { commands: [] });
    }
  });

  it('answers 404 for an unknown path or command id, 405 for a wrong method, in IPA fault form', async () => {
    const missing = await harness.get('/v2/anything');
    assert.equal(missing.status, 404);
    assert.equal(missing.body.faultcode, 'Client');
    assert.equal(typeof missing.body.faultstring, 'string');
    const unknownId = await harness.get('/v1/commands/0b0b0b0b-0000-4000-8000-000000000000?wait=true');
    assert.equal(unknownId.status, 404);
    assert.match(unknownId.body.faultstring as string, /not found/);
    const put = await call(`${harness.api.url}/v1/commands/`, 'PUT', { body: '{}' });
    assert.equal(put.status, 405);
    assert.equal(put.headers.allow, 'GET, POST');
  });
});

describe('IPA API: POST /v1/commands/ checks', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness();
  });
  after(() => harness.close());

  const raw = (body: string | Buffer, query = `wait=true&agent_token=${TOKEN}`) =>
    call(`${harness.api.url}/v1/commands/?${query}`, 'POST', { body });

  it('answers 401 without the token or with a wrong one, and runs nothing', async () => {
    for (const query of ['wait=true', 'wait=true&agent_token=', 'wait=true&agent_token=wrong']) {
      const answer = await harness.post('clean.get_clean_steps', { node: ironicNode(), ports: PORTS }, query);
      assert.equal(answer.status, 401, query);
      assert.equal(answer.body.faultcode, 'Client');
      assert.match(answer.body.faultstring as string, /^Token invalid/);
    }
    assert.deepEqual((await harness.get('/v1/commands/')).body, { commands: [] });
  });

  it('refuses an unknown extension with 404 and an unknown command with 400, as IPA words it', async () => {
    const extension = await harness.post('nonesuch.get_clean_steps', {});
    assert.equal(extension.status, 404);
    assert.match(extension.body.faultstring as string, /Extension nonesuch not found/);
    const command = await harness.post('clean.nonesuch', {});
    assert.equal(command.status, 400);
    assert.equal(command.body.faultstring, 'Invalid command: Unknown command: nonesuch');
    const noDot = await harness.post('get_clean_steps', {});
    assert.equal(noDot.status, 400);
  });

  it('answers 400 to a body that is not JSON, not an object, or without name or object params', async () => {
    for (const body of [
      '{"name": "clean.get_clean_steps", ',
      '[]',
      '{"params": {}}',
      '{"name": "clean.get_clean_steps"}',
      '{"name": "clean.get_clean_steps", "params": []}',
      '{"name": "clean.get_clean_steps", "params": "x"}',
      '',
    ]) {
      const answer = await raw(body);
      assert.equal(answer.status, 400, body);
      assert.equal(answer.body.faultcode, 'Client');
      assert.match(answer.body.faultstring as string, /^Invalid content/, body);
    }
  });

  it('accepts a body of Ironic size, answers 413 past 1 MiB, and keeps serving', async () => {
    const node = ironicNode();
    const ok = await harness.post('clean.get_clean_steps', { node, ports: PORTS });
    assert.equal(ok.status, 200);
    const huge = JSON.stringify({
      name: 'clean.get_clean_steps',
      params: { node: { pad: 'x'.repeat(2 * 1024 * 1024) } },
    });
    const answer = await raw(huge);
    assert.equal(answer.status, 413);
    assert.match(answer.body.faultstring as string, /too large/);
    assert.equal((await harness.get('/v1/status')).status, 200);
  });

  it('fails a command whose params do not fit it, with HTTP 200 and InvalidCommandParamsError', async () => {
    const answer = result(await harness.post('standby.get_partition_uuids', { surprise: 1 }));
    assert.equal(answer.command_status, 'FAILED');
    assert.equal(answer.command_error?.type, 'InvalidCommandParamsError');
    assert.match(answer.command_error?.details ?? '', /^INVALID_PARAMS: params/);
  });
});

describe('IPA API: token before lookup', () => {
  it('serves an agent without a token only when Ironic does not require one', async () => {
    const open = await startHarness({ token: null, tokenRequired: false });
    try {
      assert.equal((await open.post('clean.get_clean_steps', {}, 'wait=true')).status, 200);
    } finally {
      await open.close();
    }
    const strict = await startHarness({ token: null, tokenRequired: true });
    try {
      const answer = await strict.post('clean.get_clean_steps', {}, 'wait=true');
      assert.equal(answer.status, 401);
      assert.equal(
        (await strict.post('clean.get_clean_steps', {}, `wait=true&agent_token=${TOKEN}`)).status,
        401,
      );
    } finally {
      await strict.close();
    }
  });
});

describe('IPA API: cleaning as Ironic runs it', () => {
  let harness: Harness;
  beforeEach(async () => {
    harness = await startHarness();
  });
  afterEach(() => harness.close());

  it('get_clean_steps answers the generic steps and version; BlueField steps only with a BlueField', async () => {
    const plain = result(await harness.post('clean.get_clean_steps', { node: ironicNode(), ports: PORTS }));
    assert.equal(plain.command_status, 'SUCCEEDED');
    assert.equal(plain.command_name, 'get_clean_steps');
    const steps = plain.command_result?.clean_steps as Record<
      string,
      Array<{ step: string; priority: number }>
    >;
    assert.deepEqual(Object.keys(steps), ['GenericHardwareManager']);
    assert.deepEqual(
      steps.GenericHardwareManager?.map(({ step, priority }) => [step, priority]),
      [
        ['erase_devices', 10],
        ['erase_devices_metadata', 99],
      ],
    );
    assert.deepEqual(plain.command_result?.hardware_manager_version, { generic_hardware_manager: '1.1' });
    harness.bluefield.present = true;
    const withDpu = result(await harness.post('clean.get_clean_steps', { node: ironicNode(), ports: PORTS }));
    const bluefield = (
      withDpu.command_result?.clean_steps as Record<string, Array<{ step: string; argsinfo: object }>>
    ).BlueFieldHardwareManager;
    assert.deepEqual(
      bluefield?.map((step) => step.step),
      ['bluefield_install_bfb', 'bluefield_set_mode', 'bluefield_set_host_privilege'],
    );
    assert.ok(bluefield?.every((step) => Object.keys(step.argsinfo).length > 0));
    assert.equal(harness.finished(), 0, 'a sync command calls for no heartbeat');
  });

  it('execute_clean_step answers RUNNING, is busy meanwhile, and ends with clean_result and the step', async () => {
    const gate = deferred();
    harness.behaviour.set('disk.erase_metadata', { gate: gate.promise });
    result(await harness.post('clean.get_clean_steps', { node: ironicNode(), ports: PORTS }));
    const step = cleanStep('erase_devices_metadata');
    const started = result(await harness.post('clean.execute_clean_step', cleanParams(step), ASYNC));
    assert.deepEqual(started, {
      id: started.id,
      command_name: 'execute_clean_step',
      command_status: 'RUNNING',
      command_error: null,
      command_result: null,
    });

    const busy = await harness.post('standby.get_partition_uuids', {});
    assert.equal(busy.status, 409);
    assert.match(busy.body.faultstring as string, /^Agent is busy/);
    const listed = (await harness.get('/v1/commands/')).body.commands as IpaCommandResult[];
    assert.deepEqual(
      listed.map((command) => [command.command_name, command.command_status]),
      [
        ['get_clean_steps', 'SUCCEEDED'],
        ['execute_clean_step', 'RUNNING'],
      ],
    );

    gate.release();
    const done = await pollLast(harness, 'execute_clean_step');
    assert.equal(done.id, started.id);
    assert.equal(done.command_status, 'SUCCEEDED');
    assert.deepEqual(done.command_result, {
      clean_result: { devices: [{ device: '/dev/sda', wiped: ['gpt'] }] },
      clean_step: step,
    });
    assert.deepEqual(harness.calls, [{ name: 'disk.erase_metadata', params: { all: true } }]);
    // The registry command ran under the IPA command's id.
    assert.equal(harness.engine.get(started.id)?.name, 'disk.erase_metadata');
    assert.equal(harness.finished(), 1);
    const byId = result(await harness.get(`/v1/commands/${started.id}`));
    assert.deepEqual(byId, done);
  });

  it('erase_devices runs disk.erase on every disk; wait=true answers with the end', async () => {
    const done = result(
      await harness.post(
        'clean.execute_clean_step',
        cleanParams(cleanStep('erase_devices')),
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    assert.equal(done.command_status, 'SUCCEEDED');
    assert.deepEqual(harness.calls, [{ name: 'disk.erase', params: { all: true } }]);
  });

  it('a failed step is FAILED with the code and message in details, not an HTTP error', async () => {
    harness.behaviour.set('disk.erase_metadata', {
      fail: () =>
        new AgentError('WIPE_FAILED', 'wipefs failed on /dev/sda', { details: { device: '/dev/sda' } }),
    });
    result(
      await harness.post('clean.execute_clean_step', cleanParams(cleanStep('erase_devices_metadata')), ASYNC),
    );
    const done = await pollLast(harness, 'execute_clean_step');
    assert.equal(done.command_status, 'FAILED');
    assert.equal(done.command_result, null);
    assert.deepEqual(done.command_error, {
      type: 'BlockDeviceEraseError',
      code: 500,
      message: 'Error erasing block device',
      details: 'WIPE_FAILED: wipefs failed on /dev/sda',
    });
    assert.equal(harness.finished(), 1);
  });

  it('a stale clean_version gives CLEAN_VERSION_MISMATCH and runs nothing', async () => {
    const answer = result(
      await harness.post(
        'clean.execute_clean_step',
        cleanParams(cleanStep('erase_devices_metadata'), { generic_hardware_manager: '1.0' }),
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    assert.equal(answer.command_status, 'CLEAN_VERSION_MISMATCH');
    assert.equal(answer.command_error?.type, 'VersionMismatch');
    assert.match(answer.command_error?.details ?? '', /^VERSION_MISMATCH: /);
    assert.deepEqual(harness.calls, []);
  });

  it('an unknown step, or a BlueField step without a BlueField, is FAILED with UNKNOWN_STEP', async () => {
    const unknown = result(
      await harness.post(
        'clean.execute_clean_step',
        cleanParams(cleanStep('burnin_cpu')),
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    assert.equal(unknown.command_status, 'FAILED');
    assert.match(
      unknown.command_error?.details ?? '',
      /^UNKNOWN_STEP: clean step deploy\.burnin_cpu is not offered/,
    );
    const dpu = result(
      await harness.post(
        'clean.execute_clean_step',
        cleanParams(cleanStep('bluefield_set_mode', { mode: 'dpu' })),
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    assert.match(dpu.command_error?.details ?? '', /needs a BlueField/);
    assert.deepEqual(harness.calls, []);
  });

  it('a generic step with args is refused, a malformed step is refused', async () => {
    const withArgs = result(
      await harness.post(
        'clean.execute_clean_step',
        cleanParams(cleanStep('erase_devices', { zeroize: true })),
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    assert.match(withArgs.command_error?.details ?? '', /step erase_devices takes no args/);
    const noName = result(
      await harness.post(
        'clean.execute_clean_step',
        cleanParams({ interface: 'deploy' }),
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    assert.equal(noName.command_error?.type, 'InvalidCommandParamsError');
    assert.match(noName.command_error?.details ?? '', /params\.step/);
    assert.deepEqual(harness.calls, []);
  });

  it('BlueField steps pass their args to the registry command, which validates them', async () => {
    harness.bluefield.present = true;
    const version = { generic_hardware_manager: '1.1', bluefield_hardware_manager: '1.0' };
    const ok = result(
      await harness.post(
        'clean.execute_clean_step',
        cleanParams(cleanStep('bluefield_set_mode', { mode: 'dpu', device: '0000:03:00.0' }), version),
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    assert.equal(ok.command_status, 'SUCCEEDED');
    assert.deepEqual(ok.command_result?.clean_result as object, { mode: 'dpu' });
    assert.deepEqual(harness.calls, [
      { name: 'bluefield.set_mode', params: { mode: 'dpu', device: '0000:03:00.0' } },
    ]);
    const bad = result(
      await harness.post(
        'clean.execute_clean_step',
        cleanParams(cleanStep('bluefield_set_mode', { mode: 'turbo' }), version),
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    assert.equal(bad.command_status, 'FAILED');
    assert.equal(bad.command_error?.type, 'InvalidCommandParamsError');
    assert.match(bad.command_error?.details ?? '', /bluefield\.set_mode refused its params: params\.mode/);
    assert.equal(harness.calls.length, 1);
  });

  it('collect_system_logs answers the archive as system_logs', async () => {
    const answer = result(await harness.post('log.collect_system_logs', {}));
    assert.equal(answer.command_status, 'SUCCEEDED');
    assert.deepEqual(answer.command_result, { system_logs: Buffer.from('a tar.gz').toString('base64') });
  });

  it('answers 409 while another front door runs an exclusive command on the engine', async () => {
    const gate = deferred();
    harness.behaviour.set('disk.erase', { gate: gate.promise });
    assert.ok(harness.engine.run('conductor-1', 'disk.erase', { all: true }).ok);
    const answer = await harness.post(
      'clean.execute_clean_step',
      cleanParams(cleanStep('erase_devices_metadata')),
      ASYNC,
    );
    assert.equal(answer.status, 409);
    assert.match(answer.body.faultstring as string, /^Agent is busy/);
    // A command that changes nothing still runs.
    assert.equal(result(await harness.post('clean.get_clean_steps', {})).command_status, 'SUCCEEDED');
    gate.release();
    await harness.engine.wait('conductor-1');
  });
});

describe('IPA API: a direct deploy as Ironic runs it', () => {
  let harness: Harness;
  beforeEach(async () => {
    harness = await startHarness();
  });
  afterEach(() => harness.close());

  it('before any write: get_partition_uuids is empty, install_bootloader fails NO_IMAGE_WRITTEN', async () => {
    assert.deepEqual(result(await harness.post('standby.get_partition_uuids', {})).command_result, {});
    result(
      await harness.post(
        'image.install_bootloader',
        { root_uuid: '0x53544942', target_boot_mode: 'uefi' },
        ASYNC,
      ),
    );
    const done = await pollLast(harness, 'install_bootloader');
    assert.equal(done.command_status, 'FAILED');
    assert.match(done.command_error?.details ?? '', /^NO_IMAGE_WRITTEN: /);
  });

  it('get_deploy_steps, write_image, get_partition_uuids, install_bootloader, power_off', async () => {
    const steps = result(await harness.post('deploy.get_deploy_steps', { node: ironicNode(), ports: PORTS }));
    const generic = (steps.command_result?.deploy_steps as Record<string, Array<{ step: string }>>)
      .GenericHardwareManager;
    assert.deepEqual(
      generic?.map((step) => step.step),
      ['write_image', 'erase_devices_metadata'],
    );

    const step = writeImageStep();
    const started = result(
      await harness.post(
        'deploy.execute_deploy_step',
        deployParams(step, { root_device: { serial: 'S123' } }),
        ASYNC,
      ),
    );
    assert.equal(started.command_status, 'RUNNING');
    const written = await pollLast(harness, 'execute_deploy_step');
    assert.equal(written.command_status, 'SUCCEEDED', JSON.stringify(written.command_error));
    assert.deepEqual(written.command_result, {
      deploy_result: {
        result: `prepare_image: image (disk.img) written to device ${harness.device} root_uuid=0x53544942`,
      },
      deploy_step: step,
    });
    assert.deepEqual(harness.calls, [
      {
        name: 'image.write',
        params: {
          url: 'http://127.0.0.1:8080/disk.img',
          checksum: { os_hash_algo: 'sha256', os_hash_value: SHA256 },
          disk_format: 'raw',
          root_device_hints: { serial: 'S123' },
        },
      },
    ]);

    const uuids = result(await harness.post('standby.get_partition_uuids', {}));
    assert.deepEqual(uuids.command_result, { 'root uuid': '0x53544942' });

    const posted = result(
      await harness.post(
        'image.install_bootloader',
        {
          root_uuid: '0x53544942',
          efi_system_part_uuid: null,
          prep_boot_part_uuid: null,
          target_boot_mode: 'uefi',
        },
        ASYNC,
      ),
    );
    // Ironic polls right after posting it: the answer waits for a quick check to end, so the
    // first poll does not cost Ironic a command_wait_interval.
    assert.equal(posted.command_status, 'SUCCEEDED');
    const bootloader = await pollLast(harness, 'install_bootloader');
    assert.equal(bootloader.command_status, 'SUCCEEDED', JSON.stringify(bootloader.command_error));
    assert.equal(bootloader.command_result, null);

    const powerOff = result(await harness.post('standby.power_off', {}, ASYNC));
    assert.equal(powerOff.command_status, 'RUNNING');
    await pollLast(harness, 'power_off');
    // The engine waits 60 s for an acknowledgement before it powers off on its own: within the
    // test, only the IPA layer's acknowledgement can have done it.
    for (let attempt = 0; attempt < 100 && !harness.power.includes('powerOff'); attempt += 1) await sleep(10);
    assert.deepEqual(harness.power, ['sync', 'powerOff']);
    assert.equal(harness.finished(), 3, 'one heartbeat per async command');
    const names = ((await harness.get('/v1/commands/')).body.commands as IpaCommandResult[]).map(
      (c) => c.command_name,
    );
    assert.deepEqual(names, [
      'get_deploy_steps',
      'execute_deploy_step',
      'get_partition_uuids',
      'install_bootloader',
      'power_off',
    ]);
  });

  it('install_bootloader fails on a root uuid that is not the disk written, unless told to ignore failures', async () => {
    result(
      await harness.post(
        'deploy.execute_deploy_step',
        deployParams(writeImageStep()),
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    const wrong = result(
      await harness.post(
        'image.install_bootloader',
        { root_uuid: '0xdeadbeef', target_boot_mode: 'uefi' },
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    assert.equal(wrong.command_status, 'FAILED');
    assert.match(
      wrong.command_error?.details ?? '',
      /^ROOT_UUID_MISMATCH: root uuid 0xdeadbeef is not the disk identifier 0x53544942/,
    );
    const ignored = result(
      await harness.post(
        'image.install_bootloader',
        { root_uuid: '0xdeadbeef', ignore_bootloader_failure: true },
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    assert.equal(ignored.command_status, 'SUCCEEDED');
    const unknownParam = result(
      await harness.post(
        'image.install_bootloader',
        { root_uuid: null, force: true },
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    assert.equal(unknownParam.command_error?.type, 'InvalidCommandParamsError');
  });

  it('install_bootloader fails when the written disk holds no partition table', async () => {
    harness.deviceBytes.next = Buffer.alloc(64 * 1024, 7);
    const written = result(
      await harness.post(
        'deploy.execute_deploy_step',
        deployParams(writeImageStep()),
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    assert.match(
      (written.command_result?.deploy_result as { result: string }).result,
      /root_uuid=0x07070707$/,
    );
    const answer = result(
      await harness.post(
        'image.install_bootloader',
        { root_uuid: '0x07070707' },
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    assert.equal(answer.command_status, 'FAILED');
    assert.match(answer.command_error?.details ?? '', /^PARTITION_TABLE_MISSING: no partitions found/);
  });

  it('tries the next URL when a download fails, under ids that follow the IPA command id', async () => {
    harness.behaviour.set('image.write', {
      fail: (params) =>
        String(params.url).includes('first')
          ? new AgentError('DOWNLOAD_FAILED', 'connection refused past the retries')
          : null,
    });
    const answer = result(
      await harness.post(
        'deploy.execute_deploy_step',
        deployParams(
          writeImageStep({ urls: ['http://first.invalid/disk.img', 'http://second.invalid/disk.img'] }),
        ),
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    assert.equal(answer.command_status, 'SUCCEEDED');
    assert.deepEqual(
      harness.calls.map((entry) => entry.params.url),
      ['http://first.invalid/disk.img', 'http://second.invalid/disk.img'],
    );
    assert.equal(harness.engine.get(answer.id)?.status, 'FAILED');
    assert.equal(harness.engine.get(`${answer.id}.2`)?.status, 'SUCCEEDED');
  });

  it('does not try another URL after a checksum mismatch, and reports it as ImageChecksumError', async () => {
    harness.behaviour.set('image.write', {
      fail: () => new AgentError('CHECKSUM_MISMATCH', "the image's sha256 is 00ff, expected " + SHA256),
    });
    const answer = result(
      await harness.post(
        'deploy.execute_deploy_step',
        deployParams(writeImageStep({ urls: ['http://a.invalid/disk.img', 'http://b.invalid/disk.img'] })),
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    assert.equal(answer.command_status, 'FAILED');
    assert.equal(answer.command_error?.type, 'ImageChecksumError');
    assert.equal(
      answer.command_error?.details,
      `CHECKSUM_MISMATCH: the image's sha256 is 00ff, expected ${SHA256}`,
    );
    assert.equal(harness.calls.length, 1);
    // Nothing was written: install_bootloader has no disk to check.
    assert.deepEqual(result(await harness.post('standby.get_partition_uuids', {})).command_result, {});
  });

  it('reports every URL when all downloads fail', async () => {
    harness.behaviour.set('image.write', {
      fail: (params) => new AgentError('DOWNLOAD_FAILED', `503 from ${params.url}`),
    });
    const answer = result(
      await harness.post(
        'deploy.execute_deploy_step',
        deployParams(writeImageStep({ urls: ['http://a.invalid/x', 'http://b.invalid/x'] })),
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    assert.equal(answer.command_error?.type, 'ImageDownloadError');
    assert.match(
      answer.command_error?.details ?? '',
      /^DOWNLOAD_FAILED: 2 image URLs failed; the last one \(http:\/\/b\.invalid\/x\)/,
    );
  });

  it('refuses a config drive with a clear message and writes nothing', async () => {
    const answer = result(
      await harness.post(
        'deploy.execute_deploy_step',
        deployParams(writeImageStep({}, 'H4sICAAAAAAAA2NvbmZpZy1kcml2ZQ==')),
        `wait=true&agent_token=${TOKEN}`,
      ),
    );
    assert.equal(answer.command_status, 'FAILED');
    assert.equal(answer.command_error?.type, 'InvalidCommandParamsError');
    assert.match(answer.command_error?.details ?? '', /config drive is not supported yet/);
    assert.deepEqual(harness.calls, []);
  });

  it('standby.sync and standby.run_image run system.sync and system.reboot', async () => {
    assert.equal(
      result(await harness.post('standby.sync', {}, `wait=false&agent_token=${TOKEN}`)).command_status,
      'SUCCEEDED',
    );
    assert.deepEqual(harness.power, ['sync']);
    result(await harness.post('standby.run_image', {}, ASYNC));
    await pollLast(harness, 'run_image');
    for (let attempt = 0; attempt < 100 && !harness.power.includes('reboot'); attempt += 1) await sleep(10);
    assert.deepEqual(harness.power, ['sync', 'sync', 'reboot']);
  });
});

describe('IPA API: whole-disk images made by the partitioning tools', { skip: skipPartitionTools }, () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness();
  });
  after(() => harness.close());

  const [parted, sgdisk, blkid] = partitionTools as [string, string, string];

  const makeImage = async (name: string, partition: (file: string) => Promise<void>): Promise<Buffer> => {
    const file = path.join(dir, name);
    await writeFile(file, Buffer.alloc(8 * 1024 * 1024));
    await partition(file);
    const { readFile } = await import('node:fs/promises');
    return readFile(file);
  };

  for (const [label, partition] of [
    [
      'msdos (parted)',
      (file: string) => sh(parted, ['-s', file, 'mklabel', 'msdos', 'mkpart', 'primary', '1MiB', '7MiB']),
    ],
    ['gpt (sgdisk)', (file: string) => sh(sgdisk, ['-n', '1:2048:+4M', '-t', '1:ef00', file])],
  ] as const) {
    it(`${label}: root uuid is what blkid reads, install_bootloader passes`, async () => {
      const image = await makeImage(`${label.split(' ')[0]}.img`, async (file) => {
        await partition(file);
      });
      harness.deviceBytes.next = image;
      result(
        await harness.post(
          'deploy.execute_deploy_step',
          deployParams(writeImageStep()),
          `wait=true&agent_token=${TOKEN}`,
        ),
      );
      const uuids = result(await harness.post('standby.get_partition_uuids', {}));
      const rootUuid = uuids.command_result?.['root uuid'] as string;
      assert.match(rootUuid, /^0x[0-9a-f]{8}$/);
      if (label.startsWith('msdos')) {
        // An independent reader of the same field: blkid's PTUUID of a DOS label is the signature.
        const ptuuid = (await sh(blkid, ['-p', '-o', 'value', '-s', 'PTUUID', harness.device])).trim();
        assert.equal(rootUuid, `0x${ptuuid}`);
      } else {
        assert.equal(rootUuid, `0x${image.readUInt32LE(440).toString(16).padStart(8, '0')}`);
      }
      const answer = result(
        await harness.post(
          'image.install_bootloader',
          { root_uuid: rootUuid, target_boot_mode: 'uefi' },
          `wait=true&agent_token=${TOKEN}`,
        ),
      );
      assert.equal(answer.command_status, 'SUCCEEDED', JSON.stringify(answer.command_error));
    });
  }
});

describe('IPA API: TLS', () => {
  it('serves HTTPS with the given certificate and refuses plain HTTP', async () => {
    const harness = await startHarness({ tls: { cert: pki.selfSigned.cert, key: pki.selfSigned.key } });
    try {
      assert.match(harness.api.url, /^https:\/\/127\.0\.0\.1:\d+$/);
      const status = await harness.get('/v1/status');
      assert.equal(status.status, 200);
      const steps = result(await harness.post('clean.get_clean_steps', { node: ironicNode(), ports: PORTS }));
      assert.equal(steps.command_status, 'SUCCEEDED');
      await assert.rejects(call(harness.api.url.replace('https:', 'http:') + '/v1/status', 'GET'));
      // A client that does not trust the certificate does not get through.
      await assert.rejects(call(`${harness.api.url}/v1/status`, 'GET', { ca: pki.servers.ec.cert }));
    } finally {
      await harness.close();
    }
  });
});

describe('IPA API: logging', () => {
  it('logs each request at debug level, never the token', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString('utf8'));
        done();
      },
    });
    const harness = await startHarness({ logger: pino({ level: 'debug' }, sink) });
    try {
      result(await harness.post('clean.get_clean_steps', { node: ironicNode(), ports: PORTS }));
      await harness.post('clean.get_clean_steps', {}, 'wait=true&agent_token=not-the-token');
      await sleep(20);
    } finally {
      await harness.close();
    }
    const requests = lines
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((line) => line.msg === 'IPA API request');
    assert.deepEqual(
      requests.map((line) => [line.method, line.path, line.query, line.status]),
      [
        ['POST', '/v1/commands/', '?wait=true', 200],
        ['POST', '/v1/commands/', '?wait=true', 401],
      ],
    );
    const all = lines.join('');
    assert.ok(!all.includes(TOKEN), 'the token is not logged');
    assert.ok(!all.includes('not-the-token'), 'a wrong token is not logged either');
  });
});
