/**
 * The ramdisk as ironic-python-agent, end to end: Debian's real OpenStack Ironic (21.4, all-in-one
 * on 127.0.0.1, fake power and boot, the `direct` deploy interface) deploys a QEMU VM (no KVM)
 * that PXE-boots `make ramdisk`'s kernel and initramfs with only IPA's kernel arguments: no
 * conductor URL, so the agent's one way in is Ironic's lookup.
 *
 * The network is QEMU's user networking with restrict=on and explicit forwards only:
 *   - guest -> host: 10.0.2.100:6385 is Ironic's API and 10.0.2.100:80 the boot server (iPXE's
 *     script, kernel and initramfs, and Ironic's `[deploy] http_root`);
 *   - host -> guest: a port on 127.0.0.1 forwarded to the agent API (9999), which the agent
 *     advertises with ipa-advertise-host/-port, so Ironic calls it on loopback only;
 *   - Ironic HEADs the URL it hands the agent (`[deploy] http_url`, a guest-side address) itself:
 *     a forward proxy (guest-proxy.ts) maps 10.0.2.100:80 onto the boot server for Ironic only.
 *
 * The image goes the way `image_download_source = local` sends it: Ironic downloads image_source
 * from a server on 127.0.0.1, checks its sha256, caches it and links it into http_root; the agent
 * fetches it from there, writes it onto the virtio disk and, at the end of the deploy, powers
 * itself off on Ironic's `standby.power_off` (QEMU exits). The disk file then holds the image
 * byte for byte. Skipped, with the reason, without QEMU, the ramdisk or Ironic.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it, type TestContext } from 'node:test';
import { FAILED_PROVISION_STATES, IronicClient, type IronicNode } from '../support/ironic/api.js';
import { GuestUrlProxy } from '../support/ironic/guest-proxy.js';
import { ensureIronic } from '../support/ironic/install.js';
import { pickFreePort, startIronic, type IronicService } from '../support/ironic/service.js';
import { GIB, MIB } from '../support/loop-lab.js';
import {
  firstDifference,
  makeDiskImage,
  PxeLab,
  pxeLabSkipReason,
  type DiskImage,
  type PxeBoot,
} from '../support/pxe-lab.js';
import {
  DEFAULT_MACS,
  e2eLogDir,
  GUEST_HTTP_PORT,
  GUEST_SERVICE_HOST,
  type QemuVm,
} from '../support/qemu.js';

const ironicSkipReason = async (): Promise<string | null> => {
  const state = await ensureIronic();
  return state.ok ? null : state.reason;
};

// QEMU first: without it, Ironic is not worth installing.
const skip = (await pxeLabSkipReason()) ?? (await ironicSkipReason()) ?? false;
if (skip) process.stderr.write(`# skipping the PXE deploy by the real Ironic: ${skip}\n`);

/** From QEMU's start to the agent's lookup: a TCG boot takes ~20 s, more on a loaded machine. */
const LOOKUP_TIMEOUT_MS = 180_000;
/** From QEMU's start to `active`: the deploy itself takes ~10 s after the lookup. */
const DEPLOY_TIMEOUT_MS = 300_000;
/** Ironic reaches `active` after sending power_off; the guest may take a while to get there. */
const POWER_OFF_TIMEOUT_MS = 90_000;
const STATE_TIMEOUT_MS = 120_000;
const DISK_BYTES = 2 * GIB;
const DISK_SERIAL = 'bma-ipa-disk';
const IMAGE_BYTES = 64 * MIB;
const MARKER = `bm-agent ipa-pxe marker ${new Date().toISOString()}\n`;
/** Where the guest finds Ironic's API: its usual port, on the relay address. */
const IRONIC_GUEST_PORT = 6385;
/** The agent API's port in the guest (ipa-listen-port's default). */
const AGENT_GUEST_PORT = 9999;
/** The agent's line as it runs `poweroff -f`. */
const POWER_COMMAND_LINE = /running the power command/;
const echoConsole = process.env.BMA_E2E_CONSOLE === '1';

/** `[deploy] http_url`: the boot server as the guest sees it. */
const GUEST_HTTP_BASE = `http://${GUEST_SERVICE_HOST}${GUEST_HTTP_PORT === 80 ? '' : `:${GUEST_HTTP_PORT}`}`;

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

describe('the ramdisk PXE-booted under QEMU, deployed by the real OpenStack Ironic', () => {
  let work = '';
  let lab: PxeLab;
  let proxy: GuestUrlProxy;
  let ironic: IronicService;
  let api: IronicClient;
  let image: DiskImage;
  let failed = false;

  before(async () => {
    if (skip) return;
    work = await mkdtemp(path.join(os.tmpdir(), 'bma-ipa-pxe-'));
    lab = await PxeLab.start();
    image = await makeDiskImage(work, { bytes: IMAGE_BYTES, marker: MARKER });
    proxy = await GuestUrlProxy.start();
    proxy.route(GUEST_SERVICE_HOST, GUEST_HTTP_PORT, lab.boot.port);
    ironic = await startIronic({
      // The agent heartbeats every 3-6 s, and each deploy step moves on at a heartbeat.
      heartbeatTimeoutS: 10,
      commandWaitIntervalS: 1,
      imageDownloadSource: 'local',
      env: proxy.env(),
      extra: { deploy: { http_url: GUEST_HTTP_BASE } },
    });
    api = await IronicClient.connect(ironic.apiUrl);
  });

  after(async () => {
    // BMA_KEEP_IRONIC=1 keeps it too.
    await ironic?.stop(failed ? { keepWorkDir: true } : {});
    if (failed && ironic) process.stderr.write(`# Ironic's work dir (log, database): ${ironic.workDir}\n`);
    await proxy?.stop();
    await lab?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /**
   * Polls the node until it is in `wanted`, noting the agent's callback URL once a heartbeat
   * brought it. Fails at once on a failed state, and when QEMU has been gone for a while without
   * Ironic getting there.
   */
  const followNode = async (
    vm: QemuVm,
    nodeUuid: string,
    wanted: string,
    seen: { agentUrl: string | null },
  ): Promise<IronicNode> => {
    const deadline = Date.now() + DEPLOY_TIMEOUT_MS;
    let goneSince: number | null = null;
    for (;;) {
      const node = await api.getNode(nodeUuid);
      const agentUrl = node.driverInternalInfo.agent_url;
      if (typeof agentUrl === 'string') seen.agentUrl ??= agentUrl;
      if (node.provisionState === wanted) return node;
      const where = `node ${nodeUuid} is "${node.provisionState}" (last_error: ${node.lastError ?? 'none'})`;
      if ((FAILED_PROVISION_STATES as readonly string[]).includes(node.provisionState))
        throw new Error(`${where}, waiting for "${wanted}"\n${vm.tail()}`);
      // The power-off may come before Ironic has finished its own tear-down: give it time.
      if (!vm.running) {
        // Only the power-off Ironic asked for may end the VM before `active`.
        if (!vm.lines.some((line) => POWER_COMMAND_LINE.test(line.text)))
          throw new Error(`QEMU exited before the agent powered off, and ${where}\n${vm.tail()}`);
        goneSince ??= Date.now();
      }
      if (goneSince !== null && Date.now() - goneSince > POWER_OFF_TIMEOUT_MS)
        throw new Error(`QEMU exited ${seconds(Date.now() - goneSince)} ago and ${where}\n${vm.tail()}`);
      if (Date.now() > deadline)
        throw new Error(`${where} after ${seconds(DEPLOY_TIMEOUT_MS)} of the VM\n${vm.tail()}`);
      await sleep(500);
    }
  };

  /** Console lines that mark the agent's progress towards Ironic, placed on the VM's clock. */
  const markConsole = (vm: QemuVm): void => {
    const milestones: Array<[string, RegExp]> = [
      ['lookup', /Ironic knows this node/],
      ['agent-api', /agent API listening for Ironic/],
    ];
    for (const [name, pattern] of milestones) {
      const line = vm.lines.find((candidate) => pattern.test(candidate.text));
      if (line) vm.mark(name, vm.startedAt + line.at);
    }
  };

  /**
   * Ironic's side of the deploy on the VM's clock, from its log's millisecond stamps (local time,
   * as Python's logging writes them): polling the API would miss the short-lived states.
   */
  const markIronicLog = async (vm: QemuVm, nodeUuid: string): Promise<void> => {
    const milestones: Array<[string, string]> = [
      ['heartbeat', `"POST /v1/heartbeat/${nodeUuid} `],
      ['get_deploy_steps', `Executing agent command deploy.get_deploy_steps for node ${nodeUuid}`],
      ['write_image', `Executing agent command deploy.execute_deploy_step for node ${nodeUuid}`],
      ['write_image-done', `Agent on node ${nodeUuid} returned deploy command success`],
      ['bootloader', `Executing agent command image.install_bootloader for node ${nodeUuid}`],
      ['power_off-sent', `Executing agent command standby.power_off for node ${nodeUuid}`],
      ['active', `Node ${nodeUuid} moved to provision state "active"`],
    ];
    const lines = (await readFile(ironic.logPath, 'utf8')).split('\n');
    for (const [name, needle] of milestones) {
      const line = lines.find((candidate) => candidate.includes(needle));
      const stamp = /^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{3})/.exec(line ?? '');
      if (!stamp) continue;
      const [year = 0, month = 1, day = 1, hour = 0, minute = 0, second = 0, ms = 0] = stamp
        .slice(1)
        .map(Number);
      const at = new Date(year, month - 1, day, hour, minute, second, ms).getTime();
      if (at >= vm.startedAt) vm.mark(name, at);
    }
  };

  /** The agent commands Ironic sent the node, in order, from its debug log. */
  const commandsSent = async (nodeUuid: string): Promise<string[]> => {
    const log = await readFile(ironic.logPath, 'utf8');
    const pattern = new RegExp(`Executing agent command (\\S+) for node ${nodeUuid}`, 'g');
    return [...log.matchAll(pattern)].map((match) => match[1] ?? '?');
  };

  const deployByIronic = async (t: TestContext): Promise<void> => {
    const started = Date.now();
    t.diagnostic(
      `Ironic answered ${seconds(ironic.startMs)} after its start (schema ${seconds(ironic.dbsyncMs)})`,
    );

    // Enrol: the port is the VM's BOOTIF MAC, the root device the VM's only virtio disk.
    const node = await api.createNode({ name: 'bma-pxe-node', rootDevice: { name: '/dev/vda' } });
    await api.createPort(node.uuid, DEFAULT_MACS[0]);
    await api.setProvisionState(node.uuid, 'manage');
    await api.waitForProvisionState(node.uuid, ['manageable'], { timeoutMs: STATE_TIMEOUT_MS });
    await api.setProvisionState(node.uuid, 'provide');
    await api.waitForProvisionState(node.uuid, ['available'], { timeoutMs: STATE_TIMEOUT_MS });
    const enrolled = Date.now();

    // image_source is on the host's loopback, where only Ironic reaches; http_root is served
    // to the guest by the boot server, under the path Ironic gives the agent.
    lab.boot.publish('/source/disk.img', image.file);
    const imageSource = `http://127.0.0.1:${lab.boot.port}/source/disk.img`;
    const cachedPath = `/agent_images/${node.uuid}`;
    lab.boot.publish(cachedPath, path.join(ironic.httpRoot, 'agent_images', node.uuid));
    await api.patchNode(node.uuid, [
      { op: 'add', path: '/instance_info/image_source', value: imageSource },
      { op: 'add', path: '/instance_info/image_os_hash_algo', value: 'sha256' },
      { op: 'add', path: '/instance_info/image_os_hash_value', value: image.sha256 },
      { op: 'add', path: '/instance_info/image_disk_format', value: 'raw' },
    ]);
    await api.setProvisionState(node.uuid, 'active');
    await api.waitForProvisionState(node.uuid, ['wait call-back'], { timeoutMs: STATE_TIMEOUT_MS });
    const callbackWait = Date.now();
    // The API masks instance_info.image_url; Ironic's own check of it shows the URL it built.
    const imageUrl = `${GUEST_HTTP_BASE}${cachedPath}`;
    assert.ok(
      lab.boot.requests.some((request) => request.path === '/source/disk.img' && request.method === 'GET'),
      'Ironic downloaded image_source itself',
    );
    assert.ok(
      proxy.requests.some((request) => request.url === imageUrl && request.status === 200),
      `Ironic checked ${imageUrl} through the proxy: ${JSON.stringify(proxy.requests)}`,
    );

    // The node "reboots" into the ramdisk: fake power cannot, so the VM starts now.
    const agentHostPort = await pickFreePort();
    const boot: PxeBoot = await lab.bootVm({
      runDir: path.join(work, 'vm'),
      diskBytes: DISK_BYTES,
      diskSerial: DISK_SERIAL,
      cpus: 1,
      memoryMiB: 1024,
      guestForwards: [{ guestPort: IRONIC_GUEST_PORT, hostPort: ironic.port }],
      hostForwards: [{ hostPort: agentHostPort, guestPort: AGENT_GUEST_PORT }],
      kernelArgs: [
        `ipa-api-url=http://${GUEST_SERVICE_HOST}:${IRONIC_GUEST_PORT}`,
        'ipa-advertise-host=127.0.0.1',
        `ipa-advertise-port=${agentHostPort}`,
      ],
      onLine: echoConsole
        ? (line) => process.stderr.write(`# [${(line.at / 1000).toFixed(2)}] ${line.text}\n`)
        : undefined,
    });
    const { vm } = boot;
    const stopWatching = lab.boot.onRequest((request) => {
      if (request.path === cachedPath && request.status === 200 && request.finishedAt !== null)
        vm.mark('image-fetched', request.finishedAt);
    });
    t.after(async () => {
      stopWatching();
      await boot.stop();
      markConsole(vm);
      await markIronicLog(vm, node.uuid);
      const kept = path.join(e2eLogDir(), 'ipa-pxe.console.log');
      await mkdir(e2eLogDir(), { recursive: true });
      await copyFile(vm.consoleLog, kept);
      const rows = [
        `Ironic: enrol, manage, provide ${seconds(enrolled - started)}; ` +
          `deploy to "wait call-back" (image fetched, checked, cached) ${seconds(callbackWait - enrolled)}`,
        ...vm.formatPhases('the PXE-booted node under Ironic').split('\n'),
        `console: ${kept}`,
      ];
      for (const row of rows) t.diagnostic(row);
    });

    // A boot that cannot succeed (no DHCP, a panic, QEMU gone) fails here, with the console's tail.
    await vm.guard(
      vm.waitForLine(/Ironic knows this node/, LOOKUP_TIMEOUT_MS),
      'waiting for the agent to look the node up in Ironic',
    );
    const seen = { agentUrl: null as string | null };
    const active = await followNode(vm, node.uuid, 'active', seen);
    assert.equal(active.lastError, null);
    assert.equal(
      seen.agentUrl,
      `http://127.0.0.1:${agentHostPort}`,
      'the agent advertised the forwarded port on loopback',
    );

    const exit = await vm.waitForExit(POWER_OFF_TIMEOUT_MS);
    assert.equal(exit.code, 0, 'the guest powered itself off (poweroff -f), QEMU was not killed');
    const commands = await commandsSent(node.uuid);
    t.diagnostic(`Ironic's commands to the agent: ${commands.join(', ')}`);
    for (const command of ['deploy.get_deploy_steps', 'deploy.execute_deploy_step', 'standby.power_off'])
      assert.ok(commands.includes(command), `Ironic sent ${command}: ${commands.join(', ')}`);
    const log = await readFile(ironic.logPath, 'utf8');
    assert.match(
      log,
      new RegExp(`Agent command standby\\.power_off for node ${node.uuid} returned`),
      'the agent answered power_off before it powered off',
    );

    const fetches = lab.boot.requests.filter((request) => request.path === cachedPath);
    assert.ok(
      fetches.some((request) => request.status === 200 && request.bytes === IMAGE_BYTES),
      `the agent fetched Ironic's copy whole: ${JSON.stringify(fetches)}`,
    );
    const difference = await firstDifference(image.file, boot.disk, IMAGE_BYTES);
    assert.equal(difference, -1, `the disk differs from the image at byte ${difference}`);
  };

  it(
    'Ironic deploys the PXE-booted VM: lookup, heartbeats, write_image, power-off; the disk holds the image',
    { skip, timeout: 12 * 60_000 },
    async (t) => {
      try {
        await deployByIronic(t);
      } catch (error) {
        failed = true;
        throw error;
      }
    },
  );
});
