import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { TLSSocket } from 'node:tls';
import { AgentError } from '../util/errors.js';

export interface TlsSettings {
  url: string;
  insecure: boolean;
  caPath: string | null;
  pin: string | null;
}

export interface TlsClientOptions {
  ca?: Buffer;
  rejectUnauthorized: boolean;
}

export const isSecureUrl = (url: string): boolean => new URL(url).protocol === 'wss:';

/** Refuses combinations that would talk in clear or unverified without the operator asking for it. */
export const checkTlsSettings = (settings: TlsSettings): void => {
  if (!isSecureUrl(settings.url) && !settings.insecure) {
    throw new AgentError(
      'INVALID_CONFIG',
      `conductor URL ${settings.url} is not encrypted: use wss://, or set ipa-insecure=1 / --insecure to allow ws://`,
      { details: { setting: 'conductor-url' } },
    );
  }
};

/**
 * With a pin the certificate chain need not verify (self-signed conductors are common in labs);
 * the pin alone then authenticates the server, checked before the hello goes out.
 */
export const buildTlsOptions = async (settings: TlsSettings): Promise<TlsClientOptions> => {
  if (!isSecureUrl(settings.url)) return { rejectUnauthorized: true };
  let ca: Buffer | undefined;
  if (settings.caPath) {
    try {
      ca = await readFile(settings.caPath);
    } catch (error) {
      throw new AgentError(
        'INVALID_CONFIG',
        `cannot read the conductor CA bundle ${settings.caPath}; check bma-conductor-ca`,
        {
          cause: error,
          details: { setting: 'conductor-ca', path: settings.caPath },
        },
      );
    }
  }
  const verifyChain = !settings.insecure && (ca !== undefined || settings.pin === null);
  return ca ? { ca, rejectUnauthorized: verifyChain } : { rejectUnauthorized: verifyChain };
};

export const spkiPin = (publicKeyDer: Buffer): string =>
  `sha256/${createHash('sha256').update(publicKeyDer).digest('base64')}`;

/** Compares the server's public key with the pin; throws TLS_PIN_MISMATCH naming both. */
export const verifyPin = (socket: TLSSocket, pin: string): void => {
  // getPeerCertificate().pubkey is the bare point for EC keys, not the SPKI that a pin hashes.
  const certificate = socket.getPeerX509Certificate();
  if (!certificate) {
    throw new AgentError(
      'TLS_PIN_MISMATCH',
      'the conductor presented no certificate to check the pin against',
    );
  }
  const actual = spkiPin(certificate.publicKey.export({ type: 'spki', format: 'der' }));
  if (actual !== pin) {
    throw new AgentError(
      'TLS_PIN_MISMATCH',
      `the conductor's public key ${actual} does not match the pin ${pin}`,
      {
        details: { expected: pin, actual },
      },
    );
  }
};
