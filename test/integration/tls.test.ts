/**
 * How the agent authenticates a wss:// conductor (shared/protocol.md, "Connection"): by a CA
 * bundle, by an SPKI pin, or not at all only when asked to be insecure. Every certificate is
 * made here with the openssl CLI, so the test depends on no file that could expire.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChannelOptions } from '../../agent/channel/agent-channel.js';
import { AgentError } from '../../agent/util/errors.js';
import { startInProcessAgent, type InProcessAgent } from '../support/agent-harness.js';
import {
  createTestPki,
  pinOf,
  type KeyType,
  type ServerCredentials,
  type TestPki,
} from '../support/certs.js';
import { ReferenceConductor } from '../support/conductor.js';

/** Long enough for many reconnect attempts at the small backoff below, short enough to keep the suite quick. */
const REFUSAL_WINDOW_MS = 2000;

const BACKOFF = { backoffMinMs: 50, backoffMaxMs: 200 } as const;

const KEY_TYPES: readonly KeyType[] = ['ec', 'rsa'];

let pki: TestPki;

before(async () => {
  pki = await createTestPki();
});

after(async () => {
  await pki?.cleanup();
});

interface Setup {
  conductor: ReferenceConductor;
  /** WebSocket connections the conductor accepted: proves TLS and the upgrade got through. */
  connections: () => number;
}

/** One conductor per case, so that "no hello" is never confused with a hello of an earlier case. */
const withConductor = async (
  server: ServerCredentials | null,
  body: (setup: Setup) => Promise<void>,
): Promise<void> => {
  const conductor = await ReferenceConductor.start(
    server ? { tls: { key: server.key, cert: server.cert } } : {},
  );
  let connections = 0;
  conductor.on('connection', () => (connections += 1));
  try {
    await body({ conductor, connections: () => connections });
  } finally {
    await conductor.stop();
  }
};

const withAgent = async (
  url: string,
  overrides: Partial<ChannelOptions>,
  body: (agent: InProcessAgent) => Promise<void>,
): Promise<void> => {
  const agent = startInProcessAgent(url, { ...BACKOFF, ...overrides });
  try {
    await body(agent);
  } finally {
    await agent.stop();
  }
};

const waitUntil = async (what: string, predicate: () => boolean, timeoutMs = 5000): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
};

/** The agent connected, said hello, and the conductor accepted it. */
const assertAccepted = async (conductor: ReferenceConductor, agent: InProcessAgent): Promise<void> => {
  await conductor.waitForConnection(5000);
  const hellos = conductor.hellos();
  assert.equal(hellos.length, 1, 'exactly one hello');
  assert.equal(hellos[0]?.accepted, true);
  await waitUntil('the channel to be ready', () => agent.channel.state === 'ready');
  assert.equal(agent.channel.status().lastError, null);
};

/**
 * The agent keeps trying (backoff, for ever) but must never get as far as a hello. Watching a
 * whole window, not one attempt, catches an agent that gives up verifying on a retry.
 */
const assertNothingReachedTheConductor = async (
  t: TestContext,
  setup: Setup,
  agent: InProcessAgent,
): Promise<void> => {
  await sleep(REFUSAL_WINDOW_MS);
  t.diagnostic(`lastError: ${agent.channel.status().lastError}`);
  assert.deepEqual(setup.conductor.hellos(), [], 'no hello may reach the conductor');
  const received = setup.conductor.events.filter((event) => event.dir === 'in');
  assert.equal(received.length, 0, 'no frame at all may reach the conductor');
  const status = agent.channel.status();
  assert.notEqual(status.state, 'ready');
  assert.ok(status.reconnects >= 1, `the agent keeps retrying (reconnects: ${status.reconnects})`);
};

/** A well-formed pin of some other key than the server's. */
const wrongPin = async (): Promise<string> => pinOf(await readFile(pki.otherCaPath, 'utf8'));

/**
 * A refused pin: nothing may reach the conductor, although the TLS handshake and the upgrade went
 * through (the pin is checked on the upgrade), so the refusal is the pin's doing; lastError must
 * say so.
 */
const assertPinRefused = async (t: TestContext, setup: Setup, agent: InProcessAgent): Promise<void> => {
  await assertNothingReachedTheConductor(t, setup, agent);
  assert.ok(setup.connections() >= 1, 'the TLS handshake and the upgrade completed');
  await t.test('status().lastError names the pin mismatch', () => {
    assert.match(agent.channel.status().lastError ?? '(null)', /pin/i);
  });
};

describe('TLS to the conductor', () => {
  it('(a) accepts a conductor whose certificate chains to the configured CA', async () => {
    await withConductor(pki.servers.ec, async ({ conductor }) => {
      await withAgent(conductor.url, { insecure: false, caPath: pki.caPath, pin: null }, async (agent) => {
        await assertAccepted(conductor, agent);
      });
    });
  });

  it('(b) refuses a conductor whose certificate does not chain to the configured CA', async (t) => {
    await withConductor(pki.servers.ec, async (setup) => {
      await withAgent(
        setup.conductor.url,
        { insecure: false, caPath: pki.otherCaPath, pin: null },
        async (agent) => {
          await assertNothingReachedTheConductor(t, setup, agent);
          // Refused during the TLS handshake: the WebSocket upgrade never happened.
          assert.equal(setup.connections(), 0);
          assert.match(agent.channel.status().lastError ?? '(null)', /certificate/i);
        },
      );
    });
  });

  it('(b2) refuses a conductor signed by a private CA when neither a CA nor a pin is configured', async (t) => {
    // The system trust store knows nothing of the test CA: verification is the default, not opt-in.
    await withConductor(pki.servers.ec, async (setup) => {
      await withAgent(setup.conductor.url, { insecure: false, caPath: null, pin: null }, async (agent) => {
        await assertNothingReachedTheConductor(t, setup, agent);
        assert.equal(setup.connections(), 0);
        assert.match(agent.channel.status().lastError ?? '(null)', /certificate/i);
      });
    });
  });

  for (const keyType of KEY_TYPES) {
    it(`(c/${keyType}) accepts a conductor whose ${keyType.toUpperCase()} public key matches the pin, with no CA`, async () => {
      const server = pki.servers[keyType];
      await withConductor(server, async ({ conductor }) => {
        await withAgent(conductor.url, { insecure: false, caPath: null, pin: server.pin }, async (agent) => {
          await assertAccepted(conductor, agent);
        });
      });
    });

    it(`(d/${keyType}) refuses a conductor whose ${keyType.toUpperCase()} key does not match the pin, before any hello`, async (t) => {
      const pin = await wrongPin();
      await withConductor(pki.servers[keyType], async (setup) => {
        await withAgent(setup.conductor.url, { insecure: false, caPath: null, pin }, async (agent) => {
          await assertPinRefused(t, setup, agent);
        });
      });
    });

    it(`(e/${keyType}) refuses a conductor that chains to the CA but whose ${keyType.toUpperCase()} key does not match the pin`, async (t) => {
      // Both checks apply when both are configured: a valid chain does not excuse a wrong key.
      const pin = await wrongPin();
      await withConductor(pki.servers[keyType], async (setup) => {
        await withAgent(setup.conductor.url, { insecure: false, caPath: pki.caPath, pin }, async (agent) => {
          await assertPinRefused(t, setup, agent);
        });
      });
    });
  }

  it('(f) refuses to construct a channel for ws:// unless insecure is set', async () => {
    await withConductor(null, async (setup) => {
      assert.match(setup.conductor.url, /^ws:\/\//);
      assert.throws(
        () =>
          startInProcessAgent(setup.conductor.url, { ...BACKOFF, insecure: false, caPath: null, pin: null }),
        (error: unknown) => {
          assert.ok(AgentError.is(error), `an AgentError, got ${String(error)}`);
          assert.equal(error.code, 'INVALID_CONFIG');
          return true;
        },
      );
      // The constructor threw, so nothing may be dialling out behind it.
      await sleep(200);
      assert.equal(setup.connections(), 0);
    });
  });

  it('(g) accepts a self-signed conductor over wss:// when insecure is set and no CA is given', async () => {
    await withConductor(pki.selfSigned, async ({ conductor }) => {
      await withAgent(conductor.url, { insecure: true, caPath: null, pin: null }, async (agent) => {
        await assertAccepted(conductor, agent);
      });
    });
  });
});
