/**
 * Finds the BlueField cards in the host from sysfs alone: the PCI functions of vendor 0x15b3 whose
 * device IDs say BlueField, grouped by domain:bus:device (one card), then each card's
 * /dev/rshimN by the PCI address the rshim daemon prints as DEV_NAME in its misc file, the
 * candidate MFT device names, the VPD identity and the host netdevs.
 */
import path from 'node:path';
import { AgentError } from '../../util/errors.js';
import { silentLogger, type Logger } from '../../util/logger.js';
import { abortError } from '../../util/tool-process.js';
import { isDirectory, listDirectory, readAttribute } from '../generic/inventory/sysfs.js';
import { devPath, sysPath, type HardwarePaths } from '../paths.js';
import type { BlueFieldCard, BlueFieldGeneration, RshimDevice } from './contracts.js';
import {
  MELLANOX_VENDOR,
  classifyFunction,
  mstDevicePrefix,
  normalizeHexId,
  type FunctionRole,
} from './pci-ids.js';
import { readDeviceFile, readVpd } from './vpd.js';

/** How a card's rshim was tied to it. */
export type RshimMatch =
  /** misc's DEV_NAME names a function of the card. */
  | 'pcie'
  /**
   * A USB rshim cannot be tied to a PCI address; it was given to the card because the host has
   * exactly one card and this is the only rshim left over.
   */
  | 'usb_single_card';

export interface DiscoveredCard extends BlueFieldCard {
  rshimMatch: RshimMatch | null;
  /**
   * Every `<dev>/mst` name with the device ID of this card's NIC (`mt41686_pciconf0`,
   * `mt41686_pciconf0.1`, ...), as full paths, sorted. `mstDevice` is set only when these name one
   * device unambiguously; with two cards of one generation the names alone cannot say which is
   * which (that takes `mst status -v`), and tools then use the PCI address.
   */
  mstCandidates: string[];
}

export type RshimLink =
  | { kind: 'pcie'; function: string; slot: string }
  | { kind: 'pcie_lf'; function: string; slot: string }
  | { kind: 'usb'; location: string }
  | { kind: 'unknown' };

export interface RshimEntry {
  device: RshimDevice;
  link: RshimLink;
  /** False when misc was missing, unreadable or did not answer in time. */
  miscReadable: boolean;
}

export interface DiscoverOptions {
  signal?: AbortSignal;
  logger?: Logger;
  /** Per read of a VPD or misc file. */
  readTimeoutMs?: number;
}

const PCI_ADDRESS = /^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/i;
const SHORT_PCI_ADDRESS = /^(?:([0-9a-f]{4}):)?([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/i;
const RSHIM_NAME = /^rshim(\d+)$/;
const MISC_MAX_BYTES = 65536;
const DEFAULT_READ_TIMEOUT_MS = 3000;

const slotOf = (address: string): string => address.slice(0, address.lastIndexOf('.'));

/** `0000:03:00.2`, `03:00.2` (older rshim builds leave the domain out) -> `0000:03:00.2`. */
export const normalizePciAddress = (text: string): string | null => {
  const match = SHORT_PCI_ADDRESS.exec(text.trim());
  if (!match) return null;
  const [, domain = '0000', bus = '', device = '', fn = ''] = match;
  return `${domain}:${bus}:${device}.${fn}`.toLowerCase();
};

/** What misc's DEV_NAME says about where the rshim is attached. */
export const parseRshimDevName = (devName: string): RshimLink => {
  const name = devName.trim();
  const lf = /^pcie-lf-(.+)$/.exec(name);
  const pcie = lf ? null : /^pcie-(.+)$/.exec(name);
  const address = normalizePciAddress(lf?.[1] ?? pcie?.[1] ?? '');
  if (address !== null) {
    return { kind: lf ? 'pcie_lf' : 'pcie', function: address, slot: slotOf(address) };
  }
  if (/^usb-\S+$/.test(name)) return { kind: 'usb', location: name.slice(4) };
  return { kind: 'unknown' };
};

/**
 * misc's key lines (`%-16s<value>`) as a map; stops at the log block that DISPLAY_LEVEL 2 appends.
 * Keys are kept as printed, values trimmed.
 */
export const parseMiscFields = (text: string): Map<string, string> => {
  const fields = new Map<string, string>();
  for (const rawLine of text.split('\n')) {
    const line = rawLine.trim();
    if (line.startsWith('---')) break;
    const match = /^([A-Z][A-Z0-9_]*)\s+(.*)$/.exec(line);
    if (match?.[1] && match[2] !== undefined && !fields.has(match[1])) fields.set(match[1], match[2].trim());
  }
  return fields;
};

const throwIfAborted = (signal: AbortSignal | undefined): void => {
  if (signal?.aborted) throw abortError(signal, 'BlueField discovery');
};

/** Every `/dev/rshimN` with what its misc says, in index order. */
export const listRshimDevices = async (
  paths: HardwarePaths,
  options: DiscoverOptions = {},
): Promise<RshimEntry[]> => {
  const timeoutMs = options.readTimeoutMs ?? DEFAULT_READ_TIMEOUT_MS;
  const names = (await listDirectory(devPath(paths))).filter((name) => RSHIM_NAME.test(name));
  const entries = await Promise.all(
    names.map(async (name): Promise<RshimEntry> => {
      const index = Number.parseInt(RSHIM_NAME.exec(name)?.[1] ?? '0', 10);
      const directory = devPath(paths, name);
      const misc = await readDeviceFile(path.join(directory, 'misc'), {
        maxBytes: MISC_MAX_BYTES,
        timeoutMs,
      });
      const fields = misc === null ? new Map<string, string>() : parseMiscFields(misc.toString('utf8'));
      const devName = fields.get('DEV_NAME') ?? '';
      return {
        device: {
          index,
          path: directory,
          devName,
          devInfo: fields.get('DEV_INFO') ?? null,
          tmfifo: `tmfifo_net${index}`,
        },
        link: parseRshimDevName(devName),
        miscReadable: misc !== null,
      };
    }),
  );
  return entries.sort((a, b) => a.device.index - b.device.index);
};

interface ClassifiedFunction {
  address: string;
  role: FunctionRole;
  generation: BlueFieldGeneration | null;
}

const listBlueFieldFunctions = async (paths: HardwarePaths): Promise<ClassifiedFunction[]> => {
  const base = sysPath(paths, 'bus', 'pci', 'devices');
  const addresses = (await listDirectory(base)).filter((entry) => PCI_ADDRESS.test(entry));
  const functions = await Promise.all(
    addresses.map(async (entry): Promise<ClassifiedFunction | null> => {
      const directory = path.join(base, entry);
      const vendor = await readAttribute(path.join(directory, 'vendor'));
      if (normalizeHexId(vendor) !== MELLANOX_VENDOR) return null;
      const kind = classifyFunction(
        vendor,
        await readAttribute(path.join(directory, 'device')),
        await readAttribute(path.join(directory, 'class')),
      );
      return kind === null ? null : { address: entry.toLowerCase(), ...kind };
    }),
  );
  return functions.filter((fn): fn is ClassifiedFunction => fn !== null);
};

const readMstNames = async (paths: HardwarePaths): Promise<string[] | null> => {
  const directory = devPath(paths, 'mst');
  if (!(await isDirectory(directory))) return null;
  return listDirectory(directory);
};

interface CardDraft {
  card: DiscoveredCard;
  /** Functions a DEV_NAME may name: the rshim, and a livefish function for rshim's pcie_lf. */
  rshimTargets: Set<string>;
}

const buildCard = async (
  paths: HardwarePaths,
  slot: string,
  functions: ClassifiedFunction[],
  mstNames: string[] | null,
  options: DiscoverOptions,
): Promise<CardDraft | null> => {
  const logger = options.logger ?? silentLogger();
  const byRole = (role: FunctionRole): ClassifiedFunction[] =>
    functions.filter((fn) => fn.role === role).sort((a, b) => a.address.localeCompare(b.address));
  const nics = byRole('nic');
  const rshims = byRole('rshim');
  const livefish = byRole('livefish');
  const generation =
    nics[0]?.generation ?? rshims.find((fn) => fn.generation)?.generation ?? livefish[0]?.generation ?? null;
  if (generation === null) {
    // A lone DMA-class Mellanox function with an unknown ID: nothing says it is a BlueField.
    logger.debug({ slot, functions: functions.map((fn) => fn.address) }, 'unidentified Mellanox function');
    return null;
  }
  if (rshims.length > 1) {
    logger.warn({ slot, rshims: rshims.map((fn) => fn.address) }, 'more than one rshim function on a card');
  }
  const recovery = livefish.length > 0 && nics.length === 0;
  // In flash recovery the rshim daemon reaches the SoC through the livefish function (pcie_lf).
  const rshimFunction = rshims[0]?.address ?? (recovery ? (livefish[0]?.address ?? null) : null);
  const pci = (address: string, ...rest: string[]): string =>
    sysPath(paths, 'bus', 'pci', 'devices', address, ...rest);

  const identitySource = nics[0]?.address ?? livefish[0]?.address;
  const vpd =
    identitySource === undefined ? null : await readVpd(pci(identitySource, 'vpd'), options.readTimeoutMs);
  const netdevs = (await Promise.all(nics.map((fn) => listDirectory(pci(fn.address, 'net'))))).flat();

  const prefix = mstDevicePrefix(generation);
  const mstCandidates = (mstNames ?? [])
    .filter((name) => name.startsWith(prefix))
    .map((name) => devPath(paths, 'mst', name));
  const mstBases = mstCandidates.filter((candidate) => /_pciconf\d+$/.test(candidate));

  return {
    card: {
      slot,
      generation,
      nicFunctions: nics.map((fn) => fn.address),
      rshimFunction,
      recovery,
      rshim: null,
      rshimMatch: null,
      mstDevice: mstBases.length === 1 ? (mstBases[0] ?? null) : null,
      mstCandidates,
      serial: vpd?.readOnly.SN || null,
      partNumber: vpd?.readOnly.PN || null,
      description: vpd?.idString ?? null,
      netdevs,
    },
    rshimTargets: new Set([...rshims, ...livefish].map((fn) => fn.address)),
  };
};

const attachRshims = (drafts: CardDraft[], entries: RshimEntry[], logger: Logger): void => {
  const taken = new Set<number>();
  for (const entry of entries) {
    const { link } = entry;
    if (link.kind !== 'pcie' && link.kind !== 'pcie_lf') continue;
    const draft = drafts.find((candidate) => candidate.card.slot === link.slot);
    if (!draft) {
      logger.warn(
        { rshim: entry.device.path, devName: entry.device.devName },
        'rshim names a PCI address that is not a BlueField found in sysfs',
      );
      continue;
    }
    if (draft.card.rshim !== null) {
      logger.warn(
        { slot: draft.card.slot, kept: draft.card.rshim.path, ignored: entry.device.path },
        'two rshim devices name one card; keeping the lower index',
      );
      continue;
    }
    if (!draft.rshimTargets.has(link.function)) {
      logger.debug(
        { slot: draft.card.slot, devName: entry.device.devName, rshimFunction: draft.card.rshimFunction },
        'rshim DEV_NAME names another function of the card',
      );
    }
    draft.card.rshim = entry.device;
    draft.card.rshimMatch = 'pcie';
    taken.add(entry.device.index);
  }

  const left = entries.filter((entry) => !taken.has(entry.device.index));
  for (const entry of left) {
    if (!entry.miscReadable) {
      logger.warn({ rshim: entry.device.path }, 'rshim misc is missing or unreadable; cannot tell its card');
    }
  }
  const [only] = drafts;
  const [spare] = left;
  if (drafts.length === 1 && only && only.card.rshim === null && left.length === 1 && spare) {
    if (spare.link.kind === 'usb') {
      only.card.rshim = spare.device;
      only.card.rshimMatch = 'usb_single_card';
      logger.info(
        { slot: only.card.slot, rshim: spare.device.path, devName: spare.device.devName },
        'USB rshim given to the only BlueField in the host (a USB rshim has no PCI address to match)',
      );
    }
  } else {
    for (const entry of left) {
      if (entry.link.kind === 'usb') {
        logger.warn(
          { rshim: entry.device.path, devName: entry.device.devName, cards: drafts.length },
          'USB rshim left unmapped: it cannot be tied to one of several cards',
        );
      }
    }
  }
};

/** Every BlueField in the host, sorted by PCI slot; an empty list when there is none. */
export const discoverCards = async (
  paths: HardwarePaths,
  options: DiscoverOptions = {},
): Promise<DiscoveredCard[]> => {
  const logger = options.logger ?? silentLogger();
  throwIfAborted(options.signal);
  const functions = await listBlueFieldFunctions(paths);
  throwIfAborted(options.signal);
  const slots = new Map<string, ClassifiedFunction[]>();
  for (const fn of functions) {
    const slot = slotOf(fn.address);
    slots.set(slot, [...(slots.get(slot) ?? []), fn]);
  }
  const mstNames = await readMstNames(paths);
  const drafts = (
    await Promise.all(
      [...slots.entries()].map(([slot, members]) => buildCard(paths, slot, members, mstNames, options)),
    )
  ).filter((draft): draft is CardDraft => draft !== null);
  drafts.sort((a, b) => a.card.slot.localeCompare(b.card.slot));
  throwIfAborted(options.signal);
  if (drafts.length > 0) attachRshims(drafts, await listRshimDevices(paths, options), logger);
  throwIfAborted(options.signal);
  return drafts.map((draft) => draft.card);
};

const describeCard = (card: BlueFieldCard): string =>
  `${card.slot} (${card.generation}${card.rshim ? `, rshim${card.rshim.index}` : ''})`;

/**
 * The card a `device` param names: its slot, the address of any of its functions (with or without
 * the domain), its rshim (`rshim0`, `/dev/rshim0`), tmfifo interface, a netdev or its serial number.
 * Without a name, the only card.
 */
export const selectCard = <T extends BlueFieldCard>(cards: readonly T[], device?: string | null): T => {
  const known = cards.map(describeCard);
  if (device == null || device === '') {
    const [only] = cards;
    if (cards.length === 1 && only) return only;
    if (cards.length === 0) {
      throw new AgentError('BLUEFIELD_NOT_FOUND', 'no BlueField was found in this host', {
        details: { cards: known },
      });
    }
    throw new AgentError(
      'INVALID_PARAMS',
      `this host has ${cards.length} BlueFields; name one with device (${known.join(', ')})`,
      { details: { field: 'device', cards: known } },
    );
  }
  const wanted = device.trim();
  const address = normalizePciAddress(wanted);
  const found = cards.find((card) => {
    const functions = [...card.nicFunctions, ...(card.rshimFunction ? [card.rshimFunction] : [])];
    if (card.slot === wanted.toLowerCase() || (address !== null && functions.includes(address))) return true;
    if (/^(?:0000:)?[0-9a-f]{2}:[0-9a-f]{2}$/i.test(wanted) && card.slot.endsWith(wanted.toLowerCase())) {
      return true;
    }
    if (card.rshim) {
      const { rshim } = card;
      if ([`rshim${rshim.index}`, rshim.path, rshim.tmfifo].includes(wanted)) return true;
      if (wanted === `/dev/rshim${rshim.index}`) return true;
    }
    return card.netdevs.includes(wanted) || (card.serial !== null && card.serial === wanted);
  });
  if (found) return found;
  throw new AgentError('BLUEFIELD_NOT_FOUND', `no BlueField matches device ${JSON.stringify(device)}`, {
    details: { device, cards: known },
  });
};
