import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { Type } from '@sinclair/typebox';
import { defineCommand } from '../../agent/commands/definition.js';
import { CommandEngine, type Progress } from '../../agent/commands/engine.js';
import { CommandRegistry } from '../../agent/commands/registry.js';
import { AgentError } from '../../agent/util/errors.js';

/** Commands whose timing the test controls: each waits for a gate the test opens. */
const makeRegistry = () => {
  const gates = new Map<string, () => void>();
  const gate = (id: string) => new Promise<void>((resolve) => gates.set(id, resolve));
  const registry = new CommandRegistry().register(
    defineCommand({
      name: 'test.exclusive',
      summary: 'waits for its gate',
      exclusive: true,
      params: Type.Object({ fail: Type.Optional(Type.Boolean()) }, { additionalProperties: false }),
      handler: async (params, context) => {
        await gate(context.commandId);
        if (params.fail) throw new AgentError('TOOL_FAILED', 'the tool failed', { details: { exitCode: 3 } });
        return { ok: true };
      },
    }),
    defineCommand({
      name: 'test.read',
      summary: 'read-only',
      exclusive: false,
      params: Type.Object({}),
      handler: async () => ({ read: true }),
    }),
    defineCommand({
      name: 'test.cancellable',
      summary: 'stops when cancelled',
      exclusive: true,
      params: Type.Object({}),
      handler: async (_params, context) => {
        await sleep(10_000, undefined, { signal: context.signal });
        return {};
      },
    }),
    defineCommand({
      name: 'test.progress',
      summary: 'reports progress fast',
      exclusive: false,
      params: Type.Object({ steps: Type.Integer() }),
      handler: async (params, context) => {
        for (let step = 1; step <= params.steps; step += 1) {
          context.progress({ phase: 'work', done: step, total: params.steps });
          await sleep(5);
        }
        return {};
      },
    }),
    defineCommand({
      name: 'test.power',
      summary: 'acts after delivery',
      exclusive: true,
      params: Type.Object({}),
      handler: async (_params, context) => {
        context.afterDelivery(() => {
          acted.push(context.commandId);
        });
        return {};
      },
    }),
    defineCommand({
      name: 'test.throws',
      summary: 'throws a plain error synchronously',
      exclusive: false,
      params: Type.Object({}),
      handler: () => {
        throw new TypeError('boom');
      },
    }),
  );
  const acted: string[] = [];
  return { registry, open: (id: string) => gates.get(id)?.(), acted };
};

describe('command engine', () => {
  it('runs a command and records its result', async () => {
    const { registry, open } = makeRegistry();
    const engine = new CommandEngine(registry);
    const outcome = engine.run('c1', 'test.exclusive', {});
    assert.ok(outcome.ok && outcome.started);
    assert.equal(outcome.ok && outcome.record.status, 'RUNNING');
    await sleep(1);
    open('c1');
    const record = await engine.wait('c1');
    assert.equal(record?.status, 'SUCCEEDED');
    assert.deepEqual(record?.result, { ok: true });
    assert.match(record?.finished_at ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  it('treats a repeated command_id as the same command and starts nothing', async () => {
    const { registry, open } = makeRegistry();
    const engine = new CommandEngine(registry);
    let starts = 0;
    engine.on({ started: () => (starts += 1) });
    engine.run('same', 'test.exclusive', {});
    const again = engine.run('same', 'test.read', {});
    assert.ok(again.ok && !again.started);
    assert.equal(again.ok && again.record.name, 'test.exclusive');
    assert.equal(starts, 1);
    await sleep(1);
    open('same');
    await engine.wait('same');
  });

  it('refuses a second exclusive command while one runs, but runs read-only ones', async () => {
    const { registry, open } = makeRegistry();
    const engine = new CommandEngine(registry);
    engine.run('first', 'test.exclusive', {});
    assert.deepEqual(engine.run('second', 'test.exclusive', {}), {
      ok: false,
      rejection: { kind: 'busy', running: 'first' },
    });
    assert.ok(engine.busy());
    const read = engine.run('read', 'test.read', {});
    assert.ok(read.ok && read.started);
    assert.equal((await engine.wait('read'))?.status, 'SUCCEEDED');
    await sleep(1);
    open('first');
    await engine.wait('first');
    assert.equal(engine.busy(), false);
    assert.ok(engine.run('third', 'test.read', {}).ok);
  });

  it('names unknown commands and the field of bad params', () => {
    const { registry } = makeRegistry();
    const engine = new CommandEngine(registry);
    const unknown = engine.run('x', 'test.nope', {});
    assert.ok(
      !unknown.ok &&
        unknown.rejection.kind === 'unknown_command' &&
        unknown.rejection.known.includes('test.read'),
    );
    const bad = engine.run('y', 'test.exclusive', { fail: 'yes' });
    assert.ok(!bad.ok && bad.rejection.kind === 'invalid_params');
    assert.equal(
      !bad.ok && bad.rejection.kind === 'invalid_params' && bad.rejection.violation.field,
      'params.fail',
    );
    const extra = engine.run('z', 'test.exclusive', { frobnicate: 1 });
    assert.ok(!extra.ok && extra.rejection.kind === 'invalid_params');
    assert.equal(engine.list().length, 0, 'rejected commands leave no record');
  });

  it('serialises a typed failure as {code, message, details}', async () => {
    const { registry, open } = makeRegistry();
    const engine = new CommandEngine(registry);
    engine.run('f', 'test.exclusive', { fail: true });
    await sleep(1);
    open('f');
    const record = await engine.wait('f');
    assert.equal(record?.status, 'FAILED');
    assert.deepEqual(record?.error, {
      code: 'TOOL_FAILED',
      message: 'the tool failed',
      details: { exitCode: 3 },
    });
  });

  it('records a handler that throws synchronously as INTERNAL instead of crashing the caller', async () => {
    const { registry } = makeRegistry();
    const engine = new CommandEngine(registry);
    const outcome = engine.run('t', 'test.throws', {});
    assert.ok(outcome.ok);
    const record = await engine.wait('t');
    assert.equal(record?.status, 'FAILED');
    assert.equal(record?.error?.code, 'INTERNAL');
  });

  it('cancels a running command at its next safe point', async () => {
    const { registry } = makeRegistry();
    const engine = new CommandEngine(registry);
    engine.run('long', 'test.cancellable', {});
    const during = engine.cancel('long');
    assert.equal(during?.status, 'RUNNING');
    const record = await engine.wait('long');
    assert.equal(record?.status, 'CANCELLED');
    assert.equal(record?.error?.code, 'CANCELLED');
    assert.equal(engine.cancel('unknown'), undefined);
  });

  it('emits progress at most once per interval, trailing with the latest state', async () => {
    const { registry } = makeRegistry();
    const engine = new CommandEngine(registry, { progressIntervalMs: 100 });
    const seen: Array<{ at: number; progress: Progress }> = [];
    engine.on({ progress: (_id, progress) => seen.push({ at: Date.now(), progress }) });
    engine.run('p', 'test.progress', { steps: 60 });
    await engine.wait('p');
    assert.ok(seen.length >= 2 && seen.length < 20, `emitted ${seen.length} times for 60 updates`);
    for (let index = 1; index < seen.length; index += 1) {
      const gap = (seen[index]?.at ?? 0) - (seen[index - 1]?.at ?? 0);
      assert.ok(gap >= 95, `gap ${gap} ms`);
    }
    const done = seen.map((event) => event.progress.done);
    assert.deepEqual(
      done,
      [...done].sort((a, b) => a - b),
    );
    assert.ok(
      done.some((value) => value > 1 && value < 60),
      'trailing updates carry the latest state, not the first',
    );
    assert.equal(engine.running().length, 0);
  });

  it('keeps finished records in an outbox, oldest first, until acknowledged', async () => {
    const { registry } = makeRegistry();
    const engine = new CommandEngine(registry, { deliveryAcknowledged: true });
    engine.run('a', 'test.read', {});
    await engine.wait('a');
    engine.run('b', 'test.read', {});
    await engine.wait('b');
    assert.deepEqual(
      engine.unacknowledged().map((record) => record.command_id),
      ['a', 'b'],
    );
    engine.acknowledge('a');
    assert.deepEqual(
      engine.unacknowledged().map((record) => record.command_id),
      ['b'],
    );
  });

  it('runs after-delivery actions only once acknowledged, or after the timeout', async () => {
    const { registry, acted } = makeRegistry();
    const engine = new CommandEngine(registry, { deliveryAcknowledged: true, deliveryTimeoutMs: 150 });
    engine.run('p1', 'test.power', {});
    await engine.wait('p1');
    await sleep(20);
    assert.deepEqual(acted, []);
    engine.acknowledge('p1');
    await sleep(5);
    assert.deepEqual(acted, ['p1']);
    engine.run('p2', 'test.power', {});
    await engine.wait('p2');
    await sleep(250);
    assert.deepEqual(acted, ['p1', 'p2'], 'an unacknowledged action still happens after the timeout');
    engine.acknowledge('p2');
    await sleep(5);
    assert.deepEqual(acted, ['p1', 'p2'], 'and only once');
  });

  it('runs after-delivery actions at once for a local caller', async () => {
    const { registry, acted } = makeRegistry();
    const engine = new CommandEngine(registry);
    engine.run('local', 'test.power', {});
    await engine.wait('local');
    await sleep(5);
    assert.deepEqual(acted, ['local']);
  });
});
