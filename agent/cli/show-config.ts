import { OPTIONS } from '../config/options.js';
import { prepare } from './context.js';
import { renderTable } from './format.js';

/** Shows the settings in force and which layer each came from: the first question at a console. */
export const runShowConfig = async (flags: Record<string, unknown>): Promise<number> => {
  const { loaded } = await prepare(flags, { stream: 'stderr' });
  const { config, sources } = loaded;
  if (flags.json === true) {
    process.stdout.write(`${JSON.stringify({ config, sources, notices: loaded.notices }, null, 2)}\n`);
    return 0;
  }
  const rows = OPTIONS.map((spec) => [
    spec.flag ?? spec.key,
    JSON.stringify(config[spec.key]),
    sources[spec.key],
  ]);
  process.stdout.write(`${renderTable(['SETTING', 'VALUE', 'FROM'], rows)}\n`);
  return 0;
};
