/**
 * A whole simulated BlueField host for end-to-end tests and the demo: the PCI tree and rshim
 * daemons (lab.ts), fake MFT/mstflint with NV state on both sides (nv-state.ts: the host's tools
 * refuse what only the Arm may do), and each DPU's Arm system as a real sshd in a network
 * namespace behind a veth named tmfifo_netN (dpu-host.ts). The agent runs in the root namespace;
 * `ip`, `sysctl`, `nft`, `iptables` and `ssh` on its PATH are wrappers that act inside the lab's
 * host namespace, so nothing touches this machine's own network.
 */
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { BlueFieldGeneration } from '../../../agent/hardware/bluefield/contracts.js';
import { startDpuHosts, type DpuHostsLab } from './dpu-host.js';
import { createBlueFieldLab, type BlueFieldLab, type LabCardOptions } from './lab.js';
import {
  createCardState,
  installFakeMlxTools,
  readCardState,
  simulatePowerCycle,
  type SimFlavour,
} from './nv-state.js';

export interface WorldCard {
  generation: BlueFieldGeneration;
  mode?: 'dpu' | 'nic';
  /** Extra simulator options (faults, timing). */
  sim?: Partial<LabCardOptions>;
}

export interface BlueFieldWorld {
  dir: string;
  lab: BlueFieldLab;
  dpus: DpuHostsLab;
  /** The agent's PATH: lab network wrappers, host-side fake tools, then the system's. */
  toolPath: string;
  stateDir: string;
  stagingDir: string;
  /** Environment for an agent process (BMA_SYS, BMA_DEV, BMA_RUN, PATH, state and staging). */
  env: Record<string, string>;
  /** The fake tools' NV state of card i. */
  nv(index: number): ReturnType<typeof readCardState>;
  powerCycle(index: number): Promise<void>;
  close(): Promise<void>;
}

const q = (value: string): string => `'${value.replaceAll("'", `'\\''`)}'`;

export const createBlueFieldWorld = async (options: {
  cards: WorldCard[];
  flavour?: SimFlavour;
  speed?: number;
}): Promise<BlueFieldWorld> => {
  const flavour = options.flavour ?? 'mft';
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bma-bfworld-'));
  const cleanups: Array<() => Promise<void>> = [() => rm(dir, { recursive: true, force: true })];
  const close = async (): Promise<void> => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
  };
  try {
    const slots = options.cards.map(
      (_, index) => `0000:${(0x03 + index * 0x20).toString(16).padStart(2, '0')}:00`,
    );
    const lab = await createBlueFieldLab({
      cards: options.cards.map((card, index) => ({
        generation: card.generation,
        slot: slots[index] ?? '',
        rshimIndex: index,
        mode: card.mode ?? 'nic',
        ...(card.sim ?? {}),
      })),
      ...(options.speed === undefined ? {} : { speed: options.speed }),
      installTools: async (binDir, stateDir) => {
        await installFakeMlxTools(binDir, { flavour, stateDir, side: 'host' });
        for (const [index, card] of options.cards.entries()) {
          await createCardState(stateDir, {
            slot: slots[index] ?? '',
            generation: card.generation,
            mode: card.mode ?? 'nic',
          });
        }
      },
      // The DPU's own idea of its mode follows the NV state the fake tools keep.
      onPowerCycle: async (card, stateDir) => {
        const state = await simulatePowerCycle(stateDir, card.slot);
        const engine = state.params.INTERNAL_CPU_OFFLOAD_ENGINE?.current ?? '';
        return /\(1\)|DISABLED/.test(engine) ? 'nic' : 'dpu';
      },
    });
    cleanups.push(() => lab.close());

    // Each Arm system sees only its own card, through the DPU's MFT (what BlueField OS ships).
    const armShared = path.join(dir, 'arm-tools');
    await installFakeMlxTools(armShared, { flavour: 'mft', stateDir: lab.stateDir, side: 'arm' });
    const binDirs: string[] = [];
    for (const [index, slot] of slots.entries()) {
      const bin = path.join(dir, `arm-bin-${index}`);
      await mkdir(bin, { recursive: true });
      for (const tool of ['mlxconfig', 'mlxprivhost', 'flint', 'mst']) {
        const file = path.join(bin, tool);
        await writeFile(
          file,
          `#!/bin/sh\nBMA_SIM_CARD=${q(slot)} BMA_SIM_SIDE=arm exec ${q(path.join(armShared, tool))} "$@"\n`,
        );
        await chmod(file, 0o755);
      }
      binDirs.push(bin);
    }
    const dpuDir = path.join(dir, 'dpus');
    await mkdir(dpuDir);
    const dpus = await startDpuHosts({
      dir: dpuDir,
      count: options.cards.length,
      label: 'wld',
      dpuRoots: lab.cards.map((card) => card.dpuRoot),
      binDirs,
    });
    cleanups.push(() => dpus.close());

    const stateDir = path.join(dir, 'agent-state');
    const stagingDir = path.join(dir, 'staging');
    await mkdir(stateDir);
    await mkdir(stagingDir);
    const toolPath = [dpus.toolBinDir, lab.binDir, process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'].join(
      ':',
    );
    return {
      dir,
      lab,
      dpus,
      toolPath,
      stateDir,
      stagingDir,
      env: {
        PATH: toolPath,
        BMA_SYS: lab.paths.sys,
        BMA_DEV: lab.paths.dev,
        BMA_RUN: lab.paths.run,
        BMA_STATE_DIR: stateDir,
        BMA_STAGING_DIR: stagingDir,
      },
      nv: (index) => readCardState(lab.stateDir, slots[index] ?? ''),
      powerCycle: async (index) => {
        await lab.card(index).powerCycle();
      },
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
};
