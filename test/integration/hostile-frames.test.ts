/**
 * A conductor that sends garbage: shared/protocol.md says every frame gets the answer of its
 * error table (or none, where JSON-RPC says none), that a frame over 16 MiB closes the
 * connection with 1009, and that nothing a conductor sends can crash the agent.
 *
 * The frames are generated from a seeded PRNG, so a failure names a frame that the next run
 * sends again. Each hostile frame is followed by a sentinel request; every reply that arrives
 * before the sentinel's is the hostile frame's answer, which proves "exactly one answer" and
 * "no answer" alike without waiting for a timeout.
 */
import assert from 'node:assert/strict';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CONDUCTOR_METHODS, MAX_FRAME_BYTES } from '../../agent/protocol/schema.js';
import { startInProcessAgent, type InProcessAgent } from '../support/agent-harness.js';
import { ReferenceConductor } from '../support/conductor.js';

const SEED = 0x5eed_b0a7;
const MIB = 1024 * 1024;
/** Deep enough to overflow any recursive parser, validator or serializer on a default stack. */
const DEEP = 100_000;
const KNOWN_COMMANDS = ['test.big', 'test.echo', 'test.gated', 'test.steps'];

// ---- deterministic randomness ----

type Rng = () => number;

/** mulberry32: tiny, fast, and the same sequence on every platform for a given seed. */
const mulberry32 = (seed: number): Rng => {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
};

const int = (rng: Rng, min: number, max: number): number => min + Math.floor(rng() * (max - min + 1));
const pick = <T>(rng: Rng, items: readonly T[]): T => items[int(rng, 0, items.length - 1)] as T;
const randomBytes = (rng: Rng, length: number): Buffer =>
  Buffer.from(Array.from({ length }, () => int(rng, 0, 255)));

const NAME_ALPHABET = [
  ...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:$ ',
  'é',
  'ß',
  '中',
  'Ω',
];
/** A printable name of exactly `length` UTF-16 code units (what the schema's maxLength counts). */
const randomName = (rng: Rng, length: number): string =>
  Array.from({ length }, () => pick(rng, NAME_ALPHABET)).join('');

// ---- frames and what they must get ----

type RpcId = string | number | null;

interface RpcErrorBody {
  code: number;
  message: string;
  data?: unknown;
}

type Expectation =
  | { answer: 'error'; id: RpcId; code: number; field?: string; check?: (error: RpcErrorBody) => void }
  | { answer: 'result'; id: RpcId; check?: (result: unknown) => void }
  | { answer: 'none' };

type Category =
  | 'random bytes as text'
  | 'random bytes as binary'
  | 'JSON token soup'
  | 'truncated JSON'
  | 'deep nesting'
  | 'huge strings'
  | 'wrong param types'
  | 'unknown methods'
  | 'prototype keys'
  | 'batches'
  | 'responses to unknown ids'
  | 'notifications'
  | 'odd ids'
  | 'null bytes and lone surrogates'
  | 'bad envelopes'
  | 'unknown command names'
  | 'unknown command ids'
  | 'busy';

interface HostileFrame {
  category: Category;
  label: string;
  data: string | Buffer;
  binary?: boolean;
  expect: Expectation;
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** Replies to the conductor's requests: everything the agent sends on its own (hello, heartbeat, log, progress, command.result) has a method. */
const isReply = (frame: unknown): frame is Record<string, unknown> => isRecord(frame) && !('method' in frame);

const rpc = (body: Record<string, unknown>): string => JSON.stringify({ jsonrpc: '2.0', ...body });

const error = (
  id: RpcId,
  code: number,
  field?: string,
  check?: (error: RpcErrorBody) => void,
): Expectation => ({
  answer: 'error',
  id,
  code,
  ...(field === undefined ? {} : { field }),
  ...(check === undefined ? {} : { check }),
});
const none: Expectation = { answer: 'none' };
const parseError: Expectation = error(null, -32700);
const invalidRequest = (id: RpcId = null, field?: string): Expectation => error(id, -32600, field);
const invalidParams = (id: RpcId, field?: string): Expectation => error(id, -32602, field);
const unknownMethod = (id: RpcId): Expectation => error(id, -32601);
const unknownCommand = (id: RpcId): Expectation =>
  error(id, -32000, undefined, (e) => assert.deepEqual(isRecord(e.data) && e.data.known, KNOWN_COMMANDS));
const unknownCommandId = (id: RpcId): Expectation => error(id, -32002);
const recordWithStatus = (
  id: RpcId,
  status: string,
  more?: (record: Record<string, unknown>) => void,
): Expectation => ({
  answer: 'result',
  id,
  check: (result) => {
    assert.ok(isRecord(result), 'a command record');
    assert.equal(result.status, status);
    more?.(result);
  },
});

const deepArray = (depth: number): string => '['.repeat(depth) + ']'.repeat(depth);
const deepObject = (depth: number): string => '{"a":'.repeat(depth) + '0' + '}'.repeat(depth);

/** A command.status request: the cheapest request with an id and a params field to break. */
const statusOf = (id: RpcId, commandId: unknown): string =>
  rpc({ id, method: 'command.status', params: { command_id: commandId } });

/**
 * Builds the flood. Every generator takes the same PRNG in a fixed order, so the whole list is a
 * function of SEED alone.
 */
const buildFlood = (rng: Rng): HostileFrame[] => {
  const frames: HostileFrame[] = [];
  const add = (
    category: Category,
    label: string,
    data: string | Buffer,
    expect: Expectation,
    binary = false,
  ): void => {
    frames.push({ category, label, data, expect, ...(binary ? { binary } : {}) });
  };
  let seq = 0;
  const nextId = (prefix: string): string => `${prefix}-${++seq}`;
  let id: string;

  // First, so that the whole flood hits an agent busy with an exclusive command (held until the
  // test cancels it) and a read-only one that keeps sending progress.
  id = nextId('busy');
  add(
    'busy',
    'start the exclusive test.gated gate-1',
    rpc({ id, method: 'command.run', params: { command_id: 'gate-1', name: 'test.gated' } }),
    recordWithStatus(id, 'RUNNING'),
  );
  id = nextId('busy');
  add(
    'busy',
    'start test.steps, which reports progress through the flood',
    rpc({
      id,
      method: 'command.run',
      params: { command_id: 'flood-steps', name: 'test.steps', params: { steps: 40, delay_ms: 100 } },
    }),
    recordWithStatus(id, 'RUNNING'),
  );

  // Random bytes, decoded the way a text frame must be (UTF-8, invalid sequences replaced) so the
  // frame stays a legal text frame: raw invalid UTF-8 is a WebSocket-level error, tested below.
  for (let i = 0; i < 30; i += 1) {
    const text = randomBytes(rng, int(rng, 1, 512)).toString('utf8');
    const parsed = tryParse(text);
    if (parsed.ok && isRecord(parsed.value)) continue; // an object would need its own oracle
    add(
      'random bytes as text',
      `random text #${i} (${text.length} chars)`,
      text,
      parsed.ok ? invalidRequest() : parseError,
    );
  }
  for (let i = 0; i < 30; i += 1) {
    add(
      'random bytes as binary',
      `random binary #${i}`,
      randomBytes(rng, int(rng, 0, 512)),
      invalidRequest(),
      true,
    );
  }
  // A perfectly good request is still refused when it comes as a binary frame: not executed, id null.
  for (let i = 0; i < 5; i += 1) {
    const commandId = nextId('binary-run');
    const run = rpc({
      id: nextId('binary'),
      method: 'command.run',
      params: { command_id: commandId, name: 'test.echo' },
    });
    add(
      'random bytes as binary',
      `valid request in a binary frame #${i}`,
      Buffer.from(run),
      invalidRequest(),
      true,
    );
    const statusId = nextId('binary-check');
    add(
      'random bytes as binary',
      `the binary request did not run #${i}`,
      statusOf(statusId, commandId),
      unknownCommandId(statusId),
    );
  }

  // Text built from JSON's own tokens gets much further into the parser than random bytes.
  const tokens = [
    '{',
    '}',
    '[',
    ']',
    ':',
    ',',
    '"',
    '"a"',
    '"id"',
    '1',
    '-',
    '0.5e',
    'true',
    'nul',
    'null',
    ' ',
    '\\',
    '\\u12',
  ];
  for (let added = 0, i = 0; added < 25; i += 1) {
    const text = Array.from({ length: int(rng, 1, 40) }, () => pick(rng, tokens)).join('');
    const parsed = tryParse(text);
    if (parsed.ok && isRecord(parsed.value)) continue;
    add(
      'JSON token soup',
      `token soup #${i}: ${text.slice(0, 40)}`,
      text,
      parsed.ok ? invalidRequest() : parseError,
    );
    added += 1;
  }

  // Any strict prefix of an object's text is not JSON.
  const whole = [
    rpc({
      id: 1,
      method: 'command.run',
      params: { command_id: 'c', name: 'test.echo', params: { value: 'v' } },
    }),
    rpc({ id: 'two', method: 'command.status', params: { command_id: 'c' } }),
    rpc({ id: 3, method: 'command.list', params: {} }),
    rpc({ id: 4, result: { ok: true } }),
    rpc({ method: 'some.notification', params: { a: [1, 2, 3] } }),
  ];
  for (let i = 0; i < 30; i += 1) {
    const text = pick(rng, whole);
    const cut = int(rng, 1, text.length - 1);
    add('truncated JSON', `truncated at ${cut}/${text.length}`, text.slice(0, cut), parseError);
  }

  // Deep nesting: the frames are tiny, but a recursive walk of them would overflow the stack.
  for (const [shape, deep] of [
    ['arrays', deepArray(DEEP)],
    ['objects', deepObject(DEEP)],
  ] as const) {
    const label = (where: string): string => `${DEEP} nested ${shape} ${where}`;
    add('deep nesting', label('as the whole frame'), deep, invalidRequest());
    id = nextId('deep');
    add(
      'deep nesting',
      label('as the id'),
      `{"jsonrpc":"2.0","id":${deep},"method":"command.list"}`,
      invalidRequest(),
    );
    add(
      'deep nesting',
      label('as the params of command.list'),
      `{"jsonrpc":"2.0","id":"${id}","method":"command.list","params":${deep}}`,
      shape === 'arrays' ? invalidParams(id, 'params') : invalidParams(id, 'params.a'),
    );
    id = nextId('deep');
    add(
      'deep nesting',
      label('as command_id'),
      `{"jsonrpc":"2.0","id":"${id}","method":"command.status","params":{"command_id":${deep}}}`,
      invalidParams(id, 'params.command_id'),
    );
    id = nextId('deep');
    add(
      'deep nesting',
      label('as the params of command.run'),
      `{"jsonrpc":"2.0","id":"${id}","method":"command.run","params":{"command_id":"${nextId('deep-run')}","name":"test.echo","params":${deep}}}`,
      shape === 'arrays' ? invalidParams(id, 'params.params') : invalidParams(id),
    );
    id = nextId('deep');
    add(
      'deep nesting',
      label('as a command param of the wrong type'),
      `{"jsonrpc":"2.0","id":"${id}","method":"command.run","params":{"command_id":"${nextId('deep-run')}","name":"test.echo","params":{"value":${deep}}}}`,
      invalidParams(id),
    );
    add(
      'deep nesting',
      label('in a notification'),
      `{"jsonrpc":"2.0","method":"command.run","params":{"x":${deep}}}`,
      none,
    );
    add(
      'deep nesting',
      label('as the result of a response to nobody'),
      `{"jsonrpc":"2.0","id":987654321,"result":${deep}}`,
      none,
    );
    add(
      'deep nesting',
      label('as error.data of a response to nobody'),
      `{"jsonrpc":"2.0","id":987654322,"error":{"code":1,"message":"m","data":${deep}}}`,
      none,
    );
  }

  // Huge strings, each frame within 16 MiB: size must not turn into time, memory or an echo.
  const huge = (mib: number, char = 'x'): string => char.repeat(mib * MIB);
  id = nextId('huge');
  add('huge strings', '15 MiB command_id', statusOf(id, huge(15)), invalidParams(id, 'params.command_id'));
  id = nextId('huge');
  add(
    'huge strings',
    '8 MiB command name',
    rpc({ id, method: 'command.run', params: { command_id: nextId('huge-run'), name: huge(8) } }),
    invalidParams(id, 'params.name'),
  );
  id = nextId('huge');
  add('huge strings', '4 MiB method', rpc({ id, method: huge(4) }), invalidRequest(id, 'request.method'));
  add('huge strings', '2 MiB id', rpc({ id: huge(2), method: 'command.list' }), invalidRequest());
  add(
    'huge strings',
    '12 MiB in a notification',
    rpc({ method: 'command.list', params: { blob: huge(12) } }),
    none,
  );
  add('huge strings', '6 MiB result of a response to nobody', rpc({ id: 987654323, result: huge(6) }), none);
  id = nextId('huge');
  // 2 Mi NULs written as \u0000 escapes: a 12 MiB frame that decodes to a 2 MiB string.
  add(
    'huge strings',
    '2 Mi escaped NULs as command_id (12 MiB frame)',
    statusOf(id, huge(2, '\u0000')),
    invalidParams(id, 'params.command_id'),
  );
  id = nextId('huge');
  const key = huge(1, 'k');
  add(
    'huge strings',
    '1 MiB unknown key in command.list params',
    rpc({ id, method: 'command.list', params: { [key]: 1 } }),
    // The agent clips a sender's field name so that its error reply stays small.
    invalidParams(id, `${`params.${key}`.slice(0, 200)}…`),
  );
  id = nextId('huge');
  add(
    'huge strings',
    '1 MiB value for test.echo, over the 256 KiB params limit',
    rpc({
      id,
      method: 'command.run',
      params: { command_id: nextId('huge-echo'), name: 'test.echo', params: { value: huge(1, 'v') } },
    }),
    invalidParams(id, 'params.params'),
  );
  id = nextId('huge');
  const value = 'v'.repeat(200 * 1024);
  add(
    'huge strings',
    '200 KiB value echoed by test.echo (valid)',
    rpc({
      id,
      method: 'command.run',
      params: { command_id: nextId('huge-echo'), name: 'test.echo', params: { value } },
    }),
    recordWithStatus(id, 'RUNNING', (record) =>
      assert.equal(isRecord(record.params) && record.params.value, value),
    ),
  );

  // Every field of command.run / status / cancel, in every wrong type (one field wrong at a time).
  const wrongStrings: Array<[string, unknown]> = [
    ['a number', 42],
    ['a boolean', true],
    ['null', null],
    ['an array', ['x']],
    ['an object', { x: 1 }],
    ['empty', ''],
    ['257 characters', 'c'.repeat(257)],
  ];
  const runParams = (): Record<string, unknown> => ({
    command_id: nextId('typed-run'),
    name: 'test.echo',
    params: {},
  });
  for (const field of ['command_id', 'name'] as const) {
    const variants: Array<[string, unknown]> =
      field === 'name' ? [...wrongStrings.slice(0, 6), ['129 characters', 'n'.repeat(129)]] : wrongStrings;
    for (const [what, wrong] of variants) {
      id = nextId('typed');
      add(
        'wrong param types',
        `command.run ${field} ${what}`,
        rpc({ id, method: 'command.run', params: { ...runParams(), [field]: wrong } }),
        invalidParams(id, `params.${field}`),
      );
    }
    id = nextId('typed');
    const missing = runParams();
    delete missing[field];
    add(
      'wrong param types',
      `command.run without ${field}`,
      rpc({ id, method: 'command.run', params: missing }),
      invalidParams(id, `params.${field}`),
    );
  }
  for (const [what, wrong] of [
    ['a string', 'x'],
    ['a number', 1],
    ['a boolean', false],
    ['null', null],
    ['an array', [1]],
  ] as const) {
    id = nextId('typed');
    add(
      'wrong param types',
      `command.run params ${what}`,
      rpc({ id, method: 'command.run', params: { ...runParams(), params: wrong } }),
      invalidParams(id, 'params.params'),
    );
  }
  id = nextId('typed');
  add(
    'wrong param types',
    'command.run with an extra field',
    rpc({ id, method: 'command.run', params: { ...runParams(), priority: 1 } }),
    invalidParams(id, 'params.priority'),
  );
  for (const method of ['command.status', 'command.cancel']) {
    for (const [what, wrong] of wrongStrings) {
      id = nextId('typed');
      add(
        'wrong param types',
        `${method} command_id ${what}`,
        rpc({ id, method, params: { command_id: wrong } }),
        invalidParams(id, 'params.command_id'),
      );
    }
    id = nextId('typed');
    add(
      'wrong param types',
      `${method} without command_id`,
      rpc({ id, method, params: {} }),
      invalidParams(id, 'params.command_id'),
    );
    id = nextId('typed');
    add(
      'wrong param types',
      `${method} with an extra field`,
      rpc({ id, method, params: { command_id: 'x', force: true } }),
      invalidParams(id, 'params.force'),
    );
    id = nextId('typed');
    add(
      'wrong param types',
      `${method} with array params`,
      rpc({ id, method, params: ['x'] }),
      invalidParams(id, 'params'),
    );
  }
  id = nextId('typed');
  add(
    'wrong param types',
    'command.list with a field',
    rpc({ id, method: 'command.list', params: { all: true } }),
    invalidParams(id, 'params.all'),
  );
  // The command's own params schema: a -32602 too (the field naming is checked in its own test).
  for (const [what, params] of [
    ['value a number', { value: 1 }],
    ['value null', { value: null }],
    ['an unknown param', { colour: 'red' }],
  ] as const) {
    id = nextId('typed');
    add(
      'wrong param types',
      `test.echo with ${what}`,
      rpc({
        id,
        method: 'command.run',
        params: { command_id: nextId('typed-run'), name: 'test.echo', params },
      }),
      invalidParams(id),
    );
  }

  // Unknown methods, the agent's own methods sent back at it, and near misses of real ones.
  const near = [
    'Command.List',
    'command.list ',
    ' command.list',
    'command.List',
    'command.run\u0000',
    'command',
    'command.',
    '.list',
    'rpc.discover',
    'system.reboot',
    'hello',
    'heartbeat',
    'command.result',
    'command.progress',
    'log',
  ];
  for (const method of near) {
    id = nextId('method');
    add(
      'unknown methods',
      `method ${JSON.stringify(method)}`,
      rpc({ id, method, params: {} }),
      unknownMethod(id),
    );
  }
  for (let i = 0; i < 15; i += 1) {
    const method = randomName(rng, int(rng, 1, 60));
    if (Object.hasOwn(CONDUCTOR_METHODS, method)) continue;
    id = nextId('method');
    add('unknown methods', `random method #${i}`, rpc({ id, method }), unknownMethod(id));
  }
  id = nextId('method');
  add(
    'unknown methods',
    '128-character method (longest allowed)',
    rpc({ id, method: 'm'.repeat(128) }),
    unknownMethod(id),
  );
  id = nextId('method');
  add(
    'unknown methods',
    '129-character method',
    rpc({ id, method: 'm'.repeat(129) }),
    invalidRequest(id, 'request.method'),
  );

  // Names that are properties of every object: a lookup in a plain object would find them.
  const protoNames = [
    '__proto__',
    'constructor',
    'prototype',
    'toString',
    'hasOwnProperty',
    'valueOf',
    '__defineGetter__',
    'isPrototypeOf',
  ];
  for (const name of protoNames) {
    id = nextId('proto');
    add('prototype keys', `method ${name}`, rpc({ id, method: name }), unknownMethod(id));
    id = nextId('proto');
    add(
      'prototype keys',
      `command name ${name}`,
      rpc({ id, method: 'command.run', params: { command_id: nextId('proto-run'), name } }),
      unknownCommand(id),
    );
    id = nextId('proto');
    add('prototype keys', `command_id ${name}`, statusOf(id, name), unknownCommandId(id));
  }
  // JSON.parse makes "__proto__" an own property; it must neither set a prototype nor pass a schema.
  id = nextId('proto');
  add(
    'prototype keys',
    '__proto__ key in command.status params',
    `{"jsonrpc":"2.0","id":"${id}","method":"command.status","params":{"command_id":"x","__proto__":{"admin":true}}}`,
    invalidParams(id, 'params.__proto__'),
  );
  id = nextId('proto');
  add(
    'prototype keys',
    'constructor key in command.cancel params',
    `{"jsonrpc":"2.0","id":"${id}","method":"command.cancel","params":{"command_id":"x","constructor":{"prototype":{}}}}`,
    invalidParams(id, 'params.constructor'),
  );
  id = nextId('proto');
  add(
    'prototype keys',
    '__proto__ key in test.gated params',
    `{"jsonrpc":"2.0","id":"${id}","method":"command.run","params":{"command_id":"${nextId('proto-run')}","name":"test.gated","params":{"__proto__":{"fail":true}}}}`,
    invalidParams(id),
  );
  add(
    'prototype keys',
    'the whole request under __proto__',
    `{"__proto__":{"jsonrpc":"2.0","id":"hidden","method":"command.list"}}`,
    invalidRequest(),
  );
  id = nextId('proto');
  add(
    'prototype keys',
    'extra top-level __proto__ and constructor keys on a valid request',
    `{"jsonrpc":"2.0","id":"${id}","method":"command.list","__proto__":{"method":"command.cancel"},"constructor":1}`,
    { answer: 'result', id, check: (result) => assert.ok(Array.isArray(result)) },
  );
  add('prototype keys', 'response with id __proto__', rpc({ id: '__proto__', result: {} }), none);

  // Batches are refused as a whole, and none of their members runs.
  const batchRun = nextId('batch-run');
  const batches: Array<[string, string]> = [
    ['empty batch', '[]'],
    ['batch of one list', `[${rpc({ id: 1, method: 'command.list' })}]`],
    [
      'batch with a command.run',
      `[${rpc({ id: 2, method: 'command.run', params: { command_id: batchRun, name: 'test.echo' } })},${rpc({ id: 3, method: 'command.list' })}]`,
    ],
    ['batch of notifications', `[${rpc({ method: 'a' })},${rpc({ method: 'b' })}]`],
    ['batch of responses', `[${rpc({ id: 5, result: 1 })}]`],
    ['nested batch', `[[${rpc({ id: 6, method: 'command.list' })}]]`],
    ['batch of junk', '[1,"two",null,{}]'],
    [
      'batch of 10 000 requests',
      `[${Array.from({ length: 10_000 }, (_, n) => rpc({ id: n, method: 'command.list' })).join(',')}]`,
    ],
  ];
  for (const [label, text] of batches) add('batches', label, text, invalidRequest());
  id = nextId('batch');
  add('batches', 'the command.run inside a batch did not run', statusOf(id, batchRun), unknownCommandId(id));

  // Responses to nothing we asked: JSON-RPC forbids answering them.
  for (const [label, response] of [
    ['result to an unknown integer id', { id: 424242, result: {} }],
    ['result to an unknown string id', { id: 'nobody-asked', result: null }],
    ['result to id null', { id: null, result: [] }],
    ['result to id 0', { id: 0, result: 0 }],
    ['result to a negative id', { id: -5, result: 'x' }],
    ['error to an unknown id', { id: 434343, error: { code: -32000, message: 'no' } }],
    ['error with data to an unknown id', { id: 'x', error: { code: 1, message: 'm', data: { a: [1] } } }],
    ['error to id null', { id: null, error: { code: -32700, message: 'parse error' } }],
    [
      'result echoing a hello result',
      { id: 999_999, result: { node_uuid: 'u', token: 't', heartbeat_interval_s: 1 } },
    ],
  ] as const) {
    add('responses to unknown ids', label, rpc(response), none);
  }
  for (let i = 0; i < 10; i += 1) {
    add(
      'responses to unknown ids',
      `result to random id #${i}`,
      rpc({ id: int(rng, 1_000_000, 2 ** 31), result: { i } }),
      none,
    );
  }
  // A response that is not a well-formed response is "JSON that is not a valid request".
  add(
    'responses to unknown ids',
    'malformed error object (code a string)',
    rpc({ id: 'bad-error', error: { code: 'x', message: 'm' } }),
    invalidRequest('bad-error'),
  );
  add(
    'responses to unknown ids',
    'malformed error object (no message)',
    rpc({ id: 8_888_888, error: { code: 1 } }),
    invalidRequest(8_888_888),
  );
  add(
    'responses to unknown ids',
    'response with an id longer than 256',
    rpc({ id: 'i'.repeat(300), result: {} }),
    invalidRequest(),
  );
  add(
    'responses to unknown ids',
    'response without jsonrpc',
    JSON.stringify({ id: 'no-version', result: 1 }),
    invalidRequest('no-version'),
  );

  // Notifications are never answered, known method or not, and a known one does nothing.
  const notifiedRun = nextId('notified-run');
  for (const [label, notification] of [
    [
      'command.run notification (valid params)',
      { method: 'command.run', params: { command_id: notifiedRun, name: 'test.echo' } },
    ],
    ['command.run notification (invalid params)', { method: 'command.run', params: { command_id: 1 } }],
    ['command.cancel notification', { method: 'command.cancel', params: { command_id: 'gate-1' } }],
    ['command.list notification', { method: 'command.list' }],
    ['unknown notification', { method: 'no.such.method' }],
    ['notification named __proto__', { method: '__proto__', params: {} }],
    ['notification with array params', { method: 'x', params: [1, 2, 3] }],
    ['heartbeat notification sent back', { method: 'heartbeat', params: { seq: 0 } }],
  ] as const) {
    add('notifications', label, rpc(notification), none);
  }
  for (let i = 0; i < 7; i += 1) {
    add(
      'notifications',
      `random notification #${i}`,
      rpc({ method: randomName(rng, int(rng, 1, 100)), params: { n: rng() } }),
      none,
    );
  }
  id = nextId('notified');
  add(
    'notifications',
    'the command.run notification did not run',
    statusOf(id, notifiedRun),
    unknownCommandId(id),
  );

  // Ids: what is echoed, and what makes the request invalid (answered with id null).
  for (const [label, text, expect] of [
    ['fractional id', '{"jsonrpc":"2.0","id":1.5,"method":"command.list"}', invalidRequest()],
    ['negative fractional id', '{"jsonrpc":"2.0","id":-0.25,"method":"command.list"}', invalidRequest()],
    [
      'id 1e400 (Infinity once parsed)',
      '{"jsonrpc":"2.0","id":1e400,"method":"command.list"}',
      invalidRequest(),
    ],
    ['id -1e400', '{"jsonrpc":"2.0","id":-1e400,"method":"command.list"}', invalidRequest()],
    ['id true', '{"jsonrpc":"2.0","id":true,"method":"command.list"}', invalidRequest()],
    ['id object', '{"jsonrpc":"2.0","id":{"n":1},"method":"command.list"}', invalidRequest()],
    ['id array', '{"jsonrpc":"2.0","id":[1],"method":"command.list"}', invalidRequest()],
    ['id of 257 characters', rpc({ id: 'i'.repeat(257), method: 'command.list' }), invalidRequest()],
    [
      'id of 256 characters (longest allowed)',
      statusOf('j'.repeat(256), 'nope'),
      unknownCommandId('j'.repeat(256)),
    ],
    ['empty string id', statusOf('', 'nope'), unknownCommandId('')],
    ['id 0', statusOf(0, 'nope'), unknownCommandId(0)],
    [
      'id -0 (echoed as 0)',
      '{"jsonrpc":"2.0","id":-0,"method":"command.status","params":{"command_id":"nope"}}',
      unknownCommandId(0),
    ],
    [
      'id 1e2 (100 once parsed)',
      '{"jsonrpc":"2.0","id":1e2,"method":"command.status","params":{"command_id":"nope"}}',
      unknownCommandId(100),
    ],
    [
      'id 1e-400 (0 once parsed)',
      '{"jsonrpc":"2.0","id":1e-400,"method":"command.status","params":{"command_id":"nope"}}',
      unknownCommandId(0),
    ],
    [
      'id -(2^53 - 1) (smallest safe integer)',
      statusOf(-(2 ** 53 - 1), 'nope'),
      unknownCommandId(-(2 ** 53 - 1)),
    ],
    ['id 2^53 - 1 (largest safe integer)', statusOf(2 ** 53 - 1, 'nope'), unknownCommandId(2 ** 53 - 1)],
    ['id null on a request', statusOf(null, 'nope'), unknownCommandId(null)],
  ] as const) {
    add('odd ids', label, text, expect);
  }

  // NULs and lone surrogates: escaped ones arrive as such; raw lone surrogates cannot be encoded
  // in UTF-8 and arrive as U+FFFD, so the expected id is what survives that round trip.
  const oddStrings = [
    '\u0000',
    'a\u0000b',
    '\ud800',
    '\udfff',
    'x\ud800y\udc00z',
    '\udc00\ud800',
    '\u0000\ud83d',
    '\ufeff\ufffe\uffff',
    '\u2028\u2029',
    'é\u0301\u200d',
  ];
  for (const [n, odd] of oddStrings.entries()) {
    id = `odd-${n}-${odd}`;
    add(
      'null bytes and lone surrogates',
      `escaped in id and command_id #${n}`,
      statusOf(id, odd),
      unknownCommandId(id),
    );
    id = nextId('odd');
    const method = `odd.${odd}`;
    add(
      'null bytes and lone surrogates',
      `escaped in a method name #${n}`,
      rpc({ id, method }),
      unknownMethod(id),
    );
    id = nextId('odd');
    add(
      'null bytes and lone surrogates',
      `escaped in a test.echo value #${n}`,
      rpc({
        id,
        method: 'command.run',
        params: { command_id: `odd-echo-${n}`, name: 'test.echo', params: { value: odd } },
      }),
      recordWithStatus(id, 'RUNNING', (record) =>
        assert.equal(isRecord(record.params) && record.params.value, odd),
      ),
    );
  }
  for (const [n, odd] of oddStrings.entries()) {
    // A raw NUL inside a JSON string is not JSON at all: that case has its own frame below.
    if (odd.includes('\u0000')) continue;
    const raw = `raw-${n}-${odd}`;
    // Written into the frame unescaped: the agent gets the UTF-8 encoding of this text.
    const text = `{"jsonrpc":"2.0","id":"${raw}","method":"command.status","params":{"command_id":"${raw}"}}`;
    add(
      'null bytes and lone surrogates',
      `unescaped in id and command_id #${n}`,
      text,
      unknownCommandId(Buffer.from(raw, 'utf8').toString('utf8')),
    );
  }
  // A literal control character inside a JSON string is not JSON.
  add(
    'null bytes and lone surrogates',
    'literal NUL inside a string',
    '{"jsonrpc":"2.0","id":"a\u0000b","method":"command.list"}',
    parseError,
  );
  add(
    'null bytes and lone surrogates',
    'literal NUL outside a string',
    '{"jsonrpc":"2.0",\u0000"id":1,"method":"command.list"}',
    parseError,
  );

  // Envelopes: jsonrpc and method in every wrong shape.
  for (const [label, frame, expectedField] of [
    ['no jsonrpc', { id: 'e1', method: 'command.list' }, 'request.jsonrpc'],
    ['jsonrpc "1.0"', { jsonrpc: '1.0', id: 'e2', method: 'command.list' }, 'request.jsonrpc'],
    ['jsonrpc 2', { jsonrpc: 2, id: 'e3', method: 'command.list' }, 'request.jsonrpc'],
    ['jsonrpc "2.0 "', { jsonrpc: '2.0 ', id: 'e4', method: 'command.list' }, 'request.jsonrpc'],
    ['jsonrpc null', { jsonrpc: null, id: 'e5', method: 'command.list' }, 'request.jsonrpc'],
    ['no method', { jsonrpc: '2.0', id: 'e6' }, 'request.method'],
    ['method a number', { jsonrpc: '2.0', id: 'e7', method: 7 }, 'request.method'],
    ['method null', { jsonrpc: '2.0', id: 'e8', method: null }, 'request.method'],
    ['method an object', { jsonrpc: '2.0', id: 'e9', method: { name: 'command.list' } }, 'request.method'],
    ['empty method', { jsonrpc: '2.0', id: 'e10', method: '' }, 'request.method'],
    [
      'params a string',
      { jsonrpc: '2.0', id: 'e11', method: 'command.list', params: 'all' },
      'request.params',
    ],
    ['params a number', { jsonrpc: '2.0', id: 'e12', method: 'command.list', params: 1 }, 'request.params'],
    ['params null', { jsonrpc: '2.0', id: 'e13', method: 'command.list', params: null }, 'request.params'],
  ] as const) {
    add('bad envelopes', label, JSON.stringify(frame), invalidRequest(frame.id, expectedField));
  }
  for (const [label, text] of [
    ['a number', '42'],
    ['a string', '"command.list"'],
    ['null', 'null'],
    ['true', 'true'],
    ['an empty object', '{}'],
    ['an object that is only an id', '{"id":"only-id"}'],
  ] as const) {
    add(
      'bad envelopes',
      `the frame is ${label}`,
      text,
      invalidRequest(label === 'an object that is only an id' ? 'only-id' : null),
    );
  }
  add('bad envelopes', 'empty frame', '', parseError);
  add('bad envelopes', 'whitespace frame', ' \n\t ', parseError);
  add(
    'bad envelopes',
    'a byte-order mark before the JSON',
    `\ufeff${rpc({ id: 'bom', method: 'command.list' })}`,
    parseError,
  );
  add(
    'bad envelopes',
    'two objects in one frame',
    `${rpc({ id: 'a', method: 'command.list' })}${rpc({ id: 'b', method: 'command.list' })}`,
    parseError,
  );
  add(
    'bad envelopes',
    'duplicate id keys (the last one wins)',
    '{"jsonrpc":"2.0","id":"first","id":"last","method":"command.status","params":{"command_id":"nope"}}',
    unknownCommandId('last'),
  );

  // Command names nobody registered, including real commands the test registry does not hold.
  const names = [
    'test.Echo',
    'TEST.ECHO',
    'test.echo ',
    ' test.echo',
    'test.echo\u0000',
    'test',
    'test.',
    'inventory.collect',
    'image.write',
    'system.reboot',
    'n'.repeat(128),
  ];
  for (const name of names) {
    id = nextId('cmd');
    add(
      'unknown command names',
      `name ${JSON.stringify(name.slice(0, 20))}${name.length > 20 ? '…' : ''}`,
      rpc({ id, method: 'command.run', params: { command_id: nextId('cmd-run'), name } }),
      unknownCommand(id),
    );
  }
  for (let i = 0; i < 15; i += 1) {
    const name = randomName(rng, int(rng, 1, 128));
    if (KNOWN_COMMANDS.includes(name)) continue;
    id = nextId('cmd');
    add(
      'unknown command names',
      `random name #${i}`,
      rpc({ id, method: 'command.run', params: { command_id: nextId('cmd-run'), name } }),
      unknownCommand(id),
    );
  }

  // Ids of commands that never ran.
  for (let i = 0; i < 25; i += 1) {
    const method = i % 2 === 0 ? 'command.status' : 'command.cancel';
    const commandId = i === 0 ? 'c'.repeat(256) : randomName(rng, int(rng, 1, 256));
    id = nextId('ghost');
    add(
      'unknown command ids',
      `${method} of random id #${i}`,
      rpc({ id, method, params: { command_id: commandId } }),
      unknownCommandId(id),
    );
  }

  // Busy: gate-1 (started first) holds the agent; more exclusive commands are refused, read-only ones still run.
  for (let i = 0; i < 10; i += 1) {
    id = nextId('busy');
    add(
      'busy',
      `second exclusive command #${i}`,
      rpc({
        id,
        method: 'command.run',
        params: {
          command_id: nextId('busy-run'),
          name: 'test.gated',
          params: i % 2 === 0 ? {} : { fail: true },
        },
      }),
      error(id, -32001, undefined, (e) => assert.deepEqual(e.data, { running: 'gate-1' })),
    );
  }
  id = nextId('busy');
  add(
    'busy',
    'gate-1 again: idempotent, its record, no error',
    rpc({ id, method: 'command.run', params: { command_id: 'gate-1', name: 'test.gated' } }),
    recordWithStatus(id, 'RUNNING', (record) => assert.equal(record.command_id, 'gate-1')),
  );
  id = nextId('busy');
  add(
    'busy',
    'a read-only command still runs',
    rpc({
      id,
      method: 'command.run',
      params: { command_id: nextId('busy-echo'), name: 'test.echo', params: { value: 'busy' } },
    }),
    recordWithStatus(id, 'RUNNING'),
  );

  return frames;
};

const tryParse = (text: string): { ok: true; value: unknown } | { ok: false } => {
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return { ok: false };
  }
};

/** Checks the replies that arrived for one frame; returns why they are wrong, or null. */
const judge = (frame: HostileFrame, replies: Array<Record<string, unknown>>): string | null => {
  try {
    const { expect } = frame;
    if (expect.answer === 'none') {
      assert.equal(replies.length, 0, `expected no answer, got ${replies.length}`);
      return null;
    }
    assert.equal(replies.length, 1, `expected exactly one answer, got ${replies.length}`);
    const reply = replies[0] as Record<string, unknown>;
    assert.equal(reply.jsonrpc, '2.0');
    assert.equal(reply.id, expect.id, 'the id of the answer');
    if (expect.answer === 'result') {
      assert.ok('result' in reply && !('error' in reply), `expected a result, got ${preview(reply)}`);
      expect.check?.(reply.result);
      return null;
    }
    const body = reply.error;
    assert.ok(isRecord(body) && !('result' in reply), `expected an error, got ${preview(reply)}`);
    assert.equal(body.code, expect.code, `error code (message: ${String(body.message)})`);
    assert.equal(typeof body.message, 'string');
    if (expect.field !== undefined) {
      assert.equal(isRecord(body.data) ? body.data.field : undefined, expect.field, 'data.field');
    }
    expect.check?.(body as unknown as RpcErrorBody);
    return null;
  } catch (failure) {
    return `${frame.category} / ${frame.label}: ${failure instanceof Error ? failure.message : String(failure)}`.slice(
      0,
      400,
    );
  }
};

const preview = (value: unknown): string => {
  try {
    return JSON.stringify(value).slice(0, 200);
  } catch {
    return '(unprintable)';
  }
};

/**
 * Sends one frame, then a sentinel request on the same connection; the agent handles frames in
 * order, so the replies before the sentinel's are exactly the frame's answers.
 */
const exchange = async (
  conductor: ReferenceConductor,
  frame: { data: string | Buffer; binary?: boolean; label: string },
  sentinelId: string,
  timeoutMs = 15_000,
): Promise<Array<Record<string, unknown>>> => {
  let cursor = conductor.events.length;
  conductor.sendRaw(frame.data, { binary: frame.binary ?? false });
  conductor.sendRaw(statusOf(sentinelId, 'sentinel'));
  const replies: Array<Record<string, unknown>> = [];
  await conductor.waitFor(
    (events) => {
      for (; cursor < events.length; cursor += 1) {
        const event = events[cursor];
        if (event?.dir !== 'in' || !isReply(event.frame)) continue;
        if (event.frame.id === sentinelId) {
          const sentinelError = event.frame.error;
          assert.ok(
            isRecord(sentinelError) && sentinelError.code === -32002,
            `sentinel after ${frame.label}`,
          );
          return true;
        }
        replies.push(event.frame);
      }
      return false;
    },
    timeoutMs,
    `the sentinel ${sentinelId} after ${frame.label}`,
  );
  return replies;
};

interface Rig {
  conductor: ReferenceConductor;
  agent: InProcessAgent;
}

const startRig = async (heartbeatIntervalS = 10): Promise<Rig> => {
  const conductor = await ReferenceConductor.start({ heartbeatIntervalS });
  const agent = startInProcessAgent(conductor.url, { backoffMinMs: 50, backoffMaxMs: 200 });
  await conductor.waitForConnection(5000);
  return { conductor, agent };
};

const stopRig = async (rig: Rig | undefined): Promise<void> => {
  await rig?.agent.stop();
  await rig?.conductor.stop();
};

/** Violations of the agent's own frames; the conductor also files every reply to sendRaw as one. */
const agentViolations = (conductor: ReferenceConductor): string[] =>
  conductor.violations
    .filter((violation) => violation.method !== '(response)')
    .map((violation) => `${violation.method} ${violation.field}: ${violation.expected}`);

const waitForSecondHello = async (conductor: ReferenceConductor): Promise<void> => {
  await conductor.waitFor(
    () => conductor.hellos().filter((hello) => hello.accepted).length >= 2,
    5000,
    'a second accepted hello (the reconnect)',
  );
};

/** The agent still serves requests and runs commands on whatever connection it has now. */
const assertStillServes = async (conductor: ReferenceConductor, value: string): Promise<void> => {
  const list = await conductor.call('command.list', {});
  assert.ok(Array.isArray(list.result), `command.list answers with a list: ${preview(list)}`);
  const run = await conductor.runCommand('test.echo', { value });
  assert.equal(isRecord(run.result) && run.result.status, 'RUNNING', preview(run));
  const record = await conductor.waitForResult(run.commandId, 5000);
  assert.equal(record.status, 'SUCCEEDED');
  assert.deepEqual(record.result, { echo: value });
};

describe('hostile frames from the conductor', () => {
  describe('one connection, hundreds of malformed frames', () => {
    let rig: Rig | undefined;

    before(async () => {
      // Heartbeats every second interleave with the answers, as they would in production.
      rig = await startRig(1);
    });

    after(async () => {
      await stopRig(rig);
    });

    it('answers every frame per the error table, keeps the connection, and keeps serving', async (t: TestContext) => {
      assert.ok(rig);
      const { conductor, agent } = rig;
      const frames = buildFlood(mulberry32(SEED));
      const stats = new Map<Category, { frames: number; bytes: number; ms: number }>();
      const failures: string[] = [];

      const delay = monitorEventLoopDelay({ resolution: 1 });
      const floodStart = Date.now();
      delay.enable();
      for (const [n, frame] of frames.entries()) {
        const started = performance.now();
        const replies = await exchange(conductor, frame, `sentinel-${n}`);
        const verdict = judge(frame, replies);
        if (verdict) failures.push(verdict);
        const entry = stats.get(frame.category) ?? { frames: 0, bytes: 0, ms: 0 };
        entry.frames += 1;
        entry.bytes += Buffer.byteLength(frame.data);
        entry.ms += performance.now() - started;
        stats.set(frame.category, entry);
      }
      delay.disable();
      const floodMs = Date.now() - floodStart;

      const ms = (ns: number): string => (ns / 1e6).toFixed(1);
      for (const [category, entry] of stats) {
        t.diagnostic(
          `${category}: ${entry.frames} frames, ${(entry.bytes / MIB).toFixed(2)} MiB, ${entry.ms.toFixed(0)} ms`,
        );
      }
      t.diagnostic(`total: ${frames.length} hostile frames (+ as many sentinels) in ${floodMs} ms`);
      t.diagnostic(
        `event-loop delay over the flood: mean ${ms(delay.mean)} ms, p50 ${ms(delay.percentile(50))} ms, ` +
          `p99 ${ms(delay.percentile(99))} ms, max ${ms(delay.max)} ms (${delay.count} samples)`,
      );

      assert.ok(frames.length >= 200, `at least 200 hostile frames (${frames.length})`);
      assert.deepEqual(failures, [], `${failures.length} frames got the wrong answer`);

      // Same connection throughout: one hello, no close, no reconnect.
      assert.equal(conductor.hellos().length, 1, 'no second hello');
      assert.deepEqual(conductor.closes(), [], 'no connection closed');
      assert.equal(agent.channel.status().reconnects, 0);
      assert.equal(agent.channel.state, 'ready');

      // Heartbeats kept their pace while the agent chewed through the flood.
      const beats = conductor
        .heartbeats()
        .map((beat) => beat.at)
        .filter((at) => at >= floodStart);
      const gaps = beats.slice(1).map((at, i) => at - (beats[i] as number));
      t.diagnostic(`heartbeats during the flood: ${beats.length}, longest gap ${Math.max(0, ...gaps)} ms`);
      assert.ok(Math.max(0, ...gaps) < 2500, `heartbeat gaps stay near 1 s: ${gaps.join(', ')}`);

      assert.ok(
        delay.percentile(99) < 100e6,
        `event-loop delay p99 ${ms(delay.percentile(99))} ms stays below 100 ms`,
      );

      // Still fully working on the same connection: a list, an echo, and the gated command cancelled.
      await assertStillServes(conductor, 'still alive');
      const cancel = await conductor.call('command.cancel', { command_id: 'gate-1' });
      assert.equal(isRecord(cancel.result) && cancel.result.command_id, 'gate-1');
      assert.equal((await conductor.waitForResult('gate-1', 5000)).status, 'CANCELLED');
      assert.equal((await conductor.waitForResult('flood-steps', 10_000)).status, 'SUCCEEDED');
      // Strings with NULs and lone surrogates come back intact in the results, not just the replies.
      const oddEcho = await conductor.waitForResult('odd-echo-4', 5000);
      assert.deepEqual(oddEcho.result, { echo: 'x\ud800y\udc00z' });

      assert.equal(conductor.hellos().length, 1, 'still no second hello');
      assert.deepEqual(agentViolations(conductor), [], 'the agent itself sent only well-formed frames');
      assert.deepEqual(conductor.internalErrors, []);
    });
  });

  describe('frames the WebSocket layer refuses', () => {
    let rig: Rig | undefined;

    before(async () => {
      rig = await startRig();
    });

    after(async () => {
      await stopRig(rig);
    });

    it('answers a frame of exactly 16 MiB, closes with 1009 on one byte more, then reconnects', async () => {
      assert.ok(rig);
      const { conductor, agent } = rig;
      const sized = (bytes: number, id: string): string => {
        const shell = statusOf(id, '');
        return statusOf(id, 'x'.repeat(bytes - Buffer.byteLength(shell)));
      };
      const atLimit = sized(MAX_FRAME_BYTES, 'at-limit');
      assert.equal(Buffer.byteLength(atLimit), MAX_FRAME_BYTES);
      const replies = await exchange(
        conductor,
        { data: atLimit, label: 'exactly 16 MiB' },
        'sentinel-at-limit',
      );
      assert.equal(replies.length, 1);
      assert.equal(replies[0]?.id, 'at-limit');
      assert.equal(isRecord(replies[0]?.error) && replies[0].error.code, -32602);
      assert.deepEqual(conductor.closes(), []);

      conductor.sendRaw(sized(MAX_FRAME_BYTES + 1, 'over-limit'));
      const closed = await conductor.waitFor(
        () => conductor.closes().find((close) => close.code === 1009),
        5000,
        'a close with code 1009',
      );
      assert.equal(closed.connection, 1);
      await waitForSecondHello(conductor);
      assert.ok(agent.channel.status().reconnects >= 1);
      // The oversize frame was dropped unanswered, not half-read.
      assert.equal(
        conductor.events.some((event) => isReply(event.frame) && event.frame.id === 'over-limit'),
        false,
      );
      await assertStillServes(conductor, 'after 1009');
    });

    it('closes with 1007 on a text frame that is not UTF-8 (RFC 6455 8.1), then reconnects', async () => {
      assert.ok(rig);
      const { conductor } = rig;
      const hellosBefore = conductor.hellos().length;
      const closesBefore = conductor.closes().length;
      // {"id":"<0xff 0xfe>"}: JSON-looking, but no valid UTF-8 text at all.
      conductor.sendRaw(Buffer.from([0x7b, 0x22, 0x69, 0x64, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]), {
        binary: false,
      });
      const closed = await conductor.waitFor(
        () =>
          conductor
            .closes()
            .slice(closesBefore)
            .find((close) => close.code === 1007),
        5000,
        'a close with code 1007',
      );
      assert.ok(closed);
      await conductor.waitFor(() => conductor.hellos().length > hellosBefore, 5000, 'a new hello');
      await conductor.waitForConnection(5000);
      await assertStillServes(conductor, 'after 1007');
    });
  });

  // Each case below has its own agent: the bugs they show would spoil a shared one.
  describe('hostile input that once broke the agent', () => {
    let rig: Rig | undefined;

    const withRig = async (body: (rig: Rig) => Promise<void>): Promise<void> => {
      rig = await startRig();
      try {
        await body(rig);
      } finally {
        await stopRig(rig);
        rig = undefined;
      }
    };

    it('names a wrong field inside command.run params.params as params.params.<field>, like params.params itself', async () => {
      await withRig(async ({ conductor }) => {
        // The envelope check names the inner object 'params.params' (see the flood)...
        const outer = await conductor.call('command.run', {
          command_id: 'f1',
          name: 'test.echo',
          params: 'x',
        });
        assert.equal(isRecord(outer.error?.data) && outer.error.data.field, 'params.params');
        // ...so a field inside it must be 'params.params.value', not 'params.value'.
        const inner = await conductor.call('command.run', {
          command_id: 'f2',
          name: 'test.echo',
          params: { value: 1 },
        });
        assert.equal(inner.error?.code, -32602);
        assert.equal(isRecord(inner.error.data) && inner.error.data.field, 'params.params.value');
      });
    });

    it('refuses a request whose integer id is outside the safe range rather than answer it with id null', async () => {
      await withRig(async ({ conductor }) => {
        for (const [n, idText] of ['9007199254740993', '1e20', '1e300', '-9223372036854775808'].entries()) {
          const commandId = `unsafe-${n}`;
          const replies = await exchange(
            conductor,
            {
              data: `{"jsonrpc":"2.0","id":${idText},"method":"command.run","params":{"command_id":"${commandId}","name":"test.echo"}}`,
              label: `id ${idText}`,
            },
            `sentinel-unsafe-${n}`,
          );
          assert.equal(replies.length, 1);
          // JSON-RPC 2.0 section 5: id null only when the id could not be read; then it is an error.
          assert.equal(replies[0]?.id, null);
          assert.equal(isRecord(replies[0]?.error) && replies[0].error.code, -32600, preview(replies[0]));
          const status = await conductor.call('command.status', { command_id: commandId });
          assert.equal(status.error?.code, -32002, `${commandId} must not have run`);
        }
      });
    });

    it('answers command.run whose params hold a deeply nested extra value, and command.list keeps working', async () => {
      await withRig(async ({ conductor }) => {
        const frame = `{"jsonrpc":"2.0","id":"deep-extra","method":"command.run","params":{"command_id":"deep-extra","name":"test.steps","params":{"steps":1,"delay_ms":0,"x":${deepArray(DEEP)}}}}`;
        const replies = await exchange(
          conductor,
          { data: frame, label: 'deep extra param' },
          'sentinel-deep-extra',
        );
        assert.equal(replies.length, 1, 'command.run got an answer');
        const list = await conductor.call('command.list', {}, { timeoutMs: 2000 });
        assert.ok(Array.isArray(list.result));
      });
    });

    it('never sends a frame over 16 MiB: params over the limit are refused, a huge result is reported as such', async () => {
      await withRig(async ({ conductor, agent }) => {
        const refused = await conductor.runCommand('test.echo', { value: 'x'.repeat(9 * MIB) }, 'echo-9mib');
        assert.equal(refused.error?.code, -32602);
        assert.deepEqual(refused.error?.data, {
          field: 'params.params',
          expected: 'at most 256 KiB of JSON',
        });
        const run = await conductor.runCommand('test.big', { mib: 17 }, 'big-17');
        assert.equal(isRecord(run.result) && run.result.status, 'RUNNING');
        const record = await conductor.waitForResult('big-17', 10_000);
        assert.equal(record.status, 'FAILED');
        assert.equal(record.error?.code, 'RESULT_TOO_LARGE');
        await sleep(1000);
        assert.deepEqual(
          conductor.closes().map((close) => `${close.code} ${close.error ?? close.reason}`),
          [],
          'no connection dropped',
        );
        assert.equal(agent.channel.status().reconnects, 0);
      });
    });

    it('never sends a frame over 16 MiB: an error reply must not repeat a huge field name', async () => {
      await withRig(async ({ conductor }) => {
        conductor.sendRaw(
          rpc({
            id: 'huge-key',
            method: 'command.run',
            params: { command_id: 'huge-key', name: 'test.echo', params: { ['k'.repeat(9 * MIB)]: 1 } },
          }),
        );
        // Whichever comes first: the answer, or the conductor dropping the connection over it.
        await conductor.waitFor(
          () =>
            conductor.closes().length > 0 ||
            conductor.events.some((event) => isReply(event.frame) && event.frame.id === 'huge-key'),
          5000,
          'an answer to huge-key or a close',
        );
        assert.deepEqual(
          conductor.closes().map((close) => `${close.code} ${close.error ?? close.reason}`),
          [],
          'no connection dropped',
        );
        const reply = conductor.events.find((event) => isReply(event.frame) && event.frame.id === 'huge-key');
        assert.ok(reply && isReply(reply.frame) && isRecord(reply.frame.error));
        assert.equal(reply.frame.error.code, -32602);
      });
    });
  });
});
