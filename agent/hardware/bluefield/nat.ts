/**
 * The DPU's way out through the host: an address on the host end of the card's tmfifo network,
 * IPv4 forwarding, and masquerading of the DPU's subnet out of the host's default-route interface.
 *
 * Subnet plan: the card behind /dev/rshimN gets the N-th /30 of 192.168.100.0/24 (by default):
 * network 192.168.100.4N/30, host 192.168.100.(4N+1), DPU 192.168.100.(4N+2). Card 0 is thus the
 * BlueField default (host .1, DPU .2); further cards need their Arm side configured to match
 * (a stock BFB puts 192.168.100.2/30 on every DPU's tmfifo_net0). 64 cards fit in the /24.
 *
 * Every program comes from the given PATH: `ip`, `sysctl`, and `nft` when present, else
 * `iptables`. With nft the agent owns one table, `ip bm_agent`, rewritten whole in one
 * transaction when it must change, so other tables are never touched. Each rule carries a comment
 * naming its interface, subnet and uplink: that is how a later run knows what is already there
 * and keeps the other cards' rules.
 */
import { AgentError } from '../../util/errors.js';
import { silentLogger, type Logger } from '../../util/logger.js';
import { findOnPath, runProcess, type ProcessResult } from '../../util/run-process.js';
import type { BlueFieldCard } from './contracts.js';

export interface SubnetPlan {
  /** First address of the block the per-card subnets are cut from. */
  base: string;
  /** Prefix length of each card's subnet; the host takes its first host address, the DPU the second. */
  prefixLength: number;
}

export const DEFAULT_SUBNET_PLAN: SubnetPlan = { base: '192.168.100.0', prefixLength: 30 };

export interface TmfifoSubnet {
  index: number;
  /** `192.168.100.0/30` */
  network: string;
  prefixLength: number;
  /** `192.168.100.1` */
  hostAddress: string;
  /** `192.168.100.2` */
  dpuAddress: string;
}

export type NatBackend = 'nftables' | 'iptables';

export interface NatOptions {
  /** The card whose tmfifo is set up; its rshim's index picks the interface and subnet. */
  card?: Pick<BlueFieldCard, 'slot' | 'rshim'>;
  /** Instead of a card: N of /dev/rshimN and tmfifo_netN. */
  rshimIndex?: number;
  /** Where ip, sysctl, nft and iptables are looked up. */
  toolPath: string;
  signal?: AbortSignal;
  plan?: SubnetPlan;
  /** The interface to masquerade out of; the default route's when absent. */
  uplink?: string;
  logger?: Logger;
  /** Per program run. */
  timeoutMs?: number;
}

export interface NatResult {
  interface: string;
  /** With its prefix, as put on the interface: `192.168.100.1/30`. */
  host_address: string;
  /** What the DPU answers SSH on: `192.168.100.2`. */
  dpu_address: string;
  subnet: string;
  uplink: string;
  backend: NatBackend;
  /** The rules in force for this card, as the backend writes them. */
  rules: string[];
  /** Whether anything (address, link, forwarding, rules) had to be changed. */
  changed: boolean;
}

export const NFT_TABLE = 'bm_agent';
const COMMENT_PREFIX = 'bm-agent';
const IFNAME = /^[A-Za-z0-9_.:@-]{1,15}$/;
const DEFAULT_TIMEOUT_MS = 15_000;

const ipv4ToNumber = (address: string): number | null => {
  const parts = address.split('.');
  if (parts.length !== 4) return null;
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) return null;
    const octet = Number.parseInt(part, 10);
    if (octet > 255) return null;
    value = value * 256 + octet;
  }
  return value;
};

const numberToIpv4 = (value: number): string =>
  [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join('.');

/** The addresses of card N under `plan` (see the subnet plan above). */
export const tmfifoSubnet = (index: number, plan: SubnetPlan = DEFAULT_SUBNET_PLAN): TmfifoSubnet => {
  const base = ipv4ToNumber(plan.base);
  const { prefixLength } = plan;
  if (base === null || !Number.isInteger(prefixLength) || prefixLength < 8 || prefixLength > 30) {
    throw new TypeError(`Expected an IPv4 base and a prefix length of 8-30, got ${JSON.stringify(plan)}`);
  }
  if (!Number.isSafeInteger(index) || index < 0) {
    throw new TypeError(`Expected a non-negative integer index, got ${String(index)} (${typeof index})`);
  }
  const size = 2 ** (32 - prefixLength);
  const network = Math.floor(base / size) * size + index * size;
  if (network + size > 2 ** 32) throw new RangeError(`card ${index} falls outside the IPv4 space`);
  return {
    index,
    network: `${numberToIpv4(network)}/${prefixLength}`,
    prefixLength,
    hostAddress: numberToIpv4(network + 1),
    dpuAddress: numberToIpv4(network + 2),
  };
};

const natFailed = (message: string, details: Record<string, unknown> = {}, cause?: unknown): AgentError =>
  new AgentError('NAT_FAILED', message, { details, ...(cause === undefined ? {} : { cause }) });

interface Runner {
  run(program: string, args: string[], input?: string): Promise<ProcessResult>;
  /** Like run, but a non-zero exit is returned rather than thrown. */
  probe(program: string, args: string[]): Promise<ProcessResult>;
}

const makeRunner = (options: NatOptions): Runner => {
  const runOptions = {
    env: { PATH: options.toolPath },
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    ...(options.signal ? { signal: options.signal } : {}),
  };
  const run = (program: string, args: string[], input?: string): Promise<ProcessResult> =>
    runProcess(program, args, { ...runOptions, ...(input === undefined ? {} : { input }) });
  return {
    run,
    probe: async (program, args) => {
      try {
        return await run(program, args);
      } catch (error) {
        if (
          AgentError.is(error) &&
          error.code === 'TOOL_FAILED' &&
          typeof error.details.exitCode === 'number'
        ) {
          return {
            argv: [program, ...args],
            exitCode: error.details.exitCode,
            signal: null,
            timedOut: false,
            cancelled: false,
            durationMs: Number(error.details.durationMs ?? 0),
            stdout: String(error.details.stdoutTail ?? ''),
            stderr: String(error.details.stderrTail ?? ''),
          };
        }
        throw error;
      }
    },
  };
};

/** A failed step becomes NAT_FAILED naming it; a cancellation or a missing program passes through. */
const step = async <T>(what: string, action: () => Promise<T>): Promise<T> => {
  try {
    return await action();
  } catch (error) {
    if (AgentError.is(error) && (error.code === 'CANCELLED' || error.code === 'TOOL_NOT_FOUND')) throw error;
    if (AgentError.is(error) && error.code === 'NAT_FAILED') throw error;
    const details = AgentError.is(error) ? error.details : {};
    throw natFailed(
      `${what} failed: ${error instanceof Error ? error.message : String(error)}`,
      details,
      error,
    );
  }
};

interface LinkState {
  up: boolean;
  addresses: Array<{ local: string; prefixlen: number }>;
}

const parseJson = (text: string, what: string): unknown => {
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw natFailed(`${what}: unexpected output from ip -j`, { output: text.slice(0, 500) }, error);
  }
};

const readLink = async (runner: Runner, ifname: string): Promise<LinkState | null> => {
  const result = await runner.probe('ip', ['-j', 'addr', 'show', 'dev', ifname]);
  if (result.exitCode !== 0) {
    if (/does not exist|cannot find device/i.test(result.stderr)) return null;
    throw natFailed(`ip addr show dev ${ifname} failed: ${result.stderr.trim()}`, { stderr: result.stderr });
  }
  const parsed = parseJson(result.stdout, `ip addr show dev ${ifname}`);
  const [link] = Array.isArray(parsed) ? (parsed as unknown[]) : [];
  if (typeof link !== 'object' || link === null) return null;
  const record = link as { flags?: unknown; addr_info?: unknown };
  const flags = Array.isArray(record.flags) ? record.flags.map(String) : [];
  const addresses = (Array.isArray(record.addr_info) ? record.addr_info : [])
    .filter(
      (entry): entry is { family: string; local: string; prefixlen: number } =>
        typeof entry === 'object' &&
        entry !== null &&
        (entry as { family?: unknown }).family === 'inet' &&
        typeof (entry as { local?: unknown }).local === 'string' &&
        typeof (entry as { prefixlen?: unknown }).prefixlen === 'number',
    )
    .map(({ local, prefixlen }) => ({ local, prefixlen }));
  return { up: flags.includes('UP'), addresses };
};

/** The interface of the preferred default route, leaving out the tmfifo networks themselves. */
const defaultRouteInterface = async (runner: Runner): Promise<string | null> => {
  const result = await runner.run('ip', ['-j', '-4', 'route', 'show', 'default']);
  const parsed = parseJson(result.stdout || '[]', 'ip route show default');
  const routes = (Array.isArray(parsed) ? (parsed as unknown[]) : [])
    .filter(
      (route): route is { dev: string; metric?: number } =>
        typeof route === 'object' &&
        route !== null &&
        typeof (route as { dev?: unknown }).dev === 'string' &&
        !(route as { dev: string }).dev.startsWith('tmfifo_net'),
    )
    .sort((a, b) => (a.metric ?? 0) - (b.metric ?? 0));
  return routes[0]?.dev ?? null;
};

/* ------------------------------------------------------------------ rules */

type RuleRole = 'masquerade' | 'forward-out' | 'forward-in';

interface Entry {
  ifname: string;
  subnet: string;
  uplink: string;
}

const comment = (entry: Entry, role: RuleRole): string =>
  `${COMMENT_PREFIX} ${entry.ifname} ${entry.subnet} ${entry.uplink} ${role}`;

const COMMENT_PATTERN = new RegExp(
  `${COMMENT_PREFIX} (\\S+) (\\d+\\.\\d+\\.\\d+\\.\\d+/\\d+) (\\S+) (masquerade|forward-out|forward-in)`,
);

const parseComment = (text: string): (Entry & { role: RuleRole }) | null => {
  const match = COMMENT_PATTERN.exec(text);
  if (!match) return null;
  const [, ifname = '', subnet = '', uplink = '', role = 'masquerade'] = match;
  return { ifname, subnet, uplink, role: role as RuleRole };
};

const nftRules = (entry: Entry): { postrouting: string[]; forward: string[] } => ({
  postrouting: [
    `ip saddr ${entry.subnet} oifname "${entry.uplink}" masquerade comment "${comment(entry, 'masquerade')}"`,
  ],
  forward: [
    `iifname "${entry.ifname}" oifname "${entry.uplink}" ip saddr ${entry.subnet} accept comment "${comment(entry, 'forward-out')}"`,
    `iifname "${entry.uplink}" oifname "${entry.ifname}" ip daddr ${entry.subnet} ct state established,related accept comment "${comment(entry, 'forward-in')}"`,
  ],
});

// Numeric priorities and the ip family keep this working with older nft and kernels (inet-family
// NAT needs Linux 5.2); the rules are IPv4 only anyway.
const nftTable = (entries: Entry[]): string => {
  const rules = entries.map(nftRules);
  const lines = [
    `table ip ${NFT_TABLE}`,
    `delete table ip ${NFT_TABLE}`,
    `table ip ${NFT_TABLE} {`,
    '\tchain postrouting {',
    '\t\ttype nat hook postrouting priority 100; policy accept;',
    ...rules.flatMap((rule) => rule.postrouting.map((line) => `\t\t${line}`)),
    '\t}',
    '\tchain forward {',
    '\t\ttype filter hook forward priority 0; policy accept;',
    ...rules.flatMap((rule) => rule.forward.map((line) => `\t\t${line}`)),
    '\t}',
    '}',
    '',
  ];
  return lines.join('\n');
};

const entryKey = (entry: Entry): string => `${entry.ifname} ${entry.subnet} ${entry.uplink}`;

const applyNft = async (
  runner: Runner,
  mine: Entry,
  logger: Logger,
): Promise<{ rules: string[]; changed: boolean }> => {
  const listed = await runner.probe('nft', ['list', 'table', 'ip', NFT_TABLE]);
  if (listed.exitCode !== 0 && !/No such file or directory|does not exist/i.test(listed.stderr)) {
    throw natFailed(`nft list table ip ${NFT_TABLE} failed: ${listed.stderr.trim()}`, {
      stderr: listed.stderr,
    });
  }
  const present = (listed.exitCode === 0 ? listed.stdout : '')
    .split('\n')
    .map((line) => /comment "([^"]*)"/.exec(line)?.[1])
    .filter((text): text is string => text !== undefined)
    .map(parseComment)
    .filter((parsed): parsed is Entry & { role: RuleRole } => parsed !== null);

  // Other cards keep their rules, moved to the current uplink: there is one default route.
  const others = new Map<string, Entry>();
  for (const entry of present) {
    if (entry.ifname === mine.ifname) continue;
    others.set(entry.ifname, { ifname: entry.ifname, subnet: entry.subnet, uplink: mine.uplink });
  }
  const wanted = [...others.values(), mine].sort((a, b) => a.ifname.localeCompare(b.ifname));
  const wantedComments = wanted
    .flatMap((entry) =>
      (['masquerade', 'forward-out', 'forward-in'] as const).map((role) => comment(entry, role)),
    )
    .sort();
  const presentComments = present.map((entry) => comment(entry, entry.role)).sort();
  const rules = [...nftRules(mine).postrouting, ...nftRules(mine).forward];
  if (JSON.stringify(wantedComments) === JSON.stringify(presentComments)) return { rules, changed: false };

  await runner.run('nft', ['-f', '-'], nftTable(wanted));
  logger.info(
    { table: `ip ${NFT_TABLE}`, entries: wanted.map(entryKey) },
    'tmfifo NAT rules written (nftables)',
  );
  return { rules, changed: true };
};

interface IptablesRule {
  table: 'nat' | 'filter';
  chain: 'POSTROUTING' | 'FORWARD';
  spec: string[];
}

const iptablesRules = (entry: Entry): IptablesRule[] => [
  {
    table: 'nat',
    chain: 'POSTROUTING',
    spec: [
      '-s',
      entry.subnet,
      '-o',
      entry.uplink,
      '-m',
      'comment',
      '--comment',
      comment(entry, 'masquerade'),
      '-j',
      'MASQUERADE',
    ],
  },
  {
    table: 'filter',
    chain: 'FORWARD',
    spec: [
      '-s',
      entry.subnet,
      '-i',
      entry.ifname,
      '-o',
      entry.uplink,
      '-m',
      'comment',
      '--comment',
      comment(entry, 'forward-out'),
      '-j',
      'ACCEPT',
    ],
  },
  {
    table: 'filter',
    chain: 'FORWARD',
    spec: [
      '-d',
      entry.subnet,
      '-i',
      entry.uplink,
      '-o',
      entry.ifname,
      '-m',
      'conntrack',
      '--ctstate',
      'RELATED,ESTABLISHED',
      '-m',
      'comment',
      '--comment',
      comment(entry, 'forward-in'),
      '-j',
      'ACCEPT',
    ],
  },
];

/** `iptables -S` prints one rule per line as arguments; comments come double-quoted. */
const splitRuleLine = (line: string): string[] => {
  const words: string[] = [];
  const pattern = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let match = pattern.exec(line); match !== null; match = pattern.exec(line)) {
    words.push(match[1] !== undefined ? match[1].replace(/\\(.)/g, '$1') : (match[2] ?? ''));
  }
  return words;
};

const applyIptables = async (
  runner: Runner,
  mine: Entry,
  logger: Logger,
): Promise<{ rules: string[]; changed: boolean }> => {
  let changed = false;
  const wanted = iptablesRules(mine);
  const wantedComments = new Set(wanted.map((rule) => rule.spec[rule.spec.indexOf('--comment') + 1]));

  // Rules of this interface from an earlier run with another subnet or uplink go first.
  for (const [table, chain] of [
    ['nat', 'POSTROUTING'],
    ['filter', 'FORWARD'],
  ] as const) {
    const listed = await runner.run('iptables', ['-w', '-t', table, '-S', chain]);
    for (const line of listed.stdout.split('\n')) {
      const words = splitRuleLine(line);
      const commentText = words[words.indexOf('--comment') + 1];
      if (words[0] !== '-A' || words.indexOf('--comment') < 0 || commentText === undefined) continue;
      const parsed = parseComment(commentText);
      if (parsed === null || parsed.ifname !== mine.ifname || wantedComments.has(commentText)) continue;
      await runner.run('iptables', ['-w', '-t', table, '-D', ...words.slice(1)]);
      logger.info({ table, rule: line }, 'stale tmfifo NAT rule removed (iptables)');
      changed = true;
    }
  }

  for (const rule of wanted) {
    const check = await runner.probe('iptables', ['-w', '-t', rule.table, '-C', rule.chain, ...rule.spec]);
    if (check.exitCode === 0) continue;
    if (check.exitCode !== 1) {
      throw natFailed(`iptables -C ${rule.chain} failed: ${check.stderr.trim()}`, { stderr: check.stderr });
    }
    // Accepts go first in FORWARD so a distribution's trailing REJECT/DROP does not shadow them.
    const add = rule.chain === 'FORWARD' ? ['-I', rule.chain, '1'] : ['-A', rule.chain];
    await runner.run('iptables', ['-w', '-t', rule.table, ...add, ...rule.spec]);
    changed = true;
  }
  if (changed) logger.info({ entry: entryKey(mine) }, 'tmfifo NAT rules written (iptables)');
  return {
    rules: wanted.map((rule) =>
      [
        '-t',
        rule.table,
        '-A',
        rule.chain,
        ...rule.spec.map((word) => (/\s/.test(word) ? `"${word}"` : word)),
      ].join(' '),
    ),
    changed,
  };
};

/* ------------------------------------------------------------------ the steps */

const resolveIndex = (options: NatOptions): number => {
  if (options.card) {
    if (options.card.rshim === null) {
      throw natFailed(
        `BlueField ${options.card.slot} has no rshim, so no tmfifo network: rshim not running, disabled for the host, or the card in separated-host mode`,
        { slot: options.card.slot },
      );
    }
    return options.card.rshim.index;
  }
  if (
    options.rshimIndex === undefined ||
    !Number.isSafeInteger(options.rshimIndex) ||
    options.rshimIndex < 0
  ) {
    throw new TypeError(
      `Expected a card or a non-negative integer rshimIndex, got ${String(options.rshimIndex)} (${typeof options.rshimIndex})`,
    );
  }
  return options.rshimIndex;
};

/**
 * Sets up (or confirms) the NAT that lets card N's Arm system reach the network through the host.
 * Safe to repeat: a second run with nothing to do changes nothing and says so.
 */
/**
 * The host end of card N's tmfifo network: its address from the plan, link up. SSH to the DPU needs
 * this much even where no NAT is wanted. Returns whether anything had to change.
 */
const ensureAddress = async (runner: Runner, index: number, subnet: TmfifoSubnet): Promise<boolean> => {
  const ifname = `tmfifo_net${index}`;
  const hostAddress = `${subnet.hostAddress}/${subnet.prefixLength}`;
  let changed = false;
  const link = await step(`reading ${ifname}`, () => readLink(runner, ifname));
  if (link === null) {
    throw natFailed(
      `${ifname} does not exist: the rshim daemon is not running or has no tmfifo network for card ${index}`,
      { interface: ifname },
    );
  }

  await step(`putting ${hostAddress} on ${ifname}`, async () => {
    for (const address of link.addresses) {
      if (address.local === subnet.hostAddress && address.prefixlen !== subnet.prefixLength) {
        await runner.run('ip', ['addr', 'del', `${address.local}/${address.prefixlen}`, 'dev', ifname]);
      }
    }
    const present = link.addresses.some(
      (address) => address.local === subnet.hostAddress && address.prefixlen === subnet.prefixLength,
    );
    if (!present) {
      await runner.run('ip', ['addr', 'replace', hostAddress, 'dev', ifname]);
      changed = true;
    }
  });
  if (!link.up) {
    await step(`bringing ${ifname} up`, () => runner.run('ip', ['link', 'set', 'dev', ifname, 'up']));
    changed = true;
  }

  return changed;
};

/** ensureAddress for a caller outside this module (the DPU shell). */
export const ensureTmfifoAddress = async (
  options: Pick<NatOptions, 'card' | 'rshimIndex' | 'toolPath' | 'signal' | 'plan' | 'logger' | 'timeoutMs'>,
): Promise<{ interface: string; host_address: string; changed: boolean }> => {
  const index = resolveIndex(options);
  const subnet = tmfifoSubnet(index, options.plan);
  const changed = await ensureAddress(makeRunner(options), index, subnet);
  return {
    interface: `tmfifo_net${index}`,
    host_address: `${subnet.hostAddress}/${subnet.prefixLength}`,
    changed,
  };
};

export const configureNat = async (options: NatOptions): Promise<NatResult> => {
  const logger = options.logger ?? silentLogger();
  const index = resolveIndex(options);
  const subnet = tmfifoSubnet(index, options.plan);
  const ifname = `tmfifo_net${index}`;
  const hostAddress = `${subnet.hostAddress}/${subnet.prefixLength}`;
  const runner = makeRunner(options);
  let changed = false;

  const backend: NatBackend | null = (await findOnPath('nft', options.toolPath))
    ? 'nftables'
    : (await findOnPath('iptables', options.toolPath))
      ? 'iptables'
      : null;
  if (backend === null) {
    throw natFailed('neither nft nor iptables is on PATH; the ramdisk needs nftables or iptables', {
      path: options.toolPath,
    });
  }

  changed = (await ensureAddress(runner, index, subnet)) || changed;

  await step('enabling IPv4 forwarding', async () => {
    const current = await runner.run('sysctl', ['-n', 'net.ipv4.ip_forward']);
    if (current.stdout.trim() !== '1') {
      await runner.run('sysctl', ['-w', 'net.ipv4.ip_forward=1']);
      changed = true;
    }
  });

  const uplink =
    options.uplink ?? (await step('finding the default route', () => defaultRouteInterface(runner)));
  if (uplink === null) {
    throw natFailed(
      'the host has no IPv4 default route, so there is no uplink to masquerade the DPU out of',
      {
        interface: ifname,
      },
    );
  }
  for (const name of [ifname, uplink]) {
    if (!IFNAME.test(name)) throw natFailed(`unusable interface name ${JSON.stringify(name)}`, { name });
  }

  const entry: Entry = { ifname, subnet: subnet.network, uplink };
  const applied = await step(`writing the ${backend} rules`, () =>
    backend === 'nftables' ? applyNft(runner, entry, logger) : applyIptables(runner, entry, logger),
  );
  changed ||= applied.changed;
  if (changed) logger.info({ interface: ifname, uplink, backend }, 'tmfifo NAT configured');

  return {
    interface: ifname,
    host_address: hostAddress,
    dpu_address: subnet.dpuAddress,
    subnet: subnet.network,
    uplink,
    backend,
    rules: applied.rules,
    changed,
  };
};
