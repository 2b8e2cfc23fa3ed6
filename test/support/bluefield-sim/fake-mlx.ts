/**
 * Stand-ins for NVIDIA's tools, run as `node fake-mlx.js <tool> ARGS` through the wrappers
 * installFakeMlxTools writes: mlxconfig/mstconfig, mlxprivhost/mstprivhost, flint/mstflint, mst.
 * They keep per-card NV state in `$BMA_SIM_STATE/cards/<slot>/nv.json` (nv-state.ts) and print what
 * the real tools print, byte for byte where a capture exists (test/fixtures/bluefield/mlx/):
 *   - mstconfig: mstflint 4.25's table (16-wide values, 9-space row indent, `%-16s` header keys);
 *   - mlxconfig: the 2026 mlxcfg_ui.cpp table (diff/RO prefix, names in 48, 33-wide values,
 *     `%-20s` header keys);
 *   - errors on stdout as `-E- ...`, exit 0 ok / 2 aborted / 3 error (mlxCfgStatus);
 *   - mlxprivhost/mstprivhost: r|p only on the DPU's Arm (BMA_SIM_SIDE=arm), else
 *     `-E- Operation is not permitted (refer to the DPU user manual)`, exit 1;
 *   - INTERNAL_CPU_MODEL ("can only be configured from the embedded CPU", mstflint DB) is refused
 *     from the host with the error TLVConf::mnvda prints when the firmware rejects the write.
 * On the Arm (BMA_SIM_SIDE=arm) the card is the one named by BMA_SIM_CARD (or the only one) and it
 * is addressed as the Arm sees it: 0000:03:00.x or its /dev/mst name.
 */
import { readFileSync, realpathSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  NV_ACCESS_ERROR,
  SIM_PARAM_TYPES,
  formatSimValue,
  listCardSlots,
  readCardState,
  writeCardState,
  type SimCardState,
  type SimCommand,
  type SimFailure,
  type SimPrivilege,
  type SimSide,
} from './nv-state.js';

export { createCardState, installFakeMlxTools, simulatePowerCycle } from './nv-state.js';

type Layout = 'old16' | 'wide';

interface Context {
  tool: string;
  args: string[];
  stateDir: string;
  side: SimSide;
  stdout: string[];
  stderr: string[];
}

const out = (ctx: Context, text: string): void => {
  ctx.stdout.push(text);
};

const ARM_SLOT_BDF = /^0000:03:00\.([0-7])$/;

const normalizeBdf = (address: string): string => {
  const value = address.trim().toLowerCase();
  return /^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(value) ? `0000:${value}` : value;
};

const loadCards = async (stateDir: string): Promise<SimCardState[]> =>
  Promise.all((await listCardSlots(stateDir)).map((slot) => readCardState(stateDir, slot)));

const mstBase = (device: string): { base: string; fn: number } => {
  const match = /^(.*_pciconf\d+)(?:\.(\d))?$/.exec(device);
  return { base: match?.[1] ?? device, fn: Number(match?.[2] ?? 0) };
};

/** The card a `-d` argument names, as the side running the tool sees the PCI tree. */
const resolveCard = async (ctx: Context, device: string): Promise<SimCardState | null> => {
  const cards = await loadCards(ctx.stateDir);
  if (ctx.side === 'arm') {
    const wanted = process.env.BMA_SIM_CARD;
    const card = wanted ? cards.find((c) => c.slot === wanted) : cards.length === 1 ? cards[0] : undefined;
    if (card === undefined) return null;
    if (device.startsWith('/dev/mst/')) {
      const { base, fn } = mstBase(device);
      return base === card.mst_device && fn < card.functions.length ? card : null;
    }
    const match = ARM_SLOT_BDF.exec(normalizeBdf(device));
    return match && Number(match[1]) < card.functions.length ? card : null;
  }
  if (device.startsWith('/dev/mst/')) {
    const { base, fn } = mstBase(device);
    return cards.find((c) => c.mst_device === base && fn < c.functions.length) ?? null;
  }
  const bdf = normalizeBdf(device);
  return cards.find((c) => c.functions.includes(bdf)) ?? null;
};

const failureQueue = (state: SimCardState): SimFailure[] =>
  state.fail_next === null ? [] : Array.isArray(state.fail_next) ? [...state.fail_next] : [state.fail_next];

interface Taken {
  /** The exit code of a printed failure; null when the call goes on. */
  exit: number | null;
  /** Go on, but change nothing. */
  silent: boolean;
}

/** Takes the first queued failure for this command and side, printing it unless it is silent. */
const takeFailure = (ctx: Context, state: SimCardState, command: SimCommand): Taken => {
  const queue = failureQueue(state);
  const index = queue.findIndex(
    (f) => (f.command === command || f.command === 'any') && (f.side === undefined || f.side === ctx.side),
  );
  if (index < 0) return { exit: null, silent: false };
  const [failure] = queue.splice(index, 1);
  state.fail_next = queue.length === 0 ? null : queue;
  if (failure === undefined) return { exit: null, silent: false };
  if (failure.silent === true) return { exit: null, silent: true };
  if (failure.stdout !== undefined) ctx.stdout.push(failure.stdout);
  if (failure.stderr !== undefined) ctx.stderr.push(failure.stderr);
  return { exit: failure.exit, silent: false };
};

// ---- mlxconfig / mstconfig ---------------------------------------------------------------

const OLD_WIDTH = 16;
const WIDE_WIDTH = 33;

const printOpening = (ctx: Context, layout: Layout, state: SimCardState, device: string): void => {
  const key = layout === 'old16' ? 16 : 20;
  const value = layout === 'old16' ? 16 : 20;
  out(ctx, '\nDevice #1:\n----------\n\n');
  out(ctx, `${'Device type:'.padEnd(key)}${state.device_type.padEnd(value)}\n`);
  out(ctx, `${'Name:'.padEnd(key)}${state.name.padEnd(value)}\n`);
  out(ctx, `${'Description:'.padEnd(key)}${state.description.padEnd(value)}\n`);
  out(ctx, `${'Device:'.padEnd(key)}${device.padEnd(value)}\n`);
  out(ctx, '\n');
};

const printHeader = (ctx: Context, layout: Layout, verbose: boolean, showNew: boolean): void => {
  if (layout === 'old16') {
    const titles = [...(verbose ? ['Default', 'Current'] : []), 'Next Boot', ...(showNew ? ['New'] : [])];
    const last = titles.pop() ?? '';
    out(ctx, `${'Configurations:'.padEnd(53)}${titles.map((t) => t.padEnd(OLD_WIDTH)).join('')}${last}\n`);
    return;
  }
  let line = 'Configurations:'.padEnd(56);
  if (verbose) line += `${'Default'.padEnd(WIDE_WIDTH)} ${'Current'.padEnd(WIDE_WIDTH)} `;
  line += 'Next Boot'.padEnd(WIDE_WIDTH);
  if (showNew) line += ` ${'New'.padEnd(WIDE_WIDTH)}`;
  out(ctx, `${line}\n`);
};

const printRow = (ctx: Context, layout: Layout, name: string, values: string[], modified: boolean): void => {
  const width = layout === 'old16' ? OLD_WIDTH : WIDE_WIDTH;
  let line =
    layout === 'old16'
      ? `${modified ? '*' : ' '}        ${name.padEnd(44)}`
      : `${modified ? '*' : ' '}       ${name.padEnd(48)}`;
  let previous = 0;
  for (const value of values) {
    // A value that fills its column gets one space before the next (PRINT_SPACE_IF_NEEDED).
    if (previous >= width) line += ' ';
    line += value.padEnd(width);
    previous = value.length;
  }
  out(ctx, `${line}\n`);
};

interface ConfigArgs {
  device: string | null;
  yes: boolean;
  verbose: boolean;
  command: string | null;
  rest: string[];
  bad: string | null;
}

const parseConfigArgs = (args: string[]): ConfigArgs => {
  const parsed: ConfigArgs = { device: null, yes: false, verbose: false, command: null, rest: [], bad: null };
  for (let i = 0; i < args.length; i += 1) {
    const arg = args[i] ?? '';
    if (arg === '-d' || arg === '--dev') parsed.device = args[(i += 1)] ?? null;
    else if (arg === '-y' || arg === '--yes') parsed.yes = true;
    else if (arg === '-e' || arg === '--enable_verbosity') parsed.verbose = true;
    else if (arg.startsWith('-')) parsed.bad ??= arg;
    else if (parsed.command === null) parsed.command = arg;
    else parsed.rest.push(arg);
  }
  return parsed;
};

const supportError = (state: SimCardState, name: string): string | null => {
  if (SIM_PARAM_TYPES[name] === undefined) return `Unknown Parameter: ${name}`;
  if (state.params[name] === undefined) return `The Device doesn't support ${name} parameter`;
  return null;
};

const parseSetValue = (name: string, raw: string): string | null => {
  try {
    return formatSimValue(name, /^\d+$/.test(raw) ? Number(raw) : raw);
  } catch {
    return null;
  }
};

const readAnswer = (): string => {
  try {
    return (readFileSync(0, 'utf8').split('\n')[0] ?? '').trim();
  } catch {
    return '';
  }
};

const configQuery = (
  ctx: Context,
  layout: Layout,
  state: SimCardState,
  args: ConfigArgs,
  device: string,
): number => {
  const names = args.rest.length > 0 ? args.rest.map((n) => n.toUpperCase()) : Object.keys(state.params);
  printOpening(ctx, layout, state, device);
  printHeader(ctx, layout, args.verbose, false);
  for (const name of names) {
    const problem = supportError(state, name);
    if (problem !== null) {
      out(ctx, `-E- ${problem}\n`);
      return 3;
    }
  }
  let anyModified = false;
  for (const name of names) {
    const value = state.params[name];
    if (value === undefined) continue;
    const modified = args.verbose && (value.next !== value.default || value.next !== value.current);
    anyModified ||= modified;
    printRow(
      ctx,
      layout,
      name,
      args.verbose ? [value.default, value.current, value.next] : [value.next],
      modified,
    );
  }
  if (anyModified)
    out(ctx, "The '*' shows parameters with next value different from default/current value.\n");
  return 0;
};

const configSet = (
  ctx: Context,
  layout: Layout,
  state: SimCardState,
  args: ConfigArgs,
  device: string,
  silent: boolean,
): number => {
  printOpening(ctx, layout, state, device);
  printHeader(ctx, layout, false, true);
  const changes: Array<[string, string]> = [];
  for (const assignment of args.rest) {
    const [rawName = '', rawValue = ''] = assignment.split('=');
    const name = rawName.toUpperCase();
    const problem = supportError(state, name);
    if (problem !== null) {
      out(ctx, `-E- ${problem}\n`);
      return 3;
    }
    const value = parseSetValue(name, rawValue);
    if (value === null) {
      out(ctx, `-E- Unknown value ${rawValue}\n`);
      return 3;
    }
    changes.push([name, value]);
  }
  for (const [name, value] of changes)
    printRow(ctx, layout, name, [state.params[name]?.next ?? 'N/A', value], false);
  out(ctx, '\n Apply new Configuration? (y/n) [n] : ');
  if (args.yes) out(ctx, 'y\n');
  else if (!/^y(es)?$/i.test(readAnswer())) {
    out(ctx, '-E- Aborted by user.\n');
    return 2;
  }
  out(ctx, 'Applying... ');
  if (ctx.side === 'host' && changes.some(([name]) => name === 'INTERNAL_CPU_MODEL')) {
    out(ctx, 'Failed!\n-E- Failed to set nv_internal_cpu_conf settings Bad parameter (265)\n');
    return 3;
  }
  for (const [name, value] of changes) {
    const param = state.params[name];
    if (param && !silent) param.next = value;
  }
  out(ctx, 'Done!\n-I- Please reboot machine to load new configurations.\n');
  return 0;
};

const configMain = async (ctx: Context, layout: Layout): Promise<number> => {
  const args = parseConfigArgs(ctx.args);
  if (args.bad !== null) {
    out(ctx, `-E- Unrecognized option: ${args.bad}\n`);
    return 3;
  }
  if (args.device === null || args.command === null) {
    out(ctx, '-E- No command found. For more information please read the help message:\n');
    return 3;
  }
  const state = await resolveCard(ctx, args.device);
  if (state === null) {
    out(ctx, `-E- Failed to open device: ${args.device}. No such file or directory\n`);
    return 3;
  }
  const isQuery = args.command === 'q' || args.command === 'query';
  const isSet = args.command === 's' || args.command === 'set';
  let code: number;
  const injected = takeFailure(ctx, state, isSet ? 'set' : 'query');
  if (injected.exit !== null) code = injected.exit;
  else if (state.nv_access_error) {
    out(ctx, `${NV_ACCESS_ERROR}\n`);
    code = 3;
  } else if (isQuery) code = configQuery(ctx, layout, state, args, args.device);
  else if (isSet) code = configSet(ctx, layout, state, args, args.device, injected.silent);
  else {
    out(ctx, `-E- Invalid command: ${args.command}\n`);
    code = 3;
  }
  await record(ctx, state, code);
  return code;
};

// ---- mlxprivhost / mstprivhost -----------------------------------------------------------

const FLAGS = ['disable_rshim', 'disable_tracer', 'disable_port_owner', 'disable_counter_rd'] as const;

const usageError = (ctx: Context, message: string): number => {
  ctx.stderr.push(
    `usage: ${ctx.tool} [-h] [-v] -d <dev> [--disable_rshim] [--disable_tracer]\n` +
      `${' '.repeat(ctx.tool.length + 8)}[--disable_counter_rd] [--disable_port_owner] [--full]\n` +
      `${' '.repeat(ctx.tool.length + 8)}[{r,restrict,p,privilege,q,query}]\n` +
      `${ctx.tool}: error: ${message}\n`,
  );
  return 2;
};

const printTitle = (ctx: Context, title: string): void => {
  out(ctx, `${title}\n${'-'.repeat(title.length)}\n`);
};

const printPrivilege = (ctx: Context, privilege: SimPrivilege, full: boolean): void => {
  // MFT's capture (~4.16) has the old title; current mstflint prints the new one.
  printTitle(ctx, ctx.tool === 'mlxprivhost' ? 'Current device configurations:' : 'Host configurations');
  if (full) out(ctx, `${'host index'.padEnd(30)}: 0\n`);
  out(ctx, `${'level'.padEnd(30)}: ${privilege.level}\n`);
  printTitle(ctx, '\nPort functions status:');
  for (const flag of FLAGS) out(ctx, `${flag.padEnd(30)}: ${privilege[flag] ? 'TRUE' : 'FALSE'}\n`);
  out(ctx, '\n');
};

const privhostMain = async (ctx: Context): Promise<number> => {
  let device: string | null = null;
  let full = false;
  let command: string | null = null;
  const flags = new Set<string>();
  for (let i = 0; i < ctx.args.length; i += 1) {
    const arg = ctx.args[i] ?? '';
    if (arg === '-d' || arg === '--device') device = ctx.args[(i += 1)] ?? null;
    else if (arg === '-f' || arg === '--full') full = true;
    else if (arg.startsWith('--disable_')) {
      if (!(FLAGS as readonly string[]).includes(arg.slice(2)))
        return usageError(ctx, `unrecognized arguments: ${arg}`);
      flags.add(arg.slice(2));
    } else if (['r', 'restrict', 'p', 'privilege', 'q', 'query'].includes(arg) && command === null)
      command = arg;
    else return usageError(ctx, `unrecognized arguments: ${arg}`);
  }
  if (device === null) return usageError(ctx, 'the following arguments are required: -d/--device');
  if (command === null) return usageError(ctx, 'Please provide a command to execute, check the help menu');
  const query = command === 'q' || command === 'query';
  const privilege = command === 'p' || command === 'privilege';
  if (privilege && flags.size > 0) return usageError(ctx, 'disable flags are not allowed in privilege mode');
  if (query && flags.size > 0)
    return usageError(ctx, 'privilege or restrict commands are not allowed with query');
  if (full && !query) return usageError(ctx, 'The verbose option is allowed with query only');

  const state = await resolveCard(ctx, device);
  if (state === null) {
    out(ctx, `-E- Unknown device '${device}'!\n`);
    return 1;
  }
  let code: number;
  const injected = takeFailure(ctx, state, query ? 'privhost-query' : 'privhost');
  if (injected.exit !== null) code = injected.exit;
  else if (query) {
    if (full && ctx.side === 'host') {
      out(ctx, '-E- Query command with verbose option is not valid from host\n');
      code = 1;
    } else {
      printPrivilege(ctx, state.privilege, full);
      code = 0;
    }
  } else if (ctx.side === 'host') {
    out(ctx, '-E- Operation is not permitted (refer to the DPU user manual)\n');
    code = 1;
  } else {
    if (!injected.silent)
      state.privilege = {
        level: privilege ? 'PRIVILEGED' : 'RESTRICTED',
        disable_rshim: flags.has('disable_rshim'),
        disable_tracer: flags.has('disable_tracer'),
        disable_port_owner: flags.has('disable_port_owner'),
        disable_counter_rd: flags.has('disable_counter_rd'),
      };
    out(ctx, '-I- preparing configuration file...Done!\n-I- configuring device...Done!\n');
    code = 0;
  }
  await record(ctx, state, code);
  return code;
};

// ---- flint / mstflint --------------------------------------------------------------------

const flintLine = (key: string, value: string): string => `${`${key}:`.padEnd(23)}${value}\n`;

const flintMain = async (ctx: Context): Promise<number> => {
  let device: string | null = null;
  const words: string[] = [];
  for (let i = 0; i < ctx.args.length; i += 1) {
    const arg = ctx.args[i] ?? '';
    if (arg === '-d' || arg === '--device') device = ctx.args[(i += 1)] ?? null;
    else words.push(arg);
  }
  const [command, detail] = words;
  if (device === null || (command !== 'q' && command !== 'query')) {
    out(ctx, '-E- Missing device or command. For more information please read the help message.\n');
    return 1;
  }
  const state = await resolveCard(ctx, device);
  if (state === null) {
    out(ctx, `-E- Cannot open Device: ${device}. No such file or directory. MFE_CR_ERROR\n`);
    return 1;
  }
  let code = takeFailure(ctx, state, 'flint').exit;
  if (code === null) {
    out(ctx, flintLine('Image type', 'FS4'));
    out(ctx, flintLine('FW Version', state.fw_version));
    if (state.fw_version_running !== null)
      out(ctx, flintLine('FW Version(Running)', state.fw_version_running));
    out(ctx, flintLine('FW Release Date', state.fw_release_date));
    if (detail === 'full') {
      out(ctx, flintLine('Part Number', state.name));
      out(ctx, flintLine('Description', state.description));
    }
    out(ctx, flintLine('Product Version', state.fw_version));
    out(ctx, flintLine('Rom Info', 'type=UEFI version=14.29.15 cpu=AMD64,AARCH64'));
    out(ctx, `${''.padEnd(23)}type=PXE version=3.6.804 cpu=AMD64\n`);
    out(ctx, flintLine('Description', 'UID                GuidsNumber'));
    out(ctx, flintLine('Base GUID', `${state.base_guid.padEnd(24)}8`));
    out(ctx, flintLine('Base MAC', `${state.base_mac.padEnd(24)}8`));
    out(ctx, flintLine('Image VSD', 'N/A'));
    out(ctx, flintLine('Device VSD', 'N/A'));
    out(ctx, flintLine('PSID', state.psid));
    out(ctx, flintLine('Security Attributes', 'N/A'));
    if (detail === 'full') out(ctx, flintLine('Default Update Method', 'fw_ctrl'));
    code = 0;
  }
  await record(ctx, state, code);
  return code;
};

// ---- mst ---------------------------------------------------------------------------------

const mstMain = async (ctx: Context): Promise<number> => {
  const [command, option] = ctx.args;
  if (command === 'start') {
    out(
      ctx,
      'Starting MST (Mellanox Software Tools) driver set\nLoading MST PCI module - Success\n' +
        'Loading MST PCI configuration module - Success\nCreate devices\n' +
        '-W- Missing "lsusb" command, skipping MTUSB devices detection\nUnloading MST PCI module (unused) - Success\n',
    );
    return 0;
  }
  if (command !== 'status') {
    ctx.stderr.push(`Usage: mst {start|stop|restart|status [-v]|...}\n`);
    return 1;
  }
  let cards = await loadCards(ctx.stateDir);
  if (ctx.side === 'arm') {
    const wanted = process.env.BMA_SIM_CARD;
    cards = cards.filter((c, i) => (wanted ? c.slot === wanted : i === 0));
  }
  for (const card of cards) {
    const code = takeFailure(ctx, card, 'mst').exit;
    if (code !== null) {
      await record(ctx, card, code);
      return code;
    }
  }
  out(
    ctx,
    'MST modules:\n------------\n    MST PCI module is not loaded\n    MST PCI configuration module loaded\n',
  );
  const pciOf = (card: SimCardState, fn: number): string =>
    ctx.side === 'arm' ? `0000:03:00.${fn}` : (card.functions[fn] ?? `${card.slot}.${fn}`);
  if (option === '-v') {
    out(ctx, 'PCI devices:\n------------\n');
    out(
      ctx,
      `${'DEVICE_TYPE'.padEnd(24)}${'MST'.padEnd(30)}${'PCI'.padEnd(10)}${'RDMA'.padEnd(16)}${'NET'.padEnd(26)}NUMA\n`,
    );
    cards.forEach((card, cardIndex) => {
      // Listed last function first, as the NVIDIA capture shows.
      for (let fn = card.functions.length - 1; fn >= 0; fn -= 1) {
        const mst = fn === 0 ? card.mst_device : `${card.mst_device}.${fn}`;
        const pci = pciOf(card, fn).replace(/^0000:/, '');
        const rdma = `mlx5_${cardIndex * 2 + fn}`;
        const net = `net-ens${7 + cardIndex}f${fn}`;
        out(
          ctx,
          `${`${card.device_type}(rev:1)`.padEnd(24)}${mst.padEnd(30)}${pci.padEnd(10)}${rdma.padEnd(16)}${net.padEnd(26)}0\n\n`,
        );
      }
    });
    return 0;
  }
  out(ctx, '\nMST devices:\n------------\n');
  for (const card of cards) {
    card.functions.forEach((_, fn) => {
      const mst = fn === 0 ? card.mst_device : `${card.mst_device}.${fn}`;
      out(ctx, `${mst.padEnd(33)}- PCI configuration cycles access.\n`);
      out(
        ctx,
        `${''.padEnd(35)}domain:bus:dev.fn=${pciOf(card, fn)} addr.reg=88 data.reg=92 cr_bar.gw_offset=-1\n`,
      );
      out(ctx, `${''.padEnd(35)}Chip revision is: 01\n`);
    });
  }
  return 0;
};

// ---- entry -------------------------------------------------------------------------------

const record = async (ctx: Context, state: SimCardState, exit: number): Promise<void> => {
  state.calls.push({ tool: ctx.tool, args: ctx.args, side: ctx.side, exit });
  await writeCardState(ctx.stateDir, state);
};

export const runFakeTool = async (
  tool: string,
  args: string[],
  ctx: Omit<Context, 'tool' | 'args'>,
): Promise<number> => {
  const context: Context = { ...ctx, tool, args };
  switch (tool) {
    case 'mstconfig':
      return configMain(context, 'old16');
    case 'mlxconfig':
      return configMain(context, 'wide');
    case 'mlxprivhost':
    case 'mstprivhost':
      return privhostMain(context);
    case 'flint':
    case 'mstflint':
      return flintMain(context);
    case 'mst':
      return mstMain(context);
    default:
      context.stderr.push(`fake-mlx: unknown tool ${tool}\n`);
      return 127;
  }
};

const main = async (): Promise<void> => {
  const [tool = '', ...args] = process.argv.slice(2);
  const stateDir = process.env.BMA_SIM_STATE;
  if (!stateDir) {
    writeSync(2, 'fake-mlx: BMA_SIM_STATE is not set\n');
    process.exitCode = 1;
    return;
  }
  const side: SimSide = process.env.BMA_SIM_SIDE === 'arm' ? 'arm' : 'host';
  const stdout: string[] = [];
  const stderr: string[] = [];
  const code = await runFakeTool(tool, args, { stateDir, side, stdout, stderr });
  if (stdout.length > 0) writeSync(1, stdout.join(''));
  if (stderr.length > 0) writeSync(2, stderr.join(''));
  process.exitCode = code;
};

// The loader resolves symlinks in import.meta.url but argv[1] keeps them.
const isMain = (): boolean => {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
};

if (isMain()) {
  main().catch((error: unknown) => {
    writeSync(2, `fake-mlx: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 70;
  });
}
