import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import type {
  AnyCommandDefinition,
  CommandContext,
  ProgressUpdate,
} from '../../agent/commands/definition.js';
import { systemCommands } from '../../agent/commands/system.js';
import { createPowerBackend, type PowerBackendName } from '../../agent/hardware/generic/power.js';
import type { HardwarePaths } from '../../agent/hardware/paths.js';
import { AgentError, CancelledError } from '../../agent/util/errors.js';
import { silentLogger } from '../../agent/util/logger.js';
import { findOnPath, runProcess, type RunProcess } from '../../agent/util/run-process.js';

let root: string;
let bin: string;
let callLog: string;
let paths: HardwarePaths;
let sysrqTrigger: string;

/**
 * Every program the backends run is looked up in `bin` alone, so a missing fake ends in
 * TOOL_NOT_FOUND and can never reach the real poweroff of the machine running the tests.
 */
const fakeRun: RunProcess = (file, args, options = {}) =>
  runProcess(file, args, { ...options, env: { ...options.env, PATH: bin } });

const writeFake = async (name: string, body: string): Promise<void> => {
  const file = path.join(bin, name);
  // Only shell builtins: PATH holds nothing but the fakes.
  await writeFile(file, `#!/bin/sh\nprintf '%s\\n' "\${0##*/} $*" >> '${callLog}'\n${body}`);
  await chmod(file, 0o755);
};

const calls = async (): Promise<string[]> => {
  try {
    return (await readFile(callLog, 'utf8')).split('\n').filter((line) => line !== '');
  } catch {
    return [];
  }
};

interface FakeContext {
  context: CommandContext;
  actions: Array<() => Promise<void> | void>;
  progress: ProgressUpdate[];
  controller: AbortController;
}

const makeContext = (): FakeContext => {
  const actions: Array<() => Promise<void> | void> = [];
  const progress: ProgressUpdate[] = [];
  const controller = new AbortController();
  return {
    actions,
    progress,
    controller,
    context: {
      commandId: 'c-test',
      signal: controller.signal,
      log: silentLogger(),
      progress: (update) => progress.push(update),
      afterDelivery: (action) => actions.push(action),
    },
  };
};

const commandsFor = (backend: PowerBackendName): Map<string, AnyCommandDefinition> => {
  const power = createPowerBackend(backend, { paths, logger: silentLogger(), runProcess: fakeRun });
  return new Map(systemCommands({ power }).map((definition) => [definition.name, definition]));
};

const commandNamed = (commands: Map<string, AnyCommandDefinition>, name: string): AnyCommandDefinition => {
  const definition = commands.get(name);
  assert.ok(definition, `${name} is defined`);
  return definition;
};

const deliver = async (actions: Array<() => Promise<void> | void>): Promise<void> => {
  for (const action of actions.splice(0)) await action();
};

before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'bma-system-'));
  bin = path.join(root, 'bin');
  callLog = path.join(root, 'calls.log');
  paths = { sys: path.join(root, 'sys'), dev: path.join(root, 'dev'), proc: path.join(root, 'proc') };
  sysrqTrigger = path.join(paths.proc, 'sysrq-trigger');
  await mkdir(bin);
  await mkdir(paths.proc);
  await writeFake('sync', '');
  await writeFake('poweroff', '');
  await writeFake('reboot', '');
  // Refuse to go on unless the fakes are what the backends will find.
  for (const name of ['sync', 'poweroff', 'reboot'])
    assert.equal(await findOnPath(name, bin), path.join(bin, name));
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

beforeEach(async () => {
  await rm(callLog, { force: true });
  await writeFile(sysrqTrigger, '');
});

describe('system commands', () => {
  it('are exclusive and take no params', () => {
    for (const definition of commandsFor('none').values()) {
      assert.equal(definition.exclusive, true, definition.name);
      assert.equal((definition.params as { additionalProperties?: unknown }).additionalProperties, false);
    }
    assert.deepEqual([...commandsFor('none').keys()].sort(), [
      'system.power_off',
      'system.reboot',
      'system.sync',
    ]);
  });

  it('system.sync runs sync and nothing else', async () => {
    const { context, actions } = makeContext();
    const result = await commandNamed(commandsFor('command'), 'system.sync').handler({}, context);
    assert.deepEqual(result, {});
    assert.deepEqual(await calls(), ['sync ']);
    assert.equal(actions.length, 0);
  });

  it('system.power_off syncs at once and powers off only after delivery', async () => {
    const { context, actions } = makeContext();
    const result = await commandNamed(commandsFor('command'), 'system.power_off').handler({}, context);
    assert.deepEqual(result, {});
    assert.deepEqual(await calls(), ['sync ']);
    assert.equal(actions.length, 1);
    await deliver(actions);
    assert.deepEqual(await calls(), ['sync ', 'sync ', 'poweroff -f']);
  });

  it('system.reboot syncs at once and reboots only after delivery', async () => {
    const { context, actions } = makeContext();
    await commandNamed(commandsFor('command'), 'system.reboot').handler({}, context);
    assert.deepEqual(await calls(), ['sync ']);
    await deliver(actions);
    assert.deepEqual(await calls(), ['sync ', 'sync ', 'reboot -f']);
  });

  it('fails without scheduling anything when sync fails', async () => {
    await writeFake('sync', 'echo "I/O error" >&2\nexit 1\n');
    try {
      const { context, actions } = makeContext();
      await assert.rejects(
        commandNamed(commandsFor('command'), 'system.power_off').handler({}, context),
        (error) => {
          assert.ok(AgentError.is(error));
          assert.equal(error.code, 'POWER_ACTION_FAILED');
          assert.match(error.message, /I\/O error/);
          return true;
        },
      );
      assert.equal(actions.length, 0);
    } finally {
      await writeFake('sync', '');
    }
  });

  it('does not schedule a power action once cancelled', async () => {
    const { context, actions, controller } = makeContext();
    controller.abort(new CancelledError());
    await assert.rejects(
      commandNamed(commandsFor('command'), 'system.reboot').handler({}, context),
      CancelledError,
    );
    assert.equal(actions.length, 0);
    assert.deepEqual(await calls(), []);
  });

  it('reports POWER_ACTION_FAILED when the power program is missing', async () => {
    const power = createPowerBackend('command', {
      paths,
      logger: silentLogger(),
      runProcess: (file, args, options = {}) =>
        runProcess(file, args, {
          ...options,
          env: { PATH: file === 'poweroff' ? path.join(root, 'empty') : bin },
        }),
    });
    await assert.rejects(power.powerOff(), (error) => {
      assert.ok(AgentError.is(error));
      assert.equal(error.code, 'POWER_ACTION_FAILED');
      assert.equal(error.details.action, 'power_off');
      assert.ok(AgentError.is(error.cause) && error.cause.code === 'TOOL_NOT_FOUND');
      return true;
    });
  });
});

describe('sysrq power backend', () => {
  it("writes 's' then 'o' to sysrq-trigger after delivery of power_off", async () => {
    const { context, actions } = makeContext();
    await commandNamed(commandsFor('sysrq'), 'system.power_off').handler({}, context);
    assert.equal(await readFile(sysrqTrigger, 'utf8'), '');
    await deliver(actions);
    assert.equal(await readFile(sysrqTrigger, 'utf8'), 'so');
    assert.deepEqual(await calls(), ['sync ', 'sync ']);
  });

  it("writes 's' then 'b' for reboot", async () => {
    const power = createPowerBackend('sysrq', { paths, logger: silentLogger(), runProcess: fakeRun });
    await power.reboot();
    assert.equal(await readFile(sysrqTrigger, 'utf8'), 'sb');
  });

  it('never creates sysrq-trigger when the proc root is wrong', async () => {
    const wrong = { ...paths, proc: path.join(root, 'no-proc') };
    const power = createPowerBackend('sysrq', { paths: wrong, logger: silentLogger(), runProcess: fakeRun });
    await assert.rejects(
      power.powerOff(),
      (error) => AgentError.is(error) && error.code === 'POWER_ACTION_FAILED',
    );
  });
});

describe('none power backend', () => {
  it('syncs but carries out no power action', async () => {
    const { context, actions } = makeContext();
    await commandNamed(commandsFor('none'), 'system.power_off').handler({}, context);
    await deliver(actions);
    assert.deepEqual(await calls(), ['sync ', 'sync ']);
    assert.equal(await readFile(sysrqTrigger, 'utf8'), '');
  });

  it('rejects an unknown backend name', () => {
    assert.throws(
      () => createPowerBackend('halt' as PowerBackendName, { paths, logger: silentLogger() }),
      (error) => AgentError.is(error) && error.code === 'INVALID_CONFIG',
    );
  });
});
