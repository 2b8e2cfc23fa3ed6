/**
 * Boot time of the ramdisk under QEMU without KVM: QEMU start -> the conductor's first hello,
 * direct (-kernel vmlinux, PVH) and via PXE (SeaBIOS, iPXE, kernel and initramfs over HTTP), N
 * boots each, one at a time, with every phase the console shows. Printed against the targets of
 * issue 6 (12 s direct, 25 s PXE on a 2-core machine); not asserted.
 *
 *   node dist/bench/boot-time.js [--runs N] [--mode direct|pxe|both] [--compare DIR]
 *
 * Wall times follow whatever else the machine is doing, so each boot also gets the load average
 * when it started and QEMU's own CPU seconds up to the hello, which move far less with the load.
 * `--compare DIR` boots a second build (another ramdisk folder, e.g. a copy of the previous
 * build/ramdisk) in turn with this one, in pairs whose order alternates, and prints the median
 * of the pairs' differences: a change measured on a busy machine.
 *
 * Needs `make ramdisk` (build/ramdisk, or BMA_RAMDISK_DIR) and qemu-system-x86 + ipxe-qemu.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { BootServer } from '../test/support/boot-server.js';
import { ReferenceConductor } from '../test/support/conductor.js';
import {
  loadRamdisk,
  PHASE_ORDER,
  QemuVm,
  qemuSkipReason,
  ramdiskDir,
  waitForHello,
  type BootMode,
  type RamdiskArtefacts,
} from '../test/support/qemu.js';
import { argument, median, procCpuSeconds, textArgument } from './common.js';

const TARGET_S: Record<BootMode, number> = { direct: 12, pxe: 25 };
const BOOT_TIMEOUT_MS = 120_000;

/** Console lines that mark a step inside the guest; read with the guest's own uptime stamp too. */
const GUEST_MARKS: ReadonlyArray<{ name: string; pattern: RegExp }> = [
  { name: 'unpacked', pattern: /Freeing initrd memory/ },
  { name: 'agent-exec', pattern: /bm-agent-init: starting bm-agent run/ },
];

interface BootRun {
  mode: BootMode;
  /** 'A' for the ramdisk under test, 'B' for --compare's. */
  build: 'A' | 'B';
  run: number;
  load: number;
  phases: Map<string, number>;
  helloMs: number | null;
  /** QEMU's user + system CPU seconds when the hello arrived. */
  cpuS: number | null;
  /** The guest's uptime (its console stamp) at each of GUEST_MARKS. */
  guest: Map<string, number>;
  error: string | null;
}

const guestMarks = (vm: QemuVm): Map<string, number> => {
  const marks = new Map<string, number>();
  for (const { name, pattern } of GUEST_MARKS) {
    const line = vm.lines.find((candidate) => pattern.test(candidate.text));
    const stamp = line ? /^\[\s*(\d+\.\d+)\]/.exec(line.text)?.[1] : undefined;
    if (stamp !== undefined) marks.set(name, Number(stamp));
  }
  return marks;
};

const bootOnce = async (
  mode: BootMode,
  build: 'A' | 'B',
  run: number,
  ramdisk: RamdiskArtefacts,
  boot: BootServer,
  work: string,
): Promise<BootRun> => {
  const conductor = await ReferenceConductor.start({ heartbeatIntervalS: 30 });
  const runDir = await mkdtemp(path.join(work, `${mode}-${build}-${run}-`));
  const load = os.loadavg()[0] ?? 0;
  let vm: QemuVm | null = null;
  try {
    vm = await QemuVm.start({
      mode,
      ramdisk,
      runDir,
      boot,
      conductor: { port: conductor.port, path: '/v1/agent' },
    });
    await waitForHello(vm, conductor, BOOT_TIMEOUT_MS);
    const cpuS = vm.pid === undefined ? null : await procCpuSeconds(vm.pid).catch(() => null);
    const phases = vm.phases();
    return {
      mode,
      build,
      run,
      load,
      phases,
      helloMs: phases.get('hello') ?? null,
      cpuS,
      guest: guestMarks(vm),
      error: null,
    };
  } catch (error) {
    const message = error instanceof Error ? error.message.split('\n')[0] : String(error);
    return {
      mode,
      build,
      run,
      load,
      phases: vm?.phases() ?? new Map(),
      helloMs: null,
      cpuS: null,
      guest: vm ? guestMarks(vm) : new Map(),
      error: message ?? 'failed',
    };
  } finally {
    await vm?.stop();
    await conductor.stop();
    await rm(runDir, { recursive: true, force: true });
  }
};

const seconds = (ms: number | undefined | null): string => (ms == null ? '-' : (ms / 1000).toFixed(2));
const plain = (value: number | undefined | null): string => (value == null ? '-' : value.toFixed(2));

const printTable = (header: string[], rows: string[][], leftColumns: number): void => {
  const widths = header.map((title, i) =>
    Math.max(title.length, ...rows.map((row) => (row[i] ?? '').length)),
  );
  const format = (cells: string[]): string =>
    `| ${cells.map((cell, i) => (i < leftColumns ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join(' | ')} |`;
  process.stdout.write(`${format(header)}\n`);
  process.stdout.write(
    `| ${widths.map((width, i) => (i < leftColumns ? '-'.repeat(width) : `${'-'.repeat(width - 1)}:`)).join(' | ')} |\n`,
  );
  for (const row of rows) process.stdout.write(`${format(row)}\n`);
};

const main = async (): Promise<number> => {
  const runs = argument('runs', 3);
  const which = textArgument('mode', 'both');
  const compareDir = textArgument('compare', '');
  const modes: BootMode[] = which === 'both' ? ['direct', 'pxe'] : [which as BootMode];
  if (!modes.every((mode) => mode === 'direct' || mode === 'pxe')) {
    process.stderr.write(`--mode ${which}: expected direct, pxe or both\n`);
    return 2;
  }
  for (const mode of modes) {
    const skip = await qemuSkipReason(mode);
    if (skip) {
      process.stdout.write(`boot-time: cannot boot (${mode}): ${skip}\n`);
      return 0;
    }
  }
  const builds: Array<{ build: 'A' | 'B'; ramdisk: RamdiskArtefacts }> = [
    { build: 'A', ramdisk: await loadRamdisk(ramdiskDir()) },
  ];
  if (compareDir !== '') builds.push({ build: 'B', ramdisk: await loadRamdisk(path.resolve(compareDir)) });
  for (const { build, ramdisk } of builds) {
    const sizes = await Promise.all(
      [ramdisk.vmlinux ?? ramdisk.vmlinuz, ramdisk.vmlinuz, ramdisk.initramfs].map(
        async (file) => (await stat(file)).size,
      ),
    );
    process.stdout.write(
      `boot-time: ${builds.length > 1 ? `${build} = ` : ''}${ramdisk.dir}: vmlinux ${sizes[0]} B, ` +
        `vmlinuz ${sizes[1]} B, initramfs ${sizes[2]} B\n`,
    );
  }
  process.stdout.write(
    `TCG, -smp 1 -m 1024, ${os.cpus().length} host CPUs, load ${(os.loadavg()[0] ?? 0).toFixed(2)}, ` +
      `${runs} boot(s) per mode${builds.length > 1 ? ' and build, in pairs of alternating order' : ''}, one at a time\n\n`,
  );

  const work = await mkdtemp(path.join(os.tmpdir(), 'bma-boot-time-'));
  const boot = await BootServer.start();
  const results: BootRun[] = [];
  try {
    for (const mode of modes) {
      for (let run = 1; run <= runs; run++) {
        const order = run % 2 === 1 ? builds : [...builds].reverse();
        for (const { build, ramdisk } of order) {
          const result = await bootOnce(mode, build, run, ramdisk, boot, work);
          results.push(result);
          const note = result.error ? `  FAILED: ${result.error}` : '';
          process.stdout.write(
            `  ${mode.padEnd(6)} ${builds.length > 1 ? `${build} ` : ''}#${run}: hello at ${seconds(result.helloMs)} s, ` +
              `QEMU CPU ${plain(result.cpuS)} s, load ${result.load.toFixed(2)}${note}\n`,
          );
        }
      }
    }
  } finally {
    await boot.stop();
    await rm(work, { recursive: true, force: true });
  }

  const columns = PHASE_ORDER.filter((name) => results.some((result) => result.phases.has(name)));
  process.stdout.write(
    `\nhost seconds since QEMU start, per phase; guest uptime at two marks; QEMU CPU seconds at the hello\n`,
  );
  printTable(
    ['mode', 'build', 'run', 'load', ...columns, 'CPU', ...GUEST_MARKS.map(({ name }) => `guest ${name}`)],
    results.map((result) => [
      result.mode,
      result.build,
      String(result.run),
      result.load.toFixed(2),
      ...columns.map((name) => seconds(result.phases.get(name))),
      plain(result.cpuS),
      ...GUEST_MARKS.map(({ name }) => plain(result.guest.get(name))),
    ]),
    3,
  );

  process.stdout.write('\nQEMU start -> first hello\n');
  for (const mode of modes) {
    for (const { build } of builds) {
      const mine = results.filter((r) => r.mode === mode && r.build === build);
      const times = mine.filter((r) => r.helloMs !== null).map((r) => r.helloMs ?? 0);
      const cpu = mine.filter((r) => r.cpuS !== null).map((r) => r.cpuS ?? 0);
      const failed = mine.length - times.length;
      const label = `${mode.padEnd(6)}${builds.length > 1 ? ` ${build}` : ''}`;
      if (times.length === 0) {
        process.stdout.write(`  ${label} no boot reached the hello (${failed} failed)\n`);
        continue;
      }
      const mid = median(times) / 1000;
      const verdict = mid <= TARGET_S[mode] ? 'under' : 'OVER';
      process.stdout.write(
        `  ${label} median ${mid.toFixed(2)} s, min ${(Math.min(...times) / 1000).toFixed(2)}, ` +
          `max ${(Math.max(...times) / 1000).toFixed(2)} over ${times.length} boot(s)` +
          `${failed ? `, ${failed} failed` : ''}; QEMU CPU median ${median(cpu).toFixed(2)} s: ` +
          `${verdict} the ${TARGET_S[mode]} s target\n`,
      );
    }
    if (builds.length > 1) {
      const pairs = [];
      for (let run = 1; run <= runs; run++) {
        const a = results.find((r) => r.mode === mode && r.build === 'A' && r.run === run);
        const b = results.find((r) => r.mode === mode && r.build === 'B' && r.run === run);
        if (a?.helloMs != null && b?.helloMs != null && a.cpuS !== null && b.cpuS !== null)
          pairs.push({ hello: (a.helloMs - b.helloMs) / 1000, cpu: a.cpuS - b.cpuS });
      }
      if (pairs.length > 0) {
        const sign = (value: number): string => `${value >= 0 ? '+' : ''}${value.toFixed(2)}`;
        process.stdout.write(
          `  ${mode.padEnd(6)} A - B over ${pairs.length} pair(s): hello median ${sign(median(pairs.map((p) => p.hello)))} s ` +
            `(${pairs.map((p) => sign(p.hello)).join(', ')}), QEMU CPU median ${sign(median(pairs.map((p) => p.cpu)))} s ` +
            `(${pairs.map((p) => sign(p.cpu)).join(', ')})\n`,
        );
      }
    }
  }
  return 0;
};

process.exitCode = await main();
