/**
 * Wall time of a full hardware inventory on this machine, next to the plain commands that read the
 * same facts.
 *
 * - in process: `collectInventory` on the real /sys, /proc and /dev, 1 warm-up then N runs (median,
 *   min, max), with the time at which each part finished, the event-loop delay during the runs and
 *   every child process the collection started (the process runner is wrapped to count them);
 * - whole process: `node dist/agent/main.js inventory --json`, next to `node -e ''` (Node's own
 *   start-up) so the module loading shows;
 * - plain tools, each as a whole process: `lsblk -J -b -O`, `ip -j addr`, `cat /proc/cpuinfo` and
 *   `dmidecode` when it is installed (it fails fast without SMBIOS; its time is still counted).
 *
 * Prints figures only; there is no pass or fail besides the 200 ms target line. Run after a build:
 * `node dist/bench/inventory.js [--runs 20] [--tool-runs 10]`.
 */
import { execFile } from 'node:child_process';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { collectInventory, INVENTORY_PARTS } from '../agent/hardware/generic/inventory/index.js';
import { DEFAULT_PATHS } from '../agent/hardware/paths.js';
import { findOnPath, runProcess, type RunProcess } from '../agent/util/run-process.js';
import { argument } from './common.js';

const TARGET_MS = 200;

const RUNS = argument('runs', 20);
const TOOL_RUNS = argument('tool-runs', 10);

interface Stats {
  median: number;
  min: number;
  max: number;
}

const stats = (samples: number[]): Stats => {
  const sorted = [...samples].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const median =
    sorted.length % 2 === 1 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
  return { median, min: sorted[0] ?? 0, max: sorted.at(-1) ?? 0 };
};

const ms = (value: number): string => `${value.toFixed(1)} ms`;
const show = (s: Stats): string => `${ms(s.median)} (${s.min.toFixed(1)}–${s.max.toFixed(1)})`;

/** Runs a program to completion and returns its wall time; a non-zero exit is reported, not fatal. */
const timeProcess = (file: string, args: string[]): Promise<{ ms: number; ok: boolean }> =>
  new Promise((resolve) => {
    const started = performance.now();
    execFile(file, args, { maxBuffer: 64 * 1024 * 1024 }, (error) => {
      resolve({ ms: performance.now() - started, ok: error === null });
    });
  });

const timeCommand = async (
  file: string,
  args: string[],
  runs: number,
): Promise<{ stats: Stats; ok: boolean }> => {
  await timeProcess(file, args); // warm-up: page cache, dentries
  const samples: number[] = [];
  let ok = true;
  for (let run = 0; run < runs; run += 1) {
    const result = await timeProcess(file, args);
    samples.push(result.ms);
    ok &&= result.ok;
  }
  return { stats: stats(samples), ok };
};

const inProcess = async () => {
  const spawned: string[][] = [];
  const counting: RunProcess = (file, args, options) => {
    spawned.push([file, ...args]);
    return runProcess(file, args, options);
  };
  await collectInventory({ paths: DEFAULT_PATHS, bootif: null, runProcess: counting }); // warm-up
  spawned.length = 0;

  const totals: number[] = [];
  const partTimes = new Map<string, number[]>(INVENTORY_PARTS.map((part) => [part, []]));
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  histogram.enable();
  let inventory: Awaited<ReturnType<typeof collectInventory>> | undefined;
  for (let run = 0; run < RUNS; run += 1) {
    const started = performance.now();
    inventory = await collectInventory({
      paths: DEFAULT_PATHS,
      bootif: null,
      runProcess: counting,
      progress: (update) => partTimes.get(update.phase)?.push(performance.now() - started),
    });
    totals.push(performance.now() - started);
  }
  histogram.disable();
  return {
    total: stats(totals),
    parts: [...partTimes].map(([part, samples]) => [part, stats(samples)] as const),
    spawnedPerRun: spawned.length / RUNS,
    spawnedKinds: [...new Set(spawned.map((argv) => argv.join(' ')))],
    loopDelayMaxMs: histogram.max / 1e6,
    loopDelayP99Ms: histogram.percentile(99) / 1e6,
    inventory,
  };
};

const main = async (): Promise<void> => {
  process.stdout.write(
    `inventory benchmark: ${RUNS} in-process runs, ${TOOL_RUNS} runs per whole process (medians, min–max)\n\n`,
  );

  const ours = await inProcess();
  const summary = ours.inventory;
  if (summary) {
    process.stdout.write(
      `machine: ${summary.cpu.count} x ${summary.cpu.model_name ?? '?'}, ${summary.disks.length} disk(s), ` +
        `${summary.interfaces.length} NIC(s), ${summary.pci_devices.length} PCI function(s), BMC ${summary.bmc_address}\n`,
    );
  }
  process.stdout.write(`\nin process: full inventory             ${show(ours.total)}\n`);
  for (const [part, partStats] of ours.parts) {
    process.stdout.write(`  ${part.padEnd(12)} done after          ${show(partStats)}\n`);
  }
  process.stdout.write(
    `  child processes per inventory: ${ours.spawnedPerRun} (${ours.spawnedKinds.join('; ') || 'none'})\n` +
      `  event-loop delay during the runs: p99 ${ms(ours.loopDelayP99Ms)}, max ${ms(ours.loopDelayMaxMs)}\n`,
  );

  const main = fileURLToPath(new URL('../agent/main.js', import.meta.url));
  const cli = await timeCommand(process.execPath, [main, 'inventory', '--json'], TOOL_RUNS);
  const nodeStart = await timeCommand(process.execPath, ['-e', ''], TOOL_RUNS);
  process.stdout.write(
    `\nwhole process: node dist/agent/main.js inventory --json  ${show(cli.stats)}${cli.ok ? '' : ' (FAILED)'}\n` +
      `               node -e '' (start-up alone)              ${show(nodeStart.stats)}\n`,
  );

  const tools: Array<[string, string[]]> = [
    ['lsblk', ['-J', '-b', '-O']],
    ['ip', ['-j', 'addr']],
    ['cat', ['/proc/cpuinfo']],
    ['dmidecode', []],
  ];
  process.stdout.write('\nplain tools, whole process each:\n');
  let sum = 0;
  for (const [name, args] of tools) {
    const file = await findOnPath(name);
    if (file === null) {
      process.stdout.write(`  ${`${name} ${args.join(' ')}`.padEnd(22)} not installed, left out\n`);
      continue;
    }
    const result = await timeCommand(file, args, TOOL_RUNS);
    sum += result.stats.median;
    process.stdout.write(
      `  ${`${name} ${args.join(' ')}`.padEnd(22)} ${show(result.stats)}${result.ok ? '' : ' (exits non-zero here)'}\n`,
    );
  }
  process.stdout.write(`  sum of medians         ${ms(sum)}\n`);

  process.stdout.write(
    `\nratio in-process inventory / plain tools:    ${(ours.total.median / sum).toFixed(2)}\n` +
      `ratio whole-process inventory / plain tools: ${(cli.stats.median / sum).toFixed(2)}\n` +
      `target: full inventory under ${TARGET_MS} ms here: ${ours.total.median < TARGET_MS ? 'met' : 'NOT met'} ` +
      `(${ms(ours.total.median)} in process)\n`,
  );
};

await main();
