import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { WebSocketServer } from 'ws';
import { ReferenceConductor } from '../support/conductor.js';
import { startInProcessAgent, type InProcessAgent } from '../support/agent-harness.js';
import type { CommandRecord } from '../../agent/protocol/schema.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

const startPair = async (
  conductorOptions: Parameters<typeof ReferenceConductor.start>[0] = {},
  agentOptions: Parameters<typeof startInProcessAgent>[1] = {},
): Promise<{ conductor: ReferenceConductor; agent: InProcessAgent }> => {
  const conductor = await ReferenceConductor.start({ heartbeatIntervalS: 0.2, ...conductorOptions });
  const agent = startInProcessAgent(conductor.url, agentOptions);
  cleanups.push(
    () => agent.stop(),
    () => conductor.stop(),
  );
  await conductor.waitForConnection();
  return { conductor, agent };
};

const recordOf = (value: unknown): CommandRecord => value as CommandRecord;

describe('hello, token and heartbeats', () => {
  it('says hello first with its identity, then heartbeats on the conductor interval', async () => {
    const { conductor } = await startPair({ heartbeatIntervalS: 0.25 });
    const [hello] = conductor.hellos();
    assert.ok(hello?.accepted);
    assert.equal(hello.params.protocol, 1);
    assert.equal(hello.params.token, null, 'no token on the first connection of a boot');
    assert.deepEqual(hello.params.macs, ['52:54:00:12:34:56']);
    assert.equal(hello.params.bootif, '52:54:00:12:34:56');
    assert.deepEqual(hello.params.capabilities, ['test.big', 'test.echo', 'test.gated', 'test.steps']);
    const firstFrame = conductor.events.find((event) => event.dir === 'in');
    assert.equal((firstFrame?.frame as { method?: string }).method, 'hello');

    await conductor.waitFor(
      (events) =>
        events.filter((event) => (event.frame as { method?: string }).method === 'heartbeat').length >= 9,
      5000,
    );
    const beats = conductor.heartbeats();
    const gaps = beats.slice(2).map((beat, index) => beat.at - (beats[index + 1]?.at ?? 0));
    for (const gap of gaps)
      assert.ok(gap > 150 && gap < 400, `heartbeat gap ${gap} ms for a 250 ms interval`);
    const seqs = beats.map((beat) => beat.params.seq);
    assert.deepEqual(
      seqs,
      [...seqs].sort((a, b) => a - b),
    );
    assert.equal(new Set(seqs).size, seqs.length);
    assert.deepEqual(conductor.violations, []);
  });

  it('presents the issued token when it reconnects', async () => {
    const { conductor } = await startPair();
    const token = conductor.nodes.values().next().value?.token;
    assert.ok(token);
    conductor.dropConnections();
    await conductor.waitFor(() => conductor.hellos().filter((hello) => hello.accepted).length >= 2, 5000);
    assert.equal(conductor.hellos()[1]?.params.token, token);
  });

  it('waits and tries again when the conductor refuses the hello, logging its message', async () => {
    const conductor = await ReferenceConductor.start({
      heartbeatIntervalS: 0.2,
      rejectHello: 'node not enrolled',
    });
    const agent = startInProcessAgent(conductor.url);
    cleanups.push(
      () => agent.stop(),
      () => conductor.stop(),
    );
    await conductor.waitFor(() => conductor.hellos().length >= 3, 5000);
    assert.ok(conductor.hellos().every((hello) => !hello.accepted));
    assert.match(agent.channel.status().lastError ?? '', /node not enrolled/);
    conductor.rejectHello = undefined;
    await conductor.waitForConnection(5000);
    const deadline = Date.now() + 2000;
    while (agent.channel.status().state !== 'ready' && Date.now() < deadline) await sleep(10);
    assert.equal(agent.channel.status().state, 'ready');
    assert.equal(agent.channel.status().lastError, null);
  });

  it('refuses a server that does not select the bm-agent.v1 subprotocol', async () => {
    const conductor = await ReferenceConductor.start({ echoSubprotocol: false });
    const agent = startInProcessAgent(conductor.url);
    cleanups.push(
      () => agent.stop(),
      () => conductor.stop(),
    );
    await sleep(600);
    assert.equal(conductor.hellos().length, 0);
    assert.match(agent.channel.status().lastError ?? '', /subprotocol/i);
  });
});

describe('commands over the channel', () => {
  it('delivers progress and the result, and the result exactly once', async () => {
    const { conductor } = await startPair();
    const run = await conductor.runCommand('test.steps', { steps: 8, delay_ms: 40 }, 'steps-1');
    assert.equal(recordOf(run.result).status, 'RUNNING');
    const record = await conductor.waitForResult('steps-1');
    assert.equal(record.status, 'SUCCEEDED');
    assert.deepEqual(record.result, { steps: 8 });
    const progress = conductor.progress('steps-1');
    assert.ok(progress.length >= 2, `${progress.length} progress notifications`);
    for (let index = 1; index < progress.length; index += 1) {
      assert.ok(
        (progress[index]?.at ?? 0) - (progress[index - 1]?.at ?? 0) >= 90,
        'at most twice a second (100 ms in tests)',
      );
    }
    assert.equal(progress[0]?.params.unit, 'steps');
    await sleep(100);
    assert.equal(conductor.results().filter((result) => result.params.command_id === 'steps-1').length, 1);
  });

  it('sends a heartbeat at once when a command ends', async () => {
    const { conductor, agent } = await startPair({ heartbeatIntervalS: 30 });
    await conductor.runCommand('test.gated', {}, 'g-hb');
    await agent.gates.started('g-hb');
    const before = conductor.heartbeats().length;
    agent.gates.open('g-hb');
    await conductor.waitForResult('g-hb');
    await conductor.waitFor(() => conductor.heartbeats().length > before, 2000);
    assert.equal(conductor.heartbeats().at(-1)?.params.busy, false);
  });

  it('starts nothing for a command.run with a known id and returns the current record', async () => {
    const { conductor, agent } = await startPair();
    await conductor.runCommand('test.gated', {}, 'dup');
    await agent.gates.started('dup');
    const again = await conductor.runCommand('test.gated', {}, 'dup');
    assert.equal(again.error, undefined, 'not busy: it is the same command');
    assert.equal(recordOf(again.result).status, 'RUNNING');
    assert.equal(agent.engine.list().length, 1);
    agent.gates.open('dup');
    await conductor.waitForResult('dup');
    const third = await conductor.runCommand('test.echo', {}, 'dup');
    assert.equal(recordOf(third.result).name, 'test.gated');
    assert.equal(recordOf(third.result).status, 'SUCCEEDED');
  });

  it('answers busy while an exclusive command runs, and runs read-only ones meanwhile', async () => {
    const { conductor, agent } = await startPair();
    await conductor.runCommand('test.gated', {}, 'holder');
    const busy = await conductor.runCommand('test.gated', {}, 'second');
    assert.equal(busy.error?.code, -32001);
    assert.deepEqual(busy.error?.data, { running: 'holder' });
    const read = await conductor.runCommand('test.echo', { value: 'x' }, 'reader');
    assert.equal(read.error, undefined);
    assert.deepEqual((await conductor.waitForResult('reader')).result, { echo: 'x' });
    const beat = await conductor.waitFor(
      () => conductor.heartbeats().find((hb) => hb.params.busy && hb.params.running[0]?.progress),
      2000,
    );
    assert.deepEqual(
      beat.params.running.map((entry) => entry.command_id),
      ['holder'],
    );
    assert.equal(beat.params.running[0]?.progress?.phase, 'waiting', JSON.stringify(beat.params));
    agent.gates.open('holder');
    await conductor.waitForResult('holder');
  });

  it('cancels a running command, which ends CANCELLED', async () => {
    const { conductor, agent } = await startPair();
    await conductor.runCommand('test.gated', {}, 'to-cancel');
    await agent.gates.started('to-cancel');
    const answer = await conductor.call('command.cancel', { command_id: 'to-cancel' });
    assert.equal(recordOf(answer.result).command_id, 'to-cancel');
    const record = await conductor.waitForResult('to-cancel');
    assert.equal(record.status, 'CANCELLED');
    assert.equal(record.error?.code, 'CANCELLED');
    const status = await conductor.call('command.status', { command_id: 'to-cancel' });
    assert.equal(recordOf(status.result).status, 'CANCELLED');
  });

  it('lists the records of this boot and answers every protocol error code', async () => {
    const { conductor } = await startPair();
    await conductor.runCommand('test.echo', {}, 'listed');
    await conductor.waitForResult('listed');
    const list = await conductor.call('command.list', {});
    assert.deepEqual(
      (list.result as CommandRecord[]).map((record) => record.command_id),
      ['listed'],
    );

    assert.equal((await conductor.call('command.status', { command_id: 'nope' })).error?.code, -32002);
    assert.equal((await conductor.call('command.cancel', { command_id: 'nope' })).error?.code, -32002);
    const unknown = await conductor.runCommand('disk.format_everything', {}, 'u1');
    assert.equal(unknown.error?.code, -32000);
    assert.deepEqual((unknown.error?.data as { known: string[] }).known, [
      'test.big',
      'test.echo',
      'test.gated',
      'test.steps',
    ]);
    const badParams = await conductor.runCommand('test.echo', { value: 5 }, 'u2');
    assert.equal(badParams.error?.code, -32602);
    assert.deepEqual(badParams.error?.data, { field: 'params.params.value', expected: 'Expected string' });
    assert.equal((await conductor.call('command.explode', {})).error?.code, -32601);
    assert.equal((await conductor.call('command.status', { command_id: 7 })).error?.code, -32602);

    conductor.sendRaw('{"jsonrpc": "2.0", "id": 1');
    const parseError = await conductor.nextFrame(
      2000,
      (frame) => typeof frame === 'object' && frame !== null && 'error' in frame,
    );
    assert.deepEqual(parseError, {
      jsonrpc: '2.0',
      id: null,
      error: { code: -32700, message: 'frame is not valid JSON' },
    });
    conductor.sendRaw(JSON.stringify({ id: 'no-version', method: 'command.list' }));
    const invalid = (await conductor.nextFrame(
      2000,
      (frame) => typeof frame === 'object' && frame !== null && 'error' in frame,
    )) as {
      id: unknown;
      error: { code: number };
    };
    assert.deepEqual([invalid.id, invalid.error.code], ['no-version', -32600]);
    assert.equal(conductor.hellos().length, 1, 'none of it broke the connection');
  });
});

describe('reconnecting', () => {
  it('keeps a result across a conductor restart in the middle of the command and delivers it exactly once', async () => {
    const stateDir = await mkdtemp(path.join(os.tmpdir(), 'bma-conductor-'));
    cleanups.push(() => rm(stateDir, { recursive: true, force: true }));
    const statePath = path.join(stateDir, 'state.json');
    const first = await ReferenceConductor.start({ heartbeatIntervalS: 0.2, statePath });
    const agent = startInProcessAgent(first.url);
    cleanups.push(() => agent.stop());
    await first.waitForConnection();
    await first.runCommand('test.gated', {}, 'survivor');
    await agent.gates.started('survivor');
    const port = first.port;
    await first.stop();

    agent.gates.open('survivor');
    await sleep(300);
    assert.equal(
      agent.engine.get('survivor')?.status,
      'SUCCEEDED',
      'the command finished while no conductor listened',
    );

    const second = await ReferenceConductor.start({ heartbeatIntervalS: 0.2, statePath, port });
    cleanups.push(() => second.stop());
    await second.waitForConnection(5000);
    const record = await second.waitForResult('survivor', 5000);
    assert.equal(record.status, 'SUCCEEDED');
    const hello = second.hellos()[0];
    assert.ok(hello?.params.token, 'the token issued before the restart is presented');
    await sleep(500);
    assert.equal(second.results().length, 1, 'delivered exactly once');
    assert.equal(first.results().length, 0);
    assert.deepEqual(agent.engine.unacknowledged(), []);
  });

  it('reports a command running across a reconnect in hello.running', async () => {
    const { conductor, agent } = await startPair();
    await conductor.runCommand('test.gated', {}, 'long-runner');
    await agent.gates.started('long-runner');
    conductor.dropConnections();
    await conductor.waitFor(() => conductor.hellos().length >= 2, 5000);
    assert.deepEqual(conductor.hellos()[1]?.params.running, ['long-runner']);
    agent.gates.open('long-runner');
    assert.equal((await conductor.waitForResult('long-runner')).status, 'SUCCEEDED');
  });

  it('re-sends unacknowledged results after each reconnect, oldest first', async () => {
    const { conductor } = await startPair({ autoAck: false });
    for (const id of ['r1', 'r2', 'r3']) {
      await conductor.runCommand('test.echo', { value: id }, id);
      await conductor.waitForResult(id);
      await sleep(5);
    }
    conductor.dropConnections();
    await conductor.waitFor(() => conductor.results().length >= 6, 5000);
    const resent = conductor
      .results()
      .slice(3)
      .map((result) => result.params.command_id);
    assert.deepEqual(resent, ['r1', 'r2', 'r3']);
    conductor.autoAck = true;
    conductor.dropConnections();
    await conductor.waitFor(() => conductor.results().length >= 9, 5000);
    conductor.dropConnections();
    await conductor.waitFor(() => conductor.hellos().length >= 4, 5000);
    await sleep(300);
    assert.equal(conductor.results().length, 9, 'acknowledged results are not sent again');
  });

  it('treats a conductor that stops answering pings as gone and reconnects', async () => {
    // A bare server with automatic pongs turned off stands for a conductor that hung.
    const server = new WebSocketServer({
      host: '127.0.0.1',
      port: 0,
      autoPong: false,
      handleProtocols: () => 'bm-agent.v1',
    });
    await new Promise((resolve) => server.once('listening', resolve));
    const connections: number[] = [];
    server.on('connection', (socket) => {
      connections.push(Date.now());
      socket.on('message', (data) => {
        const frame = JSON.parse(data.toString()) as { id?: number; method?: string };
        if (frame.method === 'hello') {
          socket.send(
            JSON.stringify({
              jsonrpc: '2.0',
              id: frame.id,
              result: { node_uuid: 'n1', token: 't1', heartbeat_interval_s: 60 },
            }),
          );
        }
      });
    });
    const port = (server.address() as { port: number }).port;
    const agent = startInProcessAgent(`ws://127.0.0.1:${port}/v1/agent`, {
      pingIntervalMs: 100,
      pongTimeoutMs: 300,
    });
    cleanups.push(
      () => agent.stop(),
      () => new Promise<void>((resolve) => server.close(() => resolve())),
    );
    const deadline = Date.now() + 5000;
    while (connections.length < 2 && Date.now() < deadline) await sleep(20);
    assert.ok(connections.length >= 2, 'reconnected after the pong timeout');
    const gap = (connections[1] ?? 0) - (connections[0] ?? 0);
    assert.ok(gap >= 350 && gap < 1500, `declared dead after ${gap} ms (ping 100 ms + pong timeout 300 ms)`);
    assert.match(agent.channel.status().lastDisconnect ?? '', /no pong/);
  });

  it('forwards log records at info and above as log notifications', async () => {
    const { conductor } = await startPair({}, { verbose: true });
    await conductor.runCommand('test.echo', {}, 'logged');
    await conductor.waitForResult('logged');
    const logs = await conductor.waitFor(() => {
      const found = conductor.logs().filter((log) => log.params.command_id === 'logged');
      return found.length >= 2 ? found : undefined;
    }, 2000);
    assert.ok(logs.every((log) => ['info', 'warn', 'error'].includes(String(log.params.level))));
    assert.match(String(logs[0]?.params.time), /Z$/);
    assert.ok(!conductor.logs().some((log) => log.params.level === 'debug'));
  });
});
