#!/usr/bin/env node
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { EXIT_USAGE, exitCodeFor } from './cli/context.js';
import { runDiskEraseMetadata } from './cli/disk.js';
import { runImageWrite } from './cli/image.js';
import { runInventory } from './cli/inventory.js';
import { runListCommands } from './cli/list-commands.js';
import { runLldp } from './cli/lldp.js';
import { runDaemon } from './cli/run.js';
import { runShowConfig } from './cli/show-config.js';
import { OPTIONS } from './config/options.js';
import { errorMessage } from './util/errors.js';
import { AGENT_VERSION } from './version.js';

type Verb = (flags: Record<string, unknown>) => Promise<number>;

/** Every setting is also a flag; values are checked by the config layer so errors read the same everywhere. */
const withSettings = (argv: Argv): Argv => {
  let configured = argv.option('cmdline', {
    type: 'string',
    describe: 'read kernel arguments from FILE instead of /proc/cmdline',
    group: 'Settings:',
  });
  for (const spec of OPTIONS) {
    if (!spec.flag) continue;
    configured = configured.option(spec.flag, {
      type: spec.boolean ? 'boolean' : 'string',
      describe: spec.describe,
      group: 'Settings:',
    });
  }
  return configured;
};

/** The disk a verb acts on: named, or chosen by root device hints (IPA's default disk without either). */
const withDiskTarget = <T>(argv: Argv<T>) =>
  argv
    .option('device', { type: 'string', requiresArg: true, describe: 'the whole disk, e.g. /dev/sda' })
    .option('hint', {
      type: 'string',
      array: true,
      requiresArg: true,
      describe: 'root device hint KEY=VALUE (repeatable), e.g. serial=S3Z or "size=>= 100"',
    })
    .conflicts('device', 'hint');

const invoke = (verb: Verb) => async (flags: Record<string, unknown>) => {
  try {
    process.exitCode = await verb(flags);
  } catch (error) {
    process.stderr.write(`bm-agent: ${errorMessage(error)}\n`);
    process.exitCode = exitCodeFor(error);
  }
};

await withSettings(
  yargs(hideBin(process.argv))
    .scriptName('bm-agent')
    .usage(
      '$0 <command> [options]\n\nBare-metal ramdisk agent: inventory, disk imaging and BlueField DPU set-up, driven by a conductor.',
    )
    .command('run', 'connect to the conductor and serve it (the daemon)', (y) => y, invoke(runDaemon))
    .command(
      'inventory',
      'collect and print the hardware inventory',
      (y) =>
        y
          .option('json', { type: 'boolean', describe: 'print the inventory as JSON' })
          .option('lldp', { type: 'boolean', describe: 'include LLDP neighbours' }),
      invoke(runInventory),
    )
    .command(
      'lldp',
      'capture and print the LLDP neighbour of each interface',
      (y) =>
        y
          .option('interface', {
            type: 'string',
            array: true,
            requiresArg: true,
            describe: 'listen on IF (repeatable; default: every physical NIC)',
          })
          .option('timeout', {
            type: 'number',
            describe: 'seconds to wait at most (default: --lldp-timeout)',
          })
          .option('json', { type: 'boolean', describe: 'print the result as JSON' }),
      invoke(runLldp),
    )
    .command('disk', 'disk maintenance', (y) =>
      y
        .command(
          'erase-metadata',
          'wipe partition-table and filesystem signatures at both ends of one disk',
          (z) => withDiskTarget(z).option('json', { type: 'boolean', describe: 'print the result as JSON' }),
          invoke(runDiskEraseMetadata),
        )
        .demandCommand(1, 'name a disk command'),
    )
    .command('image', 'OS images', (y) =>
      y
        .command(
          'write <url>',
          'stream an image onto the root disk, verified by checksum',
          (z) =>
            withDiskTarget(z)
              .positional('url', {
                type: 'string',
                describe: 'http(s) URL of the image (raw, gzip, xz, zstd, bzip2, qcow2)',
              })
              .option('checksum', {
                type: 'string',
                requiresArg: true,
                describe: 'sha256:HEX (md5, sha512), a bare hex, or the URL of a sha256sum-style file',
              })
              .option('disk-format', {
                choices: ['raw', 'qcow2', 'auto'],
                describe: 'raw, qcow2, or auto (by magic bytes)',
              })
              .option('json', { type: 'boolean', describe: 'print the result as JSON' }),
          invoke(runImageWrite),
        )
        .demandCommand(1, 'name an image command'),
    )
    .command(
      'commands',
      'list the commands a conductor can run',
      (y) => y.option('json', { type: 'boolean' }),
      invoke(runListCommands),
    )
    .command(
      'config',
      'show the settings in force and where each came from',
      (y) => y.option('json', { type: 'boolean' }),
      invoke(runShowConfig),
    )
    .demandCommand(1, 'name a command')
    .strict()
    .version(AGENT_VERSION)
    .help()
    .alias('help', 'h')
    .wrap(Math.min(110, process.stdout.columns || 110))
    .fail((message, error) => {
      if (error) throw error;
      process.stderr.write(`bm-agent: ${message}\nRun bm-agent --help for usage.\n`);
      process.exit(EXIT_USAGE);
    }),
).parseAsync();
