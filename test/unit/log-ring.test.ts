import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createLogger, LogRing } from '../../agent/util/logger.js';

describe('LogRing', () => {
  it('keeps the newest lines within the line bound, oldest first', () => {
    const ring = new LogRing({ maxLines: 3, maxBytes: 1024 });
    for (let index = 1; index <= 5; index += 1) ring.write(`{"n":${index}}\n`);
    assert.deepEqual(ring.lines(), ['{"n":3}\n', '{"n":4}\n', '{"n":5}\n']);
    assert.deepEqual(ring.stats(), { lines: 3, bytes: 24, dropped: 2 });
    assert.equal(ring.text(), '{"n":3}\n{"n":4}\n{"n":5}\n');
  });

  it('keeps within the byte bound, whichever bound is reached first', () => {
    const ring = new LogRing({ maxLines: 100, maxBytes: 20 });
    for (const line of ['aaaaaaaaa\n', 'bbbbbbbbb\n', 'ccccccccc\n']) ring.write(line);
    assert.deepEqual(ring.lines(), ['bbbbbbbbb\n', 'ccccccccc\n']);
    assert.equal(ring.stats().bytes, 20);
    // Multi-byte characters count as their UTF-8 bytes.
    ring.write('ééééé\n');
    assert.deepEqual(ring.lines(), ['ééééé\n']);
    assert.equal(ring.stats().bytes, 11);
  });

  it('cuts a line longer than the byte bound to it, and adds a missing newline', () => {
    const ring = new LogRing({ maxLines: 10, maxBytes: 8 });
    ring.write('x'.repeat(50));
    assert.deepEqual(ring.lines(), ['xxxxxxx\n']);
    // A cut inside a multi-byte character does not leave half of it behind.
    ring.write('ab€€€€');
    const [line = ''] = ring.lines();
    assert.ok(Buffer.byteLength(line) <= 8, line);
    assert.ok(line.startsWith('ab€') && !line.includes('\uFFFD'), line);
    ring.write('short');
    assert.equal(ring.lines().at(-1), 'short\n');
  });

  it('refuses bounds that are not positive integers', () => {
    assert.throws(() => new LogRing({ maxLines: 0 }), TypeError);
    assert.throws(() => new LogRing({ maxBytes: 1.5 }), TypeError);
  });

  it('receives every record the logger writes as NDJSON, whatever the console shows', () => {
    const ring = new LogRing();
    const logger = createLogger({ level: 'debug', stream: 'stderr', pretty: true, ring });
    logger.debug({ device: '/dev/sda' }, 'a debug line');
    logger.warn('a warning');
    logger.trace('below the level');
    const records = ring.lines().map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.equal(records.length, 2);
    assert.equal(records[0]?.msg, 'a debug line');
    assert.equal(records[0]?.device, '/dev/sda');
    assert.equal(records[0]?.level, 20);
    assert.equal(records[1]?.msg, 'a warning');
  });
});
