import { Type } from '@sinclair/typebox';
import type { PowerBackend } from '../hardware/generic/power.js';
import { collectSystemLogs, type CollectLogsDeps } from '../system/collect-logs.js';
import { defineCommand, type AnyCommandDefinition, type CommandContext } from './definition.js';

export interface SystemCommandDeps {
  power: PowerBackend;
}

const NoParams = Type.Object({}, { additionalProperties: false });

/**
 * Syncs now, while the command can still fail, and leaves the power action for after delivery:
 * a node that goes down before the conductor has the result would leave the command unknown.
 */
const schedulePowerAction = async (
  power: PowerBackend,
  action: 'powerOff' | 'reboot',
  context: CommandContext,
): Promise<Record<string, never>> => {
  await power.sync(context.signal);
  context.signal.throwIfAborted();
  context.log.info(
    { action, power_backend: power.name },
    'power action scheduled for after the result is delivered',
  );
  context.afterDelivery(() => power[action]());
  return {};
};

export const systemCommands = (deps: SystemCommandDeps): AnyCommandDefinition[] => [
  defineCommand({
    name: 'system.sync',
    summary: 'Flush file system buffers to disk',
    exclusive: true,
    params: NoParams,
    handler: async (_params, context) => {
      await deps.power.sync(context.signal);
      return {};
    },
  }),
  defineCommand({
    name: 'system.power_off',
    summary: 'Sync, then power the node off once the result has been delivered',
    exclusive: true,
    params: NoParams,
    handler: (_params, context) => schedulePowerAction(deps.power, 'powerOff', context),
  }),
  defineCommand({
    name: 'system.reboot',
    summary: 'Sync, then reboot the node once the result has been delivered',
    exclusive: true,
    params: NoParams,
    handler: (_params, context) => schedulePowerAction(deps.power, 'reboot', context),
  }),
];

export type SystemLogCommandDeps = CollectLogsDeps;

/** IPA's log.collect_system_logs: read-only, so it runs beside an erase or a deploy that failed. */
export const systemLogCommands = (deps: SystemLogCommandDeps): AnyCommandDefinition[] => [
  defineCommand({
    name: 'system.collect_logs',
    summary:
      "Gather the agent's recent log, the ramdisk's logs and the output of dmesg, ip, lsblk, df, ps into a gzip'd tar",
    exclusive: false,
    params: NoParams,
    handler: async (_params, context) => {
      const collected = await collectSystemLogs(deps, { signal: context.signal });
      if (collected.errors.length > 0)
        context.log.info(
          { notes: collected.errors.length },
          'system logs collected; errors.txt says what is missing',
        );
      return {
        archive: collected.archive.toString('base64'),
        files: collected.files,
        bytes: collected.archive.length,
      };
    },
  }),
];
