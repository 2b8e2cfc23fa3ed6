/**
 * Boot time of the ramdisk under QEMU without KVM: QEMU start -> the conductor's first hello,
 * direct (-kernel vmlinux, PVH) and via PXE (SeaBIOS, iPXE, kernel and initramfs over HTTP), N
 * boots each, one at a time, with every phase the console shows. Printed against the targets of
 * issue 6 (12 s direct, 25 s PXE on a 2-core machine); not asserted.
 *
 *   node dist/bench/boot-time.js [--runs N] [--mode direct|pxe|both]
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
  waitForHello,
  type BootMode,
  type RamdiskArtefacts,
} from '../test/support/qemu.js';
import { argument, median, textArgument } from './common.js';

const TARGET_S: Record<BootMode, number> = { direct: 12, pxe: 25 };
const BOOT_TIMEOUT_MS = 120_000;

interface BootRun {
  mode: BootMode;
  run: number;
  phases: Map<string, number>;
  helloMs: number | null;
  error: string | null;
}

const bootOnce = async (
  mode: BootMode,
  run: number,
  ramdisk: RamdiskArtefacts,
  boot: BootServer,
  work: string,
): Promise<BootRun> => {
  const conductor = await ReferenceConductor.start({ heartbeatIntervalS: 30 });
  const runDir = await mkdtemp(path.join(work, `${mode}-${run}-`));
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
    return { mode, run, phases: vm.phases(), helloMs: vm.phases().get('hello') ?? null, error: null };
  } catch (error) {
    const message = error instanceof Error ? error.message.split('\n')[0] : String(error);
    return { mode, run, phases: vm?.phases() ?? new Map(), helloMs: null, error: message ?? 'failed' };
  } finally {
    await vm?.stop();
    await conductor.stop();
    await rm(runDir, { recursive: true, force: true });
  }
};

const seconds = (ms: number | undefined | null): string => (ms == null ? '-' : (ms / 1000).toFixed(2));

const main = async (): Promise<number> => {
  const runs = argument('runs', 3);
  const which = textArgument('mode', 'both');
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
  const ramdisk = await loadRamdisk();
  const sizes = await Promise.all(
    [ramdisk.vmlinux ?? ramdisk.vmlinuz, ramdisk.vmlinuz, ramdisk.initramfs].map(
      async (file) => (await stat(file)).size,
    ),
  );
  const load = os.loadavg()[0]?.toFixed(2) ?? '?';
  process.stdout.write(
    `boot-time: ${ramdisk.dir}: vmlinux ${sizes[0]} B, vmlinuz ${sizes[1]} B, initramfs ${sizes[2]} B; ` +
      `TCG, -smp 1 -m 1024, ${os.cpus().length} host CPUs, load ${load}, ${runs} boot(s) per mode, one at a time\n\n`,
  );

  const work = await mkdtemp(path.join(os.tmpdir(), 'bma-boot-time-'));
  const boot = await BootServer.start();
  const results: BootRun[] = [];
  try {
    for (const mode of modes) {
      for (let run = 1; run <= runs; run++) {
        const result = await bootOnce(mode, run, ramdisk, boot, work);
        results.push(result);
        const note = result.error ? `  FAILED: ${result.error}` : '';
        process.stdout.write(`  ${mode.padEnd(6)} #${run}: hello at ${seconds(result.helloMs)} s${note}\n`);
      }
    }
  } finally {
    await boot.stop();
    await rm(work, { recursive: true, force: true });
  }

  const columns = PHASE_ORDER.filter((name) => results.some((result) => result.phases.has(name)));
  process.stdout.write(`\nhost seconds since QEMU start, per phase\n`);
  const header = ['mode', 'run', ...columns];
  const rows = results.map((result) => [
    result.mode,
    String(result.run),
    ...columns.map((name) => seconds(result.phases.get(name))),
  ]);
  const widths = header.map((title, i) =>
    Math.max(title.length, ...rows.map((row) => (row[i] ?? '').length)),
  );
  const format = (cells: string[]): string =>
    `| ${cells.map((cell, i) => (i < 2 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join(' | ')} |`;
  process.stdout.write(`${format(header)}\n`);
  process.stdout.write(
    `| ${widths.map((width, i) => (i < 2 ? '-'.repeat(width) : `${'-'.repeat(width - 1)}:`)).join(' | ')} |\n`,
  );
  for (const row of rows) process.stdout.write(`${format(row)}\n`);

  process.stdout.write('\nQEMU start -> first hello\n');
  for (const mode of modes) {
    const times = results.filter((r) => r.mode === mode && r.helloMs !== null).map((r) => r.helloMs ?? 0);
    const failed = results.filter((r) => r.mode === mode && r.helloMs === null).length;
    if (times.length === 0) {
      process.stdout.write(`  ${mode.padEnd(6)} no boot reached the hello (${failed} failed)\n`);
      continue;
    }
    const mid = median(times) / 1000;
    const verdict = mid <= TARGET_S[mode] ? 'under' : 'OVER';
    process.stdout.write(
      `  ${mode.padEnd(6)} median ${mid.toFixed(2)} s, min ${(Math.min(...times) / 1000).toFixed(2)}, ` +
        `max ${(Math.max(...times) / 1000).toFixed(2)} over ${times.length} boot(s)` +
        `${failed ? `, ${failed} failed` : ''}: ${verdict} the ${TARGET_S[mode]} s target\n`,
    );
  }
  return 0;
};

process.exitCode = await main();
