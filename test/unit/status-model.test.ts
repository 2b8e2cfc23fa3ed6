/**
 * The status model fed by real events: an in-process agent (real channel, real engine) against the
 * reference conductor, which is down at first, then up, then drops the connection; commands run by
 * the conductor, BlueField commands that report the way the plugin does, and the agent's own log.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { Type } from '@sinclair/typebox';
import { pino, stdTimeFunctions } from 'pino';
import { renderPlain, renderScreen, type PlainLine } from '../../agent/console/render.js';
import { StatusModel, type StatusSnapshot } from '../../agent/console/status-model.js';
import type { ChannelStatus } from '../../agent/channel/agent-channel.js';
import { defineCommand } from '../../agent/commands/definition.js';
import { CommandEngine } from '../../agent/commands/engine.js';
import { AgentError } from '../../agent/util/errors.js';
import { LogForwarder } from '../../agent/util/logger.js';
import {
  createGates,
  startInProcessAgent,
  testRegistry,
  type InProcessAgent,
} from '../support/agent-harness.js';
import { ReferenceConductor } from '../support/conductor.js';

const BF2 = '0000:03:00';
const BF3 = '0000:23:00';
const MIB = 1024 * 1024;

const waitUntil = async (what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
};

/** Commands shaped like the BlueField plugin's: the same names, phases, results and errors. */
const blueFieldRegistry = (gates: ReturnType<typeof createGates>) =>
  testRegistry(gates).register(
    defineCommand({
      name: 'bluefield.list',
      summary: 'two cards',
      exclusive: false,
      params: Type.Object({}),
      handler: async () => ({
        devices: [
          { slot: BF2, generation: 'BF2', mode: { current: 'dpu', next: 'dpu' }, warnings: [] },
          { slot: BF3, generation: 'BF3', mode: { current: 'nic', next: 'nic' }, warnings: [] },
        ],
      }),
    }),
    defineCommand({
      name: 'bluefield.set_mode',
      summary: 'switches the BF2 at the next power cycle',
      exclusive: true,
      params: Type.Object({ mode: Type.String() }),
      handler: async (params) => {
        const card = {
          slot: BF2,
          generation: 'BF2',
          changed: true,
          before: { current: 'dpu', next: 'dpu', params: {} },
          after: { current: 'dpu', next: params.mode, params: {} },
          power_cycle_required: true,
          ran_on: 'host',
        };
        return { ...card, devices: [card] };
      },
    }),
    defineCommand({
      name: 'bluefield.install_bfb',
      summary: 'pushes to both cards, waits at its gate, then the DPUs log and finish',
      exclusive: true,
      params: Type.Object({ fail: Type.Optional(Type.Boolean()) }),
      handler: async (params, context) => {
        // Apart by more than the engine's progress interval, so the throttle keeps each of them.
        context.progress({ phase: 'bfb download', done: 3 * MIB, total: 12 * MIB, unit: 'bytes' });
        await sleep(80);
        context.progress({ phase: `${BF2} push`, done: 6 * MIB, total: 12 * MIB, unit: 'bytes' });
        await sleep(80);
        context.progress({ phase: `${BF3} push`, done: 3 * MIB, total: 12 * MIB, unit: 'bytes' });
        await gates.wait(context.commandId, context.signal);
        context.progress({ phase: `${BF3} dpu log`, done: 1, unit: 'steps', message: 'INFO[BL2]: start' });
        await sleep(80);
        context.progress({
          phase: `${BF3} dpu log`,
          done: 2,
          unit: 'steps',
          message: 'INFO[MISC]: Installing OS image',
        });
        await sleep(150);
        const bf3 = { slot: BF3, marker: 'In Enhanced NIC mode', arm_running: false, skipped: null };
        if (params.fail) {
          throw new AgentError('BFB_INSTALL_FAILED', 'the DPU in 0000:03:00 logged: CRITICAL ERROR', {
            details: {
              devices: [
                { slot: BF2, error: { code: 'BFB_INSTALL_FAILED', message: 'CRITICAL ERROR', details: {} } },
                bf3,
              ],
            },
          });
        }
        return {
          devices: [{ slot: BF2, marker: 'DPU is ready', arm_running: true, skipped: null }, bf3],
          bfb: { version: 'bf-bundle-3.0.0-42' },
        };
      },
    }),
  );

describe('status model from a real channel and engine', () => {
  let conductor: ReferenceConductor | null = null;
  let agent: InProcessAgent;
  let engine: CommandEngine;
  let model: StatusModel;
  let port: number;
  let url: string;
  const gates = createGates();
  const forwarder = new LogForwarder();
  const logger = pino({ level: 'info', base: undefined, timestamp: stdTimeFunctions.epochTime }, forwarder);
  const seen: StatusSnapshot[] = [];
  const throwingListener = (status: ChannelStatus): void => {
    if (status.state === 'ready') throw new Error('a careless observer');
  };

  before(async () => {
    // A port that was just free: nothing listens there until the test starts the conductor on it.
    const probe = await ReferenceConductor.start();
    port = probe.port;
    url = probe.url;
    await probe.stop();
    engine = new CommandEngine(blueFieldRegistry(gates), {
      logger,
      deliveryAcknowledged: true,
      progressIntervalMs: 50,
    });
    model = new StatusModel({ agentVersion: 'test', conductorUrl: url, bootif: '52:54:00:12:34:56' });
    agent = startInProcessAgent(url, {
      engine,
      logger,
      logForwarder: forwarder,
      backoffMinMs: 100,
      backoffMaxMs: 200,
    });
    agent.channel.onStateChange(throwingListener);
    model.attach({ link: agent.channel, commands: engine, logs: forwarder });
    model.onChange(() => seen.push(model.snapshot()));
  });

  after(async () => {
    await agent?.stop();
    await conductor?.stop();
  });

  it('says the conductor was never reached, how often it was tried, why it failed and when it tries again', async () => {
    await waitUntil('two failed attempts', () => model.snapshot().link.attempts >= 2);
    await waitUntil('the wait before the next attempt', () => model.snapshot().link.state === 'retrying');
    const { link } = model.snapshot();
    assert.equal(link.everConnected, false);
    assert.match(link.lastError ?? '', /ECONNREFUSED/);
    assert.ok(
      link.retryAt !== null && link.retryAt <= Date.now() + 250,
      'the next attempt is due within the backoff',
    );
    const screen = renderScreen(model.snapshot(), { width: 100, height: 30 }, Date.now()).join('\n');
    assert.match(screen, /Conductor {2}never connected: \d+ failed attempts?, next in \ds/);
    assert.match(screen, /last error: connect ECONNREFUSED/);
    // The channel's own warnings reach the model through the log.
    assert.ok(model.snapshot().warnings.some((warning) => /conductor connection error/.test(warning.text)));
  });

  it('shows the link up once the conductor answers, although an observer of the channel throws', async () => {
    conductor = await ReferenceConductor.start({ port, heartbeatIntervalS: 0.5 });
    await conductor.waitForConnection(10_000);
    await waitUntil('connected', () => model.snapshot().link.state === 'connected');
    const { link } = model.snapshot();
    assert.equal(link.everConnected, true);
    assert.equal(link.attempts, 0);
    assert.equal(link.lastError, null);
    assert.ok(link.since !== null && Math.abs(link.since - Date.now()) < 5000);
    assert.match(link.nodeUuid ?? '', /^[0-9a-f-]{36}$/);
    assert.match(renderPlain(model.snapshot(), 200)[2]?.text ?? '', /^conductor ws:\/\/.*: connected since/);
  });

  it('tells a dropped connection from one never made', async () => {
    const from = seen.length;
    conductor?.dropConnections();
    await waitUntil(
      'connected again',
      () => seen.length > from && model.snapshot().link.state === 'connected',
    );
    const between = seen.slice(from).map((snapshot) => snapshot.link);
    const retrying = between.find((link) => link.state === 'retrying');
    assert.ok(retrying, JSON.stringify(between.map((link) => link.state)));
    assert.equal(retrying.everConnected, true);
    assert.equal(retrying.attempts, 1);
    assert.match(retrying.lastError ?? '', /1006|dropped/);
    const text = renderScreen(
      { ...model.snapshot(), link: retrying },
      { width: 100, height: 30 },
      Date.now(),
    );
    assert.match(text.join('\n'), /Conductor {2}disconnected: 1 failed attempt/);
  });

  it("follows a command's progress and shows how it ended", async () => {
    const from = seen.length;
    await conductor?.runCommand('test.steps', { steps: 6, delay_ms: 40 }, 'steps-1');
    await conductor?.waitForResult('steps-1');
    const during = seen.slice(from).flatMap((snapshot) => snapshot.running);
    assert.ok(during.some((command) => command.id === 'steps-1' && command.name === 'test.steps'));
    const progressed = during.filter((command) => command.progress?.phase === 'stepping');
    assert.ok(progressed.length >= 2, 'progress updates reach the model');
    assert.ok(progressed.every((command) => command.progress?.total === 6));
    const { running, last } = model.snapshot();
    assert.deepEqual(running, []);
    assert.equal(last?.id, 'steps-1');
    assert.equal(last?.status, 'SUCCEEDED');

    await conductor?.runCommand('test.gated', { fail: true }, 'gated-1');
    await gates.started('gated-1');
    await waitUntil('the gated command running', () =>
      model.snapshot().running.some((c) => c.id === 'gated-1'),
    );
    const screen = renderScreen(model.snapshot(), { width: 100, height: 30 }, Date.now()).join('\n');
    assert.match(screen, /Command {4}test\.gated \(gated-1\) running \ds\n {13}waiting +\[\.+\] +0% 0\/1/);
    gates.open('gated-1');
    await conductor?.waitForResult('gated-1');
    await waitUntil('the failure', () => model.snapshot().last?.id === 'gated-1');
    assert.equal(model.snapshot().last?.errorCode, 'TOOL_FAILED');
    assert.match(
      renderPlain(model.snapshot(), 200).find((line) => line.key === 'last')?.text ?? '',
      /FAILED .*TOOL_FAILED asked to fail/,
    );
  });

  it('lists the BlueFields with their modes and follows an install on each card', async () => {
    assert.equal(model.snapshot().cards, null, 'unknown until something listed them');
    await conductor?.runCommand('bluefield.list', {}, 'list-1');
    await conductor?.waitForResult('list-1');
    assert.deepEqual(
      model.snapshot().cards?.map((card) => [card.slot, card.generation, card.mode?.current, card.install]),
      [
        [BF2, 'BF2', 'dpu', null],
        [BF3, 'BF3', 'nic', null],
      ],
    );

    await conductor?.runCommand('bluefield.set_mode', { mode: 'nic' }, 'mode-1');
    await conductor?.waitForResult('mode-1');
    assert.deepEqual(model.snapshot().cards?.[0]?.mode, { current: 'dpu', next: 'nic' });

    await conductor?.runCommand('bluefield.install_bfb', {}, 'bfb-1');
    await gates.started('bfb-1');
    await waitUntil(
      'both pushes',
      () => model.snapshot().cards?.every((card) => card.install?.state === 'pushing') ?? false,
    );
    const pushing = model.snapshot().cards ?? [];
    assert.deepEqual(
      pushing.map((card) => [card.install?.done, card.install?.total]),
      [
        [6 * MIB, 12 * MIB],
        [3 * MIB, 12 * MIB],
      ],
    );
    const screen = renderScreen(model.snapshot(), { width: 100, height: 30 }, Date.now());
    assert.ok(
      screen.includes(`BlueField  ${BF2} BF2 mode dpu (next: nic) pushing BFB 50% of 12.0 MiB`),
      screen.join('\n'),
    );
    assert.ok(
      screen.includes(`           ${BF3} BF3 mode nic             pushing BFB 25% of 12.0 MiB`),
      screen.join('\n'),
    );

    gates.open('bfb-1');
    await waitUntil('the DPU log', () => model.snapshot().cards?.[1]?.install?.state === 'installing');
    await waitUntil(
      'the last line',
      () => model.snapshot().cards?.[1]?.install?.detail === 'INFO[MISC]: Installing OS image',
    );
    await conductor?.waitForResult('bfb-1');
    assert.deepEqual(
      model
        .snapshot()
        .cards?.map((card) => [card.install?.state, card.install?.detail, card.install?.version]),
      [
        ['installed', 'DPU is ready', 'bf-bundle-3.0.0-42'],
        ['installed', 'In Enhanced NIC mode', 'bf-bundle-3.0.0-42'],
      ],
    );
    assert.deepEqual(
      renderPlain(model.snapshot(), 200)
        .filter((line) => line.key.startsWith('bluefield:'))
        .map((line) => line.text),
      [
        `BlueField ${BF2} BF2 mode dpu (next: nic) installed (DPU is ready) bf-bundle-3.0.0-42`,
        `BlueField ${BF3} BF3 mode nic installed (In Enhanced NIC mode) bf-bundle-3.0.0-42`,
      ],
    );
  });

  it('marks the card whose install failed, and cards cut off by a cancel', async () => {
    await conductor?.runCommand('bluefield.install_bfb', { fail: true }, 'bfb-2');
    await gates.started('bfb-2');
    gates.open('bfb-2');
    const failed = await conductor?.waitForResult('bfb-2');
    assert.equal(failed?.status, 'FAILED');
    await waitUntil('the failure', () => model.snapshot().last?.id === 'bfb-2');
    assert.deepEqual(
      model.snapshot().cards?.map((card) => [card.install?.state, card.install?.detail]),
      [
        ['failed', 'BFB_INSTALL_FAILED'],
        ['installed', 'In Enhanced NIC mode'],
      ],
    );

    await conductor?.runCommand('bluefield.install_bfb', {}, 'bfb-3');
    await gates.started('bfb-3');
    await waitUntil(
      'both pushing',
      () => model.snapshot().cards?.every((card) => card.install?.commandId === 'bfb-3') ?? false,
    );
    await conductor?.call('command.cancel', { command_id: 'bfb-3' });
    await conductor?.waitForResult('bfb-3');
    await waitUntil('the cancel', () => model.snapshot().last?.id === 'bfb-3');
    assert.deepEqual(
      model.snapshot().cards?.map((card) => card.install?.state),
      ['cancelled', 'cancelled'],
    );
  });

  it('keeps the last few warnings and errors from the log, newest last', () => {
    for (let index = 1; index <= 7; index += 1) logger.warn({ index }, `odd thing ${index}`);
    logger.info('not a warning');
    logger.error({ err: new Error('disk on fire') }, 'command failed with an unexpected error');
    const warnings = model.snapshot().warnings;
    assert.equal(warnings.length, 5);
    assert.deepEqual(
      warnings.map((warning) => [warning.level, warning.text]),
      [
        ['warn', 'odd thing 4'],
        ['warn', 'odd thing 5'],
        ['warn', 'odd thing 6'],
        ['warn', 'odd thing 7'],
        ['error', 'command failed with an unexpected error: disk on fire'],
      ],
    );
    assert.ok(
      warnings.every((warning, index) => index === 0 || warning.seq === (warnings[index - 1]?.seq ?? 0) + 1),
    );

    // A repeat (every reconnect logs the same words) moves to the end and is counted, not listed again.
    const plainBefore = renderPlain(model.snapshot(), 200);
    logger.warn({ index: 5 }, 'odd thing 5');
    const repeated = model.snapshot().warnings;
    assert.deepEqual(
      repeated.map((warning) => [warning.text, warning.count]),
      [
        ['odd thing 4', 1],
        ['odd thing 6', 1],
        ['odd thing 7', 1],
        ['command failed with an unexpected error: disk on fire', 1],
        ['odd thing 5', 2],
      ],
    );
    const screen = renderScreen(model.snapshot(), { width: 100, height: 30 }, Date.now());
    assert.match(screen.at(-1) ?? '', /^ {11}\d\d:\d\d:\d\d WARN {2}odd thing 5 \(x2\)$/);
    const warningLines = (lines: PlainLine[]): string[] =>
      lines
        .filter((line) => line.key.startsWith('warning:'))
        .map((line) => `${line.key} ${line.text}`)
        .sort();
    assert.deepEqual(
      warningLines(renderPlain(model.snapshot(), 200)),
      warningLines(plainBefore),
      'a plain console heard it the first time',
    );
  });

  it('shows the agent stopping', async () => {
    await agent.stop();
    assert.equal(model.snapshot().link.state, 'stopped');
    assert.equal(agent.channel.status().retryAt, null);
  });
});
