/**
 * A direct deploy under Debian's real Ironic 21.4 (test/support/ironic), timed from the agent's
 * first accepted heartbeat to `active`, against the disk-write limit measured in the same run
 * (issue: "time from the agent's first heartbeat to `active` for a 1 GiB image, ours against the
 * disk-write limit from the image benchmark").
 *
 * The node's disk is a loop device attached with --direct-io=on and written in full first (as in
 * image-write.ts), seen through a tree that holds only that loop and one NIC whose MAC is the
 * node's port. The image, 1 GiB of random bytes behind an MBR, is served by the faulty HTTP server
 * in its own process. Each round: instance_info, `active`, and once the node waits in `wait
 * call-back` the real agent starts (as after a reboot), looks the node up and heartbeats; Ironic
 * then runs write_image (the agent's image.write), install_bootloader and the tear-down. The node
 * is polled every 0.2 s until `active`. Then, on the same device, with the agent gone:
 *
 *   dd        dd if=IMAGE of=DEV bs=4M iflag=fullblock oflag=direct conv=fsync, the image file in
 *             the page cache: the disk-write limit, the better of two runs back to back
 *   curl|dd   curl -s URL | dd of=DEV … (what the image benchmark compares image.write with)
 *
 * Heartbeat times and command durations come from the agent's own log (epoch ms, debug level);
 * `active` is the bench's clock when the poll saw it. Ironic runs with the heartbeat timeout the
 * integration test uses (10 s, so the agent heartbeats every 3–6 s) and command_wait_interval 1 s.
 * Needs root, losetup, blockdev, curl, dd, parted; installs python3-ironic when missing, as the test does.
 *
 * `node dist/bench/ironic-deploy.js [--runs 3] [--size-mib 1024] [--dir /tmp]`
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { findOnPath } from '../agent/util/run-process.js';
import { FAILED_PROVISION_STATES, IronicClient } from '../test/support/ironic/api.js';
import { ensureIronic } from '../test/support/ironic/install.js';
import { pickFreePort, startIronic } from '../test/support/ironic/service.js';
import { LoopDevice, sha256OfRange } from '../test/support/image-loop.js';
import { LoopLab, sh } from '../test/support/loop-lab.js';
import { spawnAgent, type SpawnedAgent } from '../test/support/spawn-agent.js';
import { argument, median, MiB, procCpuSeconds, textArgument } from './common.js';
import { serveFile, stopServer } from './file-server.js';

const RUNS = argument('runs', 3);
const SIZE = argument('size-mib', 1024) * MiB;
const DIR = textArgument('dir', os.tmpdir());
const BLOCK = 4 * MiB;
const HEARTBEAT_TIMEOUT_S = 10;
const COMMAND_WAIT_INTERVAL_S = 1;
const POLL_MS = 200;
const STATE_TIMEOUT_MS = 180_000;
const FIRST_HEARTBEAT_TIMEOUT_MS = 60_000;
/** Locally administered, so it can be no real NIC's. */
const NIC_MAC = '02:00:5e:b3:7d:01';
const NIC_PCI = '0000:03:00.0';

const seconds = (ms: number): number => ms / 1000;
const mbps = (ms: number): number => SIZE / 1e6 / seconds(ms);
const fixed = (value: number, digits: number): string =>
  Number.isFinite(value) ? value.toFixed(digits) : '-';
const load = (): string =>
  os
    .loadavg()
    .map((value) => value.toFixed(2))
    .join(' ');

/** 1 GiB (or --size-mib) of random bytes behind an MBR with one partition; returns its sha256. */
const makeImage = async (file: string): Promise<string> => {
  const created = await open(file, 'w');
  await created.truncate(SIZE);
  await created.close();
  await sh('parted', ['-s', file, 'mklabel', 'msdos', 'mkpart', 'primary', 'ext4', '1MiB', '100%']);
  const hash = createHash('sha256');
  const handle = await open(file, 'r+');
  try {
    const head = Buffer.alloc(MiB);
    await handle.read(head, 0, MiB, 0);
    hash.update(head);
    for (let offset = MiB; offset < SIZE; offset += BLOCK) {
      const block = randomBytes(Math.min(BLOCK, SIZE - offset));
      hash.update(block);
      await handle.write(block, 0, block.length, offset);
    }
    // On the disk now, not as dirty pages written back in the middle of a round.
    await handle.sync();
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
};

/** One PCI NIC with a MAC in the tree, so the agent's inventory has an address to look the node up by. */
const addNic = async (sys: string): Promise<void> => {
  const device = path.join(sys, 'devices', 'pci0000:00', NIC_PCI);
  await mkdir(device, { recursive: true });
  for (const [name, value] of Object.entries({ vendor: '0x8086', device: '0x1533', class: '0x020000' }))
    await writeFile(path.join(device, name), `${value}\n`);
  const nic = path.join(sys, 'class', 'net', 'eth0');
  await mkdir(nic, { recursive: true });
  for (const [name, value] of Object.entries({
    address: NIC_MAC,
    carrier: '1',
    speed: '1000',
    operstate: 'up',
  }))
    await writeFile(path.join(nic, name), `${value}\n`);
  await symlink(`../../../devices/pci0000:00/${NIC_PCI}`, path.join(nic, 'device'));
};

interface Timed {
  ms: number;
  cpuSeconds: number;
}

/** A program to completion: wall time, and the CPU of it and everything it waited for. */
const timed = async (file: string, args: string[]): Promise<Timed> => {
  const cpuBefore = await procCpuSeconds('self', true);
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'inherit'] });
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`${file} ${args.join(' ')} exited ${String(code)}`)),
    );
  });
  const ms = performance.now() - started;
  return { ms, cpuSeconds: (await procCpuSeconds('self', true)) - cpuBefore };
};

/** The agent's CPU seconds so far: its own threads and the programs it ran and waited for. */
const agentCpuSeconds = async (pid: number): Promise<number> =>
  (await procCpuSeconds(pid)) + (await procCpuSeconds(pid, true));

/** What the agent's log says, in epoch ms (its `time` field). */
interface AgentEvents {
  spawnedAt: number;
  heartbeats: number[];
  commands: Array<{ name: string; startedAt: number; seconds: number | null; status: string | null }>;
  /** Ironic's calls as the agent's IPA API saw them end: `image.install_bootloader` and so on. */
  ipaCommands: Array<{ name: string; endedAt: number; status: string }>;
  /** Requests Ironic made to the agent's API (commands and their polls). */
  apiRequests: number;
  firstHeartbeat: Promise<number>;
}

const watchAgentLog = (): { events: AgentEvents; onLog: (record: Record<string, unknown>) => void } => {
  let resolveFirst: (at: number) => void = () => undefined;
  const events: AgentEvents = {
    spawnedAt: Date.now(),
    heartbeats: [],
    commands: [],
    ipaCommands: [],
    apiRequests: 0,
    firstHeartbeat: new Promise<number>((resolve) => (resolveFirst = resolve)),
  };
  const onLog = (record: Record<string, unknown>): void => {
    const at = typeof record.time === 'number' ? record.time : Date.now();
    const command = typeof record.command === 'string' ? record.command : null;
    const ipaCommand = typeof record.ipa_command === 'string' ? record.ipa_command : null;
    if (ipaCommand !== null && (record.msg === 'command succeeded' || record.msg === 'command failed'))
      events.ipaCommands.push({ name: ipaCommand, endedAt: at, status: record.msg.replace('command ', '') });
    if (record.msg === 'IPA API request') events.apiRequests += 1;
    if (record.msg === 'heartbeat accepted') {
      events.heartbeats.push(at);
      if (events.heartbeats.length === 1) resolveFirst(at);
    } else if (record.msg === 'command started' && command !== null) {
      events.commands.push({ name: command, startedAt: at, seconds: null, status: null });
    } else if (record.msg === 'command finished' && command !== null) {
      const entry = events.commands.findLast((item) => item.name === command && item.seconds === null);
      if (entry && typeof record.seconds === 'number') {
        entry.seconds = record.seconds;
        entry.status = typeof record.status === 'string' ? record.status : null;
      }
    }
  };
  return { events, onLog };
};

/** Polls until `active`, noting when each provision state was first seen (epoch ms). */
const pollUntilActive = async (
  api: IronicClient,
  uuid: string,
): Promise<{ activeAt: number; states: Array<{ state: string; at: number }> }> => {
  const states: Array<{ state: string; at: number }> = [];
  const deadline = Date.now() + STATE_TIMEOUT_MS;
  for (;;) {
    const node = await api.getNode(uuid);
    const at = Date.now();
    if (states.at(-1)?.state !== node.provisionState) states.push({ state: node.provisionState, at });
    if (node.provisionState === 'active') return { activeAt: at, states };
    if ((FAILED_PROVISION_STATES as readonly string[]).includes(node.provisionState))
      throw new Error(`the node went to "${node.provisionState}": ${node.lastError ?? '(no last_error)'}`);
    if (at > deadline)
      throw new Error(
        `the node is still "${node.provisionState}" after ${STATE_TIMEOUT_MS} ms; states seen: ${states.map((entry) => entry.state).join(' -> ')}`,
      );
    await sleep(POLL_MS);
  }
};

interface Round {
  bootToHeartbeatS: number;
  heartbeatToActiveS: number;
  writeS: number;
  ddS: number;
  curlDdS: number;
  agentCpuS: number;
  ironicCpuS: number;
  load: string;
  /** Where heartbeat -> active goes besides the write (s); NaN when the log lacks a mark. */
  beforeWriteS: number;
  waitForHeartbeatS: number;
  stepsS: number;
  tearDownS: number;
}

/**
 * The overhead in four parts: first heartbeat to image.write (Ironic's get_deploy_steps and
 * execute_deploy_step), the write's end to the next accepted heartbeat (Ironic only moves on when
 * one arrives), that heartbeat to system.power_off (get_partition_uuids, install_bootloader and its
 * poll), and power_off to `active` (tear_down_agent's power-state polling, boot_instance).
 */
const splitOverhead = (
  events: AgentEvents,
  firstHeartbeat: number,
  write: { startedAt: number; seconds: number },
  activeAt: number,
): Pick<Round, 'beforeWriteS' | 'waitForHeartbeatS' | 'stepsS' | 'tearDownS'> => {
  const writeEnd = write.startedAt + write.seconds * 1000;
  const reported = events.heartbeats.find((at) => at >= writeEnd) ?? NaN;
  const powerOff =
    events.commands.find((command) => command.name === 'system.power_off' && command.startedAt >= writeEnd)
      ?.startedAt ?? NaN;
  return {
    beforeWriteS: seconds(write.startedAt - firstHeartbeat),
    waitForHeartbeatS: seconds(reported - writeEnd),
    stepsS: seconds(powerOff - reported),
    tearDownS: seconds(activeAt - powerOff),
  };
};

const main = async (): Promise<void> => {
  if (process.getuid?.() !== 0) throw new Error('needs root (loop devices, mknod): run it as root');
  for (const tool of ['losetup', 'blockdev', 'curl', 'dd', 'parted', 'mknod', 'bash'])
    if ((await findOnPath(tool, `${process.env.PATH ?? ''}:/usr/sbin:/sbin`)) === null)
      throw new Error(`${tool} is not installed (.ci/packages installs it)`);
  const availability = await ensureIronic();
  if (!availability.ok) throw new Error(`Ironic cannot run here: ${availability.reason}`);

  // Undone in reverse order, once, whether the run ends, fails or is interrupted.
  const undo: Array<() => Promise<unknown>> = [];
  let cleaning: Promise<void> | null = null;
  const cleanup = (): Promise<void> =>
    (cleaning ??= (async () => {
      for (const step of undo.splice(0).reverse()) {
        try {
          await step();
        } catch (error) {
          process.stderr.write(`cleanup: ${error instanceof Error ? error.message : String(error)}\n`);
        }
      }
    })());
  const interrupted = (signal: NodeJS.Signals): void => {
    process.stderr.write(`${signal}: stopping Ironic and the agent, removing the loop device\n`);
    void cleanup().then(() => process.exit(130));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);

  let agent: SpawnedAgent | null = null;
  try {
    const setupStarted = performance.now();
    const work = await mkdtemp(path.join(DIR, 'bma-bench-ironic-'));
    undo.push(() => rm(work, { recursive: true, force: true }));
    const imageFile = path.join(work, 'disk.img');
    const imageSha256 = await makeImage(imageFile);
    // Read once, so that neither the server nor dd pays for filling the page cache.
    if ((await sha256OfRange(imageFile, 0, SIZE)) !== imageSha256) throw new Error('the image file changed');

    const imageMs = performance.now() - setupStarted;
    const loop = await LoopDevice.create(SIZE + 64 * MiB, { directIo: true, preallocate: true });
    undo.push(() => loop.detach());
    const kname = path.basename(loop.path);
    const lab = await LoopLab.create('bench-ironic');
    undo.push(() => lab.cleanup());
    await lab.expose(kname);
    await addNic(lab.paths.sys);
    const stateDir = path.join(work, 'agent-state');
    const stagingDir = path.join(work, 'staging');
    await mkdir(stateDir);
    await mkdir(stagingDir);

    const served = await serveFile(imageFile);
    undo.push(() => stopServer(served));
    const imageUrl = served.url;

    const started = await startIronic({
      heartbeatTimeoutS: HEARTBEAT_TIMEOUT_S,
      commandWaitIntervalS: COMMAND_WAIT_INTERVAL_S,
    });
    undo.push(() => started.stop());
    // Last in, so first out: the agent goes before Ironic, the server and the loop device.
    undo.push(async () => agent?.stop());
    const api = await IronicClient.connect(started.apiUrl);
    const node = await api.createNode({ name: 'bma-bench-node', rootDevice: { name: `/dev/${kname}` } });
    await api.createPort(node.uuid, NIC_MAC);
    const waitFor = (wanted: string[]) =>
      api.waitForProvisionState(node.uuid, wanted, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: POLL_MS });
    await api.setProvisionState(node.uuid, 'manage');
    await waitFor(['manageable']);
    await api.setProvisionState(node.uuid, 'provide');
    await waitFor(['available']);
    console.log(
      `image ${SIZE / MiB} MiB (random, MBR) in ${DIR}; loop ${loop.path} --direct-io=on; Ironic ${
        availability.version ?? '?'
      } (heartbeat timeout ${HEARTBEAT_TIMEOUT_S} s, ` +
        `command_wait_interval ${COMMAND_WAIT_INTERVAL_S} s); ${RUNS} rounds; load ${load()}`,
    );
    console.log(
      `set-up ${fixed(seconds(performance.now() - setupStarted), 1)} s: image ${fixed(seconds(imageMs), 1)} s, ` +
        `Ironic's schema ${fixed(seconds(started.dbsyncMs), 1)} s and start ${fixed(seconds(started.startMs), 1)} s`,
    );

    const ddArgs = [
      `of=${loop.path}`,
      'bs=4M',
      'iflag=fullblock',
      'oflag=direct',
      'conv=fsync',
      'status=none',
    ];
    const rounds: Round[] = [];
    for (let round = 0; round < RUNS; round += 1) {
      if (round > 0) {
        // Undeploying clears instance_info; with automated cleaning off it needs no agent.
        await api.setProvisionState(node.uuid, 'deleted');
        await waitFor(['available']);
      }
      await api.patchNode(node.uuid, [
        { op: 'add', path: '/instance_info/image_source', value: imageUrl },
        { op: 'add', path: '/instance_info/image_os_hash_algo', value: 'sha256' },
        { op: 'add', path: '/instance_info/image_os_hash_value', value: imageSha256 },
        { op: 'add', path: '/instance_info/image_disk_format', value: 'raw' },
      ]);
      await api.setProvisionState(node.uuid, 'active');
      await waitFor(['wait call-back']);

      // The node "rebooted" into the ramdisk: the agent starts now.
      const { events, onLog } = watchAgentLog();
      const port = await pickFreePort();
      const spawned = await spawnAgent(['run'], {
        env: {
          BMA_SYS: lab.paths.sys,
          BMA_DEV: lab.paths.dev,
          BMA_RUN: lab.paths.run,
          BMA_STATE_DIR: stateDir,
          BMA_STAGING_DIR: stagingDir,
          BMA_INCLUDE_LOOP_DISKS: '1',
          // "heartbeat accepted" is a debug line.
          BMA_LOG_LEVEL: 'debug',
        },
        args: [
          '--ipa-api-url',
          started.apiUrl,
          '--ipa-listen-host',
          '127.0.0.1',
          '--ipa-listen-port',
          String(port),
          '--ipa-advertise-host',
          '127.0.0.1',
          '--ipa-lookup-interval',
          '0.2',
        ],
        onLog,
      });
      agent = spawned;
      const pid = spawned.child.pid;
      if (pid === undefined) throw new Error('the agent did not start');
      // Cancelled once settled: a pending timer would keep the process alive after the last round.
      const giveUp = new AbortController();
      const firstHeartbeat = await Promise.race([
        events.firstHeartbeat,
        spawned.exited.then(({ code, signal }) => {
          throw new Error(`the agent exited (${String(code ?? signal)}) before its first heartbeat`);
        }),
        sleep(FIRST_HEARTBEAT_TIMEOUT_MS, undefined, { signal: giveUp.signal }).then(() => {
          throw new Error(`no heartbeat accepted within ${FIRST_HEARTBEAT_TIMEOUT_MS} ms`);
        }),
      ]).finally(() => giveUp.abort());
      const agentCpuBefore = await agentCpuSeconds(pid);
      const ironicCpuBefore = await procCpuSeconds(started.pid);
      const { activeAt, states } = await pollUntilActive(api, node.uuid);
      const agentCpuS = (await agentCpuSeconds(pid)) - agentCpuBefore;
      const ironicCpuS = (await procCpuSeconds(started.pid)) - ironicCpuBefore;
      await spawned.stop();
      agent = null;

      const write = events.commands.find((command) => command.name === 'image.write');
      if (!write || write.seconds === null || write.status !== 'SUCCEEDED')
        throw new Error(`no successful image.write in the agent's log: ${JSON.stringify(events.commands)}`);
      if (round === 0) {
        if ((await sha256OfRange(loop.path, 0, SIZE)) !== imageSha256)
          throw new Error(`${loop.path} does not hold the image after the deploy`);
        // That read left the device's pages cached, which the O_DIRECT writes after it would invalidate.
        await sh('blockdev', ['--flushbufs', loop.path]);
      }

      // The limit is the better of two: one dd takes well under 2 s, so other work on the machine
      // can easily double a single one.
      const ddRuns = [
        await timed('dd', [`if=${imageFile}`, ...ddArgs]),
        await timed('dd', [`if=${imageFile}`, ...ddArgs]),
      ];
      const ddRun = ddRuns.reduce((best, next) => (next.ms < best.ms ? next : best));
      const curlRun = await timed('bash', [
        '-c',
        `set -o pipefail; curl -s ${imageUrl} | dd ${ddArgs.join(' ')}`,
      ]);

      const result: Round = {
        bootToHeartbeatS: seconds(firstHeartbeat - events.spawnedAt),
        heartbeatToActiveS: seconds(activeAt - firstHeartbeat),
        writeS: write.seconds,
        ddS: seconds(ddRun.ms),
        curlDdS: seconds(curlRun.ms),
        agentCpuS,
        ironicCpuS,
        load: load(),
        ...splitOverhead(
          events,
          firstHeartbeat,
          { startedAt: write.startedAt, seconds: write.seconds },
          activeAt,
        ),
      };
      rounds.push(result);
      const since = (at: number): string => fixed(seconds(at - firstHeartbeat), 2);
      console.log(
        `round ${round + 1}: agent start -> first heartbeat ${fixed(result.bootToHeartbeatS, 2)} s; ` +
          `heartbeat -> active ${fixed(result.heartbeatToActiveS, 2)} s; image.write ${fixed(result.writeS, 2)} s ` +
          `(${fixed(mbps(result.writeS * 1000), 0)} MB/s); dd ${fixed(result.ddS, 2)} s (${fixed(mbps(ddRun.ms), 0)} MB/s; ` +
          `both ${ddRuns.map((run) => fixed(seconds(run.ms), 2)).join(' ')}); ` +
          `curl | dd ${fixed(result.curlDdS, 2)} s (${fixed(mbps(curlRun.ms), 0)} MB/s); load ${result.load}`,
      );
      console.log(
        `  from the first heartbeat (s): heartbeats accepted ${events.heartbeats.map(since).join(' ')}; ` +
          `commands ${events.commands
            .filter((command) => command.startedAt >= firstHeartbeat)
            .map(
              (command) => `${command.name} ${since(command.startedAt)}+${fixed(command.seconds ?? NaN, 2)}`,
            )
            .join(', ')}; Ironic's calls ended ${events.ipaCommands
            .filter((command) => command.endedAt >= firstHeartbeat)
            .map(
              (command) =>
                `${command.name} ${since(command.endedAt)}${command.status === 'failed' ? ' (failed)' : ''}`,
            )
            .join(
              ', ',
            )} (${events.apiRequests} requests); states ${states.map((entry) => `${entry.state} ${since(entry.at)}`).join(', ')}`,
      );
      console.log(
        `  overhead (s): before the write ${fixed(result.beforeWriteS, 2)}, write end -> next heartbeat ${fixed(
          result.waitForHeartbeatS,
          2,
        )}, that heartbeat -> power_off ${fixed(result.stepsS, 2)}, power_off -> active ${fixed(result.tearDownS, 2)}`,
      );
      console.log(
        `  CPU s during heartbeat -> active: agent ${fixed(agentCpuS, 2)}, Ironic ${fixed(ironicCpuS, 2)}; ` +
          `dd ${fixed(ddRun.cpuSeconds, 2)}, curl | dd ${fixed(curlRun.cpuSeconds, 2)}`,
      );
    }

    const mid = (pick: (round: Round) => number): number => median(rounds.map(pick));
    console.log('');
    console.log(
      '| round | agent start → first heartbeat s | heartbeat → active s | image.write s | dd s | `curl \\| dd` s | heartbeat → active / dd | image.write / dd | image.write / `curl \\| dd` | Ironic overhead s | CPU s agent / Ironic | load average |',
    );
    console.log('| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --- |');
    const columns: Array<[(round: Round) => number, number]> = [
      [(r) => r.bootToHeartbeatS, 2],
      [(r) => r.heartbeatToActiveS, 2],
      [(r) => r.writeS, 2],
      [(r) => r.ddS, 2],
      [(r) => r.curlDdS, 2],
      [(r) => r.heartbeatToActiveS / r.ddS, 1],
      [(r) => r.writeS / r.ddS, 2],
      [(r) => r.writeS / r.curlDdS, 2],
      [(r) => r.heartbeatToActiveS - r.writeS, 2],
    ];
    /** `pick` turns a per-round figure into the cell's value: one round's, or the median of all. */
    const row = (
      label: string,
      pick: (figure: (round: Round) => number) => number,
      loadText: string,
    ): string =>
      `| ${label} | ${columns.map(([figure, digits]) => fixed(pick(figure), digits)).join(' | ')} | ` +
      `${fixed(
        pick((r) => r.agentCpuS),
        2,
      )} / ${fixed(
        pick((r) => r.ironicCpuS),
        2,
      )} | ${loadText} |`;
    rounds.forEach((round, index) => console.log(row(String(index + 1), (fn) => fn(round), round.load)));
    console.log(row('median', mid, load()));
    console.log('');
    console.log(
      '| round | first heartbeat → image.write s | write end → next heartbeat s | that heartbeat → power_off s | power_off → active s |',
    );
    console.log('| --- | --: | --: | --: | --: |');
    const parts: Array<(round: Round) => number> = [
      (r) => r.beforeWriteS,
      (r) => r.waitForHeartbeatS,
      (r) => r.stepsS,
      (r) => r.tearDownS,
    ];
    const partsRow = (label: string, pick: (figure: (round: Round) => number) => number): string =>
      `| ${label} | ${parts.map((figure) => fixed(pick(figure), 2)).join(' | ')} |`;
    rounds.forEach((round, index) => console.log(partsRow(String(index + 1), (fn) => fn(round))));
    console.log(partsRow('median', mid));
  } finally {
    await cleanup();
    process.removeListener('SIGINT', interrupted);
    process.removeListener('SIGTERM', interrupted);
  }
};

await main();
