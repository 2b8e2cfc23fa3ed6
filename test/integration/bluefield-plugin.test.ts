/**
 * The BlueField plugin end to end against the simulated host (test/support/bluefield-sim): real
 * rshim device files fed by a simulator process, fake MFT keeping NV state, each DPU's Arm side a
 * real sshd behind a veth named tmfifo_netN, the BFB served over HTTP on 127.0.0.1. Every failure
 * the issue names is provoked on the simulator and must come back with its code, and without a
 * byte reaching the device when the failure is the BFB's or the checksum's.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import type { ProgressUpdate } from '../../agent/commands/definition.js';
import type { OpContext, OpResult } from '../../agent/hardware/bluefield/ops.js';
import { BlueFieldPlugin } from '../../agent/hardware/bluefield/plugin.js';
import { silentLogger } from '../../agent/util/logger.js';
import { rejectsWithCode } from '../support/agent-errors.js';
import { sampleBfb } from '../support/bfb-builder.js';
import { dpuHostsSkipReason } from '../support/bluefield-sim/dpu-host.js';
import { createBlueFieldWorld, type BlueFieldWorld, type WorldCard } from '../support/bluefield-sim/world.js';
import { FaultyHttpServer } from '../support/faulty-http-server.js';

const skip = (await dpuHostsSkipReason(['nft', 'bash'])) ?? false;
if (skip) process.stderr.write(`# skipping BlueField plugin tests: ${skip}\n`);

const VERSION = 'bf-bundle-2.9.2-31_25.02_ubuntu-22.04_prod';
const BFB = sampleBfb(VERSION, 256 * 1024);
const BFB_SHA256 = createHash('sha256').update(BFB).digest('hex');
const CONDUCTOR_CFG =
  "ubuntu_PASSWORD='$1$abc$def'\nbfb_modify_os() {\n  mkdir -p /mnt/root && echo conductor-hook > /mnt/root/conductor-was-here\n}\n";

interface Recorder extends OpContext {
  updates: ProgressUpdate[];
}

const context = (signal = new AbortController().signal): Recorder => {
  const updates: ProgressUpdate[] = [];
  return { signal, progress: (update) => updates.push(update), log: silentLogger(), updates };
};

const pluginFor = (world: BlueFieldWorld, bfbTimeoutS = 60): BlueFieldPlugin =>
  new BlueFieldPlugin({
    paths: world.lab.paths,
    toolPath: world.toolPath,
    stagingDir: world.stagingDir,
    stateDir: world.stateDir,
    dpuSshKey: null,
    bfbTimeoutS,
    caPath: null,
    fetch: { insecure: false, retries: 1, retryBaseMs: 50, retryMaxMs: 100, stallTimeoutMs: 10_000 },
    logger: silentLogger(),
  });

const devicesOf = (result: OpResult): OpResult[] =>
  Array.isArray(result.devices) ? (result.devices as OpResult[]) : [];

describe('BlueField plugin on a simulated host', { skip }, () => {
  let server: FaultyHttpServer;
  const worlds: BlueFieldWorld[] = [];

  const world = async (cards: WorldCard[]): Promise<BlueFieldWorld> => {
    const made = await createBlueFieldWorld({ cards });
    worlds.push(made);
    return made;
  };

  before(async () => {
    server = await FaultyHttpServer.start({
      data: BFB,
      documents: { '/not-a-bfb.bfb': '<html><body>404 Not Found</body></html>\n' },
    });
  });

  after(async () => {
    for (const made of worlds) await made.close();
    await server?.stop();
  });

  describe('two cards (BF2 and BF3) in NIC mode', () => {
    let w: BlueFieldWorld;
    let plugin: BlueFieldPlugin;

    before(async () => {
      w = await world([{ generation: 'BF2' }, { generation: 'BF3' }]);
      plugin = pluginFor(w);
    });

    it('lists both cards with their rshim, mode, privilege and firmware', async () => {
      const cards = await plugin.list(context());
      assert.equal(cards.length, 2);
      const [bf2, bf3] = cards;
      assert.equal(bf2?.generation, 'BF2');
      assert.equal(bf3?.generation, 'BF3');
      for (const [index, card] of cards.entries()) {
        assert.equal(card.rshim, w.lab.card(index).rshimPath);
        assert.equal(card.tmfifo, `tmfifo_net${index}`);
        assert.equal(card.tools, 'mft');
        assert.deepEqual(card.mode, { current: 'nic', next: 'nic' });
        assert.equal((card.host_privilege as { level: string }).level, 'privileged');
        assert.match(String(card.firmware_version), /^\d+\.\d+\.\d+$/);
        assert.ok(card.psid, 'PSID from flint');
        assert.equal(card.serial, w.lab.card(index).vpd?.serial ?? null);
        assert.deepEqual(card.warnings, []);
      }
      assert.equal(bf3?.dpu_address, '192.168.100.6');
    });

    it('refuses disable_rshim before a BFB is installed', async () => {
      await rejectsWithCode(
        plugin.setHostPrivilege({ level: 'restricted', disable_rshim: true, device: 'rshim0' }, context()),
        'RSHIM_DISABLE_REFUSED',
      );
      // Forced, the host is refused by the firmware and no DPU answers SSH yet.
      await rejectsWithCode(
        plugin.setHostPrivilege(
          { level: 'restricted', disable_rshim: true, force: true, device: 'rshim0' },
          context(),
        ),
        'OPERATION_NOT_PERMITTED',
      );
    });

    it('cannot reach the Arm side before the install', async () => {
      await rejectsWithCode(
        plugin.dpuExec({ script: 'true', device: 'rshim0' }, context()),
        'DPU_UNREACHABLE',
      );
    });

    it('installs both cards in parallel, byte for byte, with the conductor bf.cfg and the agent key', async () => {
      const ctx = context();
      const result = await plugin.installBfb(
        { url: server.url('/image.img'), checksum: `sha256:${BFB_SHA256}`, bf_cfg: CONDUCTOR_CFG },
        ctx,
      );
      const devices = devicesOf(result);
      assert.equal(devices.length, 2);
      for (const [index, device] of devices.entries()) {
        assert.equal(device.skipped, null);
        // The BF3 is in NIC mode: its installer ends in `In Enhanced NIC mode`, no Arm OS follows.
        if (index === 0) {
          assert.match(String(device.marker), /DPU is ready|Linux up/);
          assert.equal(device.install_marker, 'Rebooting...');
        } else assert.equal(device.marker, 'In Enhanced NIC mode');
        assert.equal(device.version, VERSION);
        const received = await w.lab.card(index).received();
        assert.equal(received?.bfbSha256, BFB_SHA256, `card ${index} got the BFB intact`);
        assert.match(received?.cfg ?? '', /ubuntu_PASSWORD/);
        assert.match(received?.cfg ?? '', /ssh-ed25519 /);
        const keys = await readFile(w.dpus.dpus[index]?.authorizedKeysFile ?? '', 'utf8');
        assert.match(keys, /ssh-ed25519 /);
        const hook = await readFile(`${w.lab.card(index).dpuRoot}/root/conductor-was-here`, 'utf8').catch(
          () => `missing; hook run: ${JSON.stringify(received?.hook)}`,
        );
        assert.equal(hook.trim(), 'conductor-hook');
      }
      assert.ok(
        ctx.updates.some((u) => u.phase.includes('push') && u.unit === 'bytes'),
        'push progress',
      );
      assert.ok(
        ctx.updates.some((u) => u.message?.includes('DPU is ready')),
        'log lines as progress',
      );
      const staged = await readdir(w.stagingDir);
      assert.equal(staged.length, 1, `only the staged BFB stays for the next install: ${staged.join(', ')}`);
      assert.match(staged[0] ?? '', /\.bfb$/);
    });

    it('runs a script on each DPU and sets up NAT', async () => {
      const exec = await plugin.dpuExec(
        { script: 'cat /etc/mlnx-release\necho "on $(hostname -s) as $(id -un)"' },
        context(),
      );
      for (const device of devicesOf(exec)) {
        assert.equal(device.exit_code, 0);
        assert.match(String(device.stdout_tail), new RegExp(VERSION));
      }
      const nat = await plugin.configureNat({}, context());
      const natDevices = devicesOf(nat);
      assert.deepEqual(
        natDevices.map((d) => d.host_address),
        ['192.168.100.1/30', '192.168.100.5/30'],
      );
      // What a conductor's setup script does next: fetch packages from outside through the NAT.
      const fetched = await plugin.dpuExec(
        { script: `curl -sf -o /dev/null -w '%{http_code}' ${w.dpus.outsideHttpUrl}`, device: 'rshim0' },
        context(),
      );
      assert.equal(String(fetched.stdout_tail).trim(), '200');
      const again = await plugin.configureNat({}, context());
      assert.ok(
        devicesOf(again).every((d) => d.changed === false),
        'idempotent',
      );
    });

    it('fails a DPU script with its exit code', async () => {
      const error = await rejectsWithCode(
        plugin.dpuExec({ script: 'echo boom >&2; exit 3', device: 'tmfifo_net1' }, context()),
        'DPU_SCRIPT_FAILED',
      );
      assert.equal(error.details.exit_code, 3);
    });

    it('skips a card that already runs the BFB, unless forced', async () => {
      const sessions = (await w.lab.card(0).sessions()).length;
      const skipped = await plugin.installBfb({ url: server.url('/image.img'), device: 'rshim0' }, context());
      assert.equal(skipped.skipped, 'already installed');
      assert.equal((await w.lab.card(0).sessions()).length, sessions, 'nothing pushed');
      const forced = await plugin.installBfb(
        { url: server.url('/image.img'), device: 'rshim0', force: true },
        context(),
      );
      assert.equal(forced.skipped, null);
    });

    it('switches to DPU mode and restricts the host on the Arm side, effective after a power cycle', async () => {
      const mode = await plugin.setMode({ mode: 'dpu', device: 'rshim1' }, context());
      assert.equal(mode.changed, true);
      assert.equal(mode.power_cycle_required, true);
      const privilege = await plugin.setHostPrivilege(
        { level: 'restricted', disable_port_owner: true, device: 'rshim1' },
        context(),
      );
      assert.equal(privilege.ran_on, 'dpu');
      assert.equal((privilege.after as { level: string }).level, 'restricted');
      const unchanged = await plugin.setMode({ mode: 'dpu', device: 'rshim1' }, context());
      assert.equal(unchanged.changed, false);
      await w.powerCycle(1);
      const [, bf3] = await plugin.list(context());
      assert.deepEqual(bf3?.mode, { current: 'dpu', next: 'dpu' });
    });
  });

  describe('refusals and failures', () => {
    const installOn = async (card: WorldCard, url = server.url('/image.img'), timeoutS?: number) => {
      const w = await world([card]);
      const plugin = pluginFor(w);
      const run = plugin.installBfb(
        { url, ...(timeoutS === undefined ? {} : { timeout_s: timeoutS }) },
        context(),
      );
      return { w, run };
    };

    it('BFB_INVALID for a file that is not a BFB, before the rshim is touched', async () => {
      const { w, run } = await installOn({ generation: 'BF2' }, server.url('/not-a-bfb.bfb'));
      await rejectsWithCode(run, 'BFB_INVALID');
      assert.equal((await w.lab.card(0).sessions()).length, 0);
      assert.deepEqual(await readdir(w.stagingDir), [], 'nothing left in staging');
    });

    it('CHECKSUM_MISMATCH before the rshim is touched', async () => {
      const w = await world([{ generation: 'BF3' }]);
      await rejectsWithCode(
        pluginFor(w).installBfb(
          { url: server.url('/image.img'), checksum: `sha256:${'0'.repeat(64)}` },
          context(),
        ),
        'CHECKSUM_MISMATCH',
      );
      assert.equal((await w.lab.card(0).sessions()).length, 0);
    });

    it('BFB_INSTALL_FAILED on CRITICAL ERROR, quoting the line', async () => {
      const { run } = await installOn({ generation: 'BF2', sim: { faults: { critical: true } } });
      const error = await rejectsWithCode(run, 'BFB_INSTALL_FAILED');
      assert.match(error.message, /CRITICAL ERROR/);
    });

    it('BFB_INSTALL_FAILED on an ERR[ line', async () => {
      const { run } = await installOn({ generation: 'BF3', sim: { faults: { err: true } } });
      const error = await rejectsWithCode(run, 'BFB_INSTALL_FAILED');
      assert.match(error.message, /ERR\[MISC\]/);
    });

    it('BFB_INSTALL_TIMEOUT when the installed OS never reports ready', async () => {
      const { run } = await installOn(
        { generation: 'BF2', sim: { faults: { 'never-ready': true } } },
        undefined,
        8,
      );
      const error = await rejectsWithCode(run, 'BFB_INSTALL_TIMEOUT');
      assert.equal(error.details.install_marker, 'Rebooting...');
    });

    it('RSHIM_TIMEOUT when the DPU stops taking the boot stream', async () => {
      const { run } = await installOn({
        generation: 'BF2',
        sim: { bootTimeout: 2, faults: { stall: 64 * 1024 } },
      });
      await rejectsWithCode(run, 'RSHIM_TIMEOUT');
    });

    it('RSHIM_BUSY when another process holds boot', async () => {
      const { w, run } = await installOn({ generation: 'BF2', sim: { faults: { busy: true } } });
      const error = await rejectsWithCode(run, 'RSHIM_BUSY');
      assert.match(error.message, new RegExp(String(w.lab.card(0).holderPid())));
    });

    it('RSHIM_OWNED_BY_BMC in drop mode', async () => {
      const { run } = await installOn({ generation: 'BF2', sim: { faults: { bmc: true } } });
      await rejectsWithCode(run, 'RSHIM_OWNED_BY_BMC');
    });

    it('RSHIM_LOCKED in secure NIC mode', async () => {
      const { run } = await installOn({ generation: 'BF3', sim: { faults: { locked: true } } });
      await rejectsWithCode(run, 'RSHIM_LOCKED');
    });

    it('BLUEFIELD_NOT_FOUND for a device that names no card', async () => {
      const w = await world([{ generation: 'BF3' }]);
      await rejectsWithCode(
        pluginFor(w).setMode({ mode: 'nic', device: '0000:99:00.0' }, context()),
        'BLUEFIELD_NOT_FOUND',
      );
    });
  });
});
