import { Type, type Static } from '@sinclair/typebox';
import type { BlueFieldOps } from '../hardware/bluefield/ops.js';
import { runDeploy } from '../workflows/deploy.js';
import { runInspect } from '../workflows/inspect.js';
import { defineCommand, type AnyCommandDefinition, type CommandContext } from './definition.js';
import { ChecksumParam, HttpUrl, ImageWriteParams } from './image.js';
import { InventoryParams } from './inventory.js';

export const InspectRunParams = Type.Object(
  {
    lldp: Type.Optional(Type.Boolean()),
    lldp_timeout_s: Type.Optional(Type.Number({ minimum: 0.1, maximum: 600 })),
    bfb: Type.Optional(
      Type.Object(
        {
          url: HttpUrl,
          checksum: Type.Optional(ChecksumParam),
          bf_cfg: Type.Optional(Type.String({ maxLength: 65536 })),
          force: Type.Optional(Type.Boolean()),
          timeout_s: Type.Optional(Type.Number({ minimum: 10, maximum: 6 * 3600 })),
        },
        { additionalProperties: false },
      ),
    ),
    dpu_setup: Type.Optional(
      Type.Object(
        {
          script: Type.String({ minLength: 1, maxLength: 128 * 1024 }),
          timeout_s: Type.Optional(Type.Number({ minimum: 1, maximum: 6 * 3600 })),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);

export const DeployRunParams = Type.Object(
  {
    image: ImageWriteParams,
    bluefield: Type.Optional(
      Type.Object(
        {
          mode: Type.Optional(Type.Union([Type.Literal('nic'), Type.Literal('dpu')])),
          hide_port2_pf: Type.Optional(Type.Boolean()),
          host_privilege: Type.Optional(Type.Union([Type.Literal('restricted'), Type.Literal('privileged')])),
          disable_port_owner: Type.Optional(Type.Boolean()),
          disable_rshim: Type.Optional(Type.Boolean()),
          disable_tracer: Type.Optional(Type.Boolean()),
          disable_counter_rd: Type.Optional(Type.Boolean()),
          device: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);

export interface WorkflowCommandDeps {
  collectInventory: (params: Static<typeof InventoryParams>, context: CommandContext) => Promise<unknown>;
  writeImage: (params: Static<typeof ImageWriteParams>, context: CommandContext) => Promise<unknown>;
  bluefield: BlueFieldOps;
}

export const workflowCommands = (deps: WorkflowCommandDeps): AnyCommandDefinition[] => [
  defineCommand({
    name: 'inspect.run',
    summary:
      'Inventory and LLDP; with a BFB and a BlueField: NIC mode, BFB install, NAT, the DPU setup script',
    exclusive: true,
    params: InspectRunParams,
    handler: (params, context) =>
      runInspect(
        params,
        {
          collectInventory: async (inventoryParams, opContext) =>
            (await deps.collectInventory(inventoryParams, { ...context, ...opContext })) as Record<
              string,
              unknown
            >,
          bluefield: deps.bluefield,
        },
        context,
      ),
  }),
  defineCommand({
    name: 'deploy.run',
    summary: 'Write the host image; once verified, switch the DPU to DPU mode and restrict the host',
    exclusive: true,
    params: DeployRunParams,
    handler: (params, context) =>
      runDeploy(
        params,
        {
          writeImage: async (imageParams, opContext) =>
            (await deps.writeImage(imageParams, { ...context, ...opContext })) as Record<string, unknown>,
          bluefield: deps.bluefield,
        },
        context,
      ),
  }),
];
