/**
 * One tcpdump per interface, read as a pcap stream. Node has no AF_PACKET sockets, and tcpdump
 * (libpcap) is what the ramdisk carries; `-c 1` makes it exit by itself after the first frame.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { PcapStreamReader, type PcapRecord } from './pcap.js';

/** LLDP frames are small, but a jumbo-frame switch may pad them; 1600 is what IPA reads too. */
const SNAPLEN = 1600;
const STDERR_LIMIT = 4096;

export type TcpdumpEvent =
  { kind: 'frame'; record: PcapRecord; linktype: number } | { kind: 'failed'; message: string };

export interface TcpdumpCapture {
  readonly pid: number | undefined;
  /** Ends the capture: SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(graceMs: number): Promise<void>;
}

export const tcpdumpArgs = (iface: string): string[] => [
  '-i',
  iface,
  // Packet-buffered output and no kernel batching: the frame reaches us as soon as it arrives.
  '-U',
  '--immediate-mode',
  '-w',
  '-',
  '-s',
  String(SNAPLEN),
  '-c',
  '1',
  // tcpdump drops to its own `tcpdump` user by default, which a ramdisk has no reason to carry:
  // the agent is root and stays so.
  '-Z',
  'root',
  // Promiscuous mode stays on (tcpdump's default): some virtual NICs drop the LLDP multicast
  // group otherwise. The kernel drops the membership itself when the socket closes.
  'ether',
  'proto',
  '0x88cc',
];

/** The line of tcpdump's stderr that says what went wrong, without its chatter. */
const failureLine = (stderr: string): string | null => {
  const lines = stderr
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !/^(listening on|\d+ packets? )/.test(line));
  return lines.at(-1)?.slice(0, 300) ?? null;
};

const waitForExit = (child: ChildProcess, ms: number): Promise<boolean> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve(true);
      return;
    }
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });

/**
 * Starts tcpdump on `iface` and reports exactly one event: the first frame, or why there will be
 * none (tcpdump could not start, exited early, or wrote something that is not pcap).
 */
export const startTcpdump = (
  program: string,
  iface: string,
  onEvent: (event: TcpdumpEvent) => void,
): TcpdumpCapture => {
  let reported = false;
  let stopping = false;
  let stderr = '';
  const report = (event: TcpdumpEvent): void => {
    if (reported) return;
    reported = true;
    onEvent(event);
  };

  const child = spawn(program, tcpdumpArgs(iface), {
    argv0: 'tcpdump',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const reader = new PcapStreamReader();

  child.stdout?.on('data', (chunk: Buffer) => {
    for (const event of reader.push(chunk)) {
      if (event.kind === 'record') {
        report({ kind: 'frame', record: event.record, linktype: reader.pcapHeader?.linktype ?? -1 });
      } else if (event.kind === 'error') {
        report({ kind: 'failed', message: `tcpdump output on ${iface} is unreadable: ${event.message}` });
      }
    }
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    if (stderr.length < STDERR_LIMIT) stderr += chunk.toString('utf8').slice(0, STDERR_LIMIT - stderr.length);
  });
  child.on('error', (error: NodeJS.ErrnoException) => {
    report({
      kind: 'failed',
      message: `cannot run tcpdump on ${iface}: ${error.code ?? ''} ${error.message}`.trim(),
    });
  });
  // 'close' waits for stdout to drain, so a frame written just before exit is still read first.
  child.on('close', (code, signal) => {
    if (stopping || reported) return;
    const why = failureLine(stderr);
    const how = signal ? `was killed by ${signal}` : `exited with code ${String(code)}`;
    report({
      kind: 'failed',
      message: `tcpdump on ${iface} ${how} before any frame${why ? `: ${why}` : ''}`,
    });
  });

  return {
    pid: child.pid,
    stop: async (graceMs) => {
      stopping = true;
      if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      if (await waitForExit(child, graceMs)) return;
      child.kill('SIGKILL');
      await waitForExit(child, graceMs);
    },
  };
};
