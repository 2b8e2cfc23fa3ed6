/**
 * `make demo`: a reference conductor and a real agent process on this machine. Act 1 shows the
 * hello, heartbeats and an inventory.collect round-trip with progress. Act 2 (as root, with the
 * packages `make demo` installs) moves to a simulated host with two BlueFields (the simulator of
 * the tests: rshim device files, fake MFT, each DPU's Arm side a real sshd behind a veth): the
 * conductor runs inspect.run (BFB download, NIC mode, install with the DPU's log streamed, NAT,
 * a setup script on the DPU), then deploy.run (the host image onto a loop device, then DPU mode
 * and a restricted host), power-cycles the simulated cards and lists them. Then it stops.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, symlink } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { renderBlueFieldList } from '../../agent/cli/bluefield.js';
import { renderInventory } from '../../agent/cli/inventory.js';
import { renderProgress } from '../../agent/cli/format.js';
import { sampleBfb } from './bfb-builder.js';
import { dpuHostsSkipReason } from './bluefield-sim/dpu-host.js';
import { createBlueFieldWorld } from './bluefield-sim/world.js';
import { ReferenceConductor } from './conductor.js';
import { FaultyHttpServer } from './faulty-http-server.js';
import { LoopLab, loopLabSkipReason, sh } from './loop-lab.js';
import { spawnAgent } from './spawn-agent.js';

const started = Date.now();
const say = (what: string, text: string): void => {
  const seconds = ((Date.now() - started) / 1000).toFixed(2).padStart(6);
  process.stdout.write(`[${seconds}s] ${what.padEnd(10)} ${text}\n`);
};

const main = async (): Promise<number> => {
  const conductor = await ReferenceConductor.start({ heartbeatIntervalS: 1 });
  say('conductor', `listening on ${conductor.url}`);
  conductor.on('hello', (hello) => {
    const p = hello.params;
    say(
      'hello',
      `${p.hostname} boot ${p.boot_id.slice(0, 8)} agent ${p.agent_version}, MACs ${p.macs.join(' ') || '-'}, ` +
        `${p.capabilities.length} commands, token ${p.token ? 'presented' : 'none (first connection)'}`,
    );
  });
  conductor.on('heartbeat', (beat) => {
    const running = beat.params.running.map((entry) => entry.name).join(', ');
    say(
      'heartbeat',
      `seq ${beat.params.seq} uptime ${beat.params.uptime_s}s busy=${beat.params.busy}${running ? ` running: ${running}` : ''}`,
    );
  });
  conductor.on('progress', (progress) => say('progress', renderProgress(progress.params)));

  const agent = await spawnAgent(['run'], {
    args: ['--conductor-url', conductor.url, '--insecure', '--power-backend', 'none'],
  });
  say('agent', `started, pid ${agent.child.pid ?? '?'} (its NDJSON log goes to the conductor too)`);
  let exitCode = 0;
  try {
    const { nodeUuid } = await conductor.waitForConnection(15_000);
    say('conductor', `accepted node ${nodeUuid ?? '?'}`);
    await conductor.waitFor(() => conductor.heartbeats().length >= 2, 10_000, 'two heartbeats');

    const commandId = `demo-inventory-${Date.now()}`;
    const run = await conductor.runCommand('inventory.collect', {}, commandId);
    if (run.error) throw new Error(`command.run failed: ${run.error.message}`);
    say('command', `inventory.collect ${commandId} accepted`);
    const record = await conductor.waitForResult(commandId, 60_000);
    const seconds = record.finished_at
      ? (Date.parse(record.finished_at) - Date.parse(record.started_at)) / 1000
      : NaN;
    say('result', `${record.name} ${record.status} in ${seconds.toFixed(2)} s, acknowledged`);
    if (record.status !== 'SUCCEEDED') {
      say('error', JSON.stringify(record.error));
      exitCode = 1;
    } else {
      const inventory = (record.result?.inventory ?? {}) as Parameters<typeof renderInventory>[0];
      process.stdout.write(`\n${renderInventory(inventory)}\n`);
    }
    await sleep(1200);
    say('logs', `${conductor.logs().length} log records forwarded by the agent`);
    if (conductor.violations.length > 0) {
      say('error', `protocol violations: ${JSON.stringify(conductor.violations)}`);
      exitCode = 1;
    }
  } catch (error) {
    say('error', error instanceof Error ? error.message : String(error));
    process.stderr.write(agent.stderr());
    exitCode = 1;
  } finally {
    await agent.stop();
    await conductor.stop();
  }
  if (exitCode === 0) exitCode = await blueFieldAct();
  say('done', exitCode === 0 ? 'agent and conductor stopped' : 'failed');
  return exitCode;
};

const DEMO_BFB_VERSION = 'bf-bundle-3.0.0-42_25.07_ubuntu-24.04_prod';

const blueFieldAct = async (): Promise<number> => {
  const missing = (await dpuHostsSkipReason(['nft', 'bash'])) ?? (await loopLabSkipReason());
  if (missing) {
    say('bluefield', `act 2 skipped: ${missing} (run make demo as root; it installs the packages)`);
    return 0;
  }
  process.stdout.write('\n');
  say('bluefield', 'act 2: a simulated host with a BlueField-2 and a BlueField-3, both in NIC mode');
  const world = await createBlueFieldWorld({ cards: [{ generation: 'BF2' }, { generation: 'BF3' }] });
  const bfb = sampleBfb(DEMO_BFB_VERSION, 4 * 1024 * 1024);
  const image = Buffer.concat([Buffer.from('bm-agent demo host image\n'), randomBytes(8 * 1024 * 1024)]);
  const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');
  const server = await FaultyHttpServer.start({ data: image, documents: { '/dpu.bfb': bfb } });
  const loops = await LoopLab.create('demo');
  const conductor = await ReferenceConductor.start({ heartbeatIntervalS: 2 });
  let agent: Awaited<ReturnType<typeof spawnAgent>> | null = null;
  let exitCode = 0;
  try {
    const disk = await loops.addLoop(32 * 1024 * 1024);
    const [major = '', minor = ''] = (await readFile(`/sys/class/block/${disk.kname}/dev`, 'utf8'))
      .trim()
      .split(':');
    await sh('mknod', ['-m', '600', path.join(world.lab.paths.dev, disk.kname), 'b', major, minor]);
    await mkdir(path.join(world.lab.paths.sys, 'class', 'block'), { recursive: true });
    await symlink(
      `/sys/class/block/${disk.kname}`,
      path.join(world.lab.paths.sys, 'class', 'block', disk.kname),
    );
    let lastPhase = '';
    conductor.on('progress', (progress) => {
      const { phase, message } = progress.params;
      // DPU log lines and script output are the messages of these phases: `<step>: <slot> dpu log`.
      const lines = /^[^:]+: (\S+) (dpu log|stdout|stderr)$/.exec(phase);
      if (message && lines) {
        for (const line of message.split('\n')) say('dpu', `${lines[1] ?? ''} | ${line.trim()}`);
      } else if (phase !== lastPhase) say('progress', renderProgress(progress.params));
      lastPhase = phase;
    });
    agent = await spawnAgent(['run'], {
      env: world.env,
      args: ['--conductor-url', conductor.url, '--insecure', '--power-backend', 'none'],
    });
    await conductor.waitForConnection(15_000);
    const run = async (name: string, params: Record<string, unknown>): Promise<Record<string, unknown>> => {
      const id = `demo-${name}-${Date.now()}`;
      say('command', `${name}`);
      const outcome = await conductor.runCommand(name, params, id);
      if (outcome.error) throw new Error(`command.run failed: ${outcome.error.message}`);
      const record = await conductor.waitForResult(id, 180_000);
      if (record.status !== 'SUCCEEDED')
        throw new Error(`${name} ${record.status}: ${JSON.stringify(record.error)}`);
      return record.result ?? {};
    };
    const devices = (value: unknown): Array<Record<string, unknown>> =>
      typeof value === 'object' && value !== null && Array.isArray((value as { devices?: unknown }).devices)
        ? (value as { devices: Array<Record<string, unknown>> }).devices
        : [];

    const inspect = await run('inspect.run', {
      bfb: { url: server.url('/dpu.bfb'), checksum: `sha256:${sha(bfb)}` },
      dpu_setup: { script: 'echo "DPU $(hostname -s) runs $(cat /etc/mlnx-release)"' },
    });
    const steps = inspect.bluefield as Record<string, unknown>;
    for (const card of devices(steps.install)) {
      say(
        'result',
        `${String(card.slot)}: ${String(card.bytes)} bytes pushed into ${String(card.rshim)}, DPU said "${String(card.marker)}"`,
      );
    }
    for (const card of devices(steps.nat)) {
      say(
        'result',
        `${String(card.interface)} ${String(card.host_address)} -> DPU ${String(card.dpu_address)}, masquerade out ${String(card.uplink)} (${String(card.backend)})`,
      );
    }
    for (const card of devices(steps.dpu_setup))
      say('result', `setup script: ${String(card.stdout_tail).trim()}`);
    if (steps.arm_skipped) say('result', String(steps.arm_skipped));

    const deploy = await run('deploy.run', {
      image: { url: server.url('/image.img'), checksum: `sha256:${sha(image)}`, device: disk.kname },
      bluefield: { mode: 'dpu', host_privilege: 'restricted', disable_port_owner: true },
    });
    const written = deploy.image as Record<string, unknown>;
    say(
      'result',
      `image ${String(written.checksum)} written to ${String(written.device)}; power cycle required: ${String(deploy.power_cycle_required)}`,
    );
    for (const card of devices((deploy.bluefield as Record<string, unknown>).host_privilege)) {
      say('result', `${String(card.slot)}: host restricted (run on the ${String(card.ran_on)})`);
    }
    say('bluefield', 'power-cycling the simulated cards');
    await world.powerCycle(0);
    await world.powerCycle(1);
    const list = await run('bluefield.list', {});
    process.stdout.write(`\n${renderBlueFieldList(list)}\n`);
  } catch (error) {
    say('error', error instanceof Error ? error.message : String(error));
    if (agent) process.stderr.write(agent.stderr());
    exitCode = 1;
  } finally {
    await agent?.stop();
    await conductor.stop();
    await server.stop();
    await loops.cleanup();
    await world.close();
  }
  return exitCode;
};

process.exitCode = await main();
