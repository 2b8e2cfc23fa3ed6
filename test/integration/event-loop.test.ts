import assert from 'node:assert/strict';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import { buildRegistry } from '../../agent/commands/catalog.js';
import { CommandEngine } from '../../agent/commands/engine.js';
import { buildConfig } from '../../agent/config/load.js';
import { silentLogger } from '../../agent/util/logger.js';

/**
 * The channel shares one event loop with every command: a command that holds it for long delays
 * heartbeats and pongs. This runs the real inventory on this machine, several at once, and measures.
 */
describe('event loop while commands run', () => {
  it('stays responsive through real inventory collections', async () => {
    const engine = new CommandEngine(
      buildRegistry(buildConfig({ flags: { 'power-backend': 'none' } }).config, silentLogger()),
    );
    const histogram = monitorEventLoopDelay({ resolution: 5 });
    histogram.enable();
    for (let round = 0; round < 5; round += 1) {
      const ids = [0, 1, 2].map((n) => `inv-${round}-${n}`);
      for (const id of ids) assert.ok(engine.run(id, 'inventory.collect', {}).ok);
      const records = await Promise.all(ids.map((id) => engine.wait(id)));
      for (const record of records) assert.equal(record?.status, 'SUCCEEDED', JSON.stringify(record?.error));
    }
    histogram.disable();
    const maxMs = histogram.max / 1e6;
    const p99Ms = histogram.percentile(99) / 1e6;
    process.stdout.write(
      `# event-loop delay over 15 inventories: p99 ${p99Ms.toFixed(1)} ms, max ${maxMs.toFixed(1)} ms\n`,
    );
    assert.ok(maxMs < 100, `event loop held for ${maxMs.toFixed(1)} ms`);
  });
});
