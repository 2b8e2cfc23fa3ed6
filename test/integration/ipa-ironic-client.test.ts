/**
 * The Ironic client side of the IPA front door against a real HTTP server that answers like
 * Ironic 21.4 (test/support/fake-ironic.ts): version discovery, lookup, heartbeats, the token's
 * life, inspection, and every fault the network and Ironic put in their way. Timers are real;
 * the intervals are made short through the options that exist for it.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { performance } from 'node:perf_hooks';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino, type Logger } from 'pino';
import { resolveCallbackUrl } from '../../agent/ipa/advertise.js';
import { IpaSession } from '../../agent/ipa/contracts.js';
import { Heartbeater, type HeartbeaterOptions } from '../../agent/ipa/heartbeater.js';
import {
  buildInspectionPayload,
  postInspection,
  type InspectionPayload,
} from '../../agent/ipa/inspection.js';
import { IronicApiError, IronicClient, type IronicClientOptions } from '../../agent/ipa/ironic-client.js';
import { IronicStatusTracker, type IronicStatus } from '../../agent/ipa/ironic-status.js';
import { lookupNode, type LookupOptions } from '../../agent/ipa/lookup.js';
import type { Inventory } from '../../agent/hardware/generic/inventory/types.js';
import { AgentError } from '../../agent/util/errors.js';
import { createTestPki, type TestPki } from '../support/certs.js';
import { FakeIronic, type FakeIronicOptions, type FakeNode } from '../support/fake-ironic.js';

const MAC = '52:54:00:12:34:56';
const OTHER_MAC = '52:54:00:ab:cd:ef';
const REQUEST_ID = 'req-0b8e3f3a-6a0e-4bd4-9a55-4a1f0d2c7e11';

interface Captured {
  logger: Logger;
  records: Array<{ level: number; msg: string; [key: string]: unknown }>;
}

const captureLog = (): Captured => {
  const records: Captured['records'] = [];
  const logger = pino(
    { level: 'debug' },
    { write: (line: string) => void records.push(JSON.parse(line) as Captured['records'][number]) },
  );
  return { logger, records };
};

const warnings = (captured: Captured): string[] =>
  captured.records.filter((record) => record.level >= 40).map((record) => record.msg);

const startFake = async (t: TestContext, options: FakeIronicOptions = {}): Promise<FakeIronic> => {
  const fake = await FakeIronic.start(options);
  t.after(() => fake.stop());
  return fake;
};

const clientFor = (fake: FakeIronic, options: Partial<IronicClientOptions> = {}): IronicClient =>
  new IronicClient({ apiUrl: fake.url, timeoutMs: 2000, ...options });

const isCode =
  (code: string, check: (error: AgentError) => boolean = () => true) =>
  (error: unknown): boolean =>
    AgentError.is(error) && error.code === code && check(error);

/** The fake records a request as it answers; the client handles the answer a moment later. */
const settle = (): Promise<void> => sleep(50);

/** A port nothing listens on: bound, then released. */
const closedPort = async (): Promise<number> => {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
};

const fastLookup = (
  client: IronicClient,
  session: IpaSession,
  extra: Partial<LookupOptions> = {},
): LookupOptions => ({
  client,
  session,
  macs: [MAC],
  timeoutMs: 3000,
  intervalMs: 10,
  maxIntervalMs: 30,
  conflictDelaysMs: [0],
  logger: pino({ level: 'silent' }),
  ...extra,
});

describe('IronicClient', () => {
  it('discovers the maximum version and sends each call at its own microversion, with the IPA headers', async (t) => {
    const fake = await startFake(t);
    fake.addNode({ macs: [MAC], state: 'clean wait' });
    const client = clientFor(fake, { requestId: REQUEST_ID });
    assert.deepEqual(await client.maxApiVersion(), [1, 82]);
    assert.deepEqual(await client.lookupApiVersion(), [1, 62]);
    assert.deepEqual(await client.heartbeatApiVersion(), [1, 68]);
    // Discovered once, then kept.
    assert.equal(fake.requests('root').length, 1);
    await client.send({ method: 'GET', path: '/v1/lookup', query: { addresses: MAC }, apiVersion: [1, 62] });

    const [root] = fake.requests('root');
    assert.equal(root?.headers['x-openstack-ironic-api-version'], undefined, 'GET / goes without a version');
    const [lookup] = fake.requests('lookup');
    assert.equal(lookup?.status, 200);
    assert.equal(lookup?.headers['x-openstack-ironic-api-version'], '1.62');
    assert.equal(lookup?.headers.accept, 'application/json');
    assert.equal(lookup?.headers['content-type'], 'application/json');
    assert.equal(lookup?.headers['x-openstack-request-id'], REQUEST_ID);
    assert.equal(lookup?.query.addresses, MAC);
  });

  it('keeps the API URL path prefix and sends no malformed request id', async (t) => {
    const fake = await startFake(t);
    const captured = captureLog();
    const client = new IronicClient({
      apiUrl: `${fake.url}/baremetal/`,
      requestId: 'req-nope',
      logger: captured.logger,
    });
    await assert.rejects(
      client.send({ method: 'GET', path: '/v1/lookup', apiVersion: [1, 62] }),
      (error: unknown) => error instanceof IronicApiError && error.status === 404,
    );
    const [request] = fake.requests('other');
    assert.equal(request?.path, '/baremetal/v1/lookup');
    assert.equal(request?.headers['x-openstack-request-id'], undefined);
    assert.ok(warnings(captured).some((msg) => /ipa-global-request-id/.test(msg)));
  });

  it('falls back to 1.31 while discovery fails, and asks again on the next call', async (t) => {
    const fake = await startFake(t, { maxVersion: '1.80' });
    fake.fault(
      'root',
      { kind: 'garbage' },
      { kind: 'status', status: 503 },
      { kind: 'reset' },
      {
        kind: 'raw',
        status: 200,
        body: JSON.stringify({ default_version: { version: 'v1' } }),
      },
    );
    const captured = captureLog();
    const client = clientFor(fake, { logger: captured.logger });
    for (let i = 0; i < 4; i += 1) assert.deepEqual(await client.maxApiVersion(), [1, 31]);
    assert.equal(client.knownApiVersion(), null);
    assert.deepEqual(await client.maxApiVersion(), [1, 80]);
    assert.deepEqual(await client.maxApiVersion(), [1, 80]);
    assert.equal(fake.requests('root').length, 5);
    assert.equal(warnings(captured).filter((msg) => /discovery failed/.test(msg)).length, 4);
  });

  it("turns Ironic's JSON-in-JSON error body into IronicApiError with the faultstring", async (t) => {
    const fake = await startFake(t);
    const client = clientFor(fake);
    // Without a version header the ramdisk endpoints do not exist.
    await assert.rejects(
      client.send({ method: 'GET', path: '/v1/lookup', query: { addresses: MAC }, apiVersion: null }),
      (error: unknown) =>
        error instanceof IronicApiError &&
        error.status === 404 &&
        error.faultstring === 'Resource could not be found.',
    );
    await assert.rejects(
      client.send({
        method: 'GET',
        path: '/v1/lookup',
        query: { addresses: 'not-a-mac' },
        apiVersion: [1, 62],
      }),
      (error: unknown) =>
        error instanceof IronicApiError &&
        error.status === 400 &&
        error.faultstring === "At least one of 'addresses' and 'node_uuid' parameters is required" &&
        error.details.faultcode === 'Client',
    );
    fake.fault('lookup', {
      kind: 'raw',
      status: 502,
      body: '<html>Bad Gateway</html>',
      contentType: 'text/html',
    });
    await assert.rejects(
      client.send({ method: 'GET', path: '/v1/lookup', apiVersion: [1, 62] }),
      (error: unknown) =>
        error instanceof IronicApiError &&
        error.status === 502 &&
        error.faultstring === null &&
        /Bad Gateway/.test(error.message),
    );
  });

  it('reports a reset, a refused connection and a slow answer as IRONIC_UNREACHABLE with the reason', async (t) => {
    const fake = await startFake(t);
    const client = clientFor(fake, { timeoutMs: 200 });
    fake.fault('root', { kind: 'reset' }, { kind: 'delay', ms: 1500 });
    const get = (c: IronicClient) => c.send({ method: 'GET', path: '', apiVersion: null });
    await assert.rejects(
      get(client),
      isCode('IRONIC_UNREACHABLE', (e) => e.details.reason === 'connection'),
    );
    const started = performance.now();
    await assert.rejects(
      get(client),
      isCode('IRONIC_UNREACHABLE', (e) => e.details.reason === 'timeout'),
    );
    const took = performance.now() - started;
    assert.ok(took >= 190 && took < 1000, `gave up after ${took} ms`);
    const refused = new IronicClient({ apiUrl: `http://127.0.0.1:${await closedPort()}` });
    await assert.rejects(
      get(refused),
      isCode(
        'IRONIC_UNREACHABLE',
        (e) => e.details.reason === 'connection' && /ECONNREFUSED/.test(e.message),
      ),
    );
  });

  it('refuses an answer larger than its limit', async (t) => {
    const fake = await startFake(t);
    fake.fault('lookup', { kind: 'raw', status: 200, body: `"${'x'.repeat(17 * 1024 * 1024)}"` });
    await assert.rejects(
      clientFor(fake).send({ method: 'GET', path: '/v1/lookup', apiVersion: [1, 62] }),
      isCode('IRONIC_UNREACHABLE', (e) => e.details.reason === 'too-large'),
    );
  });

  it('is cancelled by its signal while waiting for an answer', async (t) => {
    const fake = await startFake(t);
    fake.fault('root', { kind: 'delay', ms: 3000 });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const started = performance.now();
    await assert.rejects(
      clientFor(fake, { timeoutMs: 10_000 }).send({
        method: 'GET',
        path: '',
        apiVersion: null,
        signal: controller.signal,
      }),
      isCode('CANCELLED'),
    );
    assert.ok(performance.now() - started < 1000);
  });
});

describe('IronicClient over https', () => {
  let pki: TestPki;
  before(async () => {
    pki = await createTestPki();
  });
  after(async () => {
    await pki?.cleanup();
  });

  it('verifies Ironic with the CA bundle, refuses an unknown CA and skips checks only when insecure', async (t) => {
    const fake = await startFake(t, { tls: { key: pki.servers.ec.key, cert: pki.servers.ec.cert } });
    const get = (c: IronicClient) => c.send({ method: 'GET', path: '', apiVersion: null });
    const trusted = await IronicClient.create({ apiUrl: fake.url, caPath: pki.caPath });
    assert.equal((await get(trusted)).status, 200);
    assert.deepEqual(await trusted.maxApiVersion(), [1, 82]);
    for (const caPath of [null, pki.otherCaPath]) {
      const untrusting = await IronicClient.create({ apiUrl: fake.url, caPath });
      await assert.rejects(
        get(untrusting),
        isCode('IRONIC_UNREACHABLE', (e) => e.details.reason === 'tls'),
      );
    }
    const insecure = await IronicClient.create({ apiUrl: fake.url, insecure: true });
    assert.equal((await get(insecure)).status, 200);
  });
});

describe('lookupNode', () => {
  it('keeps asking through 404s until the node reaches clean wait, then fills the session', async (t) => {
    const fake = await startFake(t);
    const node = fake.addNode({ macs: [MAC, OTHER_MAC], state: 'manageable' });
    fake.onRequest((request) => {
      if (request.route === 'lookup' && fake.requests('lookup').length === 3)
        node.provisionState = 'clean wait';
    });
    const session = new IpaSession();
    const status = new IronicStatusTracker();
    const seen: IronicStatus[] = [];
    status.onChange((snapshot) => seen.push(snapshot));
    const result = await lookupNode(
      fastLookup(clientFor(fake), session, {
        macs: [' 52:54:00:12:34:56', 'bogus', OTHER_MAC.toUpperCase(), MAC, ''],
        status,
      }),
    );
    assert.equal(result.attempts, 4);
    assert.equal(result.nodeUuid, node.uuid);
    assert.equal(result.token, 'received');
    assert.equal(result.apiVersion, '1.62');
    assert.deepEqual(result.config.permitted_image_formats, ['raw', 'qcow2', 'iso']);
    assert.equal(session.nodeUuid, node.uuid);
    assert.equal(session.token, node.token);
    assert.equal(session.token?.length, 43);
    assert.equal(session.heartbeatTimeoutS, 30);
    assert.equal(session.tokenRequired, true);
    assert.equal((session.node as { uuid: string }).uuid, node.uuid);

    const lookups = fake.requests('lookup');
    assert.deepEqual(
      lookups.map((request) => request.status),
      [404, 404, 404, 200],
    );
    for (const request of lookups) {
      assert.equal(request.query.addresses, `${MAC},${OTHER_MAC}`);
      assert.equal(request.headers['x-openstack-ironic-api-version'], '1.62');
    }
    assert.ok(
      seen.some(
        (s) => s.state === 'looking-up' && s.attempts === 3 && s.lastErrorCode === 'IRONIC_API_ERROR',
      ),
    );
    const last = status.snapshot();
    assert.equal(last.nodeUuid, node.uuid);
    assert.equal(last.attempts, 0);
    assert.match(last.lastError ?? '', /404/);
  });

  it('sends node_uuid when inspection returned one', async (t) => {
    const fake = await startFake(t);
    const node = fake.addNode({ macs: [OTHER_MAC], state: 'inspect wait' });
    const session = new IpaSession();
    await lookupNode(fastLookup(clientFor(fake), session, { nodeUuid: node.uuid }));
    assert.equal(fake.requests('lookup')[0]?.query.node_uuid, node.uuid);
    assert.equal(session.nodeUuid, node.uuid);
  });

  it('waits longer after a 409 (node locked by the conductor)', async (t) => {
    const fake = await startFake(t);
    const node = fake.addNode({ macs: [MAC], state: 'clean wait' });
    node.locked = true;
    fake.onRequest((request) => {
      if (request.route === 'lookup') node.locked = false;
    });
    const session = new IpaSession();
    const captured = captureLog();
    await lookupNode(
      fastLookup(clientFor(fake), session, { conflictDelaysMs: [250, 500], logger: captured.logger }),
    );
    const [first, second] = fake.requests('lookup');
    assert.equal(first?.status, 409);
    assert.equal(second?.status, 200);
    const gap = (second?.at ?? 0) - (first?.at ?? 0);
    assert.ok(gap >= 250, `only ${gap} ms between the 409 and the next lookup`);
    assert.ok(warnings(captured).some((msg) => /locked/.test(msg)));
  });

  it('retries a reset, garbage, an answer without node uuid, a 503 and an answer slower than the request timeout', async (t) => {
    const fake = await startFake(t);
    const node = fake.addNode({ macs: [MAC], state: 'wait call-back' });
    fake.fault(
      'lookup',
      { kind: 'reset' },
      { kind: 'garbage' },
      { kind: 'raw', status: 200, body: JSON.stringify({ node: { uuid: 'not-a-uuid' }, config: {} }) },
      { kind: 'raw', status: 200, body: JSON.stringify({ config: { heartbeat_timeout: 5 } }) },
      { kind: 'status', status: 503, faultstring: 'Service Unavailable' },
      { kind: 'delay', ms: 800 },
      { kind: 'raw', status: 204, body: '' },
    );
    const session = new IpaSession();
    const status = new IronicStatusTracker();
    const result = await lookupNode(fastLookup(clientFor(fake, { timeoutMs: 200 }), session, { status }));
    assert.equal(result.attempts, 8);
    assert.equal(session.nodeUuid, node.uuid);
    assert.equal(fake.requests('lookup').length >= 7, true);
    assert.equal(status.snapshot().attempts, 0);
  });

  it('gives up after the timeout with LOOKUP_FAILED saying what to check', async (t) => {
    const fake = await startFake(t);
    fake.addNode({ macs: [MAC], state: 'available' });
    const status = new IronicStatusTracker();
    const started = performance.now();
    await assert.rejects(
      lookupNode(
        fastLookup(clientFor(fake), new IpaSession(), { timeoutMs: 400, maxIntervalMs: 50, status }),
      ),
      isCode(
        'LOOKUP_FAILED',
        (e) =>
          /within 0\.4 s/.test(e.message) &&
          /clean wait/.test(e.message) &&
          e.message.includes(MAC) &&
          e.details.lastStatus === 404 &&
          typeof e.details.attempts === 'number' &&
          e.details.attempts >= 5,
      ),
    );
    const took = performance.now() - started;
    assert.ok(took >= 400 && took < 1500, `took ${took} ms`);
    const snapshot = status.snapshot();
    assert.equal(snapshot.state, 'stopped');
    assert.ok(snapshot.attempts >= 5);
    assert.equal(snapshot.lastErrorCode, 'IRONIC_API_ERROR');
  });

  it('points at ipa-api-url when Ironic never answers', async () => {
    const client = new IronicClient({ apiUrl: `http://127.0.0.1:${await closedPort()}`, timeoutMs: 500 });
    await assert.rejects(
      lookupNode(fastLookup(client, new IpaSession(), { timeoutMs: 200 })),
      isCode(
        'LOOKUP_FAILED',
        (e) => /ipa-api-url/.test(e.message) && e.details.lastCode === 'IRONIC_UNREACHABLE',
      ),
    );
  });

  it('keeps a token given in advance when a later lookup gets "******", with a warning', async (t) => {
    const fake = await startFake(t);
    const node = fake.addNode({ macs: [MAC], state: 'clean wait' });
    const client = clientFor(fake);
    const first = new IpaSession();
    await lookupNode(fastLookup(client, first));
    const preset = new IpaSession({ token: first.token });
    const captured = captureLog();
    const result = await lookupNode(fastLookup(client, preset, { logger: captured.logger }));
    assert.equal(result.token, 'kept');
    assert.equal(preset.token, node.token);
    assert.equal(preset.nodeUuid, node.uuid);
    assert.ok(warnings(captured).some((msg) => /masked/.test(msg) && /keeping/.test(msg)));
  });

  it('without a token of its own, a masked answer is retried until Ironic wipes the token, or fails saying why', async (t) => {
    const fake = await startFake(t);
    const node = fake.addNode({ macs: [MAC], state: 'clean wait' });
    const client = clientFor(fake);
    await lookupNode(fastLookup(client, new IpaSession()));
    const stale = node.token;

    await assert.rejects(
      lookupNode(fastLookup(client, new IpaSession(), { timeoutMs: 200 })),
      isCode('LOOKUP_FAILED', (e) => /earlier agent/.test(e.message) && /ipa-agent-token/.test(e.message)),
    );
    assert.ok(fake.requests('lookup').length >= 3);

    // The conductor reboots the node: the token goes, and the next lookup gets a new one.
    const before = fake.requests('lookup').length;
    fake.onRequest((request) => {
      if (request.route === 'lookup' && fake.requests('lookup').length === before + 2)
        fake.wipeToken(node.uuid);
    });
    const session = new IpaSession();
    const result = await lookupNode(fastLookup(client, session));
    assert.equal(result.token, 'received');
    assert.equal(result.attempts, 3);
    assert.notEqual(session.token, stale);
    assert.equal(session.token, node.token);
  });

  it('ignores a token too short to be one', async (t) => {
    const fake = await startFake(t);
    const node = fake.addNode({ macs: [MAC], state: 'clean wait' });
    const answer = (required: boolean) =>
      JSON.stringify({
        node: { uuid: node.uuid },
        config: { heartbeat_timeout: 60, agent_token: 'short', agent_token_required: required },
      });
    fake.fault(
      'lookup',
      { kind: 'raw', status: 200, body: answer(true) },
      { kind: 'raw', status: 200, body: answer(false) },
    );
    const session = new IpaSession();
    const result = await lookupNode(fastLookup(clientFor(fake), session));
    // The first answer required a token it did not give: retried; the second does not require one.
    assert.equal(result.attempts, 2);
    assert.equal(result.token, 'none');
    assert.equal(session.token, null);
    assert.equal(session.tokenRequired, false);
    assert.equal(session.heartbeatTimeoutS, 60);
  });

  it("reads an old Ironic's answer without config, heartbeat_timeout at the top level", async (t) => {
    const fake = await startFake(t, { legacyLookup: true, heartbeatTimeout: 120 });
    fake.addNode({ macs: [MAC], state: 'clean wait' });
    const session = new IpaSession();
    const result = await lookupNode(fastLookup(clientFor(fake), session));
    assert.deepEqual(result.config, {});
    assert.equal(session.heartbeatTimeoutS, 120);
    assert.equal(session.tokenRequired, false);
  });

  it('recovers from a failed version discovery instead of keeping a lookup that brought no token', async (t) => {
    const fake = await startFake(t);
    const node = fake.addNode({ macs: [MAC], state: 'clean wait' });
    fake.fault('root', { kind: 'garbage' });
    const session = new IpaSession();
    const result = await lookupNode(fastLookup(clientFor(fake), session));
    assert.deepEqual(
      fake.requests('lookup').map((request) => request.headers['x-openstack-ironic-api-version']),
      ['1.31', '1.62'],
    );
    assert.equal(result.apiVersion, '1.62');
    assert.equal(session.token, node.token);
  });

  it('fails at once when there is no MAC to look up with', async (t) => {
    const fake = await startFake(t);
    await assert.rejects(
      lookupNode(fastLookup(clientFor(fake), new IpaSession(), { macs: ['', 'zz:zz'] })),
      isCode('LOOKUP_FAILED', (e) => /no MAC/.test(e.message)),
    );
    assert.equal(fake.requests().length, 0);
  });

  it('is cancelled by its signal while waiting between attempts', async (t) => {
    const fake = await startFake(t);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const started = performance.now();
    await assert.rejects(
      lookupNode(
        fastLookup(clientFor(fake), new IpaSession(), {
          timeoutMs: 60_000,
          intervalMs: 5000,
          maxIntervalMs: 10_000,
          signal: controller.signal,
        }),
      ),
      isCode('CANCELLED'),
    );
    assert.ok(performance.now() - started < 1000);
  });
});

interface Beating {
  fake: FakeIronic;
  node: FakeNode;
  client: IronicClient;
  session: IpaSession;
  heartbeater: Heartbeater;
  rejected: IronicApiError[];
  status: IronicStatusTracker;
}

/** A node in clean wait, looked up, and a heartbeater for it (not started). */
const beating = async (
  t: TestContext,
  options: Partial<HeartbeaterOptions> & { heartbeatTimeoutS?: number; apiVersion?: string } = {},
): Promise<Beating> => {
  const fake = await startFake(t);
  const node = fake.addNode({ macs: [MAC], state: 'clean wait' });
  const client = clientFor(fake, options.apiVersion ? { apiVersion: options.apiVersion } : {});
  const session = new IpaSession();
  const status = new IronicStatusTracker();
  await lookupNode(fastLookup(client, session, { status }));
  session.heartbeatTimeoutS = options.heartbeatTimeoutS ?? 100;
  const rejected: IronicApiError[] = [];
  const heartbeater = new Heartbeater({
    client,
    session,
    callbackUrl: () => 'http://192.0.2.10:9999',
    agentVersion: '0.1.0',
    onTokenRejected: (error) => void rejected.push(error),
    logger: pino({ level: 'silent' }),
    status,
    errorRetryMs: 100,
    forceSpacingMs: 300,
    ...options,
  });
  t.after(() => heartbeater.stop());
  return { fake, node, client, session, heartbeater, rejected, status };
};

describe('Heartbeater', () => {
  it('beats at once, then every heartbeat_timeout x U(0.3, 0.6), with what Ironic requires', async (t) => {
    const { fake, node, session, heartbeater, status } = await beating(t, { heartbeatTimeoutS: 0.5 });
    const started = performance.now();
    heartbeater.start();
    const beats = await fake.waitFor('heartbeat', 5);
    await heartbeater.stop();
    assert.ok((beats[0]?.at ?? Infinity) - started < 100, 'the first heartbeat goes out at once');
    for (let i = 1; i < 5; i += 1) {
      const gap = (beats[i]?.at ?? 0) - (beats[i - 1]?.at ?? 0);
      assert.ok(gap >= 145 && gap <= 380, `gap ${i}: ${gap} ms, expected 150-300`);
    }
    const [first] = beats;
    assert.equal(first?.path, `/v1/heartbeat/${node.uuid}`);
    assert.equal(first?.status, 202);
    assert.equal(first?.headers['x-openstack-ironic-api-version'], '1.68');
    assert.deepEqual(first?.body, {
      callback_url: 'http://192.0.2.10:9999',
      agent_token: session.token,
      agent_version: '0.1.0',
    });
    assert.equal(node.agentUrl, 'http://192.0.2.10:9999');
    const snapshot = status.snapshot();
    assert.equal(snapshot.state, 'stopped');
    assert.equal(snapshot.nodeUuid, node.uuid);
    assert.equal(snapshot.apiVersion, '1.68');
    assert.ok(snapshot.lastHeartbeatAt !== null && Date.now() - Date.parse(snapshot.lastHeartbeatAt) < 2000);
  });

  it('retries a failed heartbeat on the error tick, then goes back to the normal interval', async (t) => {
    const { fake, heartbeater, status } = await beating(t);
    fake.fault(
      'heartbeat',
      { kind: 'status', status: 500, faultstring: 'boom' },
      { kind: 'reset' },
      {
        kind: 'status',
        status: 409,
        faultstring: 'Node is locked',
      },
    );
    const seen: IronicStatus[] = [];
    status.onChange((snapshot) => seen.push(snapshot));
    heartbeater.start();
    const beats = await fake.waitFor('heartbeat', 4);
    assert.deepEqual(
      beats.map((beat) => beat.status),
      [500, 0, 409, 202],
    );
    await settle();
    for (let i = 1; i < 4; i += 1) {
      const gap = (beats[i]?.at ?? 0) - (beats[i - 1]?.at ?? 0);
      assert.ok(gap >= 95 && gap < 400, `retry ${i} after ${gap} ms, expected the 100 ms tick`);
    }
    assert.ok(
      seen.some((s) => s.state === 'retrying' && s.attempts === 3 && s.lastErrorCode === 'IRONIC_API_ERROR'),
    );
    assert.ok(seen.some((s) => s.state === 'retrying' && s.lastErrorCode === 'IRONIC_UNREACHABLE'));
    const now = status.snapshot();
    assert.equal(now.state, 'heartbeating');
    assert.equal(now.attempts, 0);
    assert.ok(
      now.nextAttemptAt !== null && Date.parse(now.nextAttemptAt) - Date.now() > 20_000,
      'next at 30-60 s',
    );
    await sleep(300);
    assert.equal(fake.requests('heartbeat').length, 4);
  });

  it('stops and calls onTokenRejected once when Ironic wiped the token; a new lookup and start() resume', async (t) => {
    const { fake, node, client, session, heartbeater, rejected, status } = await beating(t, {
      forceSpacingMs: 0,
    });
    heartbeater.start();
    await fake.waitFor('heartbeat', 1);
    const oldToken = session.token;
    fake.wipeToken(node.uuid);
    heartbeater.force();
    await fake.waitFor('heartbeat', 2);
    await sleep(400);
    // Four error ticks went by: a rejected token must not be sent again and again.
    assert.equal(fake.requests('heartbeat').length, 2);
    assert.equal(rejected.length, 1);
    assert.equal(rejected[0]?.faultstring, 'Invalid or missing agent token received.');
    assert.equal(session.token, null);
    assert.equal(heartbeater.running, false);
    assert.equal(status.snapshot().state, 'stopped');
    assert.equal(status.snapshot().lastErrorCode, 'IRONIC_API_ERROR');

    await lookupNode(fastLookup(client, session));
    assert.ok(session.token && session.token !== oldToken);
    heartbeater.start();
    const beats = await fake.waitFor('heartbeat', 3);
    assert.equal(beats[2]?.status, 202);
    assert.equal((beats[2]?.body as { agent_token: string }).agent_token, session.token);
    assert.equal(status.snapshot().state, 'heartbeating');
  });

  it('spaces a restart after a token rejection by the error tick, so a refused token cannot loop', async (t) => {
    const { fake, node, session, heartbeater, rejected } = await beating(t, { errorRetryMs: 300 });
    session.token = 'x'.repeat(43);
    heartbeater.start();
    await fake.waitFor('heartbeat', 1);
    await settle();
    assert.equal(rejected.length, 1);
    session.token = 'y'.repeat(43);
    heartbeater.start();
    const beats = await fake.waitFor('heartbeat', 2);
    const gap = (beats[1]?.at ?? 0) - (beats[0]?.at ?? 0);
    assert.ok(gap >= 290, `restarted after only ${gap} ms`);
    await settle();
    assert.equal(rejected.length, 2);
    assert.equal(node.agentUrl, null);
  });

  it('treats a missing token as a rejection too', async (t) => {
    const { fake, session, heartbeater, rejected } = await beating(t);
    session.forgetToken();
    heartbeater.start();
    await fake.waitFor('heartbeat', 1);
    await settle();
    assert.equal(rejected[0]?.faultstring, 'Agent token is required for heartbeat processing.');
    assert.equal(
      fake.requests('heartbeat')[0]?.body && 'agent_token' in (fake.requests('heartbeat')[0]?.body as object),
      false,
    );
  });

  it('does not take other refusals for a token problem: a changed callback URL is retried on the tick', async (t) => {
    let callback = 'http://192.0.2.10:9999';
    const { fake, heartbeater, rejected, status } = await beating(t, { callbackUrl: () => callback });
    heartbeater.start();
    await fake.waitFor('heartbeat', 1);
    callback = 'http://192.0.2.11:9999';
    heartbeater.force();
    const beats = await fake.waitFor('heartbeat', 3);
    assert.deepEqual(
      beats.map((beat) => beat.status),
      [202, 400, 400],
    );
    await settle();
    assert.equal(rejected.length, 0);
    assert.equal(status.snapshot().state, 'retrying');
    assert.match(status.snapshot().lastError ?? '', /callback_url/);
  });

  it('force(): at once when the last success is old enough, else once the spacing is up', async (t) => {
    const { fake, heartbeater } = await beating(t, { forceSpacingMs: 300 });
    heartbeater.start();
    await fake.waitFor('heartbeat', 1);
    heartbeater.force();
    heartbeater.force();
    const early = await fake.waitFor('heartbeat', 2);
    const gap = (early[1]?.at ?? 0) - (early[0]?.at ?? 0);
    assert.ok(gap >= 290 && gap < 600, `forced heartbeat after ${gap} ms, expected 300`);
    await sleep(350);
    const forcedAt = performance.now();
    heartbeater.force();
    const late = await fake.waitFor('heartbeat', 3);
    assert.ok((late[2]?.at ?? Infinity) - forcedAt < 100, 'sent at once');
    await sleep(100);
    assert.equal(fake.requests('heartbeat').length, 3, 'two forces in a row make one heartbeat');
  });

  it('force() during a heartbeat in flight sends one more after it', async (t) => {
    const { fake, heartbeater } = await beating(t, { forceSpacingMs: 100 });
    fake.fault('heartbeat', { kind: 'delay', ms: 200 });
    heartbeater.start();
    await sleep(50);
    heartbeater.force();
    const beats = await fake.waitFor('heartbeat', 2);
    const gap = (beats[1]?.at ?? 0) - (beats[0]?.at ?? 0);
    // The first arrived at 0 and was answered at about 200; the second goes 100 ms after that.
    assert.ok(gap >= 290 && gap < 700, `second heartbeat ${gap} ms after the first, expected about 300`);
  });

  it('stop() cancels a heartbeat in flight and nothing is sent after it', async (t) => {
    const { fake, heartbeater, status } = await beating(t, { heartbeatTimeoutS: 0.2 });
    fake.fault('heartbeat', { kind: 'delay', ms: 1500 });
    heartbeater.start();
    await sleep(100);
    const started = performance.now();
    await heartbeater.stop();
    assert.ok(performance.now() - started < 300, 'stop() does not wait for the answer');
    heartbeater.force();
    await sleep(400);
    assert.equal(fake.requests('heartbeat').length, 0);
    assert.equal(status.snapshot().state, 'stopped');
    assert.equal(status.snapshot().nextAttemptAt, null);
  });

  it('sends agent_verify_ca from 1.68 on, and leaves it out below', async (t) => {
    const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
    const at168 = await beating(t, { verifyCa: pem, apiVersion: '1.68' });
    at168.heartbeater.start();
    const [beat] = await at168.fake.waitFor('heartbeat', 1);
    assert.equal(beat?.status, 202);
    assert.equal((beat?.body as { agent_verify_ca?: string }).agent_verify_ca, pem);
    assert.equal(at168.node.agentVerifyCa, pem);

    const at162 = await beating(t, { verifyCa: () => pem, apiVersion: '1.62' });
    at162.heartbeater.start();
    const [older] = await at162.fake.waitFor('heartbeat', 1);
    assert.equal(older?.status, 202);
    assert.equal(older?.headers['x-openstack-ironic-api-version'], '1.62');
    assert.equal('agent_verify_ca' in (older?.body as object), false);
  });

  it('refuses to start before a lookup gave a node UUID', () => {
    const heartbeater = new Heartbeater({
      client: new IronicClient({ apiUrl: 'http://127.0.0.1:9' }),
      session: new IpaSession(),
      callbackUrl: () => 'http://192.0.2.10:9999',
      agentVersion: '0.1.0',
      onTokenRejected: () => undefined,
      logger: pino({ level: 'silent' }),
    });
    assert.throws(() => heartbeater.start(), isCode('INTERNAL'));
    assert.equal(heartbeater.status.state, 'idle');
  });
});

describe('callback URL from the real routing table', () => {
  it('is the source address of the route to a literal Ironic address', async () => {
    assert.equal(
      await resolveCallbackUrl({ apiUrl: 'http://127.0.0.1:6385', attempts: 1 }),
      'http://127.0.0.1:9999',
    );
  });

  it('resolves a host name first, and brackets an IPv6 source', async (t) => {
    const url = await resolveCallbackUrl({
      apiUrl: 'http://localhost:6385',
      protocol: 'https',
      port: 8443,
      attempts: 1,
    });
    assert.match(url, /^https:\/\/(127\.0\.0\.1|\[::1\]):8443$/);
    try {
      assert.equal(
        await resolveCallbackUrl({ apiUrl: 'http://[::1]:6385', attempts: 1 }),
        'http://[::1]:9999',
      );
    } catch (error) {
      if (AgentError.is(error) && error.code === 'ADVERTISE_ADDRESS_NOT_FOUND')
        t.skip('no IPv6 loopback here');
      else throw error;
    }
  });
});

describe('postInspection', () => {
  const inventory = (mac: string): Inventory =>
    ({
      interfaces: [{ name: 'eth0', mac_address: mac }],
      disks: [],
      pci_devices: [],
    }) as unknown as Inventory;
  const payload = (mac = MAC): InspectionPayload =>
    buildInspectionPayload({ inventory: inventory(mac), bootInterface: mac, collectors: ['default'] });
  const silent = pino({ level: 'silent' });

  it("posts the payload and returns the node's UUID from the answer", async (t) => {
    const fake = await startFake(t);
    const node = fake.addNode({ macs: [MAC], state: 'inspect wait' });
    const outcome = await postInspection({
      url: `${fake.url}/v1/continue`,
      payload: payload(),
      logger: silent,
    });
    assert.deepEqual(outcome, { ok: true, status: 200, uuid: node.uuid });
    const [request] = fake.requests('continue');
    assert.deepEqual(request?.body, JSON.parse(JSON.stringify(payload())));
    assert.equal(request?.headers['content-type'], 'application/json');
  });

  it('returns a refusal as a failure, once, without throwing', async (t) => {
    const fake = await startFake(t);
    const captured = captureLog();
    const outcome = await postInspection({
      url: `${fake.url}/v1/continue`,
      payload: payload(OTHER_MAC),
      logger: captured.logger,
      retryDelayMs: 1,
    });
    assert.equal(outcome.ok, false);
    assert.equal(outcome.status, 404);
    assert.ok(
      !outcome.ok &&
        outcome.error.code === 'IRONIC_API_ERROR' &&
        /Could not find a node/.test(outcome.error.message),
    );
    assert.equal(fake.requests('continue').length, 1);
    assert.ok(captured.records.some((record) => record.level === 50));
  });

  it('retries a connection that is reset, retryDelayMs apart, up to the attempts', async (t) => {
    const fake = await startFake(t);
    fake.addNode({ macs: [MAC], state: 'inspect wait' });
    fake.fault('continue', { kind: 'reset' }, { kind: 'reset' });
    const recovered = await postInspection({
      url: `${fake.url}/v1/continue`,
      payload: payload(),
      logger: silent,
      retryDelayMs: 100,
    });
    assert.equal(recovered.ok, true);
    const tries = fake.requests('continue');
    assert.equal(tries.length, 3);
    assert.ok((tries[1]?.at ?? 0) - (tries[0]?.at ?? 0) >= 95);

    fake.fault('continue', ...Array.from({ length: 5 }, () => ({ kind: 'reset' as const })));
    const failed = await postInspection({
      url: `${fake.url}/v1/continue`,
      payload: payload(),
      logger: silent,
      retryDelayMs: 10,
    });
    assert.ok(!failed.ok && failed.error.code === 'IRONIC_UNREACHABLE' && failed.status === null);
    assert.equal(fake.requests('continue').length, 3 + 5);
  });

  it('does not post twice after a timeout: the inspector may be processing the first', async (t) => {
    const fake = await startFake(t);
    fake.fault('continue', { kind: 'delay', ms: 600 });
    const outcome = await postInspection({
      url: `${fake.url}/v1/continue`,
      payload: payload(),
      logger: silent,
      timeoutMs: 100,
      retryDelayMs: 1,
    });
    assert.ok(!outcome.ok && outcome.error.details.reason === 'timeout');
    await sleep(700);
    assert.equal(fake.requests('continue').length, 1);
  });

  it('reports a malformed callback URL without sending anything', async () => {
    const outcome = await postInspection({ url: 'mdns', payload: payload(), logger: silent });
    assert.ok(!outcome.ok && outcome.error.code === 'INVALID_CONFIG');
  });
});
