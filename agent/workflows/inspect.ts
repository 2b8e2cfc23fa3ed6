/**
 * inspect.run: what a node does while it is being inspected, in the order that works on a host
 * with BlueFields. The BFB download starts with the inventory (it is the long pole); the DPU is
 * put in NIC mode before the push because PXE and the boot stream break in DPU mode; NAT and the
 * setup script come after the install because they need the installed Arm system.
 */
import { devicesOf, withPhase } from './steps.js';
import type { BlueFieldOps, ChecksumInput, OpContext, OpResult } from '../hardware/bluefield/ops.js';

export interface InspectRequest {
  lldp?: boolean | undefined;
  lldp_timeout_s?: number | undefined;
  bfb?:
    | {
        url: string;
        checksum?: ChecksumInput | undefined;
        bf_cfg?: string | undefined;
        force?: boolean | undefined;
        timeout_s?: number | undefined;
      }
    | undefined;
  dpu_setup?: { script: string; timeout_s?: number | undefined } | undefined;
}

export interface InspectDeps {
  collectInventory: (
    params: { lldp?: boolean; lldp_timeout_s?: number },
    context: OpContext,
  ) => Promise<Record<string, unknown>>;
  bluefield: BlueFieldOps;
}

type Step = 'mode' | 'install' | 'nat' | 'dpu_setup';

export const runInspect = async (
  request: InspectRequest,
  deps: InspectDeps,
  context: OpContext,
): Promise<OpResult> => {
  const { bluefield } = deps;
  // Joined by installBfb later; a failed download surfaces there, with its own code.
  const prefetch = request.bfb
    ? bluefield.prefetchBfb(request.bfb, { ...context, progress: withPhase(context, 'bfb download') })
    : null;
  prefetch?.catch(() => undefined);

  const inventoryParams = {
    ...(request.lldp === undefined ? {} : { lldp: request.lldp }),
    ...(request.lldp_timeout_s === undefined ? {} : { lldp_timeout_s: request.lldp_timeout_s }),
  };
  context.progress({ phase: 'inventory', done: 0, unit: 'steps' });
  const inventory = await deps.collectInventory(inventoryParams, context);
  const cards = Array.isArray(inventory.bluefield) ? inventory.bluefield : [];

  const steps: Partial<Record<Step, OpResult>> = {};
  let powerCycleRequired = false;
  let skipped: string | null = null;
  let armSkipped: string | null = null;
  if (!request.bfb) skipped = 'no BFB given';
  else if (cards.length === 0) skipped = 'no BlueField in this host';

  if (request.bfb && skipped === null) {
    context.progress({ phase: 'mode', done: 0, unit: 'steps', message: 'ensuring NIC mode' });
    const mode = await bluefield.setMode(
      { mode: 'nic' },
      { ...context, progress: withPhase(context, 'mode') },
    );
    steps.mode = mode;
    const notYet = devicesOf(mode).filter((card) => {
      const after = card.after as { current?: unknown } | undefined;
      return after?.current !== 'nic';
    });
    if (notYet.length > 0) {
      // The push only works once NIC mode is live, and that takes a power cycle.
      powerCycleRequired = true;
      skipped = `NIC mode takes effect after a power cycle (${notYet.map((card) => String(card.slot)).join(', ')}); run inspect.run again after it`;
    }
  }
  if (request.bfb && skipped === null) {
    steps.install = await bluefield.installBfb(request.bfb, {
      ...context,
      progress: withPhase(context, 'bfb install'),
    });
    // NAT and the setup script need a running Arm OS; a BF3 in NIC mode has none.
    const installed = devicesOf(steps.install);
    const armUp = installed.filter((card) => card.arm_running !== false).map((card) => String(card.slot));
    const armOff = installed.filter((card) => card.arm_running === false).map((card) => String(card.slot));
    if (armOff.length > 0) {
      armSkipped = `no Arm OS runs in NIC mode on ${armOff.join(', ')}: NAT and the setup script wait for DPU mode`;
    }
    const perCard = async (step: (device: string) => Promise<OpResult>): Promise<OpResult> => {
      const devices: OpResult[] = [];
      for (const slot of armUp) devices.push(...devicesOf(await step(slot)));
      return { devices };
    };
    if (armUp.length > 0) {
      steps.nat = await perCard((device) =>
        bluefield.configureNat({ device }, { ...context, progress: withPhase(context, 'nat') }),
      );
      const setup = request.dpu_setup;
      if (setup) {
        steps.dpu_setup = await perCard((device) =>
          bluefield.dpuExec({ ...setup, device }, { ...context, progress: withPhase(context, 'dpu setup') }),
        );
      }
    }
  } else if (prefetch) {
    // Nothing will use the download: let it finish or fail quietly rather than dangle.
    await prefetch.catch(() => undefined);
  }

  // The DPUs changed while we worked: report them as they are now.
  const finalInventory =
    Object.keys(steps).length > 0 ? { ...inventory, bluefield: await bluefield.list(context) } : inventory;
  return {
    inventory: finalInventory,
    bluefield: {
      ...steps,
      ...(skipped === null ? {} : { skipped }),
      ...(armSkipped === null ? {} : { arm_skipped: armSkipped }),
    },
    power_cycle_required: powerCycleRequired,
  };
};
