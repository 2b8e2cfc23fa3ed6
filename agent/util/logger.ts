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
}

export const createLogger = (options: LoggerOptions = {}): Logger => {
  const out = options.stream === 'stderr' ? process.stderr : process.stdout;
  const pretty = options.pretty ?? Boolean((out as NodeJS.WriteStream).isTTY);
  const primary: DestinationStream = pretty
    ? new PrettyStream(out)
    : destination({ fd: out === process.stdout ? 1 : 2, sync: true });
  const streams: StreamEntry[] = [{ level: 'trace', stream: primary }];
  if (options.forwarder) streams.push({ level: 'info', stream: options.forwarder });
  return pino(
    { level: options.level ?? 'info', base: undefined, timestamp: stdTimeFunctions.epochTime },
    multistream(streams),
  );
};

/** A logger that drops everything, for library users and tests that do not care. */
export const silentLogger = (): Logger => pino({ level: 'silent' });
