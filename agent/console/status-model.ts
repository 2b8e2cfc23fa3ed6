/**
 * What the console status screen shows, kept up to date from the agent's own events: the channel's
 * link state, the command engine's starts, progress and results, warnings from the logger, and
 * the node identity. Nothing here draws or writes; render.ts turns a snapshot into lines.
 */
import type { ChannelStatus } from '../channel/agent-channel.js';
import type { EngineListener, Progress } from '../commands/engine.js';
import type { CommandRecord } from '../protocol/schema.js';
import type { LogRecord } from '../util/logger.js';

export interface IdentityView {
  hostname: string | null;
  vendor: string | null;
  product: string | null;
  serial: string | null;
  bootif: string | null;
  /** `eth0 10.0.0.5/24`, one per address, in interface order. */
  addresses: string[];
}

export type LinkState = 'connecting' | 'connected' | 'retrying' | 'stopped';

export interface LinkView {
  state: LinkState;
  url: string | null;
  /** Whether the conductor ever accepted a hello since the agent started. */
  everConnected: boolean;
  /** Failed attempts since the last accepted hello. */
  attempts: number;
  lastError: string | null;
  /** ms since the epoch: since when connected, or when the next attempt is due. */
  since: number | null;
  retryAt: number | null;
  nodeUuid: string | null;
}

export interface RunningView {
  id: string;
  name: string;
  startedAt: number;
  progress: Progress | null;
}

export interface FinishedView {
  id: string;
  name: string;
  status: CommandRecord['status'];
  errorCode: string | null;
  errorMessage: string | null;
  finishedAt: number;
}

export type InstallState = 'pushing' | 'installing' | 'installed' | 'skipped' | 'failed' | 'cancelled';

export interface InstallView {
  state: InstallState;
  /** The DPU's last log line, the ready marker, the error code or the skip reason. */
  detail: string | null;
  done: number | null;
  total: number | null;
  version: string | null;
  commandId: string;
}

export interface CardView {
  slot: string;
  generation: string | null;
  mode: { current: string; next: string } | null;
  install: InstallView | null;
}

export interface WarningView {
  /** Increases by one per warning for the life of the model: a stable key for plain output. */
  seq: number;
  time: number;
  level: string;
  text: string;
  /** How often it was logged: a warning that repeats (every reconnect) takes one line, not all of them. */
  count: number;
}

export interface StatusSnapshot {
  agentVersion: string;
  startedAt: number;
  identity: IdentityView;
  link: LinkView;
  running: RunningView[];
  last: FinishedView | null;
  /** null until a listing said which cards there are. */
  cards: CardView[] | null;
  warnings: WarningView[];
}

/** The parts of AgentChannel the model observes. */
export interface LinkSource {
  status(): ChannelStatus;
  onStateChange(listener: (status: ChannelStatus) => void): () => void;
}

export interface CommandSource {
  on(listener: EngineListener): () => void;
}

export interface LogSource {
  subscribe(listener: (record: LogRecord) => void): () => void;
}

export interface StatusModelOptions {
  agentVersion: string;
  conductorUrl: string | null;
  bootif: string | null;
  maxWarnings?: number;
  now?: () => number;
}

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json =>
  typeof value === 'object' && value !== null && !Array.isArray(value);
const objects = (value: unknown): Json[] => (Array.isArray(value) ? value.filter(isObject) : []);
const text = (value: unknown): string | null => (typeof value === 'string' && value !== '' ? value : null);
const at = (value: unknown, ...keys: string[]): unknown =>
  keys.reduce<unknown>((current, key) => (isObject(current) ? current[key] : undefined), value);
const parseTime = (iso: string | null): number | null => {
  const ms = iso === null ? Number.NaN : Date.parse(iso);
  return Number.isFinite(ms) ? ms : null;
};

/** `dddd:bb:dd`, the card identity the BlueField plugin puts first in its per-card progress phases. */
const SLOT = '[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}';
const INSTALL_PHASE = new RegExp(`(?:^|: )(${SLOT}) (push|dpu log)$`, 'i');
const LEVELS_SHOWN = new Set(['warn', 'error', 'fatal']);
const DISCONNECT_STAMP = /^\d{4}-\d{2}-\d{2}T[\d:.]+Z /;

const modeOf = (value: unknown): CardView['mode'] => {
  const current = text(at(value, 'current'));
  const next = text(at(value, 'next'));
  return current && next ? { current, next } : null;
};

/** The most telling words of a log record beyond its message: the error it carries. */
const detailOf = (record: LogRecord): string | null => {
  const coded = text(at(record, 'error', 'code'));
  const candidates = [
    at(record, 'err', 'message'),
    record.error,
    coded ? `${coded} ${text(at(record, 'error', 'message')) ?? ''}`.trim() : null,
    record.reason,
    at(record, 'rejection', 'kind'),
  ];
  for (const candidate of candidates) {
    const found = text(candidate);
    if (found) return found;
  }
  return null;
};

/** A warning about one command or one card says which. */
const subjectOf = (record: LogRecord): string | null => text(record.command_id) ?? text(record.slot);

export class StatusModel {
  private readonly listeners = new Set<() => void>();
  private readonly now: () => number;
  private readonly maxWarnings: number;
  private readonly startedAt: number;
  private identity: IdentityView;
  private link: LinkView;
  private readonly running = new Map<string, RunningView>();
  private last: FinishedView | null = null;
  private cards: Map<string, CardView> | null = null;
  private warnings: WarningView[] = [];
  private warningSeq = 0;

  constructor(private readonly options: StatusModelOptions) {
    this.now = options.now ?? Date.now;
    this.maxWarnings = options.maxWarnings ?? 5;
    this.startedAt = this.now();
    this.identity = {
      hostname: null,
      vendor: null,
      product: null,
      serial: null,
      bootif: options.bootif,
      addresses: [],
    };
    this.link = {
      state: 'connecting',
      url: options.conductorUrl,
      everConnected: false,
      attempts: 0,
      lastError: null,
      since: null,
      retryAt: null,
      nodeUuid: null,
    };
  }

  /** Called after every change; a listener that throws is ignored. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Subscribes to whichever sources are given; the returned function unsubscribes from all. */
  attach(sources: { link?: LinkSource; commands?: CommandSource; logs?: LogSource }): () => void {
    const offs: Array<() => void> = [];
    if (sources.link) {
      this.linkChanged(sources.link.status());
      offs.push(sources.link.onStateChange((status) => this.linkChanged(status)));
    }
    if (sources.commands) {
      offs.push(
        sources.commands.on({
          started: (record) => this.commandStarted(record),
          progress: (commandId, progress) => this.commandProgress(commandId, progress),
          finished: (record) => this.commandFinished(record),
        }),
      );
    }
    if (sources.logs) offs.push(sources.logs.subscribe((record) => this.logRecord(record)));
    return () => {
      for (const off of offs.splice(0)) off();
    };
  }

  snapshot(): StatusSnapshot {
    return {
      agentVersion: this.options.agentVersion,
      startedAt: this.startedAt,
      identity: { ...this.identity, addresses: [...this.identity.addresses] },
      link: { ...this.link },
      running: [...this.running.values()].map((command) => ({
        ...command,
        progress: command.progress ? { ...command.progress } : null,
      })),
      last: this.last ? { ...this.last } : null,
      cards: this.cards
        ? [...this.cards.values()]
            .sort((a, b) => a.slot.localeCompare(b.slot))
            .map((card) => ({
              ...card,
              mode: card.mode ? { ...card.mode } : null,
              install: card.install ? { ...card.install } : null,
            }))
        : null,
      warnings: this.warnings.map((warning) => ({ ...warning })),
    };
  }

  setIdentity(update: Partial<IdentityView>): void {
    const next = { ...this.identity, ...update };
    if (JSON.stringify(next) === JSON.stringify(this.identity)) return;
    this.identity = next;
    this.changed();
  }

  linkChanged(status: ChannelStatus): void {
    const everConnected = this.link.everConnected || status.state === 'ready';
    const state: LinkState =
      status.state === 'ready'
        ? 'connected'
        : status.state === 'waiting'
          ? 'retrying'
          : status.state === 'stopped'
            ? 'stopped'
            : 'connecting';
    // A clean close leaves no lastError; the reason it closed is the next best thing to show.
    const lastError =
      status.lastError ??
      (status.lastDisconnect ? status.lastDisconnect.replace(DISCONNECT_STAMP, '') : null);
    this.link = {
      state,
      url: this.link.url,
      everConnected,
      attempts: status.attempts,
      lastError: state === 'connected' ? null : lastError,
      since: state === 'connected' ? parseTime(status.connectedSince) : null,
      retryAt: state === 'retrying' ? parseTime(status.retryAt) : null,
      nodeUuid: status.nodeUuid,
    };
    this.changed();
  }

  commandStarted(record: CommandRecord): void {
    this.running.set(record.command_id, {
      id: record.command_id,
      name: record.name,
      startedAt: parseTime(record.started_at) ?? this.now(),
      progress: null,
    });
    this.changed();
  }

  commandProgress(commandId: string, progress: Progress): void {
    const command = this.running.get(commandId);
    if (command) command.progress = { ...progress };
    this.installProgress(commandId, progress);
    this.changed();
  }

  commandFinished(record: CommandRecord): void {
    this.running.delete(record.command_id);
    this.last = {
      id: record.command_id,
      name: record.name,
      status: record.status,
      errorCode: record.error?.code ?? null,
      errorMessage: record.error?.message ?? null,
      finishedAt: parseTime(record.finished_at) ?? this.now(),
    };
    this.applyResult(record);
    this.changed();
  }

  logRecord(record: LogRecord): void {
    if (!LEVELS_SHOWN.has(record.level)) return;
    const detail = detailOf(record);
    const subject = subjectOf(record);
    const head = subject && !record.msg.includes(subject) ? `${record.msg} (${subject})` : record.msg;
    const text = detail && !record.msg.includes(detail) ? `${head}: ${detail}` : head;
    const time = parseTime(record.time) ?? this.now();
    const index = this.warnings.findIndex(
      (warning) => warning.text === text && warning.level === record.level,
    );
    const repeated = index >= 0 ? this.warnings.splice(index, 1)[0] : undefined;
    if (repeated) {
      this.warnings.push({ ...repeated, time, count: repeated.count + 1 });
    } else {
      this.warningSeq += 1;
      this.warnings.push({ seq: this.warningSeq, time, level: record.level, text, count: 1 });
    }
    if (this.warnings.length > this.maxWarnings) this.warnings = this.warnings.slice(-this.maxWarnings);
    this.changed();
  }

  private changed(): void {
    for (const listener of this.listeners) {
      try {
        listener();
      } catch {
        // The screen is a bystander: it must not break whoever reported the change.
      }
    }
  }

  private card(slot: string): CardView {
    this.cards ??= new Map();
    let card = this.cards.get(slot);
    if (!card) {
      card = { slot, generation: null, mode: null, install: null };
      this.cards.set(slot, card);
    }
    return card;
  }

  private installProgress(commandId: string, progress: Progress): void {
    const match = INSTALL_PHASE.exec(progress.phase);
    if (!match?.[1] || !match[2]) return;
    const card = this.card(match[1].toLowerCase());
    const lastLine = progress.message?.split('\n').at(-1) ?? null;
    card.install =
      match[2].toLowerCase() === 'push'
        ? {
            state: 'pushing',
            detail: null,
            done: progress.done,
            total: progress.total,
            version: null,
            commandId,
          }
        : {
            state: 'installing',
            detail: lastLine ?? card.install?.detail ?? null,
            done: null,
            total: null,
            version: null,
            commandId,
          };
  }

  /** Cards and their state from whichever command reports on them. */
  private applyResult(record: CommandRecord): void {
    const result = record.result;
    switch (record.name) {
      case 'bluefield.list':
        if (record.status === 'SUCCEEDED') this.listed(objects(at(result, 'devices')), true);
        break;
      case 'inventory.collect':
        if (Array.isArray(at(result, 'inventory', 'bluefield'))) {
          this.listed(objects(at(result, 'inventory', 'bluefield')), false);
        }
        break;
      case 'bluefield.set_mode':
        this.modesSet(objects(at(result, 'devices')));
        break;
      case 'bluefield.install_bfb':
        this.installed(record, objects(at(result, 'devices')), text(at(result, 'bfb', 'version')));
        break;
      case 'inspect.run':
        this.modesSet(objects(at(result, 'bluefield', 'mode', 'devices')));
        this.installed(
          record,
          objects(at(result, 'bluefield', 'install', 'devices')),
          text(at(result, 'bluefield', 'install', 'bfb', 'version')),
        );
        // Read again after the work: the freshest word on each card.
        if (Array.isArray(at(result, 'inventory', 'bluefield'))) {
          this.listed(objects(at(result, 'inventory', 'bluefield')), false);
        }
        break;
      case 'deploy.run':
        this.modesSet(objects(at(result, 'bluefield', 'mode', 'devices')));
        break;
      default:
        this.installed(record, [], null);
    }
  }

  /**
   * bluefield.list is the whole truth about which cards exist; an inventory's list may be empty
   * only because the tools failed, so it adds and updates but never removes.
   */
  private listed(devices: Json[], authoritative: boolean): void {
    const seen = new Set<string>();
    for (const device of devices) {
      const slot = text(device.slot);
      if (!slot) continue;
      seen.add(slot);
      const card = this.card(slot);
      card.generation = text(device.generation) ?? card.generation;
      card.mode = modeOf(device.mode) ?? card.mode;
    }
    this.cards ??= new Map();
    if (authoritative)
      for (const slot of [...this.cards.keys()]) if (!seen.has(slot)) this.cards.delete(slot);
  }

  private modesSet(devices: Json[]): void {
    for (const device of devices) {
      const slot = text(device.slot);
      if (!slot) continue;
      const card = this.card(slot);
      card.generation = text(device.generation) ?? card.generation;
      card.mode = modeOf(device.after) ?? card.mode;
    }
  }

  /** Per-card outcomes where the result or the error names them; cards still mid-install otherwise. */
  private installed(record: CommandRecord, devices: Json[], version: string | null): void {
    const reported = new Set<string>();
    const perCard = [...devices, ...objects(at(record.error?.details, 'devices'))];
    for (const device of perCard) {
      const slot = text(device.slot);
      if (!slot || reported.has(slot)) continue;
      reported.add(slot);
      const card = this.card(slot);
      const error = text(at(device, 'error', 'code'));
      const skipped = text(device.skipped);
      card.install = {
        state: error ? 'failed' : skipped ? 'skipped' : 'installed',
        detail: error ?? skipped ?? text(device.marker),
        done: null,
        total: null,
        version: text(device.version) ?? version,
        commandId: record.command_id,
      };
    }
    if (record.status === 'SUCCEEDED' || !this.cards) return;
    for (const card of this.cards.values()) {
      const install = card.install;
      if (!install || install.commandId !== record.command_id || reported.has(card.slot)) continue;
      if (install.state !== 'pushing' && install.state !== 'installing') continue;
      card.install = {
        ...install,
        state: record.status === 'CANCELLED' ? 'cancelled' : 'failed',
        detail: record.status === 'CANCELLED' ? null : (record.error?.code ?? null),
      };
    }
  }
}
