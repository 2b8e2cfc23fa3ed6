import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { GuestUrlProxy } from '../support/ironic/guest-proxy.js';
import { pickFreePort } from '../support/ironic/service.js';

/*
 * The proxy that lets Ironic on the host reach a VM's guest-side URLs: real servers on
 * 127.0.0.1, raw sockets for what a client library would not send, and python-requests (the
 * library Ironic checks URLs with) configured only by the proxy's environment.
 */

const run = promisify(execFile);
const PYTHON = '/usr/bin/python3';

const pythonRequestsMissing = async (): Promise<string | null> => {
  try {
    await run(PYTHON, ['-c', 'import requests']);
    return null;
  } catch {
    return `${PYTHON} cannot import requests (Debian: python3-requests, which python3-ironic brings)`;
  }
};

interface Seen {
  method: string;
  url: string;
  host: string;
  proxyHeader: boolean;
}

/** A service on 127.0.0.1 that says who asked it for what. */
const startService = async (seen: Seen[]): Promise<http.Server> => {
  const server = http.createServer((req, res) => {
    seen.push({
      method: req.method ?? '?',
      url: req.url ?? '',
      host: req.headers.host ?? '',
      proxyHeader: 'proxy-connection' in req.headers,
    });
    const body = `served ${req.url ?? ''}\n`;
    res.writeHead(req.url === '/missing' ? 404 : 200, {
      'Content-Type': 'text/plain',
      'Content-Length': Buffer.byteLength(body),
      'X-Service': 'guest-side',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
};

/**
 * One raw HTTP/1.1 exchange with the proxy: the status line and the body. The request asks for
 * `Connection: close`, and the socket stays open for writing, as a client's does.
 */
const rawRequest = (port: number, text: string): Promise<{ status: number; head: string; body: string }> =>
  new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(text));
    let answer = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (answer += chunk));
    socket.once('error', reject);
    socket.once('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0);
      const split = answer.indexOf('\r\n\r\n');
      resolve({ status, head: answer.slice(0, split), body: answer.slice(split + 4) });
    });
  });

describe('GuestUrlProxy: guest-side URLs for Ironic on the host', () => {
  const seen: Seen[] = [];
  let service: http.Server;
  let servicePort: number;
  let proxy: GuestUrlProxy;

  before(async () => {
    service = await startService(seen);
    servicePort = (service.address() as AddressInfo).port;
    proxy = await GuestUrlProxy.start();
    proxy.route('10.0.2.100', 80, servicePort);
  });

  after(async () => {
    await proxy?.stop();
    await new Promise<void>((resolve) => (service ? service.close(() => resolve()) : resolve()));
  });

  it('relays an absolute-form GET for a routed address to its service, status, headers and body', async () => {
    const answer = await rawRequest(
      proxy.port,
      'GET http://10.0.2.100/agent_images/n1?x=1 HTTP/1.1\r\nHost: 10.0.2.100\r\nProxy-Connection: keep-alive\r\nConnection: close\r\n\r\n',
    );
    assert.equal(answer.status, 200);
    assert.match(answer.head, /\r\nX-Service: guest-side\r\n/i);
    assert.equal(answer.body, 'served /agent_images/n1?x=1\n');
    const last = seen.at(-1);
    assert.deepEqual(last, {
      method: 'GET',
      url: '/agent_images/n1?x=1',
      host: '10.0.2.100',
      proxyHeader: false,
    });
    assert.deepEqual(proxy.requests.at(-1) && { ...proxy.requests.at(-1), at: 0 }, {
      method: 'GET',
      url: 'http://10.0.2.100/agent_images/n1?x=1',
      target: servicePort,
      status: 200,
      at: 0,
    });
  });

  it("passes the service's error status through", async () => {
    const answer = await rawRequest(
      proxy.port,
      'HEAD http://10.0.2.100:80/missing HTTP/1.1\r\nHost: 10.0.2.100\r\nConnection: close\r\n\r\n',
    );
    assert.equal(answer.status, 404);
    assert.equal(proxy.requests.at(-1)?.status, 404);
  });

  it('refuses an address it has no route for with 502, naming the routes', async () => {
    const answer = await rawRequest(
      proxy.port,
      'GET http://10.0.2.100:8080/x HTTP/1.1\r\nHost: 10.0.2.100:8080\r\nConnection: close\r\n\r\n',
    );
    assert.equal(answer.status, 502);
    assert.match(answer.body, /no route for 10\.0\.2\.100:8080: routed are 10\.0\.2\.100:80/);
    assert.deepEqual(
      { target: proxy.requests.at(-1)?.target, status: proxy.requests.at(-1)?.status },
      { target: null, status: 502 },
    );
  });

  it('refuses a request that is not for a proxy (origin form) with 400', async () => {
    const answer = await rawRequest(
      proxy.port,
      'GET /agent_images/n1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n',
    );
    assert.equal(answer.status, 400);
    assert.match(answer.body, /not an absolute URL/);
  });

  it('refuses CONNECT (https through the proxy) with 405', async () => {
    const answer = await rawRequest(
      proxy.port,
      'CONNECT 10.0.2.100:443 HTTP/1.1\r\nHost: 10.0.2.100:443\r\n\r\n',
    );
    assert.equal(answer.status, 405);
    assert.equal(proxy.requests.at(-1)?.method, 'CONNECT');
  });

  it('answers 502 when the routed service is not listening', async () => {
    const closedPort = await pickFreePort();
    proxy.route('10.0.2.100', 81, closedPort);
    const answer = await rawRequest(
      proxy.port,
      'GET http://10.0.2.100:81/x HTTP/1.1\r\nHost: 10.0.2.100:81\r\nConnection: close\r\n\r\n',
    );
    assert.equal(answer.status, 502);
    assert.match(answer.body, new RegExp(`127\\.0\\.0\\.1:${closedPort} failed: .*ECONNREFUSED`));
  });

  it('rejects a route that is not a port', () => {
    assert.throws(() => proxy.route('10.0.2.100', 0, servicePort), /Expected port to be a port number/);
    assert.throws(() => proxy.route('10.0.2.100', 80, 70_000), /Expected target to be a port number/);
  });

  it('python-requests with env() goes through it for guest URLs and straight to loopback', async (t) => {
    const missing = await pythonRequestsMissing();
    if (missing) {
      t.skip(missing);
      return;
    }
    const before = proxy.requests.length;
    const served = seen.length;
    // Ironic's own check of a URL: requests.head with the process environment.
    const script = [
      'import sys, requests',
      'for url in sys.argv[1:]:',
      '    print(requests.head(url, timeout=10).status_code)',
    ].join('\n');
    const { stdout } = await run(
      PYTHON,
      ['-c', script, 'http://10.0.2.100/agent_images/n2', `http://127.0.0.1:${servicePort}/direct`],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...proxy.env() }, timeout: 30_000 },
    );
    assert.deepEqual(stdout.trim().split('\n'), ['200', '200']);
    assert.deepEqual(
      proxy.requests.slice(before).map((request) => `${request.method} ${request.url} ${request.status}`),
      ['HEAD http://10.0.2.100/agent_images/n2 200'],
      'only the guest-side URL went through the proxy',
    );
    assert.deepEqual(
      seen.slice(served).map((request) => `${request.method} ${request.url} ${request.host}`),
      ['HEAD /agent_images/n2 10.0.2.100', `HEAD /direct 127.0.0.1:${servicePort}`],
    );
  });
});
