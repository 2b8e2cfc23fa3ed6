/**
 * `bm-agent bluefield ...` as an operator at the console uses it, against the simulated host:
 * the real CLI process, the fake MFT on its PATH, the rshim simulator's device files.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { dpuHostsSkipReason } from '../support/bluefield-sim/dpu-host.js';
import { createBlueFieldWorld, type BlueFieldWorld } from '../support/bluefield-sim/world.js';
import { runCli } from '../support/spawn-agent.js';

const skip = (await dpuHostsSkipReason(['bash'])) ?? false;
if (skip) process.stderr.write(`# skipping BlueField CLI tests: ${skip}\n`);

describe('bm-agent bluefield', { skip }, () => {
  let world: BlueFieldWorld;
  const cli = (args: string[]) => runCli(['bluefield', ...args], { env: world.env });

  before(async () => {
    world = await createBlueFieldWorld({
      cards: [{ generation: 'BF2', mode: 'dpu' }, { generation: 'BF3' }],
    });
  });

  after(async () => {
    await world?.close();
  });

  it('list prints each card for a person', async () => {
    const { code, stdout, stderr } = await cli(['list']);
    assert.equal(code, 0, stderr);
    assert.match(stdout, /0000:03:00\.0 {2}BF2/);
    assert.match(stdout, /mode dpu {2}host privilege privileged/);
    assert.match(stdout, /0000:23:00\.0 {2}BF3/);
    assert.match(stdout, /rshim \S+\/rshim1 {2}tmfifo tmfifo_net1/);
  });

  it('list --json is the command result', async () => {
    const { code, stdout } = await cli(['list', '--json']);
    assert.equal(code, 0);
    const result = JSON.parse(stdout) as { devices: Array<Record<string, unknown>> };
    assert.deepEqual(
      result.devices.map((card) => card.generation),
      ['BF2', 'BF3'],
    );
  });

  it('status shows one card with its rshim state', async () => {
    const { code, stdout } = await cli(['status', '--device', '23:00']);
    assert.equal(code, 0);
    assert.doesNotMatch(stdout, /BF2/);
    assert.match(stdout, /BF3/);
    assert.match(stdout, /rshim: dev_name=pcie-0000:23:00\.\d/);
    const none = await cli(['status', '--device', 'rshim9']);
    assert.match(none.stdout, /no BlueField matches rshim9/);
  });

  it('set-mode changes the next boot and says a power cycle is due', async () => {
    const first = await cli(['set-mode', 'nic', '--device', 'rshim0']);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /0000:03:00: changed; a power cycle is required/);
    const again = await cli(['set-mode', 'nic', '--device', 'rshim0', '--json']);
    assert.equal((JSON.parse(again.stdout) as { changed: boolean }).changed, false);
  });

  it('exits 2 on a bad mode and 1 with the error code when the command fails', async () => {
    const usage = await cli(['set-mode', 'smart']);
    assert.equal(usage.code, 2);
    const failed = await cli(['dpu-exec', '--command', 'true', '--device', 'rshim0']);
    assert.equal(failed.code, 1);
    assert.match(failed.stderr, /DPU_UNREACHABLE/);
  });
});
