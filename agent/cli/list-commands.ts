import { buildRegistry } from '../commands/catalog.js';
import { prepare } from './context.js';
import { renderTable } from './format.js';

export const runListCommands = async (flags: Record<string, unknown>): Promise<number> => {
  const { loaded, logger } = await prepare(flags, { stream: 'stderr' });
  const commands = buildRegistry(loaded.config, logger).all();
  if (flags.json === true) {
    const list = commands.map((command) => ({
      name: command.name,
      exclusive: command.exclusive,
      summary: command.summary,
      params: command.params,
    }));
    process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
    return 0;
  }
  const rows = commands.map((command) => [
    command.name,
    command.exclusive ? 'exclusive' : 'read-only',
    command.summary,
  ]);
  process.stdout.write(`${renderTable(['COMMAND', 'KIND', 'WHAT IT DOES'], rows)}\n`);
  return 0;
};
