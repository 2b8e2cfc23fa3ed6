import {
  pino,
  destination,
  multistream,
  stdTimeFunctions,
  type Logger,
  type DestinationStream,
  type StreamEntry,
} from 'pino';

export type { Logger } from 'pino';

export interface LogRecord {
  level: string;
  time: string;
  msg: string;
  [field: string]: unknown;
}

type LogListener = (record: LogRecord) => void;

const LEVEL_NAMES: Record<number, string> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
};

/**
 * Fans log records at info and above out to listeners (the conductor channel), so the conductor
 * sees what an operator at the console would see. Listener failures never break logging.
 */
export class LogForwarder implements DestinationStream {
  private readonly listeners = new Set<LogListener>();

  subscribe(listener: LogListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  write(line: string): void {
    if (this.listeners.size === 0) return;
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    const { level, time, msg, pid: _pid, hostname: _hostname, ...fields } = parsed;
    const record: LogRecord = {
      ...fields,
      level: typeof level === 'number' ? (LEVEL_NAMES[level] ?? String(level)) : String(level),
      time: typeof time === 'number' ? new Date(time).toISOString() : String(time),
      msg: typeof msg === 'string' ? msg : '',
    };
    for (const listener of this.listeners) {
      try {
        listener(record);
      } catch {
        // A broken listener must not take logging down with it.
      }
    }
  }
}

export interface LogRingOptions {
  maxLines?: number;
  maxBytes?: number;
}

export const LOG_RING_MAX_LINES = 5000;
export const LOG_RING_MAX_BYTES = 2 * 1024 * 1024;

/**
 * The agent's most recent NDJSON log lines, kept in memory for system.collect_logs: a ramdisk
 * has no journal to ask afterwards. Bounded in lines and bytes, whichever is reached first; the
 * oldest lines go. A single line longer than the byte bound is cut to it.
 */
export class LogRing implements DestinationStream {
  readonly maxLines: number;
  readonly maxBytes: number;
  private readonly slots: Array<string | undefined>;
  private start = 0;
  private count = 0;
  private bytes = 0;
  private droppedLines = 0;

  constructor(options: LogRingOptions = {}) {
    this.maxLines = options.maxLines ?? LOG_RING_MAX_LINES;
    this.maxBytes = options.maxBytes ?? LOG_RING_MAX_BYTES;
    if (!Number.isInteger(this.maxLines) || this.maxLines < 1)
      throw new TypeError(`Expected maxLines to be a positive integer, got ${String(this.maxLines)}`);
    if (!Number.isInteger(this.maxBytes) || this.maxBytes < 1)
      throw new TypeError(`Expected maxBytes to be a positive integer, got ${String(this.maxBytes)}`);
    this.slots = new Array<string | undefined>(this.maxLines);
  }

  write(line: string): void {
    let kept = line.endsWith('\n') ? line : `${line}\n`;
    if (Buffer.byteLength(kept) > this.maxBytes)
      kept = `${Buffer.from(kept)
        .subarray(0, this.maxBytes - 1)
        .toString('utf8')
        .replace(/\uFFFD$/, '')}\n`;
    const size = Buffer.byteLength(kept);
    while (this.count > 0 && (this.count === this.maxLines || this.bytes + size > this.maxBytes))
      this.dropOldest();
    this.slots[(this.start + this.count) % this.maxLines] = kept;
    this.count += 1;
    this.bytes += size;
  }

  /** The kept lines, oldest first, each ending in a newline. */
  lines(): string[] {
    return Array.from(
      { length: this.count },
      (_, index) => this.slots[(this.start + index) % this.maxLines] ?? '',
    );
  }

  text(): string {
    return this.lines().join('');
  }

  /** Lines, bytes kept, and lines dropped to stay within the bounds since the ring was made. */
  stats(): { lines: number; bytes: number; dropped: number } {
    return { lines: this.count, bytes: this.bytes, dropped: this.droppedLines };
  }

  private dropOldest(): void {
    this.bytes -= Buffer.byteLength(this.slots[this.start] ?? '');
    this.slots[this.start] = undefined;
    this.start = (this.start + 1) % this.maxLines;
    this.count -= 1;
    this.droppedLines += 1;
  }
}

/** A compact human format for a console; NDJSON stays the format for anything that is not a TTY. */
class PrettyStream implements DestinationStream {
  constructor(private readonly out: NodeJS.WritableStream) {}

  write(line: string): void {
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.out.write(line);
      return;
    }
    const { level, time, msg, pid: _pid, hostname: _hostname, ...fields } = parsed;
    const when = typeof time === 'number' ? new Date(time).toISOString().slice(11, 23) : '';
    const name = typeof level === 'number' ? (LEVEL_NAMES[level] ?? String(level)) : String(level);
    const extra = Object.entries(fields)
      .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
      .join(' ');
    this.out.write(
      `${when} ${name.toUpperCase().padEnd(5)} ${String(msg ?? '')}${extra ? ` ${extra}` : ''}\n`,
    );
  }
}

export interface LoggerOptions {
  level?: string;
  /** Where records go: the daemon logs to stdout, CLI verbs to stderr so stdout stays data. */
  stream?: 'stdout' | 'stderr';
  pretty?: boolean;
  forwarder?: LogForwarder;
  /** Also keeps every record in this ring (NDJSON, whatever the console shows), for system.collect_logs. */
  ring?: LogRing;
}

export const createLogger = (options: LoggerOptions = {}): Logger => {
  const out = options.stream === 'stderr' ? process.stderr : process.stdout;
  const pretty = options.pretty ?? Boolean((out as NodeJS.WriteStream).isTTY);
  const primary: DestinationStream = pretty
    ? new PrettyStream(out)
    : destination({ fd: out === process.stdout ? 1 : 2, sync: true });
  const streams: StreamEntry[] = [{ level: 'trace', stream: primary }];
  if (options.forwarder) streams.push({ level: 'info', stream: options.forwarder });
  if (options.ring) streams.push({ level: 'trace', stream: options.ring });
  return pino(
    { level: options.level ?? 'info', base: undefined, timestamp: stdTimeFunctions.epochTime },
    multistream(streams),
  );
};

/** A logger that drops everything, for library users and tests that do not care. */
export const silentLogger = (): Logger => pino({ level: 'silent' });
