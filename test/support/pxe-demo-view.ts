/**
 * What `make demo` prints: the conductor's view of a PXE boot, one stamped line per event, a
 * progress bar redrawn in place on a terminal (plain lines elsewhere, so a log file or CI output
 * stays readable), and the closing summary. No QEMU here: the program (pxe-demo.ts) feeds it.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { formatBytes, renderProgress, type ProgressLine } from '../../agent/cli/format.js';
import type { BootRequest } from './boot-server.js';

/** process.stdout, or a test's collector. */
export interface DemoOutput {
  write(text: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

const TAG_WIDTH = 10;
const BAR_WIDTH = 30;
const MIN_BAR_WIDTH = 10;
/** Plain output: one progress line per phase and then at every quarter. */
const PLAIN_STEPS = 4;
/** Plain output without a total: at most one line this often. */
const PLAIN_INTERVAL_MS = 5000;

export interface DemoViewOptions {
  /** Redraw in place; by default when the output is a terminal and TERM is not dumb. */
  live?: boolean;
  clock?: () => number;
  startedAt?: number;
}

export class DemoView {
  readonly live: boolean;
  readonly startedAt: number;
  private readonly clock: () => number;
  /** The bar as last drawn on a live output, null when none is on screen. */
  private bar: string | null = null;
  private plain: { phase: string; step: number; at: number } | null = null;
  private barWidth: number | null = null;
  private barPhase: string | null = null;

  constructor(
    private readonly out: DemoOutput,
    options: DemoViewOptions = {},
  ) {
    this.live = options.live ?? (Boolean(out.isTTY) && process.env.TERM !== 'dumb');
    this.clock = options.clock ?? Date.now;
    this.startedAt = options.startedAt ?? this.clock();
  }

  /** Seconds since the demo started, as printed in front of every line. */
  stamp(): string {
    return `[${((this.clock() - this.startedAt) / 1000).toFixed(1).padStart(6)}s]`;
  }

  header(title: string, rows: ReadonlyArray<readonly [string, string]>): void {
    const width = Math.max(0, ...rows.map(([label]) => label.length));
    const text = [
      title,
      '='.repeat(Math.min(title.length, 100)),
      ...rows.map(([label, value]) => `${label.padEnd(width)}  ${value}`),
      '',
    ];
    this.print(text.join('\n'));
  }

  /** One event: `[  12.3s] tag        text`; continuation lines are indented under the text. */
  line(tag: string, text: string): void {
    const prefix = `${this.stamp()} ${tag.padEnd(TAG_WIDTH)} `;
    const indent = ' '.repeat(prefix.length);
    this.print(
      text
        .split('\n')
        .map((part, i) => (i === 0 ? prefix : indent) + part)
        .join('\n'),
    );
  }

  /** A progress report: the bar redrawn on a live output, a line per phase and quarter otherwise. */
  progress(progress: ProgressLine): void {
    if (this.live) {
      const width = Math.max(20, (this.out.columns || 80) - 1);
      const prefix = `${this.stamp()} ${'progress'.padEnd(TAG_WIDTH)} `;
      if (this.barWidth === null || this.barPhase !== progress.phase) {
        // The bar gives up columns first, so that the amount and the rate stay on screen. It is
        // sized once per phase, for the widest rate ("1023 MiB") and an amount done one
        // character wider than the total, so that it does not jitter as the numbers change.
        const widest =
          renderProgress(
            { ...progress, done: progress.total ?? progress.done, rate: 1023 * 1024 ** 2 },
            BAR_WIDTH,
          ).length + 1;
        this.barWidth = Math.max(MIN_BAR_WIDTH, BAR_WIDTH - Math.max(0, prefix.length + widest - width));
        this.barPhase = progress.phase;
      }
      const bar = this.barWidth;
      const text = `${prefix}${renderProgress(progress, bar)}`.slice(0, width);
      this.out.write(`\r${text.padEnd(this.bar?.length ?? 0)}`);
      this.bar = text;
      return;
    }
    const now = this.clock();
    const fraction = progress.total ? Math.min(1, progress.done / progress.total) : null;
    const step = fraction === null ? -1 : Math.floor(fraction * PLAIN_STEPS);
    const last = this.plain;
    const due =
      last === null ||
      last.phase !== progress.phase ||
      (fraction === null ? now - last.at >= PLAIN_INTERVAL_MS : step > last.step);
    if (!due) return;
    this.plain = { phase: progress.phase, step, at: now };
    this.line('progress', renderProgress(progress));
  }

  /** Leaves the bar's last state on screen and moves on; the next progress starts afresh. */
  endProgress(): void {
    if (this.bar !== null) this.out.write('\n');
    this.bar = null;
    this.barWidth = null;
    this.plain = null;
  }

  /** Text as it is (a table, the summary), below any bar on screen. */
  print(text: string): void {
    // A line printed while a bar is drawn takes the bar's place; the bar comes back below it.
    const bar = this.bar;
    if (bar !== null) this.out.write(`\r${' '.repeat(bar.length)}\r`);
    this.out.write(`${text}\n`);
    if (bar !== null) this.out.write(bar);
  }
}

// ---- event descriptions ----------------------------------------------------------------------

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

/** What the guest fetched from the boot server, as the conductor's side sees it. */
export const describeBootRequest = (request: BootRequest): string | null => {
  if (request.finishedAt === null) return `${request.method} ${request.path}: cut off (${request.status})`;
  const took = Math.max(1, request.finishedAt - request.startedAt);
  const what: Record<string, string> = {
    '/boot.ipxe': 'the iPXE script',
    '/vmlinuz': 'the kernel',
    '/initramfs.img': 'the initramfs',
  };
  const name = what[request.path];
  if (name === undefined) return null;
  if (request.status >= 300) return `${name} (${request.path}): HTTP ${request.status}`;
  const rate = request.bytes >= 1024 * 1024 ? `, ${formatBytes((request.bytes * 1000) / took)}/s` : '';
  return `iPXE fetched ${name} ${request.path}: ${formatBytes(request.bytes)} in ${seconds(took)}${rate}`;
};

/** Console phases (qemu.ts's names) worth a line while the VM boots, in boot order. */
export const CONSOLE_MILESTONES: ReadonlyArray<readonly [string, string]> = [
  ['firmware', 'SeaBIOS is running'],
  ['ipxe', "iPXE (the NIC's boot ROM) started"],
  ['ipxe-dhcp', 'iPXE has a DHCP lease and asks for the boot script'],
  ['kernel', 'the Linux kernel is booting'],
  ['init', "the ramdisk's /init is running"],
  ['agent', 'the init started bm-agent'],
];

export interface HelloView {
  agent_version: string;
  hostname: string;
  macs: string[];
  bootif: string | null;
  capabilities: string[];
  token: string | null;
}

export const describeHello = (hello: HelloView, nodeUuid: string | null, sinceQemuMs: number): string =>
  [
    `bm-agent ${hello.agent_version} on ${hello.hostname}, ${seconds(sinceQemuMs)} after QEMU started`,
    `node ${nodeUuid ?? '-'}; MACs ${hello.macs.join(' ') || '-'}; BOOTIF ${hello.bootif ?? '-'}`,
    `${hello.capabilities.length} commands; token ${hello.token === null ? 'issued now (first hello of this boot)' : 'presented'}`,
  ].join('\n');

// ---- the inventory, read from the wire -------------------------------------------------------

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);
const text = (value: unknown): string | null => (typeof value === 'string' && value !== '' ? value : null);
const num = (value: unknown): number | null =>
  typeof value === 'number' && Number.isFinite(value) ? value : null;
const list = (value: unknown): unknown[] => (Array.isArray(value) ? value : []);

export interface LldpNeighbourView {
  interface: string;
  chassis: string | null;
  port: string | null;
  portDescription: string | null;
  systemName: string | null;
}

export interface InventoryView {
  /** Lines for a person: CPU, memory, disks, NICs, boot. */
  lines: string[];
  /** The neighbour reported on the NIC with the given MAC; null when it reported none. */
  neighbour: LldpNeighbourView | null;
  /** That NIC's name, when the inventory has it. */
  lldpInterface: string | null;
}

/**
 * The summary of an `inventory.collect` result (`{inventory}`), read field by field: whatever is
 * missing or of the wrong type shows as `-` rather than breaking the demo.
 */
export const summarizeInventory = (result: unknown, lldpMac: string): InventoryView => {
  const inventory = isRecord(result) && isRecord(result.inventory) ? result.inventory : {};
  const cpu = isRecord(inventory.cpu) ? inventory.cpu : {};
  const memory = isRecord(inventory.memory) ? inventory.memory : {};
  const boot = isRecord(inventory.boot) ? inventory.boot : {};
  const vendor = isRecord(inventory.system_vendor) ? inventory.system_vendor : {};
  const pxeMac = text(boot.pxe_interface);
  const lines = [
    `system  ${[text(vendor.manufacturer), text(vendor.product_name)].filter(Boolean).join(' ') || '-'}, ` +
      `${text(boot.current_boot_mode) ?? '-'} boot`,
    `CPU     ${num(cpu.count) ?? '-'} x ${text(cpu.model_name) ?? '-'} (${text(cpu.architecture) ?? '-'})`,
    `memory  ${formatBytes(num(memory.total))}` +
      (num(memory.physical_mb) !== null ? ` usable of ${num(memory.physical_mb)} MiB physical` : ''),
  ];
  const disks = list(inventory.disks).filter(isRecord);
  if (disks.length === 0) lines.push('disks   none');
  disks.forEach((disk, i) => {
    const details = [
      formatBytes(num(disk.size)),
      text(disk.serial) ? `serial ${text(disk.serial)}` : null,
      text(disk.model) ? `model ${text(disk.model)}` : null,
      disk.rotational === false ? 'SSD' : disk.rotational === true ? 'HDD' : null,
    ].filter(Boolean);
    lines.push(`${i === 0 ? 'disks ' : '      '}  ${text(disk.name) ?? '-'}  ${details.join(', ')}`);
  });
  const nics = list(inventory.interfaces).filter(isRecord);
  if (nics.length === 0) lines.push('NICs    none');
  let neighbour: LldpNeighbourView | null = null;
  let lldpInterface: string | null = null;
  nics.forEach((nic, i) => {
    const mac = text(nic.mac_address);
    const name = text(nic.name) ?? '-';
    const details = [
      mac ?? '-',
      text(nic.ipv4_address) ?? 'no IPv4',
      text(nic.driver),
      nic.has_carrier === true ? 'link up' : nic.has_carrier === false ? 'no link' : null,
      mac !== null && mac === pxeMac ? 'PXE (BOOTIF)' : null,
    ].filter(Boolean);
    lines.push(`${i === 0 ? 'NICs  ' : '      '}  ${name}  ${details.join(', ')}`);
    if (mac === null || mac.toLowerCase() !== lldpMac.toLowerCase()) return;
    lldpInterface = name;
    const parsed = isRecord(nic.lldp_processed) ? nic.lldp_processed : null;
    if (parsed === null || Object.keys(parsed).length === 0) return;
    neighbour = {
      interface: name,
      chassis: text(parsed.switch_chassis_id),
      port: text(parsed.switch_port_id),
      portDescription: text(parsed.switch_port_description),
      systemName: text(parsed.switch_system_name),
    };
  });
  return { lines, neighbour, lldpInterface };
};

export const describeNeighbour = (neighbour: LldpNeighbourView): string =>
  `${neighbour.interface}: switch ${neighbour.systemName ?? '-'} (chassis ${neighbour.chassis ?? '-'}), ` +
  `port ${neighbour.port ?? '-'}${neighbour.portDescription ? ` "${neighbour.portDescription}"` : ''}`;

// ---- failure and summary ---------------------------------------------------------------------

/** What to run when this machine cannot boot the ramdisk (no QEMU, no iPXE ROM, no ramdisk...). */
export const cannotBootMessage = (reason: string): string =>
  [
    `The demo cannot boot the ramdisk here: ${reason}.`,
    '',
    '  make demo         as root on Debian 12 installs what is missing (QEMU, iPXE, gdisk, e2fsprogs',
    '                    through .ci/packages), builds the ramdisk, then boots it',
    '  make ramdisk      builds build/ramdisk/ alone (BMA_RAMDISK_DIR points the demo elsewhere)',
    '  make demo-local   the host-only demo: no VM, no ramdisk',
  ].join('\n');

/** The message of a run that went over its time: where to look next. */
export const timeoutMessage = (what: string, limitS: number, consoleLog: string | null): string =>
  `timed out after ${limitS} s waiting for ${what}.` +
  (consoleLog === null
    ? ''
    : ` The VM's serial console is in ${consoleLog}: its last lines show how far the boot got.`);

/** The rows of the timeline, in the order they happen, with what each means. */
export const TIMELINE: ReadonlyArray<readonly [string, string]> = [
  ['qemu', 'QEMU started'],
  ['firmware', 'SeaBIOS'],
  ['ipxe', 'iPXE started'],
  ['ipxe-dhcp', 'iPXE DHCP lease'],
  ['script', 'boot script fetched'],
  ['kernel-fetched', 'kernel fetched'],
  ['initrd-fetched', 'initramfs fetched'],
  ['kernel', 'kernel running'],
  ['init', '/init running'],
  ['agent', 'bm-agent started'],
  ['hello', 'hello accepted'],
  ['inventory.collect', 'inventory + LLDP done'],
  ['image.write', 'image written'],
  ['system.power_off', 'power-off acknowledged'],
  ['exit', 'VM exited'],
];

/** Seconds since QEMU's start of each phase reached, and the step from the previous one. */
export const renderTimeline = (phases: ReadonlyMap<string, number>): string => {
  const rows = ['phase                      at (s)   step (s)'];
  let previous = 0;
  for (const [name, label] of TIMELINE) {
    const at = phases.get(name);
    if (at === undefined) continue;
    rows.push(
      `  ${label.padEnd(24)} ${(at / 1000).toFixed(1).padStart(6)}   ${`+${((at - previous) / 1000).toFixed(1)}`.padStart(8)}`,
    );
    previous = Math.max(previous, at);
  }
  return rows.join('\n');
};

export interface ArtefactEntry {
  path: string;
  what: string;
  /** Apparent size, null when the file is missing. */
  bytes: number | null;
  /** Bytes on disk, for files listed as sparse; null otherwise or when missing. */
  allocated: number | null;
}

/**
 * Sizes of the files to list; a missing file stays in the list, marked as missing. For a file
 * marked sparse (a VM disk), what it takes on disk too.
 */
export const statArtefacts = async (
  files: ReadonlyArray<{ path: string; what: string; sparse?: boolean }>,
): Promise<ArtefactEntry[]> =>
  Promise.all(
    files.map(async ({ path: file, what, sparse }) => {
      const info = await stat(file).catch(() => null);
      if (info === null || !info.isFile()) return { path: file, what, bytes: null, allocated: null };
      return { path: file, what, bytes: info.size, allocated: sparse ? info.blocks * 512 : null };
    }),
  );

/** One group of files with sizes, paths relative to `cwd` when they are inside it. */
export const renderArtefacts = (title: string, entries: readonly ArtefactEntry[], cwd: string): string => {
  const shown = entries.map((entry) => {
    const relative = path.relative(cwd, entry.path);
    const name = relative.startsWith('..') || path.isAbsolute(relative) ? entry.path : relative;
    const size =
      entry.bytes === null
        ? 'missing'
        : `${formatBytes(entry.bytes)}${entry.allocated === null ? '' : ` (${formatBytes(entry.allocated)} on disk)`}`;
    return [name, size, entry.what] as const;
  });
  const nameWidth = Math.max(0, ...shown.map(([name]) => name.length));
  const sizeWidth = Math.max(0, ...shown.map(([, size]) => size.length));
  return [
    title,
    ...shown.map(([name, size, what]) => `  ${name.padEnd(nameWidth)}  ${size.padStart(sizeWidth)}  ${what}`),
  ].join('\n');
};

export interface SummaryInput {
  ok: boolean;
  totalMs: number;
  /** From the start to QEMU's start: the image to write, the servers. */
  prepareMs: number | null;
  phases: ReadonlyMap<string, number>;
  artefacts: ReadonlyArray<{ title: string; entries: readonly ArtefactEntry[] }>;
  problems: readonly string[];
  cwd: string;
}

export const renderSummary = (input: SummaryInput): string => {
  const parts = [
    input.ok
      ? `The demo went through in ${seconds(input.totalMs)}.`
      : `The demo FAILED after ${seconds(input.totalMs)}.`,
  ];
  if (input.problems.length > 0)
    parts.push(['What went wrong:', ...input.problems.map((p) => `  - ${p}`)].join('\n'));
  if (input.prepareMs !== null)
    parts.push(`Preparation (image to write, servers): ${seconds(input.prepareMs)}`);
  if (input.phases.size > 0) parts.push(`Host seconds since QEMU started:\n${renderTimeline(input.phases)}`);
  for (const group of input.artefacts) parts.push(renderArtefacts(group.title, group.entries, input.cwd));
  return parts.join('\n\n');
};
