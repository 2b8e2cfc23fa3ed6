/**
 * The reference conductor in a process of its own, so that a benchmark can crash it (SIGKILL) and
 * start another on the same port and state file, the way a real conductor restarts.
 *
 *   node dist/test/support/conductor-cli.js --port 9000 --state /tmp/state.json \
 *     [--heartbeat-interval-s 30] [--hellos FILE]
 *
 * Prints `listening <url>` on stderr once it accepts connections, then one JSON line
 * `{"at": <epoch ms>, "node_uuid": "..."}` per accepted hello, on stdout or appended to FILE.
 * SIGTERM or SIGINT stops it cleanly.
 */
import { appendFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ReferenceConductor } from './conductor.js';

interface CliOptions {
  port: number;
  statePath: string;
  heartbeatIntervalS: number;
  hellosPath: string | null;
}

const readOptions = (): CliOptions => {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      state: { type: 'string' },
      'heartbeat-interval-s': { type: 'string', default: '30' },
      hellos: { type: 'string' },
    },
    strict: true,
  });
  const port = Number(values.port);
  const heartbeatIntervalS = Number(values['heartbeat-interval-s']);
  if (!Number.isInteger(port) || port <= 0 || port > 65_535) throw new Error('--port must be a TCP port');
  if (!values.state) throw new Error('--state is required: hellos after a restart need the issued tokens');
  if (!(heartbeatIntervalS > 0)) throw new Error('--heartbeat-interval-s must be a positive number');
  return { port, statePath: values.state, heartbeatIntervalS, hellosPath: values.hellos ?? null };
};

/** One line per hello, written synchronously so that a SIGKILL loses at most the line in progress. */
const helloWriter = (hellosPath: string | null): ((line: string) => void) =>
  hellosPath === null
    ? (line) => process.stdout.write(`${line}\n`)
    : (line) => appendFileSync(hellosPath, `${line}\n`);

const main = async (): Promise<void> => {
  const options = readOptions();
  const conductor = await ReferenceConductor.start({
    port: options.port,
    statePath: options.statePath,
    heartbeatIntervalS: options.heartbeatIntervalS,
  });
  const write = helloWriter(options.hellosPath);
  conductor.on('hello', (hello) => {
    if (hello.accepted) write(JSON.stringify({ at: hello.at, node_uuid: hello.nodeUuid }));
  });
  const stop = (): void => {
    void conductor.stop().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  process.stderr.write(`listening ${conductor.url}\n`);
};

try {
  await main();
} catch (error) {
  process.stderr.write(`conductor-cli: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(2);
}
