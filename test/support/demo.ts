/**
 * `make demo`: a reference conductor and a real agent process on this machine. Shows the hello,
 * heartbeats and an inventory.collect round-trip with progress, then stops both and exits.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { renderInventory } from '../../agent/cli/inventory.js';
import { renderProgress } from '../../agent/cli/format.js';
import { ReferenceConductor } from './conductor.js';
import { spawnAgent } from './spawn-agent.js';

const started = Date.now();
const say = (what: string, text: string): void => {
  const seconds = ((Date.now() - started) / 1000).toFixed(2).padStart(6);
  process.stdout.write(`[${seconds}s] ${what.padEnd(10)} ${text}\n`);
};

const main = async (): Promise<number> => {
  const conductor = await ReferenceConductor.start({ heartbeatIntervalS: 1 });
  say('conductor', `listening on ${conductor.url}`);
  conductor.on('hello', (hello) => {
    const p = hello.params;
    say(
      'hello',
      `${p.hostname} boot ${p.boot_id.slice(0, 8)} agent ${p.agent_version}, MACs ${p.macs.join(' ') || '-'}, ` +
        `${p.capabilities.length} commands, token ${p.token ? 'presented' : 'none (first connection)'}`,
    );
  });
  conductor.on('heartbeat', (beat) => {
    const running = beat.params.running.map((entry) => entry.name).join(', ');
    say(
      'heartbeat',
      `seq ${beat.params.seq} uptime ${beat.params.uptime_s}s busy=${beat.params.busy}${running ? ` running: ${running}` : ''}`,
    );
  });
  conductor.on('progress', (progress) => say('progress', renderProgress(progress.params)));

  const agent = await spawnAgent(['run'], {
    args: ['--conductor-url', conductor.url, '--insecure', '--power-backend', 'none'],
  });
  say('agent', `started, pid ${agent.child.pid ?? '?'} (its NDJSON log goes to the conductor too)`);
  let exitCode = 0;
  try {
    const { nodeUuid } = await conductor.waitForConnection(15_000);
    say('conductor', `accepted node ${nodeUuid ?? '?'}`);
    await conductor.waitFor(() => conductor.heartbeats().length >= 2, 10_000, 'two heartbeats');

    const commandId = `demo-inventory-${Date.now()}`;
    const run = await conductor.runCommand('inventory.collect', {}, commandId);
    if (run.error) throw new Error(`command.run failed: ${run.error.message}`);
    say('command', `inventory.collect ${commandId} accepted`);
    const record = await conductor.waitForResult(commandId, 60_000);
    const seconds = record.finished_at
      ? (Date.parse(record.finished_at) - Date.parse(record.started_at)) / 1000
      : NaN;
    say('result', `${record.name} ${record.status} in ${seconds.toFixed(2)} s, acknowledged`);
    if (record.status !== 'SUCCEEDED') {
      say('error', JSON.stringify(record.error));
      exitCode = 1;
    } else {
      const inventory = (record.result?.inventory ?? {}) as Parameters<typeof renderInventory>[0];
      process.stdout.write(`\n${renderInventory(inventory)}\n`);
    }
    await sleep(1200);
    say('logs', `${conductor.logs().length} log records forwarded by the agent`);
    if (conductor.violations.length > 0) {
      say('error', `protocol violations: ${JSON.stringify(conductor.violations)}`);
      exitCode = 1;
    }
  } catch (error) {
    say('error', error instanceof Error ? error.message : String(error));
    process.stderr.write(agent.stderr());
    exitCode = 1;
  } finally {
    await agent.stop();
    await conductor.stop();
  }
  say('done', exitCode === 0 ? 'agent and conductor stopped' : 'failed');
  return exitCode;
};

process.exitCode = await main();
