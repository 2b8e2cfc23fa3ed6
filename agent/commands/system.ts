import { Type } from '@sinclair/typebox';
import type { PowerBackend } from '../hardware/generic/power.js';
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
