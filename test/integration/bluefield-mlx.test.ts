/**
 * The agent's mlx functions against the fake NVIDIA tools, run as real programs on a private PATH.
 * A runner with BMA_SIM_SIDE=arm stands in for SSH to the DPU's Arm. Outputs are compared without
 * their final newline: runProcess (execa) strips it.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type {
  BlueFieldGeneration,
  MlxToolSet,
  ToolRunner,
} from '../../agent/hardware/bluefield/contracts.js';
import {
  mstNameForBdf,
  parseMstStatus,
  readFirmware,
  readMstDevices,
} from '../../agent/hardware/bluefield/mlx/firmware.js';
import { isHostRefusal, readMode, setMode } from '../../agent/hardware/bluefield/mlx/mode.js';
import { DPU_SIDE_DEVICE, readPrivilege, setPrivilege } from '../../agent/hardware/bluefield/mlx/privhost.js';
import {
  createLocalRunner,
  findMlxTools,
  mlxDevice,
  runTool,
} from '../../agent/hardware/bluefield/mlx/tools.js';
import { runProcess } from '../../agent/util/run-process.js';
import { rejectsWithCode } from '../support/agent-errors.js';
import {
  SIM_GENERATIONS,
  createCardState,
  injectFailure,
  installFakeMlxTools,
  readCardState,
  simulatePowerCycle,
  updateCardState,
  type SimFlavour,
} from '../support/bluefield-sim/nv-state.js';

const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/bluefield/mlx/', import.meta.url));
const fixture = (name: string): Promise<string> => readFile(path.join(FIXTURES, name), 'utf8');

let root: string;
let counter = 0;
before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'bma-mlx-sim-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Sim {
  bin: string;
  state: string;
  slot: string;
  host: ToolRunner;
  dpu: ToolRunner;
  tools: MlxToolSet;
  /** How the host addresses the card. */
  device: string;
  /** How the DPU's Arm addresses it. */
  dpuDevice: string;
}

const setup = async (
  flavour: SimFlavour,
  generation: BlueFieldGeneration,
  mode: 'dpu' | 'nic',
  slot = '0000:03:00',
): Promise<Sim> => {
  counter += 1;
  const dir = path.join(root, `sim-${counter}`);
  const bin = path.join(dir, 'bin');
  const state = path.join(dir, 'state');
  await installFakeMlxTools(bin, { flavour, stateDir: state, side: 'host' });
  const card = await createCardState(state, { slot, generation, mode });
  const tools = await findMlxTools(bin);
  const host = createLocalRunner({ toolPath: bin, env: { BMA_SIM_SIDE: 'host' } });
  const dpu: ToolRunner = {
    where: 'dpu',
    run: (program, args, options = {}) =>
      runProcess(program, args, {
        ...options,
        env: { PATH: bin, BMA_SIM_SIDE: 'arm', BMA_SIM_CARD: slot },
      }),
  };
  const device = mlxDevice(
    { slot, nicFunctions: card.functions, mstDevice: flavour === 'mft' ? card.mst_device : null },
    tools,
  );
  const dpuDevice = flavour === 'mft' ? card.mst_device : DPU_SIDE_DEVICE;
  return { bin, state, slot, host, dpu, tools, device, dpuDevice };
};

const successfulSets = async (sim: Sim): Promise<number> =>
  (await readCardState(sim.state, sim.slot)).calls.filter(
    (c) => (c.tool === 'mlxconfig' || c.tool === 'mstconfig') && c.args.includes('set') && c.exit === 0,
  ).length;

const NIC_LABEL: Record<BlueFieldGeneration, string> = { BF1: 'separated_host', BF2: 'nic', BF3: 'nic' };

describe('mode through the fake tools', () => {
  for (const flavour of ['mft', 'mstflint'] as const) {
    for (const generation of ['BF1', 'BF2', 'BF3'] as const) {
      it(`${flavour} ${generation}: nic -> dpu, verify, power cycle`, async () => {
        // A BF2 off bus 03 shows that the Arm side addresses its card by its own view.
        const sim = await setup(
          flavour,
          generation,
          'nic',
          generation === 'BF2' ? '0000:e2:00' : '0000:03:00',
        );
        assert.equal(sim.tools.flavour, flavour);
        const profile = SIM_GENERATIONS[generation];

        const firmware = await readFirmware(sim.host, sim.tools, sim.device);
        assert.equal(firmware.psid, profile.psid);
        assert.equal(firmware.fw_version, profile.fw_version);
        if (flavour === 'mft') {
          const devices = await readMstDevices(sim.host, sim.tools);
          assert.equal(mstNameForBdf(devices, `${sim.slot}.0`), sim.device);
          assert.equal(mstNameForBdf(devices, `${sim.slot}.1`), `${sim.device}.1`);
        }

        const start = await readMode(sim.host, sim.tools, sim.device, generation);
        assert.equal(start.current, NIC_LABEL[generation]);
        assert.equal(start.next, NIC_LABEL[generation]);

        let result;
        if (generation === 'BF1') {
          // INTERNAL_CPU_MODEL can only be configured from the embedded CPU.
          const error = await rejectsWithCode(
            setMode(sim.host, sim.tools, sim.device, generation, 'dpu'),
            'OPERATION_NOT_PERMITTED',
          );
          assert.ok(isHostRefusal(error));
          assert.equal((await readMode(sim.host, sim.tools, sim.device, generation)).next, 'separated_host');
          result = await setMode(sim.dpu, sim.tools, sim.dpuDevice, generation, 'dpu');
        } else {
          result = await setMode(sim.host, sim.tools, sim.device, generation, 'dpu');
        }
        assert.equal(result.changed, true);
        assert.equal(result.before.next, NIC_LABEL[generation]);
        assert.equal(result.after.current, NIC_LABEL[generation]);
        assert.equal(result.after.next, 'dpu');
        assert.equal(result.power_cycle_required, true);
        assert.deepEqual(
          Object.keys(result.set),
          generation === 'BF1'
            ? ['INTERNAL_CPU_MODEL']
            : generation === 'BF2'
              ? [
                  'INTERNAL_CPU_PAGE_SUPPLIER',
                  'INTERNAL_CPU_ESWITCH_MANAGER',
                  'INTERNAL_CPU_IB_VPORT0',
                  'INTERNAL_CPU_OFFLOAD_ENGINE',
                ]
              : ['INTERNAL_CPU_OFFLOAD_ENGINE'],
        );

        const again = await setMode(sim.host, sim.tools, sim.device, generation, 'dpu');
        assert.equal(again.changed, false);
        assert.equal(again.power_cycle_required, true);
        assert.equal(await successfulSets(sim), 1);

        await simulatePowerCycle(sim.state, sim.slot);
        const cycled = await readMode(sim.host, sim.tools, sim.device, generation);
        assert.equal(cycled.current, 'dpu');
        assert.equal(cycled.next, 'dpu');
        for (const value of Object.values(cycled.params)) assert.equal(value.current, value.next);
        const settled = await setMode(sim.host, sim.tools, sim.device, generation, 'dpu');
        assert.equal(settled.changed, false);
        assert.equal(settled.power_cycle_required, false);
        assert.equal(await successfulSets(sim), 1);
      });
    }
  }

  it('sets HIDE_PORT2_PF with the mode and goes back to NIC mode', async () => {
    const sim = await setup('mstflint', 'BF3', 'dpu');
    const result = await setMode(sim.host, sim.tools, sim.device, 'BF3', 'nic', { hidePort2Pf: true });
    assert.deepEqual(result.set, { INTERNAL_CPU_OFFLOAD_ENGINE: 'DISABLED', HIDE_PORT2_PF: 'True' });
    assert.equal(result.after.params.HIDE_PORT2_PF?.next, 'True(1)');
    assert.equal(result.after.next, 'nic');
  });
});

describe('host privilege through the fake tools', () => {
  for (const flavour of ['mft', 'mstflint'] as const) {
    it(`${flavour}: refused on the host, done on the DPU, rshim off at the power cycle`, async () => {
      const sim = await setup(flavour, 'BF2', 'dpu', '0000:e2:00');
      const error = await rejectsWithCode(
        setPrivilege(sim.host, null, sim.tools, sim.device, 'restricted', { disable_rshim: true }),
        'OPERATION_NOT_PERMITTED',
        /SSH to the DPU/,
      );
      assert.ok(isHostRefusal(error));
      assert.equal((await readPrivilege(sim.host, sim.tools, sim.device)).level, 'privileged');

      const restricted = await setPrivilege(
        sim.host,
        sim.dpu,
        sim.tools,
        sim.device,
        'restricted',
        { disable_rshim: true, disable_counter_rd: true },
        { dpuDevice: sim.dpuDevice },
      );
      assert.equal(restricted.changed, true);
      assert.equal(restricted.ran_on, 'dpu');
      assert.deepEqual(restricted.after, {
        level: 'restricted',
        disable_rshim: true,
        disable_tracer: false,
        disable_port_owner: false,
        disable_counter_rd: true,
      });
      assert.equal(restricted.power_cycle_required, true);
      assert.equal(restricted.fw_reset_required, true);
      assert.equal((await readCardState(sim.state, sim.slot)).privilege_applied.disable_rshim, false);
      await simulatePowerCycle(sim.state, sim.slot);
      assert.equal((await readCardState(sim.state, sim.slot)).privilege_applied.disable_rshim, true);

      const same = await setPrivilege(sim.host, sim.dpu, sim.tools, sim.device, 'restricted', {
        disable_rshim: true,
        disable_counter_rd: true,
      });
      assert.equal(same.changed, false);

      const back = await setPrivilege(
        sim.host,
        sim.dpu,
        sim.tools,
        sim.device,
        'privileged',
        {},
        {
          dpuDevice: sim.dpuDevice,
        },
      );
      assert.equal(back.ran_on, 'dpu');
      assert.equal(back.after.level, 'privileged');
      assert.equal(back.power_cycle_required, true);
    });
  }

  it('fails verification when the DPU reports success and changes nothing', async () => {
    const sim = await setup('mft', 'BF3', 'dpu');
    await injectFailure(sim.state, sim.slot, { command: 'privhost', side: 'arm', exit: 0, silent: true });
    await rejectsWithCode(
      setPrivilege(sim.host, sim.dpu, sim.tools, sim.device, 'restricted', {}, { dpuDevice: sim.dpuDevice }),
      'PRIVILEGE_VERIFY_FAILED',
    );
  });

  it('reports a failing privilege query', async () => {
    const sim = await setup('mstflint', 'BF2', 'dpu');
    await injectFailure(sim.state, sim.slot, {
      command: 'privhost-query',
      stdout: '-E- Secure host enabled on the device\n',
      exit: 1,
    });
    await rejectsWithCode(
      setPrivilege(sim.host, sim.dpu, sim.tools, sim.device, 'restricted'),
      'TOOL_FAILED',
      /Secure host enabled/,
    );
  });
});

describe('injected failures', () => {
  it('a failing set is reported with the tool output and consumed', async () => {
    const sim = await setup('mstflint', 'BF2', 'dpu');
    await injectFailure(sim.state, sim.slot, {
      command: 'set',
      stdout: 'Applying... Failed!\n-E- Failed to set nv_global_pci_conf settings Device is busy (259)\n',
      stderr: 'extra diagnostics\n',
      exit: 3,
    });
    const error = await rejectsWithCode(
      setMode(sim.host, sim.tools, sim.device, 'BF2', 'nic'),
      'TOOL_FAILED',
      /Device is busy/,
    );
    assert.equal(error.details.exitCode, 3);
    assert.match(String(error.details.stderrTail), /extra diagnostics/);
    assert.equal((await readMode(sim.host, sim.tools, sim.device, 'BF2')).next, 'dpu');
    assert.equal((await setMode(sim.host, sim.tools, sim.device, 'BF2', 'nic')).changed, true);
  });

  it('a set the firmware drops fails verification', async () => {
    const sim = await setup('mft', 'BF2', 'dpu');
    await injectFailure(sim.state, sim.slot, { command: 'set', exit: 0, silent: true });
    const error = await rejectsWithCode(
      setMode(sim.host, sim.tools, sim.device, 'BF2', 'nic'),
      'MODE_VERIFY_FAILED',
    );
    assert.equal((error.details.mismatched as string[]).length, 4);
  });

  it('a failing query, and the NV-access error until a power cycle', async () => {
    const sim = await setup('mft', 'BF3', 'nic');
    await injectFailure(sim.state, sim.slot, {
      command: 'query',
      stdout: '-E- Failed to open device\n',
      exit: 3,
    });
    await rejectsWithCode(
      readMode(sim.host, sim.tools, sim.device, 'BF3'),
      'TOOL_FAILED',
      /Failed to open device/,
    );

    await updateCardState(sim.state, sim.slot, (state) => {
      state.nv_access_error = true;
    });
    const raw = await runTool(sim.host, sim.tools.config, ['-d', sim.device, 'q']);
    assert.equal(raw.exitCode, 3);
    assert.equal(raw.stdout.trimEnd(), (await fixture('nv-access-error-bf2-issue1191.txt')).trimEnd());
    const error = await rejectsWithCode(
      readMode(sim.host, sim.tools, sim.device, 'BF3'),
      'TOOL_FAILED',
      /NV access/,
    );
    assert.match(String(error.details.hint), /power cycle/);
    await rejectsWithCode(setMode(sim.host, sim.tools, sim.device, 'BF3', 'dpu'), 'TOOL_FAILED');
    await simulatePowerCycle(sim.state, sim.slot);
    assert.equal((await readMode(sim.host, sim.tools, sim.device, 'BF3')).current, 'nic');
  });

  it('unknown parameters, values and devices fail like the real tools', async () => {
    const sim = await setup('mstflint', 'BF1', 'dpu');
    const unknown = await runTool(sim.host, 'mstconfig', ['-d', sim.device, '-e', 'q', 'FOO']);
    assert.equal(unknown.exitCode, 3);
    assert.match(unknown.stdout, /\n-E- Unknown Parameter: FOO\n?$/);
    const unsupported = await runTool(sim.host, 'mstconfig', [
      '-d',
      sim.device,
      'q',
      'INTERNAL_CPU_OFFLOAD_ENGINE',
    ]);
    assert.match(
      unsupported.stdout,
      /\n-E- The Device doesn't support INTERNAL_CPU_OFFLOAD_ENGINE parameter\n?$/,
    );
    const badValue = await runTool(sim.host, 'mstconfig', ['-d', sim.device, '-y', 'set', 'SRIOV_EN=maybe']);
    assert.equal(badValue.exitCode, 3);
    assert.match(badValue.stdout, /\n-E- Unknown value maybe\n?$/);
    const aborted = await runTool(sim.host, 'mstconfig', ['-d', sim.device, 'set', 'NUM_OF_VFS=4']);
    assert.equal(aborted.exitCode, 2);
    assert.match(aborted.stdout, /\n Apply new Configuration\? \(y\/n\) \[n\] : -E- Aborted by user\.\n?$/);
    await rejectsWithCode(
      readMode(sim.host, sim.tools, '0000:99:00.0', 'BF1'),
      'TOOL_FAILED',
      /Failed to open device/,
    );
    await rejectsWithCode(
      readFirmware(sim.host, sim.tools, '0000:99:00.0'),
      'TOOL_FAILED',
      /Cannot open Device/,
    );
    await rejectsWithCode(
      readPrivilege(sim.host, sim.tools, '0000:99:00.0'),
      'TOOL_FAILED',
      /Unknown device/,
    );
    await injectFailure(sim.state, sim.slot, { command: 'flint', stdout: '-E- Flash is busy\n', exit: 1 });
    await rejectsWithCode(readFirmware(sim.host, sim.tools, sim.device), 'TOOL_FAILED', /Flash is busy/);
    // The Arm sees only its own card, as 03:00.x.
    await rejectsWithCode(
      readMode(sim.dpu, sim.tools, '0000:04:00.0', 'BF1'),
      'TOOL_FAILED',
      /Failed to open device/,
    );
  });

  it('a missing flavour is TOOL_NOT_FOUND', async () => {
    await rejectsWithCode(findMlxTools(path.join(root, 'nothing-here')), 'TOOL_NOT_FOUND', /mstflint/);
  });
});

describe('the fakes print the real layouts', () => {
  const lineOf = (text: string, start: string): string | undefined =>
    text.split('\n').find((line) => line.startsWith(start) || line.trimStart().startsWith(start));

  it('mstconfig -e q matches the mstflint 4.25 BF2 capture line for line', async () => {
    const sim = await setup('mstflint', 'BF2', 'dpu');
    const real = await fixture('mstconfig-e-q-bf2-issue830-partial.txt');
    const fake = (await runTool(sim.host, 'mstconfig', ['-d', sim.device, '-e', 'q', 'INTERNAL_CPU_MODEL']))
      .stdout;
    for (const start of [
      'Device #1:',
      '----------',
      'Device type:',
      'Configurations:',
      'INTERNAL_CPU_MODEL',
    ]) {
      assert.equal(lineOf(fake, start), lineOf(real, start), start);
    }
    assert.ok(fake.startsWith('\nDevice #1:\n----------\n\nDevice type:'));
  });

  it('mstconfig set matches the mstflint BDF transcript, mlxconfig set the 20-wide MFT keys', async () => {
    const sim = await setup('mstflint', 'BF2', 'dpu');
    const real = await fixture('set-cx5-mstconfig-bdf.txt');
    const fake = (await runTool(sim.host, 'mstconfig', ['-d', sim.device, '-y', 'set', 'NUM_OF_VFS=4']))
      .stdout;
    for (const start of ['Configurations:', ' Apply new Configuration?', 'Applying...', '-I-']) {
      assert.equal(lineOf(fake, start), lineOf(real, start), start);
    }
    assert.equal(
      lineOf(fake, 'NUM_OF_VFS'),
      `         ${'NUM_OF_VFS'.padEnd(44)}${'16'.padEnd(16)}${'4'.padEnd(16)}`,
    );

    const mft = await setup('mft', 'BF2', 'dpu');
    const wide = (await runTool(mft.host, 'mlxconfig', ['-d', mft.device, '-y', 'set', 'NUM_OF_VFS=4']))
      .stdout;
    const cx7 = await fixture('set-cx7-mft430.txt');
    assert.equal(
      lineOf(wide, 'Device type:')?.indexOf('BlueField2'),
      lineOf(cx7, 'Device type:')?.indexOf('ConnectX7'),
    );
    assert.equal(
      lineOf(wide, 'NUM_OF_VFS')?.indexOf('NUM_OF_VFS'),
      lineOf(cx7, 'NUM_OF_VFS')?.indexOf('NUM_OF_VFS'),
    );
  });

  it('mlxprivhost q prints the MFT capture, mstprivhost q the current layout', async () => {
    const mft = await setup('mft', 'BF2', 'dpu');
    const old = (await runTool(mft.host, 'mlxprivhost', ['-d', mft.device, 'q'])).stdout;
    assert.equal(old.trimEnd(), (await fixture('mlxprivhost-q-bf2-old-title.txt')).trimEnd());

    const sim = await setup('mstflint', 'BF2', 'dpu');
    await updateCardState(sim.state, sim.slot, (state) => {
      state.privilege = {
        level: 'RESTRICTED',
        disable_rshim: true,
        disable_tracer: true,
        disable_port_owner: false,
        disable_counter_rd: true,
      };
    });
    const current = (await runTool(sim.host, 'mstprivhost', ['-d', sim.device, 'q'])).stdout;
    assert.equal(current.trimEnd(), (await fixture('mstprivhost-q-new-title-rendered.txt')).trimEnd());
    const refused = await runTool(sim.host, 'mstprivhost', ['-d', sim.device, 'p']);
    assert.equal(refused.exitCode, 1);
    assert.equal(refused.stdout.trimEnd(), (await fixture('privhost-not-permitted.txt')).trimEnd());
    const usage = await runTool(sim.host, 'mstprivhost', ['-d', sim.device, '--disable_rshim', 'p']);
    assert.equal(usage.exitCode, 2);
    assert.match(usage.stderr, /error: disable flags are not allowed in privilege mode/);
  });

  it('mst status -v and flint q use the captured column widths', async () => {
    const sim = await setup('mft', 'BF2', 'dpu', '0000:e2:00');
    const mst = (await runTool(sim.host, 'mst', ['status', '-v'])).stdout;
    const real = await fixture('mst-status-v-bf2.txt');
    assert.equal(lineOf(mst, 'DEVICE_TYPE'), lineOf(real, 'DEVICE_TYPE'));
    // Up to the NUMA node, which depends on the slot the card sits in.
    const row = (text: string): string | undefined =>
      lineOf(text, 'BlueField2(rev:1)       /dev/mst/mt41686_pciconf0.1')?.replace(/\S+$/, '');
    assert.equal(row(mst), row(real));
    const plain = parseMstStatus((await runTool(sim.host, 'mst', ['status'])).stdout);
    assert.deepEqual(
      plain.map((d) => [d.mst, d.pci]),
      [
        ['/dev/mst/mt41686_pciconf0', '0000:e2:00.0'],
        ['/dev/mst/mt41686_pciconf0.1', '0000:e2:00.1'],
      ],
    );
    const flint = (await runTool(sim.host, 'flint', ['-d', sim.device, 'q'])).stdout;
    const captured = await fixture('flint-q-cx6lx-mft430.txt');
    for (const key of ['Image type:', 'FW Version:', 'PSID:', 'Base MAC:', 'Security Attributes:']) {
      const fakeColumn = lineOf(flint, key)?.slice(key.length).search(/\S/);
      const realColumn = lineOf(captured, key)?.slice(key.length).search(/\S/);
      assert.equal(fakeColumn, realColumn, key);
    }
    assert.equal(
      lineOf(flint, 'Base MAC:')?.replace(/\w+/g, 'x'),
      lineOf(captured, 'Base MAC:')?.replace(/\w+/g, 'x'),
    );
  });
});
