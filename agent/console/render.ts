/**
 * The status screen as text: pure functions from a model snapshot to lines, for a terminal that is
 * redrawn in place (renderScreen) and for a dumb console that only gets lines appended
 * (renderPlain). No escape sequences here; status-screen.ts adds those.
 */
import { formatBytes, renderProgress } from '../cli/format.js';
import type { CardView, InstallView, LinkView, RunningView, StatusSnapshot } from './status-model.js';

export interface ScreenSize {
  /** Columns usable for text: the writer keeps one back so no line ever wraps. */
  width: number;
  height: number;
}

export interface PlainLine {
  /** What the line is about; a line is printed again only when the text under its key changes. */
  key: string;
  text: string;
}

const LABEL_WIDTH = 11;
const INDENT = ' '.repeat(LABEL_WIDTH);

/**
 * Text from outside (DPU log lines, error messages, host names) could carry escape sequences that
 * move the cursor or recolour the console, and wide characters break the layout; serial consoles
 * have no reliable charset either. Only printable ASCII reaches the screen.
 */
export const clean = (value: string): string =>
  value
    .replace(/[^\x20-\x7e]/g, ' ')
    .replace(/ {2,}/g, ' ')
    .trim();

const fit = (line: string, width: number): string =>
  line.length > width ? line.slice(0, Math.max(0, width)) : line;

const pad2 = (value: number): string => String(value).padStart(2, '0');

/** UTC, the only zone a ramdisk knows. */
export const clock = (ms: number): string => {
  const date = new Date(ms);
  return `${pad2(date.getUTCHours())}:${pad2(date.getUTCMinutes())}:${pad2(date.getUTCSeconds())}`;
};

export const duration = (ms: number): string => {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h > 0) return `${h}h${pad2(m)}m`;
  if (m > 0) return `${m}m${pad2(s)}s`;
  return `${s}s`;
};

const orDash = (value: string | null): string => (value ? clean(value) : '-');

const lastLine = (message: string | null): string | null => {
  const line = message?.split('\n').at(-1);
  return line ? clean(line) : null;
};

const percent = (done: number | null, total: number | null, step = 1): number | null => {
  if (done === null || !total) return null;
  const exact = Math.min(100, Math.max(0, (done / total) * 100));
  return Math.floor(exact / step) * step;
};

/** A label on the first line, the rest indented under it. */
const section = (label: string, items: string[]): string[] =>
  items.map((item, index) => `${index === 0 ? label.padEnd(LABEL_WIDTH) : INDENT}${item}`);

/** Keeps as many items as fit in `room` lines, the last saying how many were left out. */
const trimItems = (items: string[], room: number, keep: 'first' | 'last'): string[] => {
  if (items.length <= room) return items;
  if (room <= 0) return [];
  const kept = keep === 'first' ? items.slice(0, room - 1) : items.slice(items.length - room + 1);
  const more = `(${items.length - kept.length} more)`;
  return keep === 'first' ? [...kept, more] : [more, ...kept];
};

const systemText = (snapshot: StatusSnapshot): string => {
  const { vendor, product, serial } = snapshot.identity;
  if (!vendor && !product && !serial) return 'unknown (no DMI data)';
  return `${
    [vendor, product]
      .filter(Boolean)
      .map((part) => clean(part ?? ''))
      .join(' ') || '-'
  }, serial ${orDash(serial)}`;
};

/** What the link is doing, in the words an operator needs first: is it up, and if not, why not. */
const linkText = (link: LinkView, now: number, countdown: boolean): string => {
  switch (link.state) {
    case 'connected':
      return `connected${link.since === null ? '' : ` since ${clock(link.since)}`}${link.nodeUuid ? `, node ${clean(link.nodeUuid)}` : ''}`;
    case 'stopped':
      return 'stopped (the agent is shutting down)';
    case 'connecting':
    case 'retrying': {
      if (link.attempts === 0) return 'connecting';
      const history = link.everConnected ? 'disconnected' : 'never connected';
      const failed = `${link.attempts} failed attempt${link.attempts === 1 ? '' : 's'}`;
      // The countdown changes every second: only a screen redrawn in place can afford it.
      let next = '';
      if (countdown && link.state === 'connecting') next = ', trying again now';
      else if (countdown && link.retryAt !== null) next = `, next in ${duration(link.retryAt - now + 999)}`;
      return `${history}: ${failed}${next}`;
    }
  }
};

const urlText = (link: LinkView): string => (link.url ? clean(link.url) : 'no conductor URL');

const commandTitle = (command: RunningView): string => `${clean(command.name)} (${clean(command.id)})`;

const progressLine = (command: RunningView, width: number): string | null => {
  const { progress } = command;
  if (!progress) return null;
  const line = { ...progress, phase: clean(progress.phase), message: lastLine(progress.message) };
  // The bar takes what the phase, the amounts and the rate leave over, within reason.
  const rest = renderProgress(line, 0).length;
  const barWidth = Math.max(10, Math.min(40, width - LABEL_WIDTH - 2 - rest));
  return `  ${renderProgress(line, barWidth)}`;
};

const modeText = (card: CardView): string => {
  if (!card.mode) return 'mode unknown';
  const { current, next } = card.mode;
  return current === next ? `mode ${current}` : `mode ${current} (next: ${next})`;
};

const installText = (install: InstallView | null, step: number): string => {
  if (!install) return '';
  const version = install.version ? ` ${clean(install.version)}` : '';
  switch (install.state) {
    case 'pushing': {
      const pct = percent(install.done, install.total, step);
      const size = install.total ? ` of ${formatBytes(install.total)}` : '';
      return `pushing BFB${pct === null ? '' : ` ${pct}%`}${size}`;
    }
    case 'installing':
      return `installing${install.detail ? `: ${clean(install.detail)}` : ''}`;
    case 'installed':
      return `installed${install.detail ? ` (${clean(install.detail)})` : ''}${version}`;
    case 'skipped':
      return `install skipped${install.detail ? ` (${clean(install.detail)})` : ''}${version}`;
    case 'failed':
      return `install FAILED${install.detail ? `: ${clean(install.detail)}` : ''}`;
    case 'cancelled':
      return 'install cancelled';
  }
};

const cardLines = (cards: CardView[], step: number, align: boolean): string[] => {
  const modes = cards.map(modeText);
  const modeWidth = align ? Math.max(0, ...modes.map((mode) => mode.length)) : 0;
  return cards.map((card, index) =>
    [
      clean(card.slot),
      (card.generation ? clean(card.generation) : '?').padEnd(align ? 3 : 0),
      (modes[index] ?? '').padEnd(modeWidth),
      installText(card.install, step),
    ]
      .join(' ')
      .trimEnd(),
  );
};

const lastText = (snapshot: StatusSnapshot): string | null => {
  const { last } = snapshot;
  if (!last) return null;
  const error = last.errorCode
    ? `: ${clean(last.errorCode)}${last.errorMessage ? ` ${clean(last.errorMessage)}` : ''}`
    : '';
  return `${clean(last.name)} (${clean(last.id)}) ${last.status} at ${clock(last.finishedAt)}${error}`;
};

/** The whole screen, at most `height` lines of at most `width` characters. */
export const renderScreen = (snapshot: StatusSnapshot, size: ScreenSize, now: number): string[] => {
  const { width, height } = size;
  const { identity, link } = snapshot;
  const left = `bm-agent ${clean(snapshot.agentVersion)}  ${orDash(identity.hostname)}`;
  const date = new Date(now).toISOString().slice(0, 10);
  const right = `${date} ${clock(now)} UTC  up ${duration(now - snapshot.startedAt)}`;
  const header =
    left.length + 2 + right.length <= width ? `${left}${right.padStart(width - left.length)}` : left;

  const core: string[] = [header];
  core.push(...section('System', [systemText(snapshot)]));
  core.push(...section('BOOTIF', [identity.bootif ? clean(identity.bootif) : 'not given']));
  // Addresses share lines as far as the width allows.
  const addressLines: string[] = [];
  for (const address of identity.addresses.map(clean)) {
    const current = addressLines.at(-1);
    if (current !== undefined && LABEL_WIDTH + current.length + 2 + address.length <= width) {
      addressLines[addressLines.length - 1] = `${current}  ${address}`;
    } else addressLines.push(address);
  }
  core.push(...section('IP', addressLines.length > 0 ? trimItems(addressLines, 2, 'first') : ['none yet']));
  const linkItems = [linkText(link, now, true), `at ${urlText(link)}`];
  if (link.state !== 'connected' && link.state !== 'stopped' && link.lastError) {
    linkItems.push(`last error: ${clean(link.lastError)}`);
  }
  core.push(...section('Conductor', linkItems));
  const commandItems = snapshot.running.flatMap((command) => {
    const title = `${commandTitle(command)} running ${duration(now - command.startedAt)}`;
    const progress = progressLine(command, width);
    return progress === null ? [title] : [title, progress];
  });
  core.push(...section('Command', commandItems.length > 0 ? commandItems : ['idle']));
  const last = lastText(snapshot);
  if (last) core.push(...section('Last', [last]));

  const cards = snapshot.cards === null ? null : cardLines(snapshot.cards, 1, true);
  const warnings = snapshot.warnings.map(
    (warning) =>
      `${clock(warning.time)} ${warning.level.toUpperCase().padEnd(5)} ${clean(warning.text)}${warning.count > 1 ? ` (x${warning.count})` : ''}`,
  );
  // The core always shows; the BlueFields and then the warnings give way on a short screen.
  let room = height - core.length;
  const cardItems =
    cards === null ? [] : trimItems(cards.length > 0 ? cards : ['none found'], room - 1, 'first');
  room -= cardItems.length;
  const warningItems = trimItems(warnings.length > 0 ? warnings : ['none'], room, 'last');
  const lines = [...core, ...section('BlueField', cardItems), ...section('Warnings', warningItems)];
  return lines.slice(0, height).map((line) => fit(line, width));
};

/**
 * The same facts as lines that change only when something an operator cares about changes:
 * no clock, no countdown, progress in steps of 10%. Each line is printed once per change.
 */
export const renderPlain = (snapshot: StatusSnapshot, width: number): PlainLine[] => {
  const { identity, link } = snapshot;
  const lines: PlainLine[] = [
    {
      key: 'agent',
      text: `bm-agent ${clean(snapshot.agentVersion)} on ${orDash(identity.hostname)}: ${systemText(snapshot)}`,
    },
    {
      key: 'network',
      text: `BOOTIF ${identity.bootif ? clean(identity.bootif) : 'not given'}, IP ${identity.addresses.length > 0 ? identity.addresses.map(clean).join(', ') : 'none yet'}`,
    },
    {
      key: 'conductor',
      text: `conductor ${urlText(link)}: ${linkText(link, 0, false)}${link.state !== 'connected' && link.state !== 'stopped' && link.lastError ? `; last error: ${clean(link.lastError)}` : ''}`,
    },
  ];
  for (const command of snapshot.running) {
    const { progress } = command;
    let state = 'started';
    if (progress) {
      const pct = percent(progress.done, progress.total, 10);
      const message = lastLine(progress.message);
      state = `${clean(progress.phase)}${pct === null ? '' : ` ${pct}%`}${progress.total && progress.unit === 'bytes' ? ` of ${formatBytes(progress.total)}` : ''}${message ? `: ${message}` : ''}`;
    }
    lines.push({ key: `run:${command.id}`, text: `command ${commandTitle(command)}: ${state}` });
  }
  const last = lastText(snapshot);
  if (last) lines.push({ key: 'last', text: `finished ${last}` });
  if (snapshot.cards !== null) {
    if (snapshot.cards.length === 0) lines.push({ key: 'bluefield', text: 'BlueField: none found' });
    const texts = cardLines(snapshot.cards, 10, false);
    snapshot.cards.forEach((card, index) =>
      lines.push({ key: `bluefield:${card.slot}`, text: `BlueField ${texts[index] ?? ''}` }),
    );
  }
  // A repeat keeps its key and its text: the first time was the news.
  for (const warning of snapshot.warnings) {
    lines.push({
      key: `warning:${warning.seq}`,
      text: `${warning.level.toUpperCase()} ${clean(warning.text)}`,
    });
  }
  return lines.map((line) => ({ key: line.key, text: fit(line.text, width) }));
};

/** How a plain line appears on the console: tagged, since kernel messages share a serial line. */
export const plainPrefix = (now: number): string => `[bm-agent ${clock(now)}] `;
