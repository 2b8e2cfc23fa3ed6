import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classifyFrame } from '../../agent/channel/frames.js';

const request = (body: Record<string, unknown>): string => JSON.stringify({ jsonrpc: '2.0', ...body });

describe('classifying conductor frames', () => {
  it('answers a frame that is not JSON with -32700 and a null id', () => {
    assert.deepEqual(classifyFrame('{"jsonrpc": "2.0", "id": 1,', false), {
      kind: 'invalid',
      reply: { id: null, code: -32700, message: 'frame is not valid JSON' },
    });
  });

  it('answers binary frames, batches and non-objects with -32600', () => {
    for (const [data, binary] of [
      ['{}', true],
      ['[{"jsonrpc":"2.0","method":"command.list","id":1}]', false],
      ['42', false],
      ['"x"', false],
      ['null', false],
    ] as const) {
      const frame = classifyFrame(data, binary);
      assert.equal(frame.kind, 'invalid');
      assert.equal(frame.kind === 'invalid' && frame.reply?.code, -32600, data);
      assert.equal(frame.kind === 'invalid' && frame.reply?.id, null);
    }
  });

  it('keeps the id of an invalid request when it has a usable one', () => {
    const frame = classifyFrame(JSON.stringify({ id: 'abc', method: 'command.list' }), false);
    assert.deepEqual(frame.kind === 'invalid' && frame.reply && [frame.reply.code, frame.reply.id], [
      -32600,
      'abc',
    ]);
    const objectId = classifyFrame(
      JSON.stringify({ jsonrpc: '2.0', id: { a: 1 }, method: 'command.list' }),
      false,
    );
    assert.deepEqual(
      objectId.kind === 'invalid' && objectId.reply && [objectId.reply.code, objectId.reply.id],
      [-32600, null],
    );
  });

  it('answers an unknown method with -32601 and says nothing to an unknown notification', () => {
    const frame = classifyFrame(request({ id: 7, method: 'system.self_destruct' }), false);
    assert.deepEqual(
      frame.kind === 'invalid' && frame.reply && [frame.reply.code, frame.reply.id],
      [-32601, 7],
    );
    assert.deepEqual(classifyFrame(request({ method: 'system.self_destruct' }), false), {
      kind: 'notification',
      method: 'system.self_destruct',
    });
  });

  it('answers params that do not match with -32602 naming the field', () => {
    const frame = classifyFrame(
      request({ id: 3, method: 'command.run', params: { command_id: 5, name: 'system.sync' } }),
      false,
    );
    assert.equal(frame.kind, 'invalid');
    assert.equal(frame.kind === 'invalid' && frame.reply?.code, -32602);
    assert.deepEqual(
      frame.kind === 'invalid' && (frame.reply?.data as { field: string }).field,
      'params.command_id',
    );
    const extra = classifyFrame(request({ id: 4, method: 'command.list', params: { verbose: true } }), false);
    assert.equal(extra.kind === 'invalid' && extra.reply?.code, -32602);
  });

  it('recognises requests and responses', () => {
    assert.deepEqual(
      classifyFrame(request({ id: 'r1', method: 'command.status', params: { command_id: 'c1' } }), false),
      {
        kind: 'request',
        id: 'r1',
        method: 'command.status',
        params: { command_id: 'c1' },
      },
    );
    assert.deepEqual(classifyFrame(request({ id: 9, result: {} }), false), {
      kind: 'response',
      id: 9,
      result: {},
    });
    assert.deepEqual(classifyFrame(request({ id: 9, error: { code: 1, message: 'no' } }), false), {
      kind: 'response',
      id: 9,
      error: { code: 1, message: 'no' },
    });
  });

  it('does not treat inherited object keys as methods', () => {
    for (const method of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      const frame = classifyFrame(request({ id: 1, method }), false);
      assert.equal(frame.kind === 'invalid' && frame.reply?.code, -32601, method);
    }
  });
});
