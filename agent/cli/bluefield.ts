import { readFile } from 'node:fs/promises';
import { AgentError } from '../util/errors.js';
import { formatBytes } from './format.js';
import { runVerb } from './local-run.js';

type Flags = Record<string, unknown>;

const text = (value: unknown): string => (value === null || value === undefined ? '-' : String(value));

const withDevice = (flags: Flags, params: Record<string, unknown>): Record<string, unknown> =>
  typeof flags.device === 'string' ? { ...params, device: flags.device } : params;

const devicesOf = (result: Record<string, unknown>): Record<string, unknown>[] =>
  Array.isArray(result.devices) ? (result.devices as Record<string, unknown>[]) : [];

const modeText = (mode: unknown): string => {
  if (typeof mode !== 'object' || mode === null) return '-';
  const { current, next } = mode as { current?: unknown; next?: unknown };
  return current === next ? text(current) : `${text(current)} (next boot: ${text(next)})`;
};

const privilegeText = (value: unknown): string => {
  if (typeof value !== 'object' || value === null) return text(value);
  const state = value as Record<string, unknown>;
  const flags = ['disable_rshim', 'disable_tracer', 'disable_port_owner', 'disable_counter_rd'].filter(
    (key) => state[key] === true,
  );
  return `${text(state.level)}${flags.length > 0 ? ` (${flags.join(', ')})` : ''}`;
};

/** What a `--device` may name, as the commands' `device` param does. */
const namesCard = (card: Record<string, unknown>, wanted: string): boolean => {
  const strings = (value: unknown): string[] =>
    Array.isArray(value)
      ? value.filter((v): v is string => typeof v === 'string')
      : typeof value === 'string'
        ? [value]
        : [];
  const rshim = typeof card.rshim === 'string' ? card.rshim : null;
  const names = [
    ...strings(card.slot),
    ...strings(card.pci_address),
    ...strings(card.nic_functions),
    ...strings(card.rshim_function),
    ...strings(card.tmfifo),
    ...strings(card.netdevs),
    ...strings(card.serial),
    ...(rshim ? [rshim, rshim.split('/').pop() ?? rshim] : []),
  ];
  const bare = wanted.toLowerCase().replace(/^0000:/, '');
  return names.some((name) => name === wanted || name.toLowerCase().replace(/^0000:/, '') === bare);
};

export const renderBlueFieldList = (result: Record<string, unknown>): string => {
  const cards = devicesOf(result);
  if (cards.length === 0) return 'no BlueField in this host\n';
  return `${cards
    .map((card) =>
      [
        `${text(card.pci_address)}  ${text(card.generation)}  ${text(card.description ?? card.part_number)}`,
        `  rshim ${text(card.rshim)}  tmfifo ${text(card.tmfifo)}  serial ${text(card.serial)}`,
        `  mode ${modeText(card.mode)}  host privilege ${privilegeText(card.host_privilege)}`,
        `  firmware ${text(card.firmware_version)}  PSID ${text(card.psid)}  tools ${text(card.tools)}`,
        ...(Array.isArray(card.warnings)
          ? (card.warnings as unknown[]).map((w) => `  warning: ${text(w)}`)
          : []),
      ].join('\n'),
    )
    .join('\n\n')}\n`;
};

const renderChange = (result: Record<string, unknown>): string =>
  `${devicesOf(result)
    .map(
      (card) =>
        `${text(card.slot)}: ${card.changed === true ? 'changed' : 'already so'}` +
        `${card.power_cycle_required === true ? '; a power cycle is required' : ''}` +
        `${card.ran_on ? ` (ran on the ${text(card.ran_on)})` : ''}`,
    )
    .join('\n')}\n`;

const renderInstall = (result: Record<string, unknown>): string =>
  `${devicesOf(result)
    .map((card) =>
      card.skipped
        ? `${text(card.slot)}: skipped (${text(card.skipped)})`
        : `${text(card.slot)}: pushed ${formatBytes(typeof card.bytes === 'number' ? card.bytes : null)} into ${text(card.rshim)} in ${text(card.seconds)} s; DPU reported "${text(card.marker)}"`,
    )
    .join('\n')}\n`;

const renderNat = (result: Record<string, unknown>): string =>
  `${devicesOf(result)
    .map(
      (card) =>
        `${text(card.interface)} ${text(card.host_address)} -> DPU ${text(card.dpu_address)}, masquerade out ${text(card.uplink)} (${text(card.backend)})${card.changed === false ? ', already in place' : ''}`,
    )
    .join('\n')}\n`;

export const runBlueFieldList = (flags: Flags): Promise<number> =>
  runVerb(flags, 'bluefield.list', {}, renderBlueFieldList);

export const runBlueFieldInstall = async (flags: Flags): Promise<number> => {
  const url = typeof flags.url === 'string' ? flags.url : undefined;
  if (!url) throw new AgentError('INVALID_CONFIG', 'name the BFB URL: bm-agent bluefield install-bfb URL');
  const params: Record<string, unknown> = { url };
  if (typeof flags.checksum === 'string') params.checksum = flags.checksum;
  if (typeof flags['bf-cfg'] === 'string') params.bf_cfg = await readFile(flags['bf-cfg'], 'utf8');
  if (typeof flags.timeout === 'number') params.timeout_s = flags.timeout;
  if (flags.force === true) params.force = true;
  return runVerb(flags, 'bluefield.install_bfb', withDevice(flags, params), renderInstall);
};

export const runBlueFieldSetMode = (flags: Flags): Promise<number> => {
  const params: Record<string, unknown> = { mode: flags.mode };
  if (typeof flags['hide-port2-pf'] === 'boolean') params.hide_port2_pf = flags['hide-port2-pf'];
  return runVerb(flags, 'bluefield.set_mode', withDevice(flags, params), renderChange);
};

export const runBlueFieldSetPrivilege = (flags: Flags): Promise<number> => {
  const params: Record<string, unknown> = { level: flags.level };
  for (const flag of [
    'disable-port-owner',
    'disable-rshim',
    'disable-tracer',
    'disable-counter-rd',
    'force',
  ]) {
    if (typeof flags[flag] === 'boolean') params[flag.replaceAll('-', '_')] = flags[flag];
  }
  return runVerb(flags, 'bluefield.set_host_privilege', withDevice(flags, params), renderChange);
};

export const runBlueFieldNat = (flags: Flags): Promise<number> =>
  runVerb(flags, 'bluefield.configure_nat', withDevice(flags, {}), renderNat);

export const runBlueFieldExec = async (flags: Flags): Promise<number> => {
  const script =
    typeof flags.script === 'string'
      ? await readFile(flags.script, 'utf8')
      : typeof flags.command === 'string'
        ? flags.command
        : undefined;
  if (!script) {
    throw new AgentError('INVALID_CONFIG', 'give the script: --script FILE or --command "TEXT"');
  }
  const params: Record<string, unknown> = { script };
  if (typeof flags.timeout === 'number') params.timeout_s = flags.timeout;
  return runVerb(flags, 'bluefield.dpu_exec', withDevice(flags, params), (result) => {
    const card = devicesOf(result)[0] ?? result;
    return `${text(card.stdout_tail)}${String(card.stdout_tail ?? '').endsWith('\n') ? '' : '\n'}exit ${text(card.exit_code)} after ${text(card.seconds)} s\n`;
  });
};

export const runBlueFieldStatus = (flags: Flags): Promise<number> =>
  runVerb(flags, 'bluefield.list', {}, (result) => {
    const cards = devicesOf(result);
    const wanted = typeof flags.device === 'string' ? flags.device : null;
    const shown = wanted === null ? cards : cards.filter((card) => namesCard(card, wanted));
    if (shown.length === 0) return `no BlueField matches ${text(wanted)}\n`;
    return shown
      .map((card) => {
        const rshim = (card.rshim_state ?? {}) as Record<string, unknown>;
        const lines = Array.isArray(card.rshim_log_tail) ? (card.rshim_log_tail as unknown[]).map(text) : [];
        return `${renderBlueFieldList({ devices: [card] })}  rshim: ${Object.entries(rshim)
          .map(([key, value]) => `${key}=${text(value)}`)
          .join(' ')}\n${lines.map((line) => `  | ${line}`).join('\n')}${lines.length > 0 ? '\n' : ''}`;
      })
      .join('\n');
  });
