import { Type } from '@sinclair/typebox';
import { collectInventory } from '../hardware/generic/inventory/index.js';
import type { HardwarePaths } from '../hardware/paths.js';
import { defineCommand, type AnyCommandDefinition } from './definition.js';

export interface InventoryCommandDeps {
  paths: HardwarePaths;
  /** BOOTIF from the kernel command line, or null when the node did not PXE boot. */
  bootif: string | null;
}

const InventoryParams = Type.Object(
  {
    lldp: Type.Optional(Type.Boolean()),
    lldp_timeout_s: Type.Optional(Type.Number({ minimum: 0, maximum: 600 })),
  },
  { additionalProperties: false },
);

export const inventoryCommands = (deps: InventoryCommandDeps): AnyCommandDefinition[] => [
  defineCommand({
    name: 'inventory.collect',
    summary: 'Collect the hardware inventory in the shape ironic-python-agent reports',
    exclusive: false,
    params: InventoryParams,
    handler: async (params, context) => {
      if (params.lldp) {
        // Accepted so conductors can already ask for it; interfaces report lldp: null until it exists.
        context.log.warn('LLDP collection is not implemented yet; interfaces report lldp: null');
      }
      const inventory = await collectInventory({
        paths: deps.paths,
        bootif: deps.bootif,
        signal: context.signal,
        progress: context.progress,
      });
      return { inventory };
    },
  }),
];
