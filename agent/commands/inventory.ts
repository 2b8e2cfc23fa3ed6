import { Type, type Static } from '@sinclair/typebox';
import { collectInventory, type Inventory } from '../hardware/generic/inventory/index.js';
import type { HardwarePaths } from '../hardware/paths.js';
import { collectLldp } from '../lldp/capture.js';
import type { InterfaceLldp } from '../lldp/types.js';
import { defineCommand, type AnyCommandDefinition, type CommandContext } from './definition.js';

export interface InventoryCommandDeps {
  paths: HardwarePaths;
  /** BOOTIF from the kernel command line, or null when the node did not PXE boot. */
  bootif: string | null;
  /** `ipa-collect-lldp`: collect LLDP when the params do not say. */
  collectLldp: boolean;
  /** `ipa-lldp-timeout`, used when the params name no timeout. */
  lldpTimeoutS: number;
  /** Fills the inventory's `bluefield` list; absent, the list stays empty. */
  listBlueField?: (context: CommandContext) => Promise<Record<string, unknown>[]>;
}

export const InventoryParams = Type.Object(
  {
    lldp: Type.Optional(Type.Boolean()),
    lldp_timeout_s: Type.Optional(Type.Number({ minimum: 0.1, maximum: 600 })),
  },
  { additionalProperties: false },
);

/**
 * Puts each interface's first LLDP frame where IPA reports it (`lldp`, raw TLVs, `[]` when none
 * came) and inspector's parsed fields beside it. Interfaces that were not listened on (VLANs,
 * bonds) keep `lldp: null`.
 */
export const attachLldp = (inventory: Inventory, results: InterfaceLldp[]): Inventory => {
  const byName = new Map(results.map((result) => [result.interface, result]));
  return {
    ...inventory,
    interfaces: inventory.interfaces.map((nic) => {
      const result = byName.get(nic.name);
      return result ? { ...nic, lldp: result.tlvs, lldp_processed: result.parsed } : nic;
    }),
  };
};

/** The inventory with LLDP (when asked) and the BlueField list: what inventory.collect and inspect.run report. */
export const collectFullInventory = async (
  deps: InventoryCommandDeps,
  params: Static<typeof InventoryParams>,
  context: CommandContext,
): Promise<Inventory> => {
  const wantLldp = params.lldp ?? deps.collectLldp;
  // LLDP waits on the wire and the DPU tools take their time while the rest reads sysfs: all start at once.
  const lldp = wantLldp
    ? collectLldp({
        paths: deps.paths,
        timeoutMs: (params.lldp_timeout_s ?? Math.max(0.1, deps.lldpTimeoutS)) * 1000,
        signal: context.signal,
        logger: context.log,
      })
    : null;
  // A DPU tool failing must not cost the rest of the inventory: the list is left empty and the
  // reason logged (bluefield.list reports it as an error when asked directly).
  const bluefield = deps.listBlueField
    ? deps.listBlueField(context).catch((error: unknown) => {
        context.log.warn({ err: error }, 'BlueField devices could not be listed for the inventory');
        return [];
      })
    : null;
  const base = await collectInventory({
    paths: deps.paths,
    bootif: deps.bootif,
    signal: context.signal,
    progress: context.progress,
  });
  const inventory = bluefield ? { ...base, bluefield: await bluefield } : base;
  return lldp ? attachLldp(inventory, await lldp) : inventory;
};

export const inventoryCommands = (deps: InventoryCommandDeps): AnyCommandDefinition[] => [
  defineCommand({
    name: 'inventory.collect',
    summary: 'Collect the hardware inventory in the shape ironic-python-agent reports',
    exclusive: false,
    params: InventoryParams,
    handler: async (params, context) => ({ inventory: await collectFullInventory(deps, params, context) }),
  }),
];
