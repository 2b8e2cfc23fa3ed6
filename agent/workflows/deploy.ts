/**
 * deploy.run: the host image first, and only once it is written and verified, the DPU switched
 * to DPU mode and the host restricted. The order matters: a DPU in DPU mode breaks PXE and the
 * boot stream, so a failed image must leave the card as it was for the next attempt.
 */
import { devicesOf, withPhase } from './steps.js';
import type { BlueFieldOps, OpContext, OpResult } from '../hardware/bluefield/ops.js';

export interface DeployBlueFieldRequest {
  mode?: 'nic' | 'dpu' | undefined;
  hide_port2_pf?: boolean | undefined;
  host_privilege?: 'restricted' | 'privileged' | undefined;
  disable_port_owner?: boolean | undefined;
  disable_rshim?: boolean | undefined;
  disable_tracer?: boolean | undefined;
  disable_counter_rd?: boolean | undefined;
  device?: string | undefined;
}

export interface DeployDeps<ImageParams> {
  writeImage: (params: ImageParams, context: OpContext) => Promise<Record<string, unknown>>;
  bluefield: BlueFieldOps;
}

const anyPowerCycle = (result: OpResult | undefined): boolean => {
  if (!result) return false;
  if (result.power_cycle_required === true) return true;
  return devicesOf(result).some((card) => card.power_cycle_required === true);
};

export const runDeploy = async <ImageParams>(
  request: { image: ImageParams; bluefield?: DeployBlueFieldRequest | undefined },
  deps: DeployDeps<ImageParams>,
  context: OpContext,
): Promise<OpResult> => {
  // Throws on any failure (checksum, disk, download): the DPU is then never touched.
  const image = await deps.writeImage(request.image, { ...context, progress: withPhase(context, 'image') });
  context.signal.throwIfAborted();

  const wanted = request.bluefield;
  const bluefield: OpResult = {};
  if (wanted && (wanted.mode || wanted.host_privilege)) {
    const cards = await deps.bluefield.list(context);
    if (cards.length === 0) {
      bluefield.skipped = 'no BlueField in this host';
    } else {
      const device = wanted.device === undefined ? {} : { device: wanted.device };
      if (wanted.mode) {
        bluefield.mode = await deps.bluefield.setMode(
          {
            mode: wanted.mode,
            ...device,
            ...(wanted.hide_port2_pf === undefined ? {} : { hide_port2_pf: wanted.hide_port2_pf }),
          },
          { ...context, progress: withPhase(context, 'mode') },
        );
      }
      if (wanted.host_privilege) {
        bluefield.host_privilege = await deps.bluefield.setHostPrivilege(
          {
            level: wanted.host_privilege,
            ...device,
            ...(wanted.disable_port_owner === undefined
              ? {}
              : { disable_port_owner: wanted.disable_port_owner }),
            ...(wanted.disable_rshim === undefined ? {} : { disable_rshim: wanted.disable_rshim }),
            ...(wanted.disable_tracer === undefined ? {} : { disable_tracer: wanted.disable_tracer }),
            ...(wanted.disable_counter_rd === undefined
              ? {}
              : { disable_counter_rd: wanted.disable_counter_rd }),
          },
          { ...context, progress: withPhase(context, 'host privilege') },
        );
      }
    }
  }
  const powerCycleRequired =
    anyPowerCycle(bluefield.mode as OpResult | undefined) ||
    anyPowerCycle(bluefield.host_privilege as OpResult | undefined);
  return { image, bluefield, power_cycle_required: powerCycleRequired };
};
