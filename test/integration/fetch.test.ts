/**
 * Image download against a real HTTP server on 127.0.0.1 that misbehaves on purpose (issue 4,
 * "Getting the bytes"): each fault either ends byte-identical (checked by sha256) or fails with
 * the right code, never as a short success. The request log shows whether a resume (Range +
 * If-Range) or a plain retry was used.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FetchOptions, FetchStats, ImageStream, OutputSink } from '../../agent/image/contracts.js';
import { fetchText, openImageStream } from '../../agent/image/fetch.js';
import { silentLogger } from '../../agent/util/logger.js';
import { createTestPki, type TestPki } from '../support/certs.js';
import { FaultyHttpServer, type FaultPlan, type FaultyServerOptions } from '../support/faulty-http-server.js';
import { rejectsWithCode } from '../support/agent-errors.js';

const SIZE = 3 * 1024 * 1024 + 123;
const DATA = randomBytes(SIZE);
const SHA256 = createHash('sha256').update(DATA).digest('hex');
/** Small delays keep retries quick; the stall timeout is short but far above loopback jitter. */
const STALL_MS = 400;
/** Time allowed beyond a deadline for timers, scheduling and a loaded 2-core machine. */
const SLACK_MS = 600;

const options = (url: string, extra: Partial<FetchOptions> = {}): FetchOptions => ({
  url,
  signal: AbortSignal.timeout(20_000),
  ca: null,
  insecure: false,
  retries: 3,
  retryBaseMs: 5,
  retryMaxMs: 50,
  stallTimeoutMs: STALL_MS,
  logger: silentLogger(),
  ...extra,
});

interface Outcome {
  sha256: string;
  bytes: number;
  stats: FetchStats;
  totalBytes: number | null;
}

const drain = async (stream: ImageStream): Promise<Outcome> => {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of stream.body) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { sha256: hash.digest('hex'), bytes, stats: stream.stats(), totalBytes: stream.totalBytes };
};

/** One server per case, so the request log holds that case's requests only. */
const withServer = async (
  config: { faults?: FaultPlan } & Omit<FaultyServerOptions, 'faults'>,
  body: (server: FaultyHttpServer) => Promise<void>,
): Promise<void> => {
  const server = await FaultyHttpServer.start({ data: DATA, ...config });
  try {
    await body(server);
  } finally {
    await server.stop();
  }
};

const download = async (url: string, extra: Partial<FetchOptions> = {}): Promise<Outcome> =>
  drain(await openImageStream(options(url, extra)));

const assertIdentical = (outcome: Outcome): void => {
  assert.equal(outcome.bytes, SIZE);
  assert.equal(outcome.sha256, SHA256);
};

describe('image download: the happy path', () => {
  it('delivers the body byte-identical in one request without Range', async () => {
    await withServer({}, async (server) => {
      const outcome = await download(server.url());
      assertIdentical(outcome);
      assert.equal(outcome.totalBytes, SIZE);
      assert.deepEqual(outcome.stats, { bytes: SIZE, resumes: 0, retries: 0 });
      assert.equal(server.requests.length, 1);
      assert.equal(server.requests[0]?.range, null);
      assert.equal(server.requests[0]?.headers['accept-encoding'], 'identity');
    });
  });

  it('accepts a chunked body without a length', async () => {
    await withServer({ faults: () => ({ kind: 'chunked' }) }, async (server) => {
      const outcome = await download(server.url());
      assertIdentical(outcome);
      assert.equal(outcome.totalBytes, null);
    });
  });

  it('follows a redirect', async () => {
    await withServer(
      { faults: { 1: { kind: 'status', status: 302, headers: { Location: '/moved/image.img' } } } },
      async (server) => {
        assertIdentical(await download(server.url()));
        assert.deepEqual(
          server.requests.map((request) => request.path),
          ['/image.img', '/moved/image.img'],
        );
      },
    );
  });

  it('reads a slow but steady body without calling it a stall', async () => {
    const small = DATA.subarray(0, 96 * 1024);
    const server = await FaultyHttpServer.start({
      data: small,
      faults: { 1: { kind: 'slow', bytesPerSecond: 256 * 1024 } },
    });
    try {
      const outcome = await download(server.url(), { retries: 0 });
      assert.equal(outcome.sha256, createHash('sha256').update(small).digest('hex'));
      assert.equal(server.requests.length, 1);
    } finally {
      await server.stop();
    }
  });
});

describe('image download: borrowed chunks', () => {
  const LARGE = randomBytes(13 * 1024 * 1024 + 777);
  const LARGE_SHA256 = createHash('sha256').update(LARGE).digest('hex');

  /** Hashes each chunk only after other work ran: a view must hold until the next pull. */
  const slowDrain = async (stream: ImageStream): Promise<string> => {
    const hash = createHash('sha256');
    for await (const chunk of stream.body) {
      await new Promise((resolve) => setImmediate(resolve));
      hash.update(chunk);
    }
    return hash.digest('hex');
  };

  it('hand out views that stay unchanged until the next pull, through the whole ring', async () => {
    await withServer({ data: LARGE }, async (server) => {
      const stream = await openImageStream(options(server.url(), { borrowChunks: true }));
      assert.equal(await slowDrain(stream), LARGE_SHA256);
    });
  });

  it('stay unchanged across a resume', async () => {
    await withServer(
      { data: LARGE, faults: { 1: { kind: 'truncate', afterBytes: 5_000_001 } } },
      async (server) => {
        const stream = await openImageStream(options(server.url(), { borrowChunks: true }));
        assert.equal(await slowDrain(stream), LARGE_SHA256);
        assert.equal(stream.stats().resumes, 1);
      },
    );
  });

  it('stay unchanged in a chunked body', async () => {
    await withServer({ data: LARGE, faults: () => ({ kind: 'chunked' }) }, async (server) => {
      const stream = await openImageStream(options(server.url(), { borrowChunks: true }));
      assert.equal(await slowDrain(stream), LARGE_SHA256);
    });
  });
});

/**
 * A sink as the block writer is one: its own space to be read into, hashing what it is given, and
 * (with `waits`) a pending promise now and then. It fails the test's download if it is called
 * again while it still makes the caller wait.
 */
class HashingSink implements OutputSink {
  readonly hash = createHash('sha256');
  bytes = 0;
  commits = 0;
  writes = 0;
  private busy = false;
  private readonly space = Buffer.alloc(300_000);

  constructor(
    private readonly waits = false,
    private readonly failAfter = Infinity,
  ) {}

  reserve(): Buffer | null {
    return this.busy ? null : this.space;
  }

  commit(bytes: number): Promise<void> | undefined {
    this.commits += 1;
    return this.take(this.space.subarray(0, bytes));
  }

  write(piece: Buffer): Promise<void> | undefined {
    this.writes += 1;
    return this.take(piece);
  }

  private take(piece: Buffer): Promise<void> | undefined {
    if (this.busy) throw new Error('the sink was called while it still made its caller wait');
    if (this.bytes + piece.length > this.failAfter) throw new Error('the disk is full');
    this.hash.update(piece);
    this.bytes += piece.length;
    if (!this.waits || (this.commits + this.writes) % 3 !== 0) return undefined;
    this.busy = true;
    return new Promise<void>((resolve) =>
      setTimeout(() => {
        this.busy = false;
        resolve();
      }, 1),
    );
  }
}

describe('image download: piped into a sink', () => {
  const piped = async (
    url: string,
    sink: HashingSink,
    extra: Partial<FetchOptions> = {},
  ): Promise<{ stream: ImageStream; counted: number }> => {
    const stream = await openImageStream(options(url, { borrowChunks: true, ...extra }));
    let counted = 0;
    await stream.pipeTo(sink, (bytes) => (counted += bytes));
    return { stream, counted };
  };

  it('reads a body with a length straight into the sink, across a resume', async () => {
    await withServer({ faults: { 1: { kind: 'truncate', afterBytes: 1_000_001 } } }, async (server) => {
      const sink = new HashingSink();
      const { stream, counted } = await piped(server.url(), sink);
      assert.equal(sink.hash.digest('hex'), SHA256);
      assert.equal(counted, SIZE);
      assert.equal(stream.stats().resumes, 1);
      assert.ok(sink.commits > 0, 'nothing was read straight into the sink');
    });
  });

  it('keeps the order when the sink makes it wait', async () => {
    await withServer({}, async (server) => {
      const sink = new HashingSink(true);
      await piped(server.url(), sink);
      assert.equal(sink.hash.digest('hex'), SHA256);
      assert.equal(sink.bytes, SIZE);
    });
  });

  it('passes a chunked body on through write()', async () => {
    await withServer({ faults: () => ({ kind: 'chunked' }) }, async (server) => {
      const sink = new HashingSink(true);
      await piped(server.url(), sink);
      assert.equal(sink.hash.digest('hex'), SHA256);
      assert.equal(sink.commits, 0);
    });
  });

  it('takes what the body iterator has not yielded yet', async () => {
    await withServer({}, async (server) => {
      const stream = await openImageStream(options(server.url(), { borrowChunks: true }));
      const sink = new HashingSink();
      const iterator = stream.body[Symbol.asyncIterator]();
      const first = await iterator.next();
      assert.equal(first.done, false);
      sink.write(Buffer.from(first.value as Buffer));
      await stream.pipeTo(sink, () => undefined);
      await iterator.return?.();
      assert.equal(sink.hash.digest('hex'), SHA256);
    });
  });

  it("fails with the sink's own error, without a retry", async () => {
    await withServer({}, async (server) => {
      await assert.rejects(piped(server.url(), new HashingSink(false, 2_000_000)), /the disk is full/);
      assert.equal(server.requests.length, 1);
      for (let wait = 0; wait < 50 && server.connections > 0; wait += 1) await sleep(10);
      assert.equal(server.connections, 0);
    });
  });

  it('fails DOWNLOAD_TOO_LONG when the body is longer than its Content-Length', async () => {
    await withServer(
      { faults: () => ({ kind: 'wrong-length', declaredDelta: -100_000 }) },
      async (server) => {
        const sink = new HashingSink();
        await rejectsWithCode(piped(server.url(), sink), 'DOWNLOAD_TOO_LONG');
        assert.ok(sink.bytes <= SIZE - 100_000, `the sink got ${sink.bytes} bytes`);
      },
    );
  });

  it('fails DOWNLOAD_TRUNCATED when the rest never comes', async () => {
    await withServer(
      { faults: (n) => ({ kind: 'truncate', afterBytes: n === 1 ? 1_000_000 : 0 }) },
      async (server) => {
        const sink = new HashingSink();
        await rejectsWithCode(piped(server.url(), sink, { retries: 1 }), 'DOWNLOAD_TRUNCATED');
        assert.equal(sink.bytes, 1_000_000);
      },
    );
  });
});

/**
 * A server that answers every request with exactly the bytes given, in the pieces given (with a
 * turn of the event loop between them), then closes: for the framing node's server will not send.
 */
const withRawServer = async (
  pieces: Array<string | Buffer>,
  body: (url: string) => Promise<void>,
): Promise<{ requests: number }> => {
  const sockets = new Set<Socket>();
  const seen = { requests: 0 };
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let head = '';
    let answered = false;
    socket.on('data', (data: Buffer) => {
      head += data.toString('latin1');
      if (answered || !head.includes('\r\n\r\n')) return;
      answered = true;
      seen.requests += 1;
      void (async () => {
        for (const piece of pieces) {
          if (socket.destroyed) return;
          socket.write(piece);
          await new Promise((resolve) => setImmediate(resolve));
        }
        socket.end();
      })();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    await body(`http://127.0.0.1:${(server.address() as AddressInfo).port}/image.img`);
  } finally {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
  return seen;
};

const chunkedBody = (data: Buffer, size: number, extension = ''): Buffer[] => {
  const parts: Buffer[] = [];
  for (let at = 0; at < data.length; at += size) {
    const piece = data.subarray(at, at + size);
    parts.push(Buffer.from(`${piece.length.toString(16)}${extension}\r\n`), piece, Buffer.from('\r\n'));
  }
  return parts;
};

describe('image download: HTTP/1.1 framing', () => {
  const BODY = DATA.subarray(0, 300_000);
  const BODY_SHA256 = createHash('sha256').update(BODY).digest('hex');

  it('skips an interim 100 Continue and reads a head that arrives a byte at a time', async () => {
    const head =
      'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 300000\r\nETag: "x"\r\n\r\n';
    await withRawServer([...head.split(''), BODY], async (url) => {
      const outcome = await download(url);
      assert.equal(outcome.sha256, BODY_SHA256);
      assert.equal(outcome.totalBytes, BODY.length);
    });
  });

  it('reads chunk extensions and trailers, and a size line split across reads', async () => {
    const parts = chunkedBody(BODY, 70_001, ';name=value');
    await withRawServer(
      [
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n',
        ...parts.flatMap((part): Array<string | Buffer> =>
          part.length < 40 ? part.toString('latin1').split('') : [part],
        ),
        '0\r\nX-Trailer: yes\r\n\r\n',
      ],
      async (url) => {
        const outcome = await download(url, { borrowChunks: true });
        assert.equal(outcome.sha256, BODY_SHA256);
        assert.equal(outcome.totalBytes, null);
      },
    );
  });

  it('reads a body delimited by the close (no length, not chunked)', async () => {
    await withRawServer(['HTTP/1.1 200 OK\r\n\r\n', BODY], async (url) => {
      const outcome = await download(url);
      assert.equal(outcome.sha256, BODY_SHA256);
      assert.equal(outcome.totalBytes, null);
    });
  });

  it('fails DOWNLOAD_TOO_LONG when bytes follow the last chunk', async () => {
    await withRawServer(
      [
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n',
        ...chunkedBody(BODY, 100_000),
        '0\r\n\r\nextra',
      ],
      async (url) => {
        await rejectsWithCode(download(url), 'DOWNLOAD_TOO_LONG');
      },
    );
  });

  for (const [name, head] of [
    [
      'Transfer-Encoding together with Content-Length',
      'HTTP/1.1 200 OK\r\nContent-Length: 300000\r\nTransfer-Encoding: chunked\r\n\r\n',
    ],
    [
      'two different Content-Length values',
      'HTTP/1.1 200 OK\r\nContent-Length: 300000\r\nContent-Length: 300001\r\n\r\n',
    ],
    ['a status line that is not HTTP/1.x', 'HTTP/2 200\r\nContent-Length: 300000\r\n\r\n'],
    ['a head over 64 KiB', `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(70_000)}\r\n\r\n`],
  ] as const) {
    it(`refuses ${name} as a malformed response, retried and then failed`, async () => {
      const seen = await withRawServer([head, BODY], async (url) => {
        const error = await rejectsWithCode(download(url, { retries: 1 }), 'DOWNLOAD_FAILED');
        assert.match(error.message, /malformed response/);
      });
      assert.equal(seen.requests, 2);
    });
  }
});

describe('image download: drops are resumed with Range + If-Range', () => {
  it('resumes a truncated body at the byte it stopped, guarded by the ETag', async () => {
    await withServer({ faults: { 1: { kind: 'truncate', afterBytes: 1_000_000 } } }, async (server) => {
      const outcome = await download(server.url());
      assertIdentical(outcome);
      assert.equal(outcome.stats.resumes, 1);
      const [, resumed] = server.requests;
      assert.equal(resumed?.range, 'bytes=1000000-');
      assert.equal(resumed?.ifRange, server.etag);
      assert.equal(resumed?.status, 206);
    });
  });

  it('falls back to Last-Modified as the validator', async () => {
    await withServer(
      { etag: false, faults: { 1: { kind: 'truncate', afterBytes: 700_000 } } },
      async (server) => {
        assertIdentical(await download(server.url()));
        assert.equal(server.requests[1]?.ifRange, server.lastModified);
      },
    );
  });

  it('resumes after a connection reset mid-body', async () => {
    await withServer({ faults: { 1: { kind: 'reset', afterBytes: 1_500_000 } } }, async (server) => {
      const outcome = await download(server.url());
      assertIdentical(outcome);
      assert.equal(outcome.stats.resumes, 1);
      // A reset discards what was still in flight, so the resume starts at or before the cut.
      const range = /^bytes=(\d+)-$/.exec(server.requests[1]?.range ?? '');
      assert.ok(
        range && Number(range[1]) > 0 && Number(range[1]) <= 1_500_000,
        server.requests[1]?.range ?? '',
      );
    });
  });

  it('keeps resuming while each attempt makes progress', async () => {
    await withServer({ faults: () => ({ kind: 'truncate', afterBytes: 1_100_000 }) }, async (server) => {
      const outcome = await download(server.url(), { retries: 1 });
      assertIdentical(outcome);
      assert.equal(outcome.stats.resumes, Math.ceil(SIZE / 1_100_000) - 1);
      assert.ok(server.requests.slice(1).every((request) => request.status === 206));
    });
  });

  it('resumes a chunked body when the server gave a validator', async () => {
    await withServer(
      { faults: { 1: [{ kind: 'chunked' }, { kind: 'truncate', afterBytes: 1_000_000 }] } },
      async (server) => {
        const outcome = await download(server.url());
        assertIdentical(outcome);
        assert.equal(outcome.stats.resumes, 1);
      },
    );
  });

  it('detects a stall mid-body within the stall timeout, then resumes', async () => {
    await withServer({ faults: { 1: { kind: 'stall', afterBytes: 800_000 } } }, async (server) => {
      const started = performance.now();
      const outcome = await download(server.url());
      const elapsed = performance.now() - started;
      assertIdentical(outcome);
      assert.equal(outcome.stats.resumes, 1);
      assert.equal(server.requests[1]?.range, 'bytes=800000-');
      assert.ok(elapsed >= STALL_MS && elapsed < STALL_MS + SLACK_MS, `took ${Math.round(elapsed)} ms`);
    });
  });
});

describe('image download: a short read is never a success', () => {
  it('fails DOWNLOAD_TRUNCATED when the rest never comes, after the retries', async () => {
    await withServer(
      { faults: (n) => ({ kind: 'truncate', afterBytes: n === 1 ? 1_000_000 : 0 }) },
      async (server) => {
        const stream = await openImageStream(options(server.url(), { retries: 2 }));
        const error = await rejectsWithCode(drain(stream), 'DOWNLOAD_TRUNCATED');
        assert.equal(stream.stats().bytes, 1_000_000);
        assert.equal(error.details.total, SIZE);
        // The first request and 2 retries for the rest, both of them Range requests.
        assert.equal(server.requests.length, 3);
        assert.ok(server.requests.slice(1).every((request) => request.range === 'bytes=1000000-'));
      },
    );
  });

  it('fails DOWNLOAD_TRUNCATED when the body is shorter than its Content-Length', async () => {
    await withServer({ faults: () => ({ kind: 'wrong-length', declaredDelta: 1000 }) }, async (server) => {
      const stream = await openImageStream(options(server.url()));
      assert.equal(stream.totalBytes, SIZE + 1000);
      const error = await rejectsWithCode(drain(stream), 'DOWNLOAD_TRUNCATED');
      assert.match(error.message, /declared/);
    });
  });

  it('fails DOWNLOAD_TOO_LONG when the body is longer than its Content-Length', async () => {
    await withServer(
      { faults: () => ({ kind: 'wrong-length', declaredDelta: -100_000 }) },
      async (server) => {
        const stream = await openImageStream(options(server.url()));
        await rejectsWithCode(drain(stream), 'DOWNLOAD_TOO_LONG');
        assert.equal(server.requests.length, 1);
      },
    );
  });

  it('gives up on a server that sends a trickle and stalls, over and over', async () => {
    await withServer({ faults: () => ({ kind: 'stall', afterBytes: 1000 }) }, async (server) => {
      const stream = await openImageStream(options(server.url(), { retries: 2, stallTimeoutMs: 100 }));
      await rejectsWithCode(drain(stream), 'DOWNLOAD_TRUNCATED');
      assert.equal(stream.stats().bytes, 3000);
      assert.equal(server.requests.length, 3);
    });
  });

  it('fails DOWNLOAD_TRUNCATED after a stall when no retries are left', async () => {
    await withServer({ faults: () => ({ kind: 'stall', afterBytes: 500_000 }) }, async (server) => {
      const started = performance.now();
      const stream = await openImageStream(options(server.url(), { retries: 0 }));
      await rejectsWithCode(drain(stream), 'DOWNLOAD_TRUNCATED');
      const elapsed = performance.now() - started;
      assert.ok(elapsed >= STALL_MS && elapsed < STALL_MS + SLACK_MS, `took ${Math.round(elapsed)} ms`);
    });
  });
});

describe('image download: restart from zero when a resume is unsafe', () => {
  it('requires a restart when the server ignores Range and sends 200', async () => {
    await withServer(
      { faults: { 1: { kind: 'truncate', afterBytes: 1_000_000 }, 2: { kind: 'ignore-range' } } },
      async (server) => {
        const stream = await openImageStream(options(server.url()));
        await rejectsWithCode(drain(stream), 'DOWNLOAD_RESTART_REQUIRED');
        assert.equal(server.requests[1]?.range, 'bytes=1000000-');
        assert.equal(server.requests[1]?.status, 200);
        assert.equal(server.requests.length, 2);
      },
    );
  });

  it('requires a restart when the ETag changed between requests', async () => {
    await withServer(
      { faults: { 1: { kind: 'truncate', afterBytes: 1_000_000 }, 2: { kind: 'change-etag' } } },
      async (server) => {
        const stream = await openImageStream(options(server.url()));
        const firstEtag = '"bma-' + SIZE.toString(16) + '-v0"';
        await rejectsWithCode(drain(stream), 'DOWNLOAD_RESTART_REQUIRED');
        assert.equal(server.requests[1]?.ifRange, firstEtag);
        assert.notEqual(server.etag, firstEtag);
        assert.equal(server.requests[1]?.status, 200);
      },
    );
  });

  it('requires a restart without asking when there is no validator', async () => {
    await withServer(
      { etag: false, lastModified: false, faults: { 1: { kind: 'truncate', afterBytes: 1_000_000 } } },
      async (server) => {
        const stream = await openImageStream(options(server.url()));
        const error = await rejectsWithCode(drain(stream), 'DOWNLOAD_RESTART_REQUIRED');
        assert.match(error.message, /no ETag or Last-Modified/);
        assert.equal(server.requests.length, 1);
      },
    );
  });

  it('requires a restart when a chunked body without validator drops', async () => {
    await withServer(
      {
        etag: false,
        lastModified: false,
        faults: { 1: [{ kind: 'chunked' }, { kind: 'truncate', afterBytes: 1_000_000 }] },
      },
      async (server) => {
        const stream = await openImageStream(options(server.url()));
        await rejectsWithCode(drain(stream), 'DOWNLOAD_RESTART_REQUIRED');
        assert.equal(stream.stats().bytes, 1_000_000);
      },
    );
  });

  it('refuses a 206 whose Content-Range does not start at the byte asked for', async () => {
    await withServer(
      { faults: { 1: { kind: 'truncate', afterBytes: 1_000_000 }, 2: { kind: 'shift-range', by: 10 } } },
      async (server) => {
        const stream = await openImageStream(options(server.url()));
        const error = await rejectsWithCode(drain(stream), 'DOWNLOAD_RESTART_REQUIRED');
        assert.match(error.message, /starting at 1000010, not 1000000/);
      },
    );
  });
});

describe('image download: statuses and connections', () => {
  it('fails a 404 at once with the status and a body excerpt, without retrying', async () => {
    await withServer(
      { faults: () => ({ kind: 'status', status: 404, body: 'no such image here\n' }) },
      async (server) => {
        const error = await rejectsWithCode(openImageStream(options(server.url())), 'DOWNLOAD_FAILED');
        assert.equal(error.details.status, 404);
        assert.equal(error.details.excerpt, 'no such image here');
        assert.match(error.message, /404.*no such image here/);
        assert.equal(server.requests.length, 1);
      },
    );
  });

  it('retries a 500 and then succeeds', async () => {
    await withServer({ faults: { 1: { kind: 'status', status: 500 } } }, async (server) => {
      const outcome = await download(server.url());
      assertIdentical(outcome);
      assert.equal(outcome.stats.retries, 1);
      assert.deepEqual(
        server.requests.map((request) => request.status),
        [500, 200],
      );
    });
  });

  it('fails DOWNLOAD_FAILED after the retries when every answer is 503', async () => {
    await withServer({ faults: () => ({ kind: 'status', status: 503 }) }, async (server) => {
      const error = await rejectsWithCode(
        openImageStream(options(server.url(), { retries: 2 })),
        'DOWNLOAD_FAILED',
      );
      assert.equal(server.requests.length, 3);
      assert.equal(error.details.status, 503);
    });
  });

  it("honours a 503's Retry-After", async () => {
    await withServer({ faults: { 1: { kind: 'status', status: 503, retryAfter: '1' } } }, async (server) => {
      const started = performance.now();
      // Jitter alone would retry within 1 ms here.
      assertIdentical(await download(server.url(), { retryBaseMs: 1, retryMaxMs: 5000 }));
      const elapsed = performance.now() - started;
      assert.ok(elapsed >= 950 && elapsed < 1000 + SLACK_MS, `took ${Math.round(elapsed)} ms`);
    });
  });

  it('caps a long Retry-After at retryMaxMs', async () => {
    await withServer(
      { faults: { 1: { kind: 'status', status: 503, retryAfter: '3600' } } },
      async (server) => {
        const started = performance.now();
        assertIdentical(await download(server.url(), { retryMaxMs: 100 }));
        assert.ok(performance.now() - started < 100 + SLACK_MS);
        assert.equal(server.requests.length, 2);
      },
    );
  });

  it('retries a reset before the headers without Range', async () => {
    await withServer({ faults: { 1: { kind: 'reset' } } }, async (server) => {
      const outcome = await download(server.url());
      assertIdentical(outcome);
      assert.deepEqual(outcome.stats, { bytes: SIZE, resumes: 0, retries: 1 });
      assert.equal(server.requests[1]?.range, null);
    });
  });

  it('detects a server that never answers within the stall timeout', async () => {
    await withServer({ faults: () => ({ kind: 'stall-headers' }) }, async (server) => {
      const started = performance.now();
      const error = await rejectsWithCode(
        openImageStream(options(server.url(), { retries: 0 })),
        'DOWNLOAD_FAILED',
      );
      const elapsed = performance.now() - started;
      assert.match(error.message, /no byte of the response headers/);
      assert.ok(elapsed >= STALL_MS && elapsed < STALL_MS + SLACK_MS, `took ${Math.round(elapsed)} ms`);
    });
  });

  it('fails DOWNLOAD_FAILED after the retries when nothing listens', async () => {
    const server = await FaultyHttpServer.start({ data: DATA });
    const url = server.url();
    await server.stop();
    const error = await rejectsWithCode(openImageStream(options(url, { retries: 2 })), 'DOWNLOAD_FAILED');
    assert.match(error.message, /ECONNREFUSED/);
    assert.equal(error.details.attempts, 3);
  });

  it('refuses URLs that are not http or https', async () => {
    await rejectsWithCode(openImageStream(options('ftp://127.0.0.1/image.img')), 'INVALID_URL');
    await rejectsWithCode(openImageStream(options('not a url')), 'INVALID_URL');
  });
});

describe('image download: cancellation', () => {
  it('stops mid-body promptly and closes the connection', async () => {
    await withServer({ faults: { 1: { kind: 'slow', bytesPerSecond: 512 * 1024 } } }, async (server) => {
      const controller = new AbortController();
      const stream = await openImageStream(options(server.url(), { signal: controller.signal }));
      let cancelledAt = 0;
      const consumed = (async () => {
        for await (const chunk of stream.body) {
          if (chunk.length > 0 && cancelledAt === 0) {
            cancelledAt = performance.now();
            controller.abort();
          }
        }
      })();
      const error = await rejectsWithCode(consumed, 'CANCELLED');
      assert.ok(performance.now() - cancelledAt < 200, 'cancelled promptly');
      assert.ok(error);
      for (let wait = 0; wait < 50 && server.connections > 0; wait += 1) await sleep(10);
      assert.equal(server.connections, 0);
    });
  });

  it('stops while waiting to retry', async () => {
    await withServer(
      { faults: () => ({ kind: 'status', status: 503, retryAfter: '30' }) },
      async (server) => {
        const controller = new AbortController();
        setTimeout(() => controller.abort(), 100);
        const started = performance.now();
        await rejectsWithCode(
          openImageStream(options(server.url(), { signal: controller.signal, retryMaxMs: 60_000 })),
          'CANCELLED',
        );
        assert.ok(performance.now() - started < 100 + SLACK_MS);
        assert.equal(server.requests.length, 1);
      },
    );
  });

  it('releases the connection when the consumer stops reading early', async () => {
    await withServer({}, async (server) => {
      const stream = await openImageStream(options(server.url()));
      for await (const chunk of stream.body) if (chunk.length > 0) break;
      for (let wait = 0; wait < 50 && server.connections > 0; wait += 1) await sleep(10);
      assert.equal(server.connections, 0);
    });
  });
});

describe('image download over https', () => {
  let pki: TestPki;
  let ca: Buffer;

  before(async () => {
    pki = await createTestPki();
    ca = await readFile(pki.caPath);
  });

  after(async () => {
    await pki?.cleanup();
  });

  it('verifies the server with the given CA bundle', async () => {
    await withServer({ tls: pki.servers.ec }, async (server) => {
      assertIdentical(await download(server.url(), { ca }));
    });
  });

  it('refuses an unverifiable certificate at once, and accepts it when insecure', async () => {
    await withServer({ tls: pki.selfSigned }, async (server) => {
      const started = performance.now();
      const error = await rejectsWithCode(
        openImageStream(options(server.url(), { ca, retryBaseMs: 1000, retryMaxMs: 1000 })),
        'DOWNLOAD_FAILED',
      );
      assert.match(error.message, /TLS/);
      assert.equal(server.acceptedConnections, 1, 'not retried');
      assert.ok(performance.now() - started < 1000);
      assertIdentical(await download(server.url(), { insecure: true }));
    });
  });
});

describe('fetchText', () => {
  const checksums = `${SHA256}  image.img\n`;

  it('reads a small document', async () => {
    await withServer({ documents: { '/SHA256SUMS': checksums } }, async (server) => {
      const { url: _url, ...rest } = options(server.url('/SHA256SUMS'));
      assert.equal(await fetchText(server.url('/SHA256SUMS'), rest), checksums);
    });
  });

  it('fetches the document again when a resume is impossible', async () => {
    const text = Buffer.from('x'.repeat(200_000));
    const server = await FaultyHttpServer.start({
      data: text,
      etag: false,
      lastModified: false,
      faults: { 1: { kind: 'truncate', afterBytes: 100_000 } },
    });
    try {
      const { url: _url, ...rest } = options(server.url());
      assert.equal(await fetchText(server.url(), rest), text.toString());
      assert.equal(server.requests.length, 2);
    } finally {
      await server.stop();
    }
  });

  it('refuses a document over its size limit', async () => {
    await withServer({}, async (server) => {
      const { url: _url, ...rest } = options(server.url());
      const error = await rejectsWithCode(
        fetchText(server.url(), { ...rest, maxBytes: 1024 * 1024 }),
        'DOWNLOAD_FAILED',
      );
      assert.match(error.message, /limit/);
    });
  });
});
