/**
 * The hash worker (see hash-worker.ts): hashes the batches it is sent, in order, and hands each
 * batch's buffer back so the main thread can refill it instead of allocating.
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
  } else {
    const reply: HashResponse = { type: 'digest', hex: hash.digest('hex') };
    port.postMessage(reply);
  }
});
