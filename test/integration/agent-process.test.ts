import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { after, describe, it } from 'node:test';
import { ReferenceConductor } from '../support/conductor.js';
import { runCli, spawnAgent, type SpawnedAgent } from '../support/spawn-agent.js';

const run = promisify(execFile);
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

const startAgent = async (
  conductor: ReferenceConductor,
  options: Parameters<typeof spawnAgent>[1] = {},
): Promise<SpawnedAgent> => {
  const agent = await spawnAgent(['run'], {
    ...options,
    args: [
      '--conductor-url',
      conductor.url,
      '--insecure',
      '--backoff-min',
      '0.05',
      '--backoff-max',
      '0.2',
      ...(options.args ?? []),
    ],
  });
  cleanups.push(() => agent.stop());
  return agent;
};

/** A sysfs tree with one NIC whose `speed` attribute is a FIFO: reading it blocks until the test writes. */
const sysTreeWithSlowAttribute = async (slow = true): Promise<{ root: string; fifo: string }> => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'bma-sys-slow-'));
  cleanups.push(() => rm(root, { recursive: true, force: true }));
  const nic = path.join(root, 'class', 'net', 'eth0');
  await mkdir(path.join(root, 'devices', 'pci0000:00', '0000:00:03.0'), { recursive: true });
  await mkdir(nic, { recursive: true });
  await symlink(path.join(root, 'devices', 'pci0000:00', '0000:00:03.0'), path.join(nic, 'device'));
  await writeFile(path.join(nic, 'address'), '52:54:00:aa:bb:cc\n');
  await writeFile(path.join(nic, 'carrier'), '1\n');
  const fifo = path.join(nic, 'speed');
  if (slow) await run('mkfifo', [fifo]);
  else await writeFile(fifo, '1000\n');
  return { root, fifo };
};

describe('the agent process', () => {
  it('connects, says hello with the MACs of the sysfs tree it is given, and runs inventory.collect', async () => {
    const conductor = await ReferenceConductor.start({ heartbeatIntervalS: 0.5 });
    cleanups.push(() => conductor.stop());
    const { root } = await sysTreeWithSlowAttribute(false);
    await startAgent(conductor, { env: { BMA_SYS: root }, cmdline: 'BOOTIF=01-52-54-00-aa-bb-cc' });
    await conductor.waitForConnection(15_000);
    const hello = conductor.hellos()[0]?.params;
    assert.deepEqual(hello?.macs, ['52:54:00:aa:bb:cc']);
    assert.equal(hello?.bootif, '52:54:00:aa:bb:cc');
    assert.ok(hello?.capabilities.includes('inventory.collect'));
    assert.ok(hello?.capabilities.includes('system.power_off'));
    await conductor.runCommand('inventory.collect', {}, 'inv-1');
    const record = await conductor.waitForResult('inv-1', 30_000);
    assert.equal(record.status, 'SUCCEEDED', JSON.stringify(record.error));
    const inventory = record.result?.inventory as {
      interfaces: Array<{ name: string; mac_address: string }>;
      boot: { pxe_interface: string };
    };
    assert.deepEqual(
      inventory.interfaces.map((nic) => [nic.name, nic.mac_address]),
      [['eth0', '52:54:00:aa:bb:cc']],
    );
    assert.equal(inventory.boot.pxe_interface, '52:54:00:aa:bb:cc');
    assert.deepEqual(conductor.violations, []);
  });

  it('keeps heartbeats within 1 s of their interval while a command blocks on slow I/O', async () => {
    const conductor = await ReferenceConductor.start({ heartbeatIntervalS: 0.5 });
    cleanups.push(() => conductor.stop());
    const { root, fifo } = await sysTreeWithSlowAttribute();
    await startAgent(conductor, { env: { BMA_SYS: root } });
    await conductor.waitForConnection(15_000);
    // The writer end is opened after 4 s: until then the agent's read of `speed` cannot finish.
    const blockedMs = 4000;
    const started = Date.now();
    await conductor.runCommand('inventory.collect', {}, 'slow-inv');
    await sleep(blockedMs);
    const writer = await open(fifo, 'w');
    await writer.write('10000\n');
    await writer.close();
    const record = await conductor.waitForResult('slow-inv', 30_000);
    const elapsed = Date.now() - started;
    assert.equal(record.status, 'SUCCEEDED', JSON.stringify(record.error));
    assert.ok(elapsed >= blockedMs, 'the command really was held by the read');
    assert.equal(
      (record.result?.inventory as { interfaces: Array<{ speed_mbps: number }> }).interfaces[0]?.speed_mbps,
      10000,
    );

    const beats = conductor.heartbeats().filter((beat) => beat.at >= started && beat.at <= started + elapsed);
    assert.ok(beats.length >= 7, `${beats.length} heartbeats while blocked`);
    const gaps = beats.slice(1).map((beat, index) => beat.at - (beats[index]?.at ?? 0));
    const worst = Math.max(...gaps.map((gap) => Math.abs(gap - 500)));
    assert.ok(worst < 1000, `worst deviation from the 500 ms interval: ${worst} ms`);
    assert.ok(beats.some((beat) => beat.params.running.some((entry) => entry.command_id === 'slow-inv')));
  });

  it('powers off only after the conductor acknowledged the result', async () => {
    const conductor = await ReferenceConductor.start({ heartbeatIntervalS: 0.5 });
    cleanups.push(() => conductor.stop());
    const bin = await mkdtemp(path.join(os.tmpdir(), 'bma-power-bin-'));
    cleanups.push(() => rm(bin, { recursive: true, force: true }));
    const marks = path.join(bin, 'calls');
    for (const tool of ['sync', 'poweroff', 'reboot']) {
      await writeFile(path.join(bin, tool), `#!/bin/sh\necho "${tool} $* $(date +%s%3N)" >> "${marks}"\n`);
      await chmod(path.join(bin, tool), 0o755);
    }
    await startAgent(conductor, {
      env: { PATH: `${bin}:${process.env.PATH ?? ''}`, BMA_POWER_BACKEND: 'command' },
    });
    await conductor.waitForConnection(15_000);
    await conductor.runCommand('system.power_off', {}, 'off-1');
    const record = await conductor.waitForResult('off-1', 10_000);
    assert.equal(record.status, 'SUCCEEDED');
    const ackAt = conductor.events.find(
      (event) => event.dir === 'out' && JSON.stringify(event.frame).includes('"result":{}'),
    )?.at;
    assert.ok(ackAt);
    let calls = '';
    for (let tries = 0; tries < 50 && !calls.includes('poweroff'); tries += 1) {
      await sleep(50);
      calls = await readFile(marks, 'utf8').catch(() => '');
    }
    const poweroff = calls.split('\n').find((line) => line.startsWith('poweroff'));
    assert.ok(poweroff, `poweroff was called: ${calls}`);
    assert.match(poweroff, /^poweroff -f \d+$/);
    assert.ok(Number(poweroff.split(' ').at(-1)) >= ackAt, 'power changed after the acknowledgement');
    assert.ok(calls.indexOf('sync') < calls.indexOf('poweroff'), 'disks synced first');
  });

  it('stops cleanly on SIGTERM', async () => {
    const conductor = await ReferenceConductor.start({ heartbeatIntervalS: 0.5 });
    cleanups.push(() => conductor.stop());
    const agent = await startAgent(conductor);
    await conductor.waitForConnection(15_000);
    agent.child.kill('SIGTERM');
    const exit = await agent.exited;
    assert.equal(exit.code, 0);
    await conductor.waitFor(() => conductor.closes().length >= 1, 2000);
    assert.equal(conductor.closes()[0]?.code, 1001);
  });
});

describe('the command line', () => {
  it('prints help for every verb and exits 0', async () => {
    for (const args of [
      ['--help'],
      ['run', '--help'],
      ['inventory', '--help'],
      ['commands', '--help'],
      ['config', '--help'],
    ]) {
      const result = await runCli(args);
      assert.equal(result.code, 0, args.join(' '));
      assert.match(result.stdout, /bm-agent/);
    }
  });

  it('exits 2 on usage errors and names the bad flag', async () => {
    const unknown = await runCli(['inventory', '--frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /frobnicate/);
    const none = await runCli([]);
    assert.equal(none.code, 2);
    const malformed = await runCli(['config', '--lldp-timeout', 'soon']);
    assert.equal(malformed.code, 2);
    assert.match(malformed.stderr, /--lldp-timeout=soon is malformed: expected a number from 0 to 600/);
    const noConductor = await runCli(['run']);
    assert.equal(noConductor.code, 2);
    assert.match(
      noConductor.stderr,
      /bma-conductor-url \(WebSocket conductor\) or ipa-api-url \(OpenStack Ironic\)/,
    );
    const clear = await runCli(['run', '--conductor-url', 'ws://127.0.0.1:9/v1/agent']);
    assert.equal(clear.code, 2);
    assert.match(clear.stderr, /not encrypted.*--insecure/);
  });

  it('shows where each setting came from', async () => {
    const result = await runCli(['config', '--json', '--lldp-timeout', '9'], {
      cmdline: 'ipa-debug=1 bma-conductor-url=wss://c.example/v1/agent bma-bogus=1',
      env: { BMA_SYS: '/tmp/nowhere' },
    });
    assert.equal(result.code, 0, result.stderr);
    const shown = JSON.parse(result.stdout) as {
      config: Record<string, unknown>;
      sources: Record<string, string>;
    };
    assert.equal(shown.config.conductorUrl, 'wss://c.example/v1/agent');
    assert.equal(shown.sources.conductorUrl, 'kernel');
    assert.equal(shown.sources.sysRoot, 'env');
    assert.equal(shown.sources.lldpTimeoutS, 'flag');
    assert.match(result.stderr, /unknown kernel argument bma-bogus/);
  });

  it('prints the inventory as JSON and as tables', async () => {
    const json = await runCli(['inventory', '--json']);
    assert.equal(json.code, 0, json.stderr);
    const inventory = (JSON.parse(json.stdout) as { inventory: { cpu: { count: number } } }).inventory;
    assert.equal(inventory.cpu.count, os.cpus().length);
    const human = await runCli(['inventory']);
    assert.equal(human.code, 0);
    assert.match(human.stdout, /^DISK\s+SIZE/m);
    assert.match(human.stdout, /^NIC\s+MAC/m);
  });

  it('lists the commands with their kind', async () => {
    const result = await runCli(['commands', '--json']);
    const list = JSON.parse(result.stdout) as Array<{ name: string; exclusive: boolean }>;
    assert.deepEqual(
      list.map((command) => [command.name, command.exclusive]),
      [
        ['bluefield.configure_nat', true],
        ['bluefield.dpu_exec', true],
        ['bluefield.install_bfb', true],
        ['bluefield.list', false],
        ['bluefield.set_host_privilege', true],
        ['bluefield.set_mode', true],
        ['deploy.run', true],
        ['disk.erase', true],
        ['disk.erase_metadata', true],
        ['image.write', true],
        ['inspect.run', true],
        ['inventory.collect', false],
        ['lldp.collect', false],
        ['system.collect_logs', false],
        ['system.power_off', true],
        ['system.reboot', true],
        ['system.sync', true],
      ],
    );
  });
});
