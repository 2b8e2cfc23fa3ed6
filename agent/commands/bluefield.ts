import { Type, type Static } from '@sinclair/typebox';
import type { BlueFieldOps } from '../hardware/bluefield/ops.js';
import { ChecksumParam, HttpUrl } from './image.js';
import { defineCommand, type AnyCommandDefinition } from './definition.js';

const Device = Type.String({ minLength: 1, maxLength: 4096 });
export const InstallBfbParams = Type.Object(
  {
    url: HttpUrl,
    checksum: Type.Optional(ChecksumParam),
    // The installer reads bf.cfg from the boot FIFO; 64 KiB is far beyond any real one.
    bf_cfg: Type.Optional(Type.String({ maxLength: 65536 })),
    device: Type.Optional(Device),
    timeout_s: Type.Optional(Type.Number({ minimum: 10, maximum: 6 * 3600 })),
    force: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type InstallBfbParams = Static<typeof InstallBfbParams>;

export const SetModeParams = Type.Object(
  {
    mode: Type.Union([Type.Literal('nic'), Type.Literal('dpu')]),
    hide_port2_pf: Type.Optional(Type.Boolean()),
    device: Type.Optional(Device),
  },
  { additionalProperties: false },
);
export type SetModeParams = Static<typeof SetModeParams>;

export const SetHostPrivilegeParams = Type.Object(
  {
    level: Type.Union([Type.Literal('restricted'), Type.Literal('privileged')]),
    disable_port_owner: Type.Optional(Type.Boolean()),
    disable_rshim: Type.Optional(Type.Boolean()),
    disable_tracer: Type.Optional(Type.Boolean()),
    disable_counter_rd: Type.Optional(Type.Boolean()),
    device: Type.Optional(Device),
    force: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type SetHostPrivilegeParams = Static<typeof SetHostPrivilegeParams>;

export const ConfigureNatParams = Type.Object(
  { device: Type.Optional(Device) },
  { additionalProperties: false },
);
export type ConfigureNatParams = Static<typeof ConfigureNatParams>;

export const DpuExecParams = Type.Object(
  {
    script: Type.String({ minLength: 1, maxLength: 128 * 1024 }),
    timeout_s: Type.Optional(Type.Number({ minimum: 1, maximum: 6 * 3600 })),
    device: Type.Optional(Device),
  },
  { additionalProperties: false },
);
export type DpuExecParams = Static<typeof DpuExecParams>;

const NoParams = Type.Object({}, { additionalProperties: false });

export const bluefieldCommands = (ops: BlueFieldOps): AnyCommandDefinition[] => [
  defineCommand({
    name: 'bluefield.list',
    summary: 'The BlueField DPUs: PCI address, generation, rshim, mode, host privilege, firmware',
    exclusive: false,
    params: NoParams,
    handler: async (_params, context) => ({ devices: await ops.list(context) }),
  }),
  defineCommand({
    name: 'bluefield.install_bfb',
    summary: "Download and check a BFB, push it through each DPU's rshim and follow the log until ready",
    exclusive: true,
    params: InstallBfbParams,
    handler: (params, context) => ops.installBfb(params, context),
  }),
  defineCommand({
    name: 'bluefield.set_mode',
    summary: 'Switch the DPU between NIC mode and DPU (embedded CPU) mode for the next power cycle',
    exclusive: true,
    params: SetModeParams,
    handler: (params, context) => ops.setMode(params, context),
  }),
  defineCommand({
    name: 'bluefield.set_host_privilege',
    summary: "Restrict or privilege the x86 host's access to the DPU (on the Arm side when the host may not)",
    exclusive: true,
    params: SetHostPrivilegeParams,
    handler: (params, context) => ops.setHostPrivilege(params, context),
  }),
  defineCommand({
    name: 'bluefield.configure_nat',
    summary: "Give each DPU's Arm system a way out through the host: tmfifo address, forwarding, masquerade",
    exclusive: true,
    params: ConfigureNatParams,
    handler: (params, context) => ops.configureNat(params, context),
  }),
  defineCommand({
    name: 'bluefield.dpu_exec',
    summary: "Run a script on the DPU's Arm system over SSH through tmfifo, its output streamed as progress",
    exclusive: true,
    params: DpuExecParams,
    handler: (params, context) => ops.dpuExec(params, context),
  }),
];
