import { readFile } from 'node:fs/promises';
import { AgentError } from '../util/errors.js';

/**
 * A PEM bundle named by a setting, read when a connection needs it; null means the system store.
 * An unreadable file is a configuration error that names the setting to fix.
 */
export const readCaBundle = async (
  caPath: string | null | undefined,
  setting: string,
  what: string,
): Promise<Buffer | null> => {
  if (!caPath) return null;
  try {
    return await readFile(caPath);
  } catch (error) {
    throw new AgentError(
      'INVALID_CONFIG',
      `cannot read the CA bundle ${caPath} for ${what}; check ${setting}`,
      {
        cause: error,
        details: { setting, path: caPath },
      },
    );
  }
};

/** The PEM bundle of `bma-image-ca`. */
export const readImageCa = (caPath: string | null): Promise<Buffer | null> =>
  readCaBundle(caPath, 'bma-image-ca', 'image servers');
