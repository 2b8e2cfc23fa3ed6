import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Bounds, DemoFailure, demoLimitS } from '../support/pxe-demo-bounds.js';

const never = (): Promise<never> => new Promise<never>(() => undefined);

describe('the demo bounds', () => {
  it('passes a value or a failure through when it comes in time', async () => {
    const bounds = new Bounds(60);
    try {
      assert.equal(await bounds.within(Promise.resolve(42), 'the answer', 1), 42);
      await assert.rejects(bounds.within(Promise.reject(new Error('refused')), 'the answer', 1), {
        message: 'refused',
      });
      assert.equal(bounds.ended, null);
    } finally {
      bounds.dispose();
    }
  });

  it("ends a wait at its own limit, pointing at the VM's serial console", async () => {
    const bounds = new Bounds(60);
    bounds.consoleLog = '/work/build/demo/run/console.log';
    try {
      const started = Date.now();
      await assert.rejects(bounds.within(never(), "the agent's hello", 0.05), (error: unknown) => {
        assert.ok(error instanceof DemoFailure);
        assert.match(error.message, /^timed out after 0\.05 s waiting for the agent's hello\./);
        assert.match(error.message, /\/work\/build\/demo\/run\/console\.log/);
        return true;
      });
      assert.ok(Date.now() - started < 1000, 'not held up by anything else');
      assert.equal(bounds.ended, null, 'one wait over its limit does not end the run');
    } finally {
      bounds.dispose();
    }
  });

  it("ends every wait when the whole run's limit passes", async () => {
    const bounds = new Bounds(0.05);
    bounds.consoleLog = '/tmp/console.log';
    try {
      await assert.rejects(bounds.within(never(), 'the result of image.write', 30), (error: unknown) => {
        assert.ok(error instanceof DemoFailure);
        assert.match(
          error.message,
          /^timed out after 0\.05 s waiting for the result of image\.write \(the whole demo's limit\)\. .*\/tmp\/console\.log/,
        );
        return true;
      });
      assert.equal(bounds.ended, 'deadline');
      assert.equal(bounds.interrupted, false);
    } finally {
      bounds.dispose();
    }
  });

  it('ends the wait in progress and every later one at Ctrl-C, keeping the first reason', async () => {
    const bounds = new Bounds(60);
    try {
      const waiting = bounds.within(never(), "the agent's hello", 30);
      bounds.end('SIGINT');
      bounds.end('deadline');
      await assert.rejects(waiting, { message: "interrupted (SIGINT) while waiting for the agent's hello" });
      await assert.rejects(bounds.within(Promise.resolve(1), 'the power-off', 30), {
        message: 'interrupted (SIGINT) while waiting for the power-off',
      });
      assert.equal(bounds.ended, 'SIGINT');
      assert.equal(bounds.interrupted, true);
    } finally {
      bounds.dispose();
    }
  });
});

describe('BMA_DEMO_LIMIT_S', () => {
  it('is whole seconds from 1 to 3600, the default when unset or empty', () => {
    assert.equal(demoLimitS(undefined, 600), 600);
    assert.equal(demoLimitS('', 600), 600);
    assert.equal(demoLimitS('30', 600), 30);
    assert.equal(demoLimitS('3600', 600), 3600);
    for (const bad of ['abc', '0', '3601', '1.5', '-5', ' 30', '1e3']) {
      assert.throws(
        () => demoLimitS(bad, 600),
        (error: unknown) => {
          assert.ok(error instanceof DemoFailure);
          assert.equal(error.message, `BMA_DEMO_LIMIT_S=${bad}: expected whole seconds from 1 to 3600`);
          return true;
        },
      );
    }
  });
});
