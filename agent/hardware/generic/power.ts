import { constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import { AgentError } from '../../util/errors.js';
import type { Logger } from '../../util/logger.js';
import { runProcess as defaultRunProcess, type RunProcess } from '../../util/run-process.js';
import { procPath, type HardwarePaths } from '../paths.js';

export type PowerBackendName = 'command' | 'sysrq' | 'none';

export const POWER_BACKEND_NAMES: readonly PowerBackendName[] = ['command', 'sysrq', 'none'];

export interface PowerBackend {
  name: PowerBackendName;
  /** Flushes file system buffers with the `sync` program, in every backend. */
  sync(signal?: AbortSignal): Promise<void>;
  powerOff(): Promise<void>;
  reboot(): Promise<void>;
}

export interface PowerBackendDeps {
  paths: HardwarePaths;
  logger: Logger;
  runProcess?: RunProcess;
}

type PowerAction = 'power_off' | 'reboot';

// sync can take minutes after a large image write; a hung one must still end the command.
const SYNC_TIMEOUT_MS = 10 * 60_000;
// `poweroff -f` normally never returns; if it hangs, the conductor should hear about it.
const POWER_COMMAND_TIMEOUT_MS = 60_000;

const SYSRQ_KEYS: Record<PowerAction, string> = { power_off: 'o', reboot: 'b' };
const COMMAND_PROGRAMS: Record<PowerAction, string> = { power_off: 'poweroff', reboot: 'reboot' };

const powerFailed = (backend: PowerBackendName, action: PowerAction | 'sync', cause: unknown): AgentError => {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new AgentError(
    'POWER_ACTION_FAILED',
    `${action} through the ${backend} power backend failed: ${reason}`,
    {
      details: { backend, action },
      cause,
    },
  );
};

// Each write to sysrq-trigger is one command; no O_CREAT so a wrong proc root fails instead of writing a file.
const writeSysrq = async (file: string, keys: string[]): Promise<void> => {
  const handle = await open(file, fsConstants.O_WRONLY);
  try {
    for (const key of keys) await handle.write(key);
  } finally {
    await handle.close();
  }
};

/**
 * Power control is configuration, so the demo and tests use `none` (or a fake PATH) and nothing
 * is ever powered off by accident. Callers run the action only after the result was delivered.
 */
export const createPowerBackend = (name: PowerBackendName, deps: PowerBackendDeps): PowerBackend => {
  if (!POWER_BACKEND_NAMES.includes(name)) {
    throw new AgentError('INVALID_CONFIG', `unknown power backend ${JSON.stringify(name)}`, {
      details: { expected: POWER_BACKEND_NAMES },
    });
  }
  const run = deps.runProcess ?? defaultRunProcess;
  const log = deps.logger.child({ power_backend: name });

  const sync = async (signal?: AbortSignal): Promise<void> => {
    try {
      await run('sync', [], { timeoutMs: SYNC_TIMEOUT_MS, ...(signal ? { signal } : {}) });
    } catch (error) {
      if (AgentError.is(error) && error.code === 'CANCELLED') throw error;
      throw powerFailed(name, 'sync', error);
    }
  };

  // The handler already synced before reporting success; a failure here must not keep the node up.
  const syncBeforeAction = async (action: PowerAction): Promise<void> => {
    try {
      await sync();
    } catch (error) {
      log.warn({ err: error, action }, 'sync before the power action failed; carrying on');
    }
  };

  const perform = async (action: PowerAction): Promise<void> => {
    await syncBeforeAction(action);
    try {
      switch (name) {
        case 'command':
          log.info({ action }, 'running the power command');
          await run(COMMAND_PROGRAMS[action], ['-f'], { timeoutMs: POWER_COMMAND_TIMEOUT_MS });
          return;
        case 'sysrq': {
          const trigger = procPath(deps.paths, 'sysrq-trigger');
          log.info({ action, trigger }, 'triggering the power action through sysrq');
          // 's' is the kernel's emergency sync, belt and braces after the sync program.
          await writeSysrq(trigger, ['s', SYSRQ_KEYS[action]]);
          return;
        }
        case 'none':
          log.info({ action }, 'power backend is none: not carrying out the power action');
          return;
      }
    } catch (error) {
      throw powerFailed(name, action, error);
    }
  };

  return {
    name,
    sync,
    powerOff: () => perform('power_off'),
    reboot: () => perform('reboot'),
  };
};
