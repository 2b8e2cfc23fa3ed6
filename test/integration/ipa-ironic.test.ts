/**
 * bm-agent as ironic-python-agent under Debian's real OpenStack Ironic (21.4, all-in-one on
 * 127.0.0.1 with sqlite, noauth, fake-hardware and the direct deploy interface). The real agent
 * process looks the node up, serves Ironic's calls on its agent API and heartbeats; its hardware is
 * a simulated host with a BlueField (BF2) and two real loop devices as its disks. Ironic drives:
 * manual cleaning with erase_devices_metadata, BlueField clean steps (BFB install and DPU mode),
 * a direct deploy of an http image with a checksum until `active`, and a deploy whose checksum is
 * wrong, which must end in `deploy failed` with the agent's error text and its logs collected.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sampleBfb } from '../support/bfb-builder.js';
import { dpuHostsSkipReason } from '../support/bluefield-sim/dpu-host.js';
import { createBlueFieldWorld, type BlueFieldWorld } from '../support/bluefield-sim/world.js';
import { FaultyHttpServer } from '../support/faulty-http-server.js';
import { sha256OfRange } from '../support/image-loop.js';
import { IronicClient, listDeployLogs } from '../support/ironic/api.js';
import { ensureIronic } from '../support/ironic/install.js';
import { pickFreePort, startIronic, type IronicService } from '../support/ironic/service.js';
import { addLoopToTree } from '../support/tree-disks.js';
import { LoopLab, loopLabSkipReason, MIB, sh, type LoopDisk } from '../support/loop-lab.js';
import { spawnAgent, type SpawnedAgent } from '../support/spawn-agent.js';

const ironicState = await ensureIronic();
const skip =
  (ironicState.ok ? null : ironicState.reason) ??
  (await dpuHostsSkipReason(['nft', 'bash'])) ??
  (await loopLabSkipReason()) ??
  false;
if (skip) process.stderr.write(`# skipping the tests under the real Ironic: ${skip}\n`);

const STATE_TIMEOUT_MS = 120_000;
const BFB_VERSION = 'bf-bundle-3.0.0-42_25.07_ubuntu-24.04_prod';
const BFB = sampleBfb(BFB_VERSION, 64 * 1024);
const BFB_SHA256 = createHash('sha256').update(BFB).digest('hex');

/** A whole-disk image as a cloud image is: an MBR partition table, one partition, a marker. */
const makeDiskImage = async (dir: string): Promise<Buffer> => {
  const file = path.join(dir, 'disk.img');
  await writeFile(file, Buffer.alloc(8 * MIB));
  await sh('parted', ['-s', file, 'mklabel', 'msdos', 'mkpart', 'primary', 'ext4', '1MiB', '100%']);
  const image = await readFile(file);
  Buffer.from('bm-agent ironic deploy marker\n').copy(image, 2 * MIB);
  randomBytes(MIB).copy(image, 3 * MIB);
  return image;
};

const hasSignature = async (device: string): Promise<boolean> =>
  (await sh('wipefs', ['--no-act', '--noheadings', device])).trim() !== '';

describe('bm-agent under the real OpenStack Ironic', { skip }, () => {
  let ironic: IronicService;
  let api: IronicClient;
  let world: BlueFieldWorld;
  let loops: LoopLab;
  let rootDisk: LoopDisk;
  let dataDisk: LoopDisk;
  let server: FaultyHttpServer;
  let agent: SpawnedAgent | null = null;
  let nodeUuid = '';
  let image: Buffer;
  let imageSha256 = '';
  let workDir = '';
  let failed = false;

  const waitFor = (wanted: string[]) =>
    api.waitForProvisionState(nodeUuid, wanted, { timeoutMs: STATE_TIMEOUT_MS });

  const agentLog = (): string =>
    agent ? agent.logs.map((record) => JSON.stringify(record)).join('\n') : '(no agent)';

  before(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'bma-ipa-ironic-'));
    world = await createBlueFieldWorld({ cards: [{ generation: 'BF2' }] });
    loops = await LoopLab.create('ipa-ironic');
    rootDisk = await loops.addLoop(32 * MIB);
    dataDisk = await loops.addLoop(16 * MIB);
    for (const disk of [rootDisk, dataDisk]) await addLoopToTree(world.lab.paths, disk);
    image = await makeDiskImage(workDir);
    imageSha256 = createHash('sha256').update(image).digest('hex');
    server = await FaultyHttpServer.start({ data: image, documents: { '/dpu.bfb': BFB } });
    // A short heartbeat timeout keeps the steps moving: each one advances on a heartbeat.
    ironic = await startIronic({ heartbeatTimeoutS: 10, commandWaitIntervalS: 1 });
    api = await IronicClient.connect(ironic.apiUrl);

    // The node's port is the MAC the agent will report, read from the same simulated host.
    const inventory = await sh('env', [
      ...Object.entries(world.env).map(([key, value]) => `${key}=${value}`),
      'BMA_CMDLINE=/dev/null',
      process.execPath,
      path.join(path.dirname(new URL(import.meta.url).pathname), '..', '..', 'agent', 'main.js'),
      'inventory',
      '--json',
    ]);
    const { interfaces } = (
      JSON.parse(inventory) as { inventory: { interfaces: Array<{ mac_address: string | null }> } }
    ).inventory;
    const mac = interfaces.map((nic) => nic.mac_address).find((value): value is string => !!value);
    assert.ok(mac, `the simulated host reports a NIC with a MAC: ${inventory.slice(0, 400)}`);
    const node = await api.createNode({ name: 'bma-node-1', rootDevice: { name: `/dev/${rootDisk.kname}` } });
    nodeUuid = node.uuid;
    await api.createPort(nodeUuid, mac);
    await api.setProvisionState(nodeUuid, 'manage');
    await waitFor(['manageable']);
  });

  after(async () => {
    await agent?.stop();
    if (failed) process.stderr.write(`# agent log:\n${agentLog().slice(-20_000)}\n`);
    await ironic?.stop({ keepWorkDir: failed });
    await server?.stop();
    await loops?.cleanup();
    await world?.close();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  /** The agent boots when Ironic has the node waiting for it, as after a real reboot. */
  const startAgent = async (): Promise<SpawnedAgent> => {
    const port = await pickFreePort();
    return spawnAgent(['run'], {
      env: { ...world.env, BMA_INCLUDE_LOOP_DISKS: '1' },
      args: [
        '--ipa-api-url',
        ironic.apiUrl,
        '--ipa-listen-host',
        '127.0.0.1',
        '--ipa-listen-port',
        String(port),
        '--ipa-advertise-host',
        '127.0.0.1',
        '--ipa-lookup-interval',
        '0.2',
        '--insecure',
      ],
    });
  };

  const step = async (name: string, fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (error) {
      failed = true;
      throw new Error(`${name}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
  };

  it('manual cleaning with erase_devices_metadata wipes every disk', async () => {
    await step('clean', async () => {
      for (const disk of [rootDisk, dataDisk]) {
        await sh('mkfs.ext4', ['-q', '-F', disk.real]);
        assert.equal(await hasSignature(disk.real), true);
      }
      const started = Date.now();
      await api.setProvisionState(nodeUuid, 'clean', {
        cleanSteps: [{ interface: 'deploy', step: 'erase_devices_metadata' }],
      });
      await waitFor(['clean wait']);
      agent = await startAgent();
      await waitFor(['manageable']);
      process.stderr.write(`# manual clean: ${Date.now() - started} ms\n`);
      for (const disk of [rootDisk, dataDisk]) assert.equal(await hasSignature(disk.real), false, disk.real);
      const node = await api.getNode(nodeUuid);
      assert.equal(node.lastError, null);
    });
  });

  it('BlueField clean steps install the BFB and switch the DPU to DPU mode', async () => {
    await step('bluefield clean', async () => {
      // The agent from the last test is still up: Ironic wiped its token at the end of cleaning,
      // so it looks the node up again once cleaning starts.
      await api.setProvisionState(nodeUuid, 'clean', {
        cleanSteps: [
          {
            interface: 'deploy',
            step: 'bluefield_install_bfb',
            args: { url: server.url('/dpu.bfb'), checksum: `sha256:${BFB_SHA256}` },
          },
          { interface: 'deploy', step: 'bluefield_set_mode', args: { mode: 'dpu' } },
        ],
      });
      await waitFor(['manageable']);
      const received = await world.lab.card(0).received();
      assert.equal(received?.bfbSha256, BFB_SHA256);
      const nv = await world.nv(0);
      assert.match(String(nv.params.INTERNAL_CPU_OFFLOAD_ENGINE?.next ?? ''), /ENABLED|\(0\)/);
    });
  });

  it('a direct deploy writes the image and the node becomes active', async () => {
    await step('deploy', async () => {
      await api.setProvisionState(nodeUuid, 'provide');
      await waitFor(['available']);
      await api.patchNode(nodeUuid, [
        { op: 'add', path: '/instance_info/image_source', value: server.url('/disk.img') },
        { op: 'add', path: '/instance_info/image_os_hash_algo', value: 'sha256' },
        { op: 'add', path: '/instance_info/image_os_hash_value', value: imageSha256 },
        { op: 'add', path: '/instance_info/image_disk_format', value: 'raw' },
      ]);
      const started = Date.now();
      await api.setProvisionState(nodeUuid, 'active');
      await waitFor(['active']);
      process.stderr.write(`# direct deploy to active: ${Date.now() - started} ms\n`);
      assert.equal(await sha256OfRange(rootDisk.real, 0, image.length), imageSha256);
      const commands = agent?.logs.filter((record) => record.msg === 'command started') ?? [];
      assert.ok(commands.some((record) => record.command === 'image.write'));
    });
  });

  it('a deploy with a wrong checksum ends in deploy failed with the reason and the logs', async () => {
    await step('bad deploy', async () => {
      await api.setProvisionState(nodeUuid, 'deleted');
      await waitFor(['available']);
      // Tearing the instance down cleared instance_info.
      await api.patchNode(nodeUuid, [
        { op: 'add', path: '/instance_info/image_source', value: server.url('/disk.img') },
        { op: 'add', path: '/instance_info/image_os_hash_algo', value: 'sha256' },
        { op: 'add', path: '/instance_info/image_os_hash_value', value: '0'.repeat(64) },
        { op: 'add', path: '/instance_info/image_disk_format', value: 'raw' },
      ]);
      await api.setProvisionState(nodeUuid, 'active');
      const node = await waitFor(['deploy failed']);
      assert.match(String(node.lastError), /CHECKSUM_MISMATCH/);
      // image.write wipes what it wrote when the checksum fails: nothing bootable is left.
      assert.equal(await hasSignature(rootDisk.real), false);
      const logs = await listDeployLogs(ironic.deployLogsDir, nodeUuid);
      assert.ok(logs.length > 0, 'Ironic stored the logs the agent sent');
      const listing = await sh('tar', ['-tzf', logs[logs.length - 1] ?? '']);
      assert.match(listing, /bm-agent\.log/);
    });
  });
});
