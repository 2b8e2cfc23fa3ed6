/**
 * Memory of the real agent process as its command records pile up.
 *
 * The engine keeps every command record for the life of the boot (command.list returns them all),
 * so a long-lived agent grows with each command it ran. This measures by how much: the agent's
 * resident set (VmRSS) and its peak (VmHWM) from /proc, idle, after 1,000 cheap exclusive commands,
 * after 1,000 inventory records (large results), and after answering one command.list of them all.
 *
 * Right after a burst most of the RSS is garbage that V8 returns only when its memory reducer
 * happens to run, 8 to 30 s later (131 MiB at once after 1,000 syncs, 70 MiB ten seconds on).
 * Waiting for that made the figures depend on luck, so the agent runs with node's inspector on a
 * loopback port and every phase is read twice: at once, and after a full collection asked for
 * through the inspector, which also gives the live JS heap.
 *
 * Prints figures only; there is no pass or fail. Run after a build: `node dist/bench/agent-rss.js`.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { ReferenceConductor } from '../test/support/conductor.js';
import { spawnAgent, type SpawnedAgent } from '../test/support/spawn-agent.js';

const SYNC_COMMANDS = 1000;
const INVENTORY_COMMANDS = 1000;
const INVENTORY_PARALLEL = 10;
/** Long enough for the JIT, the first heartbeats and the hello to settle into a steady idle state. */
const SETTLE_MS = 3000;
/** V8 hands freed pages back on a background thread; give it a moment after a collection. */
const AFTER_GC_MS = 1000;
/** Past this, the inventory phase stops early (the whole script must stay under 3 minutes). */
const INVENTORY_BUDGET_MS = 60_000;
const RESULT_TIMEOUT_MS = 30_000;
const INSPECT_FLAG = '--inspect=127.0.0.1:0';

interface Memory {
  rssKiB: number;
  hwmKiB: number;
}

interface Reading {
  /** As soon as the phase's last answer arrived. */
  atOnce: Memory;
  /** After a full collection. */
  collected: Memory;
  /** Live JS heap after the collection, in KiB. */
  heapKiB: number;
}

interface Phase extends Reading {
  name: string;
  records: number;
  seconds: number;
}

/** VmRSS and VmHWM in KiB, as the kernel reports them for the process. */
const readMemory = async (pid: number): Promise<Memory> => {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status);
    if (!match?.[1]) throw new Error(`/proc/${pid}/status has no ${name}`);
    return Number(match[1]);
  };
  return { rssKiB: field('VmRSS'), hwmKiB: field('VmHWM') };
};

/** The few Chrome DevTools Protocol calls this needs: a full GC and the heap size. */
class Inspector {
  private nextId = 1;
  private readonly waiting = new Map<number, (reply: { result?: unknown; error?: unknown }) => void>();

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const reply = JSON.parse(data.toString()) as { id?: number; result?: unknown; error?: unknown };
      if (reply.id !== undefined) this.waiting.get(reply.id)?.(reply);
    });
  }

  static async connect(url: string): Promise<Inspector> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return new Inspector(ws);
  }

  private call(method: string): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, (reply) => {
        this.waiting.delete(id);
        if (reply.error) reject(new Error(`${method}: ${JSON.stringify(reply.error)}`));
        else resolve(reply.result);
      });
      this.ws.send(JSON.stringify({ id, method }));
    });
  }

  async collectGarbage(): Promise<void> {
    await this.call('HeapProfiler.collectGarbage');
  }

  async heapUsedKiB(): Promise<number> {
    const usage = (await this.call('Runtime.getHeapUsage')) as { usedSize: number };
    return Math.round(usage.usedSize / 1024);
  }

  close(): void {
    this.ws.close();
  }
}

/** The inspector's address, which node prints on stderr when it starts listening. */
const inspectorUrl = async (agent: SpawnedAgent): Promise<string> => {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const match = /Debugger listening on (ws:\/\/\S+)/.exec(agent.stderr());
    if (match?.[1]) return match[1];
    await sleep(50);
  }
  throw new Error(`the agent opened no inspector:\n${agent.stderr()}`);
};

const read = async (pid: number, inspector: Inspector): Promise<Reading> => {
  const atOnce = await readMemory(pid);
  await inspector.collectGarbage();
  await sleep(AFTER_GC_MS);
  return { atOnce, collected: await readMemory(pid), heapKiB: await inspector.heapUsedKiB() };
};

/** A directory with a `sync` that does nothing, put first on PATH: system.sync then costs one fork and no I/O. */
const fakeSyncDir = async (): Promise<string> => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bma-bench-bin-'));
  const script = path.join(dir, 'sync');
  await writeFile(script, '#!/bin/sh\nexit 0\n');
  await chmod(script, 0o755);
  return dir;
};

/** RSS of a bare node process, to tell the agent's own footprint from the runtime's. */
const nodeBaseline = async (flags: string[] = []): Promise<Memory> => {
  const child = spawn(process.execPath, [...flags, '-e', 'setInterval(()=>{},1000)'], { stdio: 'ignore' });
  try {
    await sleep(SETTLE_MS);
    if (child.pid === undefined) throw new Error('node baseline did not start');
    return await readMemory(child.pid);
  } finally {
    child.kill('SIGKILL');
  }
};

/** Runs one command and waits for its result; a refusal or a failed record stops the benchmark. */
const runToResult = async (conductor: ReferenceConductor, name: string): Promise<void> => {
  const { error, commandId } = await conductor.runCommand(name, {}, `bench-${randomUUID()}`);
  if (error) throw new Error(`${name} refused: ${error.code} ${error.message}`);
  const record = await conductor.waitForResult(commandId, RESULT_TIMEOUT_MS);
  if (record.status !== 'SUCCEEDED')
    throw new Error(`${name} ended ${record.status}: ${JSON.stringify(record.error)}`);
};

/** Exclusive, so strictly one after the other: each waits for its result before the next starts. */
const runSyncs = async (conductor: ReferenceConductor, count: number): Promise<void> => {
  for (let i = 0; i < count; i += 1) await runToResult(conductor, 'system.sync');
};

/** Read-only, so a few at a time; stops at the budget and says how many it ran. */
const runInventories = async (
  conductor: ReferenceConductor,
  count: number,
  budgetMs: number,
): Promise<number> => {
  const deadline = Date.now() + budgetMs;
  let done = 0;
  while (done < count && Date.now() < deadline) {
    const batch = Math.min(INVENTORY_PARALLEL, count - done);
    await Promise.all(Array.from({ length: batch }, () => runToResult(conductor, 'inventory.collect')));
    done += batch;
  }
  return done;
};

/** What the command.list answer held, by command name, or its error when the agent could not answer. */
const listEverything = async (conductor: ReferenceConductor): Promise<string> => {
  const outcome = await conductor.call('command.list', {}, { timeoutMs: 60_000 });
  if (outcome.error) return `error ${outcome.error.code}: ${outcome.error.message}`;
  const records: unknown[] = Array.isArray(outcome.result) ? outcome.result : [];
  const byName = new Map<string, { count: number; bytes: number }>();
  for (const record of records) {
    const name = String((record as { name?: unknown }).name);
    const entry = byName.get(name) ?? { count: 0, bytes: 0 };
    entry.count += 1;
    entry.bytes += Buffer.byteLength(JSON.stringify(record));
    byName.set(name, entry);
  }
  const total = Buffer.byteLength(JSON.stringify(records));
  const kinds = [...byName]
    .map(([name, { count, bytes }]) => `${count} ${name} at ${(bytes / count / 1024).toFixed(2)} KiB each`)
    .join(', ');
  return `${records.length} records, ${(total / 1024 / 1024).toFixed(2)} MiB of JSON (${kinds})`;
};

const mib = (kib: number): string => (kib / 1024).toFixed(1);

/** Growth over the previous phase per record added; '-' where none were. */
const perRecord = (phase: Phase, previous: Phase | undefined, value: (phase: Phase) => number): string => {
  const added = previous ? phase.records - previous.records : 0;
  if (!previous || added <= 0) return '-';
  return ((value(phase) - value(previous)) / added).toFixed(2);
};

const printTable = (phases: Phase[], baseline: Memory, inspectedBaseline: Memory): void => {
  const header = [
    'phase',
    'records',
    'VmRSS MiB',
    'VmRSS after GC MiB',
    'VmHWM MiB',
    'JS heap MiB',
    'RSS KiB/record',
    'heap KiB/record',
    'phase s',
  ];
  const rows = phases.map((phase, index) => [
    phase.name,
    String(phase.records),
    mib(phase.atOnce.rssKiB),
    mib(phase.collected.rssKiB),
    mib(phase.collected.hwmKiB),
    mib(phase.heapKiB),
    perRecord(phase, phases[index - 1], (p) => p.collected.rssKiB),
    perRecord(phase, phases[index - 1], (p) => p.heapKiB),
    phase.seconds.toFixed(1),
  ]);
  for (const [name, memory] of [
    ['node -e setInterval (baseline)', baseline],
    [`the same with ${INSPECT_FLAG}`, inspectedBaseline],
  ] as const) {
    rows.push([name, '-', mib(memory.rssKiB), '-', mib(memory.hwmKiB), '-', '-', '-', '-']);
  }
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: string[]): string =>
    cells
      .map((cell, column) =>
        column === 0 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0),
      )
      .join('  ');
  console.log(line(header));
  console.log(widths.map((width) => '-'.repeat(width)).join('  '));
  for (const row of rows) console.log(line(row));
};

const main = async (): Promise<void> => {
  const binDir = await fakeSyncDir();
  let conductor: ReferenceConductor | null = null;
  let agent: SpawnedAgent | null = null;
  let inspector: Inspector | null = null;
  // A Ctrl-C must not leave the agent running: it would dial the (gone) conductor for ever.
  const interrupted = (): void => {
    agent?.child.kill('SIGKILL');
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    conductor = await ReferenceConductor.start({ port: 0, heartbeatIntervalS: 1 });
    agent = await spawnAgent(['run'], {
      args: ['--conductor-url', conductor.url, '--insecure'],
      env: {
        PATH: `${binDir}${path.delimiter}${process.env.PATH ?? ''}`,
        NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} ${INSPECT_FLAG}`.trim(),
      },
    });
    const pid = agent.child.pid;
    if (pid === undefined) throw new Error('the agent did not start');
    inspector = await Inspector.connect(await inspectorUrl(agent));
    await conductor.waitForConnection(20_000);
    await sleep(SETTLE_MS);

    const phases: Phase[] = [];
    const measure = async (name: string, records: number, since: number): Promise<void> => {
      const seconds = (Date.now() - since) / 1000;
      phases.push({ name, records, seconds, ...(await read(pid, inspector as Inspector)) });
      console.log(`${name}: ${seconds.toFixed(1)} s`);
    };
    await measure('idle, connected', 0, Date.now());

    let since = Date.now();
    await runSyncs(conductor, SYNC_COMMANDS);
    await measure(`+${SYNC_COMMANDS} system.sync`, SYNC_COMMANDS, since);

    since = Date.now();
    const inventories = await runInventories(conductor, INVENTORY_COMMANDS, INVENTORY_BUDGET_MS);
    await measure(`+${inventories} inventory.collect`, SYNC_COMMANDS + inventories, since);
    if (inventories < INVENTORY_COMMANDS) {
      console.log(`note: only ${inventories} of ${INVENTORY_COMMANDS} inventories fitted in the time budget`);
    }

    since = Date.now();
    const listed = await listEverything(conductor);
    await measure('after command.list of all', SYNC_COMMANDS + inventories, since);

    const baseline = await nodeBaseline();
    const inspectedBaseline = await nodeBaseline([INSPECT_FLAG]);
    console.log(`command.list answered with ${listed}\n`);
    printTable(phases, baseline, inspectedBaseline);
  } finally {
    inspector?.close();
    await agent?.stop();
    await conductor?.stop();
    await rm(binDir, { recursive: true, force: true });
  }
};

await main();
