#!/usr/bin/env node
import type { Argv } from 'yargs';
import { EXIT_USAGE, exitCodeFor } from './cli/context.js';
import {
  runBlueFieldExec,
  runBlueFieldInstall,
  runBlueFieldList,
  runBlueFieldNat,
  runBlueFieldSetMode,
  runBlueFieldSetPrivilege,
  runBlueFieldStatus,
} from './cli/bluefield.js';
import { runDiskErase, runDiskEraseMetadata } from './cli/disk.js';
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

/** The disk erase verbs: one disk named or chosen by hints, or every disk. */
const withEraseTarget = <T>(argv: Argv<T>) =>
  withDiskTarget(argv)
    .option('all', {
      type: 'boolean',
      describe: 'every disk (never a loop device unless --include-loop-disks)',
    })
    .conflicts('all', ['device', 'hint'])
    .option('json', { type: 'boolean', describe: 'print the result as JSON' });

/** Every bluefield verb prints JSON on request; those that act on a card can name one. */
const withBlueField = <T>(argv: Argv<T>, device: boolean) => {
  const json = argv.option('json', { type: 'boolean', describe: 'print the result as JSON' });
  return device
    ? json.option('device', {
        type: 'string',
        requiresArg: true,
        describe:
          'one card: PCI address (0000:03:00.0 or 03:00), rshimN, or tmfifo_netN (default: every card)',
      })
    : json;
};

const invoke = (verb: Verb) => async (flags: Record<string, unknown>) => {
  try {
    process.exitCode = await verb(flags);
  } catch (error) {
    process.stderr.write(`bm-agent: ${errorMessage(error)}\n`);
    process.exitCode = exitCodeFor(error);
  }
};

/** Every verb, its options and its help, through yargs. */
const parseCommandLine = async (): Promise<void> => {
  const [{ default: yargs }, { hideBin }] = await Promise.all([import('yargs'), import('yargs/helpers')]);
  await withSettings(
    yargs(hideBin(process.argv))
      .scriptName('bm-agent')
      .usage(
        '$0 <command> [options]\n\nBare-metal ramdisk agent: inventory, disk imaging and BlueField DPU set-up, driven by a conductor.',
      )
      .command(
        'run',
        'serve the conductor (bma-conductor-url) and/or OpenStack Ironic (ipa-api-url): the daemon',
        (y) => y,
        invoke(runDaemon),
      )
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
            'wipe partition-table and filesystem signatures at both ends of one disk, or of every disk',
            (z) => withEraseTarget(z),
            invoke(runDiskEraseMetadata),
          )
          .command(
            'erase',
            'overwrite one disk, or every disk, with zeros (then wipe its metadata)',
            (z) => withEraseTarget(z),
            invoke(runDiskErase),
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
        'bluefield',
        'BlueField DPUs: list, BFB install, mode, host privilege, NAT, commands on the Arm',
        (y) =>
          y
            .command(
              'list',
              'list the BlueField DPUs with mode, host privilege and firmware',
              (z) => withBlueField(z, false),
              invoke(runBlueFieldList),
            )
            .command(
              'status',
              'the DPUs as list shows them, with the rshim state and the last lines of its log',
              (z) => withBlueField(z, true),
              invoke(runBlueFieldStatus),
            )
            .command(
              'install-bfb <url>',
              "download and check a BFB, push it through each DPU's rshim, follow the log until ready",
              (z) =>
                withBlueField(z, true)
                  .positional('url', { type: 'string', describe: 'http(s) URL of the BFB' })
                  .option('checksum', {
                    type: 'string',
                    requiresArg: true,
                    describe: 'sha256:HEX, a bare hex, or the URL of a sha256sum-style file',
                  })
                  .option('bf-cfg', {
                    type: 'string',
                    requiresArg: true,
                    describe: 'FILE of bf.cfg text appended to the BFB',
                  })
                  .option('timeout', {
                    type: 'number',
                    describe: 'seconds from the push to the DPU reporting ready (default: --bfb-timeout)',
                  })
                  .option('force', {
                    type: 'boolean',
                    describe: 'install even when the DPU already runs this version',
                  }),
              invoke(runBlueFieldInstall),
            )
            .command(
              'set-mode <mode>',
              'switch between NIC mode and DPU mode (takes effect at the next power cycle)',
              (z) =>
                withBlueField(z, true)
                  .positional('mode', { choices: ['nic', 'dpu'], describe: 'nic or dpu' })
                  .option('hide-port2-pf', { type: 'boolean', describe: 'also set HIDE_PORT2_PF' }),
              invoke(runBlueFieldSetMode),
            )
            .command(
              'set-host-privilege <level>',
              "restrict or privilege the host's access to the DPU",
              (z) =>
                withBlueField(z, true)
                  .positional('level', {
                    choices: ['restricted', 'privileged'],
                    describe: 'restricted or privileged',
                  })
                  .option('disable-port-owner', { type: 'boolean' })
                  .option('disable-rshim', {
                    type: 'boolean',
                    describe: 'the host loses the rshim after a power cycle',
                  })
                  .option('disable-tracer', { type: 'boolean' })
                  .option('disable-counter-rd', { type: 'boolean' })
                  .option('force', {
                    type: 'boolean',
                    describe: 'allow disable-rshim before a BFB was installed',
                  }),
              invoke(runBlueFieldSetPrivilege),
            )
            .command(
              'configure-nat',
              "give each DPU's Arm system a way out through this host",
              (z) => withBlueField(z, true),
              invoke(runBlueFieldNat),
            )
            .command(
              'dpu-exec',
              "run a script on the DPU's Arm system over SSH through tmfifo",
              (z) =>
                withBlueField(z, true)
                  .option('script', {
                    type: 'string',
                    requiresArg: true,
                    describe: 'FILE holding the script',
                  })
                  .option('command', { type: 'string', requiresArg: true, describe: 'the script as text' })
                  .option('timeout', { type: 'number', describe: 'seconds before the script is stopped' })
                  .conflicts('script', 'command'),
              invoke(runBlueFieldExec),
            )
            .demandCommand(1, 'name a bluefield command'),
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
};

/**
 * The ramdisk's supervisor starts a bare `bm-agent run`: there is nothing to parse, and yargs
 * would still load and lay out every verb's help before running it: about 0.4 s of CPU, a fifth
 * of the agent's start, under QEMU without KVM. So yargs is only loaded for anything else.
 * No top-level await: the ramdisk runs this module as a CommonJS bundle from V8's code cache.
 */
const main = async (): Promise<void> => {
  const args = process.argv.slice(2);
  if (args.length === 1 && args[0] === 'run') await invoke(runDaemon)({});
  else await parseCommandLine();
};

main().catch((error: unknown) => {
  process.stderr.write(`bm-agent: ${errorMessage(error)}\n`);
  process.exitCode = exitCodeFor(error);
});
