/**
 * `make demo`: the ramdisk of `make ramdisk` PXE-booted in a QEMU VM (no KVM needed), seen from
 * the reference conductor as it happens: the VM starting, iPXE fetching the script, kernel and
 * initramfs, the agent's hello, the inventory with an LLDP neighbour on the second NIC, an image
 * written onto the VM's disk with a live progress bar, the power-off; then the disk is checked
 * against the image on the host and a summary says how long each phase took and where the
 * artefacts are (build/demo/<run>/: the VM's disk, its serial console, the conductor's log).
 *
 *   node dist/test/support/pxe-demo.js        (BMA_DEMO_CONSOLE=1 also shows the serial console)
 *
 * The whole run is bounded (DEMO_LIMIT_S, or BMA_DEMO_LIMIT_S); QEMU, its relays and the servers
 * are stopped however it ends, Ctrl-C included. Exits 0 when every step worked, 1 otherwise (130
 * on Ctrl-C).
 */
import { createWriteStream, existsSync, type WriteStream } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatBytes } from '../../agent/cli/format.js';
import type { CommandRecord } from '../../agent/protocol/schema.js';
import { GIB, MIB } from './loop-lab.js';
import {
  cannotBootMessage,
  CONSOLE_MILESTONES,
  DemoView,
  describeBootRequest,
  describeHello,
  describeNeighbour,
  renderSummary,
  statArtefacts,
  summarizeInventory,
  type ArtefactEntry,
} from './pxe-demo-view.js';
import { Bounds, DemoFailure, demoLimitS } from './pxe-demo-bounds.js';
import { firstDifference, makeDiskImage, PxeLab, pxeLabSkipReason, type PxeSession } from './pxe-lab.js';
import {
  DEFAULT_MACS,
  GUEST_CONDUCTOR_PORT,
  GUEST_HTTP_PORT,
  GUEST_SERVICE_HOST,
  loadRamdisk,
  type LldpNeighbour,
} from './qemu.js';

const DISK_BYTES = 2 * GIB;
const DISK_SERIAL = 'bma-demo-disk';
const CPUS = 1;
const MEMORY_MIB = 1024;
const IMAGE_BYTES = 64 * MIB;
const LLDP_LISTEN_S = 8;
const SWITCH: LldpNeighbour = {
  chassisMac: '02:00:00:de:e0:01',
  portId: 'swp12',
  portDescription: 'rack 4 server 7',
  systemName: 'leaf-04.demo',
  systemDescription: 'LLDP frames sent into the VM by the demo',
};
/** The whole run, and each wait; generous for a loaded 2-core machine without KVM. */
const DEMO_LIMIT_S = 600;
const LIMITS_S = { hello: 240, inventory: 150, write: 300, powerOff: 90 } as const;
/** Earlier runs kept under build/demo/, besides this one. */
const KEEP_RUNS = 2;

/** The repository root: the nearest folder above this file that holds package.json. */
const repoRoot = (): string => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('package.json not found above the demo');
    dir = parent;
  }
  return dir;
};

/** Removes all but the newest `keep` earlier runs (their disks are 2 GiB sparse files). */
const pruneRuns = async (demoRoot: string, keep: number): Promise<number> => {
  const runs = (await readdir(demoRoot, { withFileTypes: true }).catch(() => []))
    .filter((entry) => entry.isDirectory() && /^\d{4}-\d\d-\d\dT/.test(entry.name))
    .map((entry) => entry.name)
    .sort();
  const old = runs.slice(0, Math.max(0, runs.length - keep));
  for (const name of old) await rm(path.join(demoRoot, name), { recursive: true, force: true });
  return old.length;
};

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const RAMDISK_FILES: ReadonlyArray<readonly [string, string]> = [
  ['vmlinuz', 'the kernel iPXE loaded'],
  ['vmlinux', 'the same kernel uncompressed, for direct QEMU boots'],
  ['initramfs.img', 'the ramdisk: agent, node, tools, init'],
  ['boot.ipxe', 'the iPXE script for real hardware (kernel arguments from make variables)'],
  ['manifest.json', 'what went in, with versions and sha256s'],
  ['contents.tsv', 'every file of the initramfs'],
];

/** The files the summary points at: the ramdisk's, and this run's in `work`. */
const listArtefacts = async (
  ramdiskPath: string,
  work: string,
  imageWritten: boolean,
): Promise<Array<{ title: string; entries: ArtefactEntry[] }>> => [
  {
    title: `The ramdisk (${path.relative(process.cwd(), ramdiskPath) || '.'}):`,
    entries: (
      await statArtefacts(RAMDISK_FILES.map(([name, what]) => ({ path: path.join(ramdiskPath, name), what })))
    ).filter((entry) => entry.bytes !== null),
  },
  {
    title: `This run (kept until ${KEEP_RUNS} more runs have been made):`,
    entries: await statArtefacts([
      {
        path: path.join(work, 'disk.raw'),
        what: imageWritten ? "the VM's disk (vda), the image at its start" : "the VM's disk (vda)",
        sparse: true,
      },
      { path: path.join(work, 'console.log'), what: "the VM's serial console, stamped with host seconds" },
      {
        path: path.join(work, 'conductor.log'),
        what: 'every frame between the conductor and the agent (NDJSON)',
      },
      {
        path: path.join(work, 'tftp', 'boot.ipxe'),
        what: 'the iPXE script the VM got, with its kernel arguments',
      },
    ]),
  },
];

const main = async (): Promise<number> => {
  const view = new DemoView(process.stdout);
  const root = repoRoot();
  const skip = await pxeLabSkipReason();
  if (skip) {
    view.print(cannotBootMessage(skip));
    return 1;
  }

  const limitS = demoLimitS(process.env.BMA_DEMO_LIMIT_S, DEMO_LIMIT_S);
  const ramdisk = await loadRamdisk();
  const demoRoot = process.env.BMA_DEMO_DIR ?? path.join(root, 'build', 'demo');
  const pruned = await pruneRuns(demoRoot, KEEP_RUNS);
  const work = path.join(demoRoot, new Date().toISOString().replace(/[:.]/g, '-'));
  await mkdir(work, { recursive: true });
  const manifest = ramdisk.manifest;
  const kernel = isRecord(manifest.kernel) ? String(manifest.kernel.release) : '?';
  const compression = isRecord(manifest.compression) ? String(manifest.compression.format) : '?';
  view.header('bm-agent demo: the ramdisk PXE-booted in a QEMU VM, seen from the conductor', [
    [
      'ramdisk',
      `${path.relative(process.cwd(), ramdisk.dir) || '.'} (agent ${String(manifest.agent_version)}, kernel ${kernel}, ${compression})`,
    ],
    ['VM', `${CPUS} vCPU without KVM (TCG), ${MEMORY_MIB} MiB, 2 NICs, a ${formatBytes(DISK_BYTES)} disk`],
    [
      'this run',
      `${path.relative(process.cwd(), work)}${pruned > 0 ? ` (${pruned} older run(s) removed)` : ''}`,
    ],
    ['limit', `${limitS} s in all (BMA_DEMO_LIMIT_S); Ctrl-C stops the VM and cleans up`],
    ['console', 'BMA_DEMO_CONSOLE=1 shows the serial console too'],
  ]);

  const bounds = new Bounds(limitS);
  const onSignal = (signal: NodeJS.Signals): void => bounds.end(signal);
  // `on`, not `once`: the VM harness re-raises the signal after killing QEMU, and this handler
  // keeps that from ending the process before the clean-up below has run.
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const started = view.startedAt;
  const problems: string[] = [];
  const echoConsole = process.env.BMA_DEMO_CONSOLE === '1';
  const imageDir = path.join(work, 'image-to-write');
  const conductorLogFile = path.join(work, 'conductor.log');
  let conductorLog: WriteStream | null = null;
  let lab: PxeLab | null = null;
  let session: PxeSession | null = null;
  let qemuStartedAt: number | null = null;
  let stopLldp = (): void => undefined;
  let failed = false;
  let imageWritten = false;
  const announced = new Set<string>();
  try {
    await mkdir(imageDir);
    const image = await makeDiskImage(imageDir, {
      bytes: IMAGE_BYTES,
      marker: `bm-agent demo ${new Date().toISOString()}\n`,
    });
    lab = await PxeLab.start(ramdisk);
    const imageUrl = lab.publish('/disk.img', image.file);
    view.line(
      'prepare',
      `image to write: ${formatBytes(image.bytes)} raw (GPT, one ext4 partition), sha256 ${image.sha256.slice(0, 16)}...\n` +
        `boot server on 127.0.0.1:${lab.boot.port}: boot.ipxe, vmlinuz, initramfs.img, disk.img`,
    );

    const live = lab;
    const unsubscribe = live.boot.onRequest((request) => {
      if (qemuStartedAt === null || request.startedAt < qemuStartedAt) return;
      const description = describeBootRequest(request);
      if (description !== null) view.line('pxe', description);
    });
    session = await lab.session({
      runDir: work,
      diskBytes: DISK_BYTES,
      diskSerial: DISK_SERIAL,
      cpus: CPUS,
      memoryMiB: MEMORY_MIB,
      // Over HTTP the boot server sees the script fetched too, like the kernel and the initramfs.
      pxeScript: 'http',
      heartbeatIntervalS: 10,
      onLine: (line) => {
        if (echoConsole) view.line('console', line.text);
        const phases = session?.vm.phases();
        if (!phases) return;
        for (const [name, label] of CONSOLE_MILESTONES) {
          if (announced.has(name) || !phases.has(name)) continue;
          announced.add(name);
          view.line('boot', label);
        }
      },
    });
    const { vm, conductor } = session;
    qemuStartedAt = vm.startedAt;
    bounds.consoleLog = vm.consoleLog;
    const stream = createWriteStream(conductorLogFile);
    conductorLog = stream;
    // Every frame both ways, NDJSON: the conductor's own record of the run.
    conductor.on('frame', (event) => stream.write(`${JSON.stringify(event)}\n`));
    conductor.once('heartbeat', (beat) =>
      view.line(
        'heartbeat',
        `seq ${beat.params.seq}, uptime ${beat.params.uptime_s} s, busy=${beat.params.busy} (one every ${conductor.heartbeatIntervalS} s; only the first is shown)`,
      ),
    );
    conductor.on('progress', (progress) => view.progress(progress.params));
    conductor.on('log', (record) => {
      const level = record.params.level;
      if (typeof level === 'number' && level >= 40) view.line('agent log', String(record.params.msg ?? ''));
    });
    const lldpPort = vm.lldpSocket?.address().port;
    view.line(
      'vm',
      [
        `QEMU started, pid ${vm.pid ?? '?'}: PXE from NIC 1 (${vm.macs[0]}), SeaBIOS and Debian's iPXE ROM`,
        `user networking, restrict=on: the guest reaches nothing but`,
        `  ${GUEST_SERVICE_HOST}:${GUEST_HTTP_PORT} -> the boot server on 127.0.0.1:${live.boot.port}`,
        `  ${GUEST_SERVICE_HOST}:${GUEST_CONDUCTOR_PORT} -> the conductor on 127.0.0.1:${conductor.port}`,
        `NIC 2 (${vm.macs[1]}): UDP on 127.0.0.1${lldpPort ? `:${lldpPort}` : ''}, only the demo's LLDP frames`,
        `disk vda: ${path.relative(process.cwd(), session.disk)} (${formatBytes(DISK_BYTES)}, sparse)`,
      ].join('\n'),
    );

    const hello = await bounds.within(
      session.waitForHello(LIMITS_S.hello * 1000 + 5000),
      "the agent's hello",
      LIMITS_S.hello,
    );
    unsubscribe();
    view.line('hello', describeHello(hello.params, hello.nodeUuid, hello.at - vm.startedAt));
    if (hello.params.bootif !== DEFAULT_MACS[0])
      problems.push(`the hello's BOOTIF is ${hello.params.bootif ?? 'null'}, not ${DEFAULT_MACS[0]}`);

    const run = async (
      name: string,
      params: Record<string, unknown>,
      limit: number,
    ): Promise<CommandRecord> => {
      const current = session;
      if (current === null) throw new Error('no VM');
      const outcome = await bounds.within(current.startCommand(name, params), `command.run ${name}`, 30);
      if (outcome.error) throw new DemoFailure(`command.run ${name} was refused: ${outcome.error.message}`);
      const record = await bounds.within(
        current.waitForResult(outcome.commandId, limit * 1000 + 5000, name),
        `the result of ${name}`,
        limit,
      );
      view.endProgress();
      if (record.status !== 'SUCCEEDED') {
        const error = record.error;
        throw new DemoFailure(
          `${name} ${record.status}: ${error ? `${error.code}: ${error.message}` : 'no error given'}`,
        );
      }
      return record;
    };

    stopLldp = session.sendLldp(SWITCH, 500, 240);
    view.line(
      'lldp',
      `a switch's LLDP frames go into NIC 2 every 0.5 s: ${SWITCH.systemName}, port ${SWITCH.portId}`,
    );
    view.line('command', `inventory.collect, with LLDP (listening ${LLDP_LISTEN_S} s)`);
    const inventory = await run(
      'inventory.collect',
      { lldp: true, lldp_timeout_s: LLDP_LISTEN_S },
      LIMITS_S.inventory,
    );
    stopLldp();
    const summary = summarizeInventory(inventory.result, DEFAULT_MACS[1]);
    view.line('inventory', summary.lines.join('\n'));
    if (summary.neighbour !== null) view.line('lldp', describeNeighbour(summary.neighbour));
    else {
      const nic = summary.lldpInterface ?? `the NIC with MAC ${DEFAULT_MACS[1]}`;
      view.line('lldp', `no neighbour reported on ${nic}`);
      problems.push(`no LLDP neighbour on ${nic} within ${LLDP_LISTEN_S} s`);
    }

    view.line('command', `image.write ${imageUrl} onto vda (raw, sha256 checked while writing)`);
    const write = await run(
      'image.write',
      { url: imageUrl, checksum: `sha256:${image.sha256}`, disk_format: 'raw', device: 'vda' },
      LIMITS_S.write,
    );
    imageWritten = true;
    const written = isRecord(write.result) ? write.result : {};
    const bytesWritten = typeof written.bytes_written === 'number' ? written.bytes_written : null;
    const rate =
      typeof written.rate_bytes_per_s === 'number' ? `${formatBytes(written.rate_bytes_per_s)}/s` : '-';
    view.line(
      'result',
      `${formatBytes(bytesWritten)} onto ${String(written.device)} in ${String(written.seconds)} s (${rate}); ` +
        `checksum ${written.checksum_verified === true ? 'verified' : 'NOT verified'}: ${String(written.checksum)}`,
    );
    if (written.checksum_verified !== true) problems.push('image.write did not verify the checksum');
    if (bytesWritten !== image.bytes)
      problems.push(`image.write wrote ${bytesWritten} bytes, not ${image.bytes}`);

    view.line('command', 'system.power_off');
    await run('system.power_off', {}, LIMITS_S.powerOff);
    const exit = await bounds.within(vm.exited, 'the VM to power itself off', LIMITS_S.powerOff);
    view.line(
      'power',
      exit.code === 0
        ? 'the guest powered itself off (poweroff -f); QEMU exited with 0'
        : `QEMU ended with code ${exit.code ?? '-'} signal ${exit.signal ?? '-'}`,
    );
    if (exit.code !== 0) problems.push(`QEMU exited with ${JSON.stringify(exit)}`);

    const difference = await firstDifference(image.file, session.disk, image.bytes);
    if (difference === -1)
      view.line(
        'verify',
        `the VM's disk holds the image byte for byte (first ${formatBytes(image.bytes)}, read on the host)`,
      );
    else {
      view.line('verify', `the VM's disk differs from the image at byte ${difference}`);
      problems.push(`the disk differs from the image at byte ${difference}`);
    }
    if (conductor.violations.length > 0)
      problems.push(`protocol violations seen by the conductor: ${JSON.stringify(conductor.violations)}`);
  } catch (error) {
    failed = true;
    view.endProgress();
    const message = error instanceof Error ? error.message : String(error);
    // Messages of the harness carry the console's tail already; the first line is the reason.
    view.line('error', message.split('\n')[0] ?? message);
    if (session !== null && !bounds.interrupted)
      view.print(`last lines of the serial console:\n${session.vm.tail(15)}`);
  } finally {
    stopLldp();
    await session?.stop();
    await lab?.stop();
    await new Promise<void>((resolve) => (conductorLog ? conductorLog.end(resolve) : resolve()));
    await rm(imageDir, { recursive: true, force: true });
    bounds.dispose();
  }
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);

  const groups = await listArtefacts(ramdisk.dir, work, imageWritten);
  const ok = !failed && problems.length === 0;
  view.print('');
  view.print(
    renderSummary({
      ok,
      totalMs: Date.now() - started,
      prepareMs: qemuStartedAt === null ? null : qemuStartedAt - started,
      phases: session?.vm.phases() ?? new Map(),
      artefacts: groups,
      problems,
      cwd: process.cwd(),
    }),
  );
  if (ok)
    view.print(
      '\nNext: README.md, "Booting the ramdisk on real hardware"; `make demo-local` for the host-only demo.',
    );
  return bounds.interrupted ? 130 : ok ? 0 : 1;
};

try {
  process.exitCode = await main();
} catch (error) {
  // What fails before the VM starts (a setting, the ramdisk, the image to write) ends here.
  process.stderr.write(`pxe-demo: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
