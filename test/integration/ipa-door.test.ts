/**
 * The IPA front door of the real agent process (`bm-agent run` with ipa-* settings) against a
 * fake Ironic and inspector on 127.0.0.1: the inspection payload and its UUID feeding the lookup,
 * inspection alone, the agent API over TLS with the certificate sent as agent_verify_ca, and a
 * lookup that runs out of time ending the process with a reason. The flows under the real Ironic
 * are in ipa-ironic.test.ts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { createTestPki, type TestPki } from '../support/certs.js';
import { FakeIronic, type FakeRequest } from '../support/fake-ironic.js';
import { pickFreePort } from '../support/ironic/service.js';
import { spawnAgent, type SpawnedAgent } from '../support/spawn-agent.js';

const exec = promisify(execFile);
const MAC = '52:54:00:aa:bb:cd';
const cleanups: Array<() => Promise<unknown>> = [];

after(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
});

/** A host with one NIC: the MAC the lookup and the inspection must carry. */
const hostTree = async (): Promise<string> => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'bma-ipa-door-'));
  cleanups.push(() => rm(root, { recursive: true, force: true }));
  const device = path.join(root, 'devices', 'pci0000:00', '0000:00:03.0');
  const nic = path.join(root, 'class', 'net', 'eth0');
  await mkdir(device, { recursive: true });
  await mkdir(nic, { recursive: true });
  await symlink(device, path.join(nic, 'device'));
  await writeFile(path.join(nic, 'address'), `${MAC}\n`);
  await writeFile(path.join(nic, 'carrier'), '1\n');
  return root;
};

const waitFor = async <T>(what: string, probe: () => T | undefined, timeoutMs = 30_000): Promise<T> => {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
};

const startAgent = async (args: string[], sys: string): Promise<SpawnedAgent> => {
  const agent = await spawnAgent(['run'], {
    env: { BMA_SYS: sys, BMA_RUN: sys },
    cmdline: `BOOTIF=01-${MAC.replaceAll(':', '-')}`,
    args: ['--ipa-listen-host', '127.0.0.1', '--ipa-advertise-host', '127.0.0.1', ...args],
  });
  cleanups.push(() => agent.stop());
  return agent;
};

type Json = Record<string, unknown>;

describe('the IPA front door of the agent process', () => {
  it('posts the inspection data, then looks the node up with the UUID the inspector returned', async () => {
    const ironic = await FakeIronic.start();
    cleanups.push(() => ironic.stop());
    const node = ironic.addNode({ macs: [MAC], state: 'inspect wait' });
    const port = await pickFreePort();
    const agent = await startAgent(
      [
        '--ipa-inspection-callback-url',
        `${ironic.url}/v1/continue`,
        '--ipa-api-url',
        ironic.url,
        '--ipa-listen-port',
        String(port),
      ],
      await hostTree(),
    );
    const heartbeat = await waitFor('a heartbeat', () =>
      ironic.recorded.find((entry: FakeRequest) => entry.route === 'heartbeat' && entry.status === 202),
    );
    const inspection = ironic.recorded.find((entry) => entry.route === 'continue');
    assert.ok(inspection, 'the inspector was called before the lookup');
    const payload = inspection.body as Json;
    const inventory = payload.inventory as { interfaces: Array<{ mac_address: string }> };
    assert.deepEqual(
      inventory.interfaces.map((nic) => nic.mac_address),
      [MAC],
    );
    assert.equal(payload.boot_interface, MAC);
    assert.deepEqual((payload.configuration as Json).collectors, ['default', 'logs']);
    // The logs collector's archive is a real tar.gz holding the agent's own log.
    const archive = path.join(await mkdtemp(path.join(os.tmpdir(), 'bma-ipa-logs-')), 'logs.tar.gz');
    cleanups.push(() => rm(path.dirname(archive), { recursive: true, force: true }));
    await writeFile(archive, Buffer.from(String(payload.logs), 'base64'));
    const { stdout: listing } = await exec('tar', ['-tzf', archive]);
    assert.match(listing, /bm-agent\.log/);

    const lookup = ironic.recorded.find((entry) => entry.route === 'lookup' && entry.status === 200);
    assert.equal(lookup?.query.node_uuid, node.uuid);
    assert.equal((heartbeat.body as Json).callback_url, `http://127.0.0.1:${port}`);
    assert.ok(
      inspection.at < (lookup?.at ?? 0) && (lookup?.at ?? 0) < heartbeat.at,
      'inspection, lookup, then heartbeats',
    );
    // The agent API answers at the callback URL.
    const status = (await (await fetch(`http://127.0.0.1:${port}/v1/status`)).json()) as Json;
    assert.equal(typeof status.started_at, 'number');
    assert.equal(agent.child.exitCode, null);
  });

  it('with only an inspection callback it inspects and stays up without looking anything up', async () => {
    const ironic = await FakeIronic.start();
    cleanups.push(() => ironic.stop());
    ironic.addNode({ macs: [MAC], state: 'inspect wait' });
    const agent = await startAgent(
      ['--ipa-inspection-callback-url', `${ironic.url}/v1/continue`],
      await hostTree(),
    );
    await waitFor('the inspection', () => ironic.recorded.find((entry) => entry.route === 'continue'));
    await waitFor('the agent saying so', () =>
      agent.logs.find((record) => /no ipa-api-url/.test(String(record.msg))),
    );
    await sleep(500);
    assert.equal(agent.child.exitCode, null);
    assert.deepEqual(
      ironic.recorded.filter((entry) => entry.route === 'lookup'),
      [],
    );
  });

  it('serves the agent API over TLS and sends its certificate as agent_verify_ca', async () => {
    const pki: TestPki = await createTestPki();
    cleanups.push(() => pki.cleanup());
    const dir = await mkdtemp(path.join(os.tmpdir(), 'bma-ipa-tls-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const certPath = path.join(dir, 'agent.crt');
    const keyPath = path.join(dir, 'agent.key');
    await writeFile(certPath, pki.servers.ec.cert);
    await writeFile(keyPath, pki.servers.ec.key);
    const ironic = await FakeIronic.start();
    cleanups.push(() => ironic.stop());
    ironic.addNode({ macs: [MAC], state: 'clean wait' });
    const port = await pickFreePort();
    await startAgent(
      [
        '--ipa-api-url',
        ironic.url,
        '--ipa-listen-port',
        String(port),
        '--ipa-tls-cert',
        certPath,
        '--ipa-tls-key',
        keyPath,
      ],
      await hostTree(),
    );
    const heartbeat = await waitFor('a heartbeat', () =>
      ironic.recorded.find((entry) => entry.route === 'heartbeat' && entry.status === 202),
    );
    const body = heartbeat.body as Json;
    assert.equal(body.callback_url, `https://127.0.0.1:${port}`);
    assert.equal(body.agent_verify_ca, pki.servers.ec.cert);
    const ca = await readFile(pki.caPath);
    const answer = await new Promise<string>((resolve, reject) => {
      request(`https://127.0.0.1:${port}/v1/status`, { ca }, (response) => {
        let text = '';
        response.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
        response.on('end', () => resolve(text));
      })
        .on('error', reject)
        .end();
    });
    assert.match(answer, /"started_at"/);
  });

  it('exits 2 naming the setting when the agent API has a certificate without its key, or the CA is unreadable', async () => {
    const ironic = await FakeIronic.start();
    cleanups.push(() => ironic.stop());
    ironic.addNode({ macs: [MAC], state: 'clean wait' });
    const dir = await mkdtemp(path.join(os.tmpdir(), 'bma-ipa-badtls-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    await writeFile(path.join(dir, 'agent.crt'), 'not used\n');
    const sys = await hostTree();
    const halfPair = await startAgent(
      ['--ipa-api-url', ironic.url, '--ipa-tls-cert', path.join(dir, 'agent.crt')],
      sys,
    );
    assert.equal((await halfPair.exited).code, 2);
    assert.match(JSON.stringify(halfPair.logs), /bma-ipa-tls-cert and bma-ipa-tls-key go together/);
    const noCa = await startAgent(
      ['--ipa-api-url', ironic.url, '--conductor-ca', path.join(dir, 'missing.pem')],
      sys,
    );
    assert.equal((await noCa.exited).code, 2);
    assert.match(JSON.stringify(noCa.logs), /cannot read the CA bundle .*missing\.pem.*bma-conductor-ca/);
    // Neither got as far as serving Ironic.
    assert.deepEqual(
      ironic.recorded.filter((entry) => entry.route === 'heartbeat'),
      [],
    );
  });

  it('exits non-zero with the reason when Ironic never knows the node within the lookup timeout', async () => {
    const ironic = await FakeIronic.start();
    cleanups.push(() => ironic.stop());
    ironic.addNode({ macs: [MAC], state: 'manageable' });
    const agent = await startAgent(
      ['--ipa-api-url', ironic.url, '--ipa-lookup-timeout', '2', '--ipa-lookup-interval', '0.2'],
      await hostTree(),
    );
    const { code } = await agent.exited;
    assert.equal(code, 1);
    const failure = agent.logs.find((record) => record.msg === 'the Ironic front door stopped');
    assert.match(JSON.stringify(failure), /LOOKUP_FAILED/);
    assert.ok(ironic.recorded.filter((entry) => entry.route === 'lookup').length >= 2);
  });
});
