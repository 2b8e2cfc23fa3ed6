import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Backoff } from '../../agent/channel/backoff.js';

describe('full-jitter backoff', () => {
  it('doubles the ceiling from the base up to the maximum', () => {
    const backoff = new Backoff(1000, 60_000, () => 0.999999);
    const ceilings = Array.from({ length: 9 }, () => backoff.next() + 1);
    assert.deepEqual(ceilings, [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
  });

  it('draws uniformly below the ceiling and starts over after reset', () => {
    const backoff = new Backoff(1000, 60_000, () => 0.5);
    assert.equal(backoff.next(), 500);
    assert.equal(backoff.next(), 1000);
    backoff.reset();
    assert.equal(backoff.attempts, 0);
    assert.equal(backoff.next(), 500);
  });

  it('spreads real random delays across the window', () => {
    const values = Array.from({ length: 2000 }, () => new Backoff(1000, 60_000).next());
    assert.ok(Math.min(...values) >= 0 && Math.max(...values) < 1000);
    const lowHalf = values.filter((value) => value < 500).length / values.length;
    assert.ok(lowHalf > 0.4 && lowHalf < 0.6, `share below the middle: ${lowHalf}`);
  });
});
