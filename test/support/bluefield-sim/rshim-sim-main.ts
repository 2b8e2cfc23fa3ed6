/**
 * Entry of one simulated rshim daemon: `node rshim-sim-main.js <config.json>`. Requests arrive as
 * JSON lines on stdin and answers leave as JSON lines on stdout (nothing else is printed there);
 * diagnostics go to stderr. The daemon ends, removing its device files, when stdin closes (the
 * lab went away), on SIGTERM, or on a `shutdown` request.
 */
import { createInterface } from 'node:readline';
import { readSimConfig, RshimSim, type SimRequest, type SimResponse } from './rshim-sim.js';

const send = (message: SimResponse): void => {
  process.stdout.write(`${JSON.stringify(message)}\n`);
};

const main = async (): Promise<void> => {
  const file = process.argv[2];
  if (!file) throw new Error('usage: rshim-sim-main <config.json>');
  const sim = new RshimSim(await readSimConfig(file));
  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => (stopping ??= sim.stop().then(() => process.exit(0)));

  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  await sim.start();

  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (line.trim() === '') return;
    let request: SimRequest;
    try {
      request = JSON.parse(line) as SimRequest;
    } catch {
      process.stderr.write(`rshim-sim: unreadable request ${line}\n`);
      return;
    }
    sim.handle(request).then(
      (result) => {
        send({ id: request.id, ok: true, result });
        if (request.op === 'shutdown') void stop();
      },
      (error: unknown) => send({ id: request.id, ok: false, error: (error as Error).message }),
    );
  });
  lines.on('close', () => void stop());
  send({ event: 'ready', pid: process.pid });
};

main().catch((error: unknown) => {
  send({ event: 'fatal', error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
  process.exit(1);
});
