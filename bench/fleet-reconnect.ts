/**
 * How a fleet comes back after its conductor crashes.
 *
 * 2,000 agent channels (the real AgentChannel and CommandEngine, production backoff) run in this
 * process against a reference conductor in another one. Once all are connected the conductor is
 * killed (SIGKILL, a crash), and after DOWNTIME_MS a new one starts on the same port with the same
 * state file. What matters is the shape of the return: full jitter should spread the hellos over
 * many seconds instead of landing them all in one, which is what a conductor that just restarted
 * can least afford. The headline figure is the largest one-second bucket's share of all reconnects;
 * next to it, the same figures for a backoff without jitter, computed rather than measured.
 *
 * Prints figures only; there is no pass or fail. Run after a build: `node dist/bench/fleet-reconnect.js`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Type } from '@sinclair/typebox';
import { AgentChannel } from '../agent/channel/agent-channel.js';
import { defineCommand } from '../agent/commands/definition.js';
import { CommandEngine } from '../agent/commands/engine.js';
import { CommandRegistry } from '../agent/commands/registry.js';
import { silentLogger } from '../agent/util/logger.js';

const AGENTS = 2000;
const STAGGER_MS = 2000;
const DOWNTIME_MS = 5000;
/** The agent's defaults (shared/protocol.md): 1 s to 60 s, pings every 15 s, dead after 30 s. */
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 60_000;
const PING_INTERVAL_MS = 15_000;
const PONG_TIMEOUT_MS = 30_000;
const CONNECT_TIMEOUT_MS = 60_000;
/**
 * With full jitter and a 5 s outage nearly every agent is back within ~35 s; an unlucky one whose
 * fifth attempt failed can wait up to a further 32 s. Past this the run stops and counts stragglers.
 */
const RECONNECT_TIMEOUT_MS = 90_000;
/** Sockets besides the agents' (stdio, the event loop, node's own) with room to spare. */
const FD_HEADROOM = 256;
const CONDUCTOR_CLI = fileURLToPath(new URL('../test/support/conductor-cli.js', import.meta.url));

interface Hello {
  at: number;
  node_uuid: string;
}

interface ConductorProcess {
  child: ChildProcess;
  /** Accepted hellos, in the order the conductor printed them. */
  hellos: Hello[];
  /** When the conductor said it was listening, by this process's clock. */
  listeningAt: number;
  exited: Promise<void>;
}

interface Fleet {
  channels: AgentChannel[];
  /** Sum of every channel's connection attempts after its first (status().reconnects). */
  attempts(): number;
  /** When an attempt ended without a hello accepted (connecting, then waiting again): refused ones. */
  refusals: number[];
}

/** Node cannot raise its own descriptor limit, so this only checks it and says how to raise it. */
const checkFileLimit = (): void => {
  const limits = readFileSync('/proc/self/limits', 'utf8');
  const match = /^Max open files\s+(\d+|unlimited)/m.exec(limits);
  const soft = match?.[1] === 'unlimited' ? Infinity : Number(match?.[1] ?? 0);
  const needed = AGENTS + FD_HEADROOM;
  if (soft >= needed) return;
  console.error(
    `fleet-reconnect needs ${needed} open files per process for ${AGENTS} connections; the limit is ${soft}.\n` +
      `Raise it in the shell that runs the benchmark (for example \`ulimit -n 8192\`) and run it again.`,
  );
  process.exit(1);
};

/** A port nobody is using now, so both conductors can be given the same one. */
const freePort = async (): Promise<number> => {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no TCP port to listen on');
  return address.port;
};

const readLines = (stream: NodeJS.ReadableStream | null, onLine: (line: string) => void): void => {
  let buffered = '';
  stream?.setEncoding('utf8');
  stream?.on('data', (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) if (line.trim()) onLine(line);
  });
};

/** Starts test/support/conductor-cli.js and resolves once it listens. */
const startConductor = (port: number, statePath: string): Promise<ConductorProcess> => {
  const child = spawn(
    process.execPath,
    [CONDUCTOR_CLI, '--port', String(port), '--state', statePath, '--heartbeat-interval-s', '30'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const hellos: Hello[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  readLines(child.stdout, (line) => hellos.push(JSON.parse(line) as Hello));
  return new Promise((resolve, reject) => {
    let stderr = '';
    readLines(child.stderr, (line) => {
      stderr += `${line}\n`;
      if (line.startsWith('listening ')) resolve({ child, hellos, listeningAt: Date.now(), exited });
    });
    void exited.then(() => reject(new Error(`the conductor exited before listening:\n${stderr}`)));
  });
};

/** Ends a conductor like a crash: no close frames, no chance to save anything. */
const crash = async (conductor: ConductorProcess): Promise<void> => {
  conductor.child.kill('SIGKILL');
  await conductor.exited;
};

/** Ends a conductor politely, and for good if it does not go within five seconds. */
const stopConductor = async (conductor: ConductorProcess): Promise<void> => {
  if (conductor.child.exitCode !== null || conductor.child.signalCode !== null) return;
  conductor.child.kill('SIGTERM');
  const timer = setTimeout(() => conductor.child.kill('SIGKILL'), 5000);
  await conductor.exited;
  clearTimeout(timer);
};

/** A locally administered MAC per agent, so the conductor sees 2,000 distinct nodes. */
const macFor = (index: number): string => {
  const bytes = [0x02, 0x00, 0x00, (index >> 16) & 0xff, (index >> 8) & 0xff, index & 0xff];
  return bytes.map((byte) => byte.toString(16).padStart(2, '0')).join(':');
};

/** The channel under test only needs some command to announce; this one never runs. */
const tinyRegistry = (): CommandRegistry =>
  new CommandRegistry().register(
    defineCommand({
      name: 'bench.noop',
      summary: 'does nothing',
      exclusive: false,
      params: Type.Object({}, { additionalProperties: false }),
      handler: async () => ({}),
    }),
  );

/** Starts the channels spread over STAGGER_MS, the way a rack powering on would dial in. */
const startFleet = async (url: string): Promise<Fleet> => {
  const logger = silentLogger();
  const registry = tinyRegistry();
  const channels: AgentChannel[] = [];
  const refusals: number[] = [];
  for (let index = 0; index < AGENTS; index += 1) {
    const mac = macFor(index);
    const channel = new AgentChannel({
      url,
      insecure: true,
      caPath: null,
      pin: null,
      engine: new CommandEngine(registry, { logger, deliveryAcknowledged: true }),
      identity: async () => ({ bootId: `bench-boot-${index}`, hostname: `bench-${index}`, macs: [mac] }),
      logger,
      agentVersion: 'bench',
      bootif: mac,
      nodeUuid: null,
      pingIntervalMs: PING_INTERVAL_MS,
      pongTimeoutMs: PONG_TIMEOUT_MS,
      backoffMinMs: BACKOFF_MIN_MS,
      backoffMaxMs: BACKOFF_MAX_MS,
    });
    let previous = channel.state;
    channel.onStateChange(({ state }) => {
      if (state === 'waiting' && previous === 'connecting') refusals.push(Date.now());
      previous = state;
    });
    channels.push(channel);
    channel.start();
    if (index % 100 === 99) await sleep(STAGGER_MS / (AGENTS / 100));
  }
  const attempts = (): number => channels.reduce((sum, channel) => sum + channel.status().reconnects, 0);
  return { channels, attempts, refusals };
};

/** Resolves with the time the last distinct node was seen, or null when not all came in time. */
const waitForAll = async (conductor: ConductorProcess, timeoutMs: number): Promise<number | null> => {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const last = lastOfAll(conductor.hellos);
    if (last !== null) return last;
    await sleep(100);
  }
  return null;
};

/** The time by which every agent had an accepted hello, or null while some have none. */
const lastOfAll = (hellos: Hello[]): number | null => {
  const first = firstHelloPerNode(hellos);
  if (first.size < AGENTS) return null;
  return Math.max(...first.values());
};

const firstHelloPerNode = (hellos: Hello[]): Map<string, number> => {
  const first = new Map<string, number>();
  for (const hello of hellos) if (!first.has(hello.node_uuid)) first.set(hello.node_uuid, hello.at);
  return first;
};

/** Counts per one-second bucket, from `origin`; bucket i holds [i, i+1) seconds. */
const bucketise = (times: number[], origin: number): number[] => {
  const buckets: number[] = [];
  for (const time of times) {
    const index = Math.max(0, Math.floor((time - origin) / 1000));
    while (buckets.length <= index) buckets.push(0);
    buckets[index] = (buckets[index] ?? 0) + 1;
  }
  return buckets;
};

const percentile = (sorted: number[], p: number): number =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

/** One line per one-second bucket; seconds in which nobody came back are left out. */
const printHistogram = (buckets: number[], total: number): void => {
  const largest = Math.max(...buckets);
  const barWidth = 50;
  buckets.forEach((count, index) => {
    if (count === 0) return;
    const bar = '#'.repeat(Math.max(1, Math.round((count / largest) * barWidth)));
    const share = ((count / total) * 100).toFixed(1);
    const range = `${index}-${index + 1}`.padStart(7);
    console.log(`  ${range} s ${String(count).padStart(5)} ${share.padStart(5)} %  ${bar}`);
  });
};

/**
 * The same outage with a backoff that has no jitter: every agent lost the connection at the same
 * instant, so every agent retries at the same instants (1, 3, 7, 15 ... s) and all of them arrive
 * in one bucket, at the first retry after the conductor is back.
 */
const noJitter = (downMs: number): { reconnectAtMs: number; attemptsPerAgentWhileDown: number } => {
  let at = 0;
  let attempts = 0;
  for (let attempt = 0; ; attempt += 1) {
    at += Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
    if (at >= downMs) return { reconnectAtMs: at, attemptsPerAgentWhileDown: attempts };
    attempts += 1;
  }
};

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

interface Outcome {
  killAt: number;
  upAt: number;
  /** Attempts that found no conductor (ECONNREFUSED) between the crash and the end. */
  refused: number;
  /** All attempts since the crash, by the channels' own count; refused plus successful. */
  attempts: number;
  firstHellos: Map<string, number>;
}

const report = (outcome: Outcome): void => {
  const { killAt, upAt, refused, attempts, firstHellos } = outcome;
  const times = [...firstHellos.values()].sort((a, b) => a - b);
  const reconnected = times.length;
  const buckets = bucketise(times, upAt);
  const largest = Math.max(0, ...buckets);
  const largestAt = buckets.indexOf(largest);
  const sinceUp = times.map((time) => time - upAt);
  const lastAt = times.at(-1) ?? NaN;

  console.log(`\nconductor down for ${seconds(upAt - killAt)} (SIGKILL to listening again)`);
  console.log(`reconnected: ${reconnected} of ${AGENTS}`);
  console.log(
    `all reconnected ${seconds(lastAt - upAt)} after the restart (${seconds(lastAt - killAt)} after the crash); ` +
      `p50 ${seconds(percentile(sinceUp, 50))}, p90 ${seconds(percentile(sinceUp, 90))}, p99 ${seconds(percentile(sinceUp, 99))}`,
  );
  console.log(
    `connection attempts refused while the conductor was down: ${refused} ` +
      `(${(refused / AGENTS).toFixed(2)} per agent, ${(refused / ((upAt - killAt) / 1000)).toFixed(0)} a second); ` +
      `attempts since the crash in all: ${attempts}`,
  );
  console.log('\nhellos accepted per second after the restart (empty seconds left out):');
  printHistogram(buckets, reconnected);
  console.log(
    `\nHEADLINE largest one-second bucket: ${largest} hellos (${((largest / reconnected) * 100).toFixed(1)} % of all), ` +
      `${largestAt}-${largestAt + 1} s after the restart`,
  );

  const flat = noJitter(upAt - killAt);
  console.log(
    `\nwithout jitter (computed): all ${AGENTS} hellos in one bucket (100 %), ${seconds(flat.reconnectAtMs - (upAt - killAt))} ` +
      `after the restart; ${flat.attemptsPerAgentWhileDown * AGENTS} attempts while down ` +
      `(${flat.attemptsPerAgentWhileDown} per agent, each wave ${AGENTS} at the same instant)`,
  );
};

/** Last-resort clean-up: whatever else happens, no conductor outlives this process. */
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));

const main = async (): Promise<void> => {
  checkFileLimit();
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'bma-bench-fleet-'));
  const statePath = path.join(stateDir, 'conductor-state.json');
  const port = await freePort();
  let conductor: ConductorProcess | null = null;
  let fleet: Fleet | null = null;
  try {
    conductor = await startConductor(port, statePath);
    children.add(conductor.child);
    const url = `ws://127.0.0.1:${port}/v1/agent`;
    const started = Date.now();
    fleet = await startFleet(url);
    const allIn = await waitForAll(conductor, CONNECT_TIMEOUT_MS);
    if (allIn === null)
      throw new Error(`only ${firstHelloPerNode(conductor.hellos).size} of ${AGENTS} agents connected`);
    console.log(`${AGENTS} agents connected ${seconds(allIn - started)} after the first was started`);

    const attemptsBefore = fleet.attempts();
    const killAt = Date.now();
    await crash(conductor);
    await sleep(Math.max(0, killAt + DOWNTIME_MS - Date.now()));
    conductor = await startConductor(port, statePath);
    children.add(conductor.child);
    const upAt = conductor.listeningAt;

    const lastIn = await waitForAll(conductor, RECONNECT_TIMEOUT_MS);
    if (lastIn === null) console.log(`stopped waiting after ${seconds(RECONNECT_TIMEOUT_MS)}`);
    report({
      killAt,
      upAt,
      refused: fleet.refusals.filter((at) => at >= killAt).length,
      attempts: fleet.attempts() - attemptsBefore,
      firstHellos: firstHelloPerNode(conductor.hellos),
    });
  } finally {
    if (fleet) await Promise.all(fleet.channels.map((channel) => channel.stop()));
    if (conductor) await stopConductor(conductor);
    await rm(stateDir, { recursive: true, force: true });
  }
};

await main();
