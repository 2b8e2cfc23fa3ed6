/**
 * inspect.run and deploy.run end to end, as a conductor drives them: the reference conductor on
 * 127.0.0.1, the real agent process, a simulated host with two BlueFields (BF2, BF3) whose Arm
 * sides are real sshd in network namespaces, the BFB and the OS image served over HTTP, and the
 * OS image written onto a real loop device. Also the boot-time inspection (`bma-inspect=1`).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CommandRecord } from '../../agent/protocol/schema.js';
import { sampleBfb } from '../support/bfb-builder.js';
import { dpuHostsSkipReason } from '../support/bluefield-sim/dpu-host.js';
import { createBlueFieldWorld, type BlueFieldWorld } from '../support/bluefield-sim/world.js';
import { ReferenceConductor } from '../support/conductor.js';
import { FaultyHttpServer } from '../support/faulty-http-server.js';
import { sha256OfRange } from '../support/image-loop.js';
import { LoopLab, loopLabSkipReason, MIB, type LoopDisk } from '../support/loop-lab.js';
import { addLoopToTree } from '../support/tree-disks.js';
import { spawnAgent, type SpawnedAgent } from '../support/spawn-agent.js';

const skip = (await dpuHostsSkipReason(['nft', 'bash'])) ?? (await loopLabSkipReason()) ?? false;
if (skip) process.stderr.write(`# skipping BlueField workflow tests: ${skip}\n`);

const VERSION = 'bf-bundle-3.0.0-42_25.07_ubuntu-24.04_prod';
const BFB = sampleBfb(VERSION, 128 * 1024);
const BFB_SHA256 = createHash('sha256').update(BFB).digest('hex');
const IMAGE = Buffer.concat([Buffer.from('bm-agent deploy.run test image\n'), randomBytes(4 * MIB)]);
const IMAGE_SHA256 = createHash('sha256').update(IMAGE).digest('hex');
const TIMEOUT_MS = 120_000;

type Result = Record<string, unknown>;
const devicesOf = (value: unknown): Result[] =>
  typeof value === 'object' && value !== null && Array.isArray((value as Result).devices)
    ? ((value as Result).devices as Result[])
    : [];

describe('BlueField workflows through the conductor', { skip }, () => {
  let world: BlueFieldWorld;
  let server: FaultyHttpServer;
  let conductor: ReferenceConductor;
  let agent: SpawnedAgent | null = null;
  let loops: LoopLab;
  let disk: LoopDisk;

  const run = async (name: string, params: Record<string, unknown>, id: string): Promise<CommandRecord> => {
    const outcome = await conductor.runCommand(name, params, id);
    assert.equal(outcome.error, undefined, JSON.stringify(outcome.error));
    return conductor.waitForResult(id, TIMEOUT_MS);
  };

  const startAgent = async (cmdline = ''): Promise<SpawnedAgent> => {
    const started = await spawnAgent(['run'], {
      cmdline,
      env: world.env,
      args: ['--conductor-url', conductor.url, '--insecure', '--backoff-min', '0.05', '--backoff-max', '0.2'],
    });
    return started;
  };

  before(async () => {
    world = await createBlueFieldWorld({ cards: [{ generation: 'BF2' }, { generation: 'BF3' }] });
    server = await FaultyHttpServer.start({ data: IMAGE, documents: { '/dpu.bfb': BFB } });
    conductor = await ReferenceConductor.start({ heartbeatIntervalS: 1 });
    loops = await LoopLab.create('bf-deploy');
    disk = await loops.addLoop(16 * MIB);
    // The loop joins the BlueField host's tree, the only disk the agent can see there.
    await addLoopToTree(world.lab.paths, disk);
    agent = await startAgent();
    await conductor.waitForConnection(30_000);
  });

  after(async () => {
    await agent?.stop();
    await conductor?.stop();
    await server?.stop();
    await loops?.cleanup();
    await world?.close();
  });

  it('inspect.run installs the BFB on both DPUs, sets up NAT and runs the setup script', async () => {
    const record = await run(
      'inspect.run',
      {
        bfb: {
          url: server.url('/dpu.bfb'),
          checksum: `sha256:${BFB_SHA256}`,
          bf_cfg: 'WITH_NIC_FW_UPDATE=no\n',
        },
        dpu_setup: { script: 'cat /etc/mlnx-release\necho setup-done' },
      },
      'inspect-1',
    );
    assert.equal(record.status, 'SUCCEEDED', JSON.stringify(record.error));
    const result = record.result as Result;
    assert.equal(result.power_cycle_required, false);
    const steps = result.bluefield as Result;
    assert.equal(devicesOf(steps.install).length, 2);
    const [bf2, bf3] = devicesOf(steps.install);
    assert.match(String(bf2?.marker), /DPU is ready|Linux up/);
    // A BF3 in NIC mode runs no Arm OS: the install ends there, and NAT and the script skip it.
    assert.equal(bf3?.marker, 'In Enhanced NIC mode');
    assert.match(String(steps.arm_skipped), /NIC mode/);
    assert.deepEqual(
      devicesOf(steps.nat).map((device) => device.interface),
      ['tmfifo_net0'],
    );
    assert.equal(devicesOf(steps.dpu_setup).length, 1);
    for (const device of devicesOf(steps.dpu_setup)) {
      assert.match(String(device.stdout_tail), new RegExp(`${VERSION}[\\s\\S]*setup-done`));
    }
    const inventory = result.inventory as Result;
    const bluefield = inventory.bluefield as Result[];
    assert.deepEqual(
      bluefield.map((card) => [card.generation, (card.mode as Result).current]),
      [
        ['BF2', 'nic'],
        ['BF3', 'nic'],
      ],
    );
    for (const index of [0, 1]) {
      const received = await world.lab.card(index).received();
      assert.equal(received?.bfbSha256, BFB_SHA256);
      assert.match(received?.cfg ?? '', /^WITH_NIC_FW_UPDATE=no$/m);
    }
    // The DPU's log lines reached the conductor as progress.
    const progress = conductor.progress('inspect-1');
    assert.ok(progress.some((entry) => /DPU is ready|Linux up/.test(String(entry.params.message))));
    assert.ok(
      progress.some((entry) => /setup-done/.test(String(entry.params.message))),
      'script output streamed',
    );
  });

  it('deploy.run with a wrong checksum fails and leaves the DPUs alone', async () => {
    const before = [await world.nv(0), await world.nv(1)];
    const record = await run(
      'deploy.run',
      {
        image: { url: server.url('/image.img'), checksum: `sha256:${'1'.repeat(64)}`, device: disk.kname },
        bluefield: { mode: 'dpu', host_privilege: 'restricted', disable_port_owner: true },
      },
      'deploy-bad',
    );
    assert.equal(record.status, 'FAILED');
    assert.equal(record.error?.code, 'CHECKSUM_MISMATCH');
    const after = [await world.nv(0), await world.nv(1)];
    assert.deepEqual(
      after.map((state) => [state.params, state.privilege]),
      before.map((state) => [state.params, state.privilege]),
    );
  });

  it('deploy.run writes the image, then switches the DPUs and restricts the host', async () => {
    const record = await run(
      'deploy.run',
      {
        image: { url: server.url('/image.img'), checksum: `sha256:${IMAGE_SHA256}`, device: disk.kname },
        bluefield: { mode: 'dpu', host_privilege: 'restricted', disable_port_owner: true },
      },
      'deploy-1',
    );
    assert.equal(record.status, 'SUCCEEDED', JSON.stringify(record.error));
    const result = record.result as Result;
    assert.equal((result.image as Result).checksum, `sha256:${IMAGE_SHA256}`);
    assert.equal(await sha256OfRange(disk.real, 0, IMAGE.length), IMAGE_SHA256);
    assert.equal(result.power_cycle_required, true);
    const steps = result.bluefield as Result;
    assert.ok(devicesOf(steps.mode).every((device) => device.changed === true));
    assert.ok(devicesOf(steps.host_privilege).every((device) => device.ran_on === 'dpu'));
    await world.powerCycle(0);
    await world.powerCycle(1);
    const list = await run('bluefield.list', {}, 'list-after');
    assert.deepEqual(
      devicesOf(list.result).map((card) => [
        (card.mode as Result).current,
        (card.host_privilege as Result).level,
      ]),
      [
        ['dpu', 'restricted'],
        ['dpu', 'restricted'],
      ],
    );
  });

  it('bma-inspect=1 inspects at boot and delivers the result as agent:inspect', async () => {
    await agent?.stop();
    await rm(path.join(world.stateDir, 'dpu_known_hosts'), { force: true });
    // Back in NIC mode for the install: the DPUs would be power cycled by the conductor.
    agent = await startAgent(
      `bma-inspect=1 bma-bfb-url=${server.url('/dpu.bfb')} bma-bfb-checksum=sha256:${BFB_SHA256}`,
    );
    const record = await conductor.waitForResult('agent:inspect', TIMEOUT_MS);
    assert.equal(record.status, 'SUCCEEDED', JSON.stringify(record.error));
    const steps = (record.result as Result).bluefield as Result;
    // The cards are in DPU mode now: the install waits for the power cycle into NIC mode.
    assert.equal((record.result as Result).power_cycle_required, true);
    assert.match(String(steps.skipped), /power cycle/);
  });
});
