import { readFile } from 'node:fs/promises';
import { AgentError } from '../util/errors.js';

/** The PEM bundle of `bma-image-ca`, read when a download needs it; null means the system store. */
export const readImageCa = async (caPath: string | null): Promise<Buffer | null> => {
  if (!caPath) return null;
  try {
    return await readFile(caPath);
  } catch (error) {
    throw new AgentError('INVALID_CONFIG', `cannot read the image CA bundle ${caPath}; check bma-image-ca`, {
      cause: error,
      details: { setting: 'image-ca', path: caPath },
    });
  }
};
