/**
 * The reference conductor checked against a scripted fake agent, so that a failing agent
 * integration test can be trusted to point at the agent.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WebSocket } from 'ws';
import { SUBPROTOCOL } from '../../agent/protocol/schema.js';
import { ConductorErrorCode, ReferenceConductor } from '../support/conductor.js';

const MAC = '52:54:00:12:34:56';

/** A raw WebSocket client that plays the agent, frame by frame. */
class FakeAgent {
  private readonly inbox: unknown[] = [];
  private wake: (() => void) | null = null;
  private nextId = 1;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      const text = data.toString('utf8');
      try {
        this.inbox.push(JSON.parse(text));
      } catch {
        this.inbox.push(text);
      }
      this.wake?.();
    });
  }

  static connect(url: string, protocols: string[] = [SUBPROTOCOL]): Promise<FakeAgent> {
    const ws = new WebSocket(url, protocols);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new FakeAgent(ws)));
      ws.once('error', reject);
    });
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  async next(timeoutMs = 2000): Promise<unknown> {
    const deadline = Date.now() + timeoutMs;
    while (this.inbox.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('no frame from the conductor');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.inbox.shift();
  }

  async request(method: string, params: unknown): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    this.send({ jsonrpc: '2.0', id, method, params });
    const reply = await this.next();
    assert.ok(typeof reply === 'object' && reply !== null);
    assert.equal((reply as Record<string, unknown>).id, id);
    return reply as Record<string, unknown>;
  }

  hello(token: string | null = null, nodeUuid: string | null = null): Promise<Record<string, unknown>> {
    return this.request('hello', {
      protocol: 1,
      agent_version: '0.0.0-test',
      boot_id: 'boot-1',
      hostname: 'fake',
      macs: [MAC],
      bootif: MAC,
      node_uuid: nodeUuid,
      token,
      capabilities: ['inventory.collect'],
      running: [],
    });
  }

  close(): void {
    this.ws.terminate();
  }
}

const record = (commandId: string) => ({
  command_id: commandId,
  name: 'inventory.collect',
  params: {},
  status: 'SUCCEEDED',
  started_at: '2024-01-01T00:00:00.000Z',
  finished_at: '2024-01-01T00:00:01.000Z',
  result: { inventory: {} },
  error: null,
});

const helloResult = (reply: Record<string, unknown>): { node_uuid: string; token: string } => {
  const result = reply.result as { node_uuid: unknown; token: unknown };
  assert.equal(typeof result.node_uuid, 'string');
  assert.equal(typeof result.token, 'string');
  return result as { node_uuid: string; token: string };
};

test('hello issues a stable node uuid and a token, and only that token is accepted afterwards', async (t) => {
  const conductor = await ReferenceConductor.start({ heartbeatIntervalS: 0.5 });
  t.after(() => conductor.stop());

  const first = await FakeAgent.connect(conductor.url);
  assert.equal(first.ws.protocol, SUBPROTOCOL);
  const issued = helloResult(await first.hello());
  assert.deepEqual(await conductor.waitForConnection(1000), { connection: 1, nodeUuid: issued.node_uuid });
  first.close();

  const again = await FakeAgent.connect(conductor.url);
  const reply = await again.hello(issued.token);
  assert.deepEqual(reply.result, { ...issued, heartbeat_interval_s: 0.5 });

  const bad = await again.hello('not-the-token');
  assert.deepEqual(bad.error, { code: ConductorErrorCode.BAD_TOKEN, message: 'bad token' });
  assert.deepEqual(
    conductor.hellos().map((h) => h.accepted),
    [true, true, false],
  );
  assert.deepEqual(conductor.violations, []);
});

test('drives command.run and stores each command.result once while recording every copy', async (t) => {
  const conductor = await ReferenceConductor.start();
  t.after(() => conductor.stop());
  await assert.rejects(conductor.call('command.list', {}), /no connection/);

  const agent = await FakeAgent.connect(conductor.url);
  await agent.hello();
  const running = conductor.runCommand('inventory.collect', {}, 'c-1');
  const request = (await agent.next()) as { id: number; method: string; params: unknown };
  assert.equal(request.method, 'command.run');
  assert.deepEqual(request.params, { command_id: 'c-1', name: 'inventory.collect', params: {} });
  agent.send({ jsonrpc: '2.0', id: request.id, result: { ...record('c-1'), status: 'RUNNING' } });
  assert.equal(((await running).result as { status: string }).status, 'RUNNING');

  agent.send({
    jsonrpc: '2.0',
    method: 'heartbeat',
    params: { seq: 0, uptime_s: 1, busy: false, running: [] },
  });
  assert.deepEqual((await agent.request('command.result', record('c-1'))).result, {});
  assert.deepEqual((await agent.request('command.result', record('c-1'))).result, {});
  assert.equal((await conductor.waitForResult('c-1', 1000)).status, 'SUCCEEDED');
  assert.equal(conductor.results().length, 2);
  assert.equal(conductor.resultsById.size, 1);
  assert.equal(conductor.heartbeats()[0]?.params.seq, 0);
  assert.deepEqual(conductor.violations, []);
});

test('keeps tokens and results across a restart on the same port; autoAck off leaves results unanswered', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'conductor-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const statePath = join(dir, 'state.json');

  const before = await ReferenceConductor.start({ statePath, autoAck: false });
  const agent = await FakeAgent.connect(before.url);
  const issued = helloResult(await agent.hello());
  agent.send({ jsonrpc: '2.0', id: 99, method: 'command.result', params: record('c-2') });
  await before.waitForResult('c-2', 1000);
  await assert.rejects(agent.next(200), /no frame/);
  const port = before.port;
  await before.stop();

  const after = await ReferenceConductor.start({ statePath, port });
  t.after(() => after.stop());
  assert.equal(after.resultsById.get('c-2')?.status, 'SUCCEEDED');
  const back = await FakeAgent.connect(after.url);
  assert.deepEqual(helloResult(await back.hello(issued.token)), { ...issued, heartbeat_interval_s: 10 });
});

test('survives hostile frames, relays raw frames, and refuses a wrong path or a missing subprotocol', async (t) => {
  const conductor = await ReferenceConductor.start();
  t.after(() => conductor.stop());
  const agent = await FakeAgent.connect(conductor.url);
  agent.send('{not json');
  agent.send('[1, 2]');
  agent.ws.send(Buffer.from([0xff, 0x00]), { binary: true });
  agent.send({ jsonrpc: '2.0', id: 5, method: 'heartbeat', params: {} });
  assert.equal(((await agent.next()) as { error: { code: number } }).error.code, -32600, 'hello comes first');
  helloResult(await agent.hello());
  assert.deepEqual(
    conductor.events.filter((e) => e.malformed !== undefined).map((e) => e.malformed),
    ['not JSON', 'batch', 'binary frame'],
  );

  const reply = conductor.nextFrame(1000);
  conductor.sendRaw('garbage');
  assert.equal(await agent.next(), 'garbage');
  agent.send({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'parse error' } });
  assert.deepEqual(await reply, {
    jsonrpc: '2.0',
    id: null,
    error: { code: -32700, message: 'parse error' },
  });

  await assert.rejects(FakeAgent.connect(conductor.url.replace('/v1/agent', '/other')), /404/);
  const mute = await ReferenceConductor.start({ echoSubprotocol: false });
  t.after(() => mute.stop());
  await assert.rejects(FakeAgent.connect(mute.url), /no subprotocol/);
});
