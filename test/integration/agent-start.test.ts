/**
 * `bm-agent run` as the ramdisk's supervisor starts it (nothing but the verb, settings from the
 * kernel command line) goes straight to the daemon; anything more goes through the command-line
 * parser. Both are the real agent process.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { ReferenceConductor } from '../support/conductor.js';
import { runCli, spawnAgent } from '../support/spawn-agent.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

describe('bm-agent run', () => {
  it('alone serves the conductor the kernel command line names', async () => {
    const conductor = await ReferenceConductor.start({ heartbeatIntervalS: 30 });
    cleanups.push(() => conductor.stop());
    const agent = await spawnAgent(['run'], {
      cmdline: `bma-conductor-url=${conductor.url} ipa-insecure=1 BOOTIF=01-52-54-00-aa-bb-01`,
    });
    cleanups.push(() => agent.stop());
    await conductor.waitForConnection(15_000);
    assert.equal(conductor.hellos()[0]?.params.bootif, '52:54:00:aa:bb:01');
    assert.ok(agent.logs.some((record) => record.msg === 'bm-agent starting'));
  });

  it('alone, without a conductor, exits with the usage status and says what to set', async () => {
    const { code, stderr } = await runCli(['run']);
    assert.equal(code, 2);
    assert.match(stderr, /^bm-agent: no conductor to serve: .*bma-conductor-url/);
  });

  it('with anything more goes through the parser, which refuses what it does not know', async () => {
    const { code, stderr } = await runCli(['run', '--bogus']);
    assert.equal(code, 2);
    assert.match(stderr, /Unknown argument: bogus\n/);
  });
});
