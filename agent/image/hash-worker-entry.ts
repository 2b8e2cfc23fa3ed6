/**
 * The hash worker (see hash-worker.ts): hashes what it is sent, in order. A batch's buffer goes
 * back so the main thread can refill it instead of allocating; a shared block is only read, and
 * a reply says the writer may refill it.
 */
import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import type { HashRequest, HashResponse, HashWorkerData } from './hash-worker.js';

const port = parentPort;
if (port === null) throw new Error('hash-worker-entry.js runs only as a worker thread');
const { algorithm } = workerData as HashWorkerData;
const hash = createHash(algorithm);

port.on('message', (message: HashRequest) => {
  if (message.type === 'batch') {
    hash.update(new Uint8Array(message.buffer, 0, message.length));
    const reply: HashResponse = { type: 'free', buffer: message.buffer };
    port.postMessage(reply, [message.buffer]);
  } else if (message.type === 'shared') {
    hash.update(new Uint8Array(message.buffer, message.offset, message.length));
    port.postMessage({ type: 'hashed' } satisfies HashResponse);
  } else {
    const reply: HashResponse = { type: 'digest', hex: hash.digest('hex') };
    port.postMessage(reply);
  }
});
