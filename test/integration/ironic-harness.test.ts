import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { access, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  compareApiVersions,
  IronicApiError,
  IronicClient,
  listDeployLogs,
  parseIronicError,
  RAMDISK_API_VERSION,
} from '../support/ironic/api.js';
import { renderIronicConf } from '../support/ironic/config.js';
import { IronicHarnessError, type IronicHarnessErrorCode } from '../support/ironic/errors.js';
import { ensureIronic, installSkipReason } from '../support/ironic/install.js';
import { boundSockets, processesMentioning, processGroupMembers } from '../support/ironic/processes.js';
import { startIronic, type IronicService } from '../support/ironic/service.js';

/*
 * The Ironic harness against Debian's real Ironic 21.4 (python3-ironic), installed on first use:
 * the all-in-one process on 127.0.0.1, a fake-hardware node driven to `clean wait`, and the
 * ramdisk lookup an agent would make there.
 */

const availability = await ensureIronic();
const skip = availability.ok ? false : availability.reason;
if (!availability.ok) process.stderr.write(`# skipping Ironic harness tests: ${availability.reason}\n`);
else if (availability.installedNow) {
  process.stderr.write(
    `# installed python3-ironic ${availability.version ?? '?'} in ${availability.installMs} ms\n`,
  );
}

const rejectsWith = async (
  promise: Promise<unknown>,
  code: IronicHarnessErrorCode,
  message?: RegExp,
): Promise<IronicHarnessError> => {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof IronicHarnessError, `expected ${code}, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (message) assert.match(error.message, message);
    return error;
  }
  assert.fail(`expected ${code}, but it succeeded`);
};

const exists = async (file: string): Promise<boolean> =>
  access(file).then(
    () => true,
    () => false,
  );

const randomMac = (): string =>
  `52:54:00:${[...randomBytes(3)].map((byte) => byte.toString(16).padStart(2, '0')).join(':')}`;

describe('Ironic harness helpers', () => {
  it("reads Ironic's JSON-in-JSON error bodies, and the other shapes errors come in", () => {
    const wrapped = JSON.stringify({
      error_message: JSON.stringify({
        faultcode: 'Client',
        faultstring: 'Node x could not be found.',
        debuginfo: null,
      }),
    });
    assert.equal(parseIronicError(wrapped), 'Node x could not be found.');
    assert.equal(
      parseIronicError(JSON.stringify({ error_message: { faultstring: 'already an object' } })),
      'already an object',
    );
    assert.equal(parseIronicError(JSON.stringify({ faultstring: 'bare fault' })), 'bare fault');
    assert.equal(parseIronicError(JSON.stringify({ error_message: 'not json inside' })), 'not json inside');
    assert.equal(parseIronicError('<html>502 Bad Gateway</html>'), '<html>502 Bad Gateway</html>');
    assert.equal(parseIronicError(''), '(empty body)');
  });

  it('compares API versions as numbers', () => {
    assert.ok(compareApiVersions('1.9', '1.68') < 0);
    assert.ok(compareApiVersions('1.82', '1.68') > 0);
    assert.equal(compareApiVersions('1.68', RAMDISK_API_VERSION), 0);
    assert.throws(() => compareApiVersions('v1', '1.1'), TypeError);
  });

  it('renders ironic.conf from options and refuses values that would break it', () => {
    const text = renderIronicConf({
      workDir: '/tmp/w',
      apiPort: 6123,
      heartbeatTimeoutS: 45,
      automatedClean: true,
      extra: { agent: { command_timeout: 7 }, neutron: { url: 'http://127.0.0.1:1' } },
    });
    assert.match(
      text,
      /^\[api\]\nhost_ip = 127\.0\.0\.1\n(.+\n)*port = 6123\nramdisk_heartbeat_timeout = 45\n/m,
    );
    assert.match(text, /^automated_clean = true$/m);
    assert.match(text, /^endpoint_override = http:\/\/127\.0\.0\.1:6123$/m);
    assert.match(text, /^connection = sqlite:\/\/\/\/tmp\/w\/state\/ironic\.sqlite$/m);
    assert.match(text, /^deploy_logs_local_path = \/tmp\/w\/log\/deploy_logs$/m);
    // An override replaces the default rather than adding a second line.
    assert.equal(text.match(/^command_timeout = /gm)?.length, 1);
    assert.match(text, /^command_timeout = 7$/m);
    assert.match(text, /^\[neutron\]\nurl = http:\/\/127\.0\.0\.1:1$/m);

    assert.throws(() => renderIronicConf({ workDir: '/tmp/w', apiPort: 0 }), /apiPort/);
    assert.throws(() => renderIronicConf({ workDir: 'relative', apiPort: 1 }), /absolute/);
    assert.throws(
      () => renderIronicConf({ workDir: '/tmp/w', apiPort: 1, commandWaitIntervalS: 0.5 }),
      /integer/,
    );
    assert.throws(
      () =>
        renderIronicConf({ workDir: '/tmp/w', apiPort: 1, extra: { api: { port: '1\nhost_ip = 0.0.0.0' } } }),
      /one line/,
    );
    assert.throws(
      () => renderIronicConf({ workDir: '/tmp/w', apiPort: 1, extra: { 'a]b': { x: 1 } } }),
      /section/,
    );
  });

  it("lists one node's deploy-log tarballs, oldest first", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'bma-deploy-logs-'));
    try {
      const uuid = randomUUID();
      const names = [
        `${uuid}_n1_cleaning_2026-11-25-17-20-01.tar.gz`,
        `${uuid}_n1_2026-11-25-17-10-00.tar.gz`,
        `${randomUUID()}_other_2026-11-25-17-00-00.tar.gz`,
        `${uuid}_n1_notes.txt`,
      ];
      for (const name of names) await writeFile(path.join(dir, name), '');
      assert.deepEqual(await listDeployLogs(dir, uuid), [
        path.join(dir, names[1] ?? ''),
        path.join(dir, names[0] ?? ''),
      ]);
      assert.deepEqual(await listDeployLogs(path.join(dir, 'missing'), uuid), []);
      await assert.rejects(listDeployLogs(dir, '../etc'), TypeError);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('gives a reason to skip only when installing cannot work here', async () => {
    assert.match(
      (await installSkipReason({ uid: 0, env: { BMA_IRONIC_INSTALL: '0' } })) ?? '',
      /BMA_IRONIC_INSTALL=0 forbids/,
    );
    assert.match((await installSkipReason({ uid: 1000, env: {} })) ?? '', /needs root/);
    const empty = await mkdtemp(path.join(os.tmpdir(), 'bma-no-apt-'));
    try {
      assert.match((await installSkipReason({ uid: 0, env: {}, searchPath: empty })) ?? '', /no apt-get/);
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
    if (process.getuid?.() === 0 && (await exists('/usr/bin/apt-get'))) {
      assert.equal(await installSkipReason({ env: {} }), null);
    }
  });
});

describe("Debian's Ironic all-in-one on 127.0.0.1", { skip }, () => {
  let service: IronicService | undefined;
  let client: IronicClient;
  const running = (): IronicService => {
    assert.ok(service, 'Ironic did not start');
    return service;
  };

  before(async () => {
    const started = Date.now();
    service = await startIronic();
    client = await IronicClient.connect(service.apiUrl);
    process.stderr.write(
      `# Ironic up in ${Date.now() - started} ms (schema ${service.dbsyncMs} ms, process to API ${service.startMs} ms)\n`,
    );
  });
  after(async () => {
    await service?.stop();
  });

  it('answers GET /v1 with a maximum version of at least 1.68, which the client speaks', async () => {
    const response = await fetch(`${running().apiUrl}/v1`);
    assert.equal(response.status, 200);
    const body = (await response.json()) as { version?: { version?: unknown } };
    const max = body.version?.version;
    assert.equal(typeof max, 'string');
    assert.ok(compareApiVersions(String(max), '1.68') >= 0, `max version ${String(max)}`);
    assert.equal(response.headers.get('x-openstack-ironic-api-maximum-version'), max);
    assert.equal(client.maxVersion, max);
    assert.equal(client.apiVersion, max);
  });

  it('listens on 127.0.0.1 only', async () => {
    const svc = running();
    const sockets = await boundSockets(await processGroupMembers(svc.pid));
    assert.ok(
      sockets.some((socket) => socket.protocol === 'tcp' && socket.port === svc.port),
      JSON.stringify(sockets),
    );
    for (const socket of sockets) assert.equal(socket.address, '127.0.0.1', JSON.stringify(socket));
  });

  it("turns an error answer into IronicApiError with Ironic's fault string", async () => {
    const missing = randomUUID();
    const error = await rejectsWith(client.getNode(missing), 'IRONIC_API_ERROR');
    assert.ok(error instanceof IronicApiError);
    assert.equal(error.status, 404);
    assert.equal(error.faultstring, `Node ${missing} could not be found.`);
  });

  it('enrolls a node, cleans it to `clean wait`, hands out the token once, and aborts', async (t) => {
    const mac = randomMac();
    const timed = async <T>(label: string, step: () => Promise<T>): Promise<T> => {
      const started = Date.now();
      const result = await step();
      t.diagnostic(`${label}: ${Date.now() - started} ms`);
      return result;
    };

    const node = await client.createNode({
      name: `harness-${mac.replaceAll(':', '')}`,
      rootDevice: { size: '>= 1' },
    });
    assert.equal(node.provisionState, 'enroll');
    assert.equal(node.driver, 'fake-hardware');
    assert.equal(node.raw.deploy_interface, 'direct');
    assert.equal(node.raw.network_interface, 'noop');
    assert.equal(node.properties.vendor, 'lenovo');
    assert.equal(node.properties.capabilities, 'boot_mode:uefi');
    assert.deepEqual(node.properties.root_device, { size: '>= 1' });
    const port = await client.createPort(node.uuid, mac);
    assert.equal(port.address, mac);
    assert.equal(port.nodeUuid, node.uuid);

    await client.setProvisionState(node.uuid, 'manage');
    await timed('enroll -> manageable', () =>
      client.waitForProvisionState(node.uuid, ['manageable'], { timeoutMs: 30_000 }),
    );
    const notYet = await rejectsWith(client.lookup([mac]), 'IRONIC_API_ERROR');
    assert.equal((notYet as IronicApiError).status, 404, 'no lookup while manageable');

    const patched = await client.patchNode(node.uuid, [
      { op: 'add', path: '/instance_info/image_source', value: 'http://127.0.0.1:1/disk.img' },
    ]);
    assert.equal(patched.instanceInfo.image_source, 'http://127.0.0.1:1/disk.img');

    const steps = [{ interface: 'deploy', step: 'erase_devices_metadata' }];
    await client.setProvisionState(node.uuid, 'clean', { cleanSteps: steps });
    const waiting = await timed('manageable -> clean wait', () =>
      client.waitForProvisionState(node.uuid, ['clean wait'], { timeoutMs: 30_000 }),
    );
    assert.equal(waiting.targetProvisionState, 'manageable');

    const first = await client.lookup([randomMac(), mac]);
    assert.equal(first.nodeUuid, node.uuid);
    assert.match(first.agentToken ?? '', /^[A-Za-z0-9_-]{43}$/);
    assert.equal(first.heartbeatTimeoutS, 30);
    assert.deepEqual((first.node.driver_internal_info as Record<string, unknown>).clean_steps, steps);
    const second = await client.lookup([mac]);
    assert.equal(second.agentToken, '******');

    await client.setProvisionState(node.uuid, 'abort');
    const aborted = await timed('clean wait -> abort', () =>
      client.waitForProvisionState(node.uuid, ['clean failed'], { timeoutMs: 30_000 }),
    );
    // Ironic 21.4 ends an aborted clean in `clean failed` (target still manageable), not in maintenance.
    assert.equal(aborted.lastError, 'By request, the clean operation was aborted');
    assert.equal(aborted.targetProvisionState, 'manageable');
    assert.equal(aborted.maintenance, false);
    assert.equal(aborted.fault, null);
    assert.equal(aborted.driverInternalInfo.agent_secret_token, undefined, 'the token is wiped');
    const gone = await rejectsWith(client.lookup([mac]), 'IRONIC_API_ERROR');
    assert.equal((gone as IronicApiError).status, 404);

    // Waiting for anything else ends at once with Ironic's reason, or after the timeout.
    const started = Date.now();
    await rejectsWith(
      client.waitForProvisionState(node.uuid, ['manageable'], { timeoutMs: 20_000 }),
      'IRONIC_NODE_FAILED',
      /went to "clean failed" while waiting for manageable: By request, the clean operation was aborted/,
    );
    assert.ok(Date.now() - started < 5000, 'failed fast');
    await rejectsWith(
      client.waitForProvisionState(node.uuid, ['active'], { timeoutMs: 700, failOn: [] }),
      'IRONIC_WAIT_TIMEOUT',
      /still "clean failed" \(target manageable\) after 700 ms/,
    );

    await client.setMaintenance(node.uuid, 'harness check');
    const held = await client.getNode(node.uuid);
    assert.equal(held.maintenance, true);
    assert.equal(held.maintenanceReason, 'harness check');
    await client.clearMaintenance(node.uuid);
    assert.equal((await client.getNode(node.uuid)).maintenance, false);

    await client.setProvisionState(node.uuid, 'manage');
    await timed('clean failed -> manageable', () =>
      client.waitForProvisionState(node.uuid, ['manageable'], { timeoutMs: 30_000 }),
    );
    assert.ok((await stat(running().deployLogsDir)).isDirectory());
  });

  it('stop() ends the whole process group and removes the work dir', async (t) => {
    const svc = running();
    assert.ok(svc.running());
    const started = Date.now();
    await svc.stop();
    t.diagnostic(`stop: ${Date.now() - started} ms`);
    assert.equal(svc.running(), false);
    assert.deepEqual(await processGroupMembers(svc.pid), []);
    assert.deepEqual(await processesMentioning(svc.confPath), []);
    assert.equal(await exists(svc.workDir), false);
  });

  it('a start that fails reports the log tail, and leaves no process or work dir', async () => {
    const error = await rejectsWith(
      startIronic({ extra: { DEFAULT: { enabled_hardware_types: 'no-such-hardware' } } }),
      'IRONIC_START_FAILED',
      /exited with code 1 before its API answered[\s\S]*no-such-hardware/,
    );
    const workDir = String(error.details.workDir);
    assert.equal(await exists(workDir), false);
    assert.deepEqual(await processesMentioning(path.join(workDir, 'ironic.conf')), []);
  });

  it('a start that times out stops the process and keeps the work dir when asked', async () => {
    const error = await rejectsWith(
      startIronic({ startTimeoutMs: 1, keepWorkDir: true }),
      'IRONIC_START_FAILED',
      /did not answer on http:\/\/127\.0\.0\.1:\d+\/v1 within 1 ms/,
    );
    const workDir = String(error.details.workDir);
    try {
      assert.ok(await exists(path.join(workDir, 'ironic.conf')));
      assert.deepEqual(await processesMentioning(path.join(workDir, 'ironic.conf')), []);
    } finally {
      await rm(workDir, { recursive: true, force: true });
    }
  });
});
