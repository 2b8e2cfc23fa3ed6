/**
 * Throw-away PKI for TLS tests, made with the `openssl` CLI in a temporary directory: a CA, server
 * certificates for 127.0.0.1 signed by it (one EC P-256 key, one RSA key, since pins are computed
 * from the key and the two key types are encoded differently), a second CA that signed nothing we
 * serve, and a self-signed server certificate. Test support only; nothing in agent/ may import it.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export type KeyType = 'ec' | 'rsa';

export interface ServerCredentials {
  key: string;
  cert: string;
  /** `sha256/<base64>` of the certificate's SubjectPublicKeyInfo: the agent's pin format. */
  pin: string;
}

export interface TestPki {
  dir: string;
  /** PEM file of the CA that signed the server certificates. */
  caPath: string;
  /** PEM file of a CA that has nothing to do with any server. */
  otherCaPath: string;
  /** Certificates for IP 127.0.0.1 signed by the CA at caPath. */
  servers: Record<KeyType, ServerCredentials>;
  /** A certificate for 127.0.0.1 that nobody vouches for. */
  selfSigned: ServerCredentials;
  cleanup(): Promise<void>;
}

const openssl = async (args: string[], cwd: string): Promise<void> => {
  await run('openssl', args, { cwd, timeout: 60_000 });
};

const NEW_KEY: Record<KeyType, string[]> = {
  // EC keys take milliseconds to generate; one RSA key is worth its second for the coverage.
  ec: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
  rsa: ['-newkey', 'rsa:2048', '-nodes'],
};

/** Computes a pin the way a conductor's operator would: from the certificate, not with the agent's code. */
export const pinOf = (certPem: string): string => {
  const spki = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
  return `sha256/${createHash('sha256').update(spki).digest('base64')}`;
};

const credentials = async (dir: string, name: string): Promise<ServerCredentials> => {
  const cert = await readFile(join(dir, `${name}.crt`), 'utf8');
  return { key: await readFile(join(dir, `${name}.key`), 'utf8'), cert, pin: pinOf(cert) };
};

const makeCa = (dir: string, name: string): Promise<void> =>
  openssl(
    [
      'req',
      '-x509',
      ...NEW_KEY.ec,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.crt`,
      '-subj',
      `/CN=bm-agent test ${name}`,
      '-days',
      '2',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );

const makeServer = async (dir: string, name: string, keyType: KeyType): Promise<void> => {
  await openssl(
    ['req', ...NEW_KEY[keyType], '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', '/CN=127.0.0.1'],
    dir,
  );
  await openssl(
    [
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      'server.ext',
      '-out',
      `${name}.crt`,
    ],
    dir,
  );
};

export const createTestPki = async (): Promise<TestPki> => {
  const dir = await mkdtemp(join(tmpdir(), 'bm-agent-pki-'));
  try {
    await Promise.all([makeCa(dir, 'ca'), makeCa(dir, 'other-ca')]);
    // The agent dials an IP address, so the name it checks is the IP SAN (the CN is not used).
    await writeFile(
      join(dir, 'server.ext'),
      [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        'extendedKeyUsage=serverAuth',
        'subjectAltName=IP:127.0.0.1',
        '',
      ].join('\n'),
    );
    // Sequential: both signings bump the same ca.srl serial file.
    await makeServer(dir, 'server-ec', 'ec');
    await makeServer(dir, 'server-rsa', 'rsa');
    await openssl(
      [
        'req',
        '-x509',
        ...NEW_KEY.ec,
        '-keyout',
        'self.key',
        '-out',
        'self.crt',
        '-subj',
        '/CN=127.0.0.1',
        '-days',
        '2',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      dir,
    );
    return {
      dir,
      caPath: join(dir, 'ca.crt'),
      otherCaPath: join(dir, 'other-ca.crt'),
      servers: { ec: await credentials(dir, 'server-ec'), rsa: await credentials(dir, 'server-rsa') },
      selfSigned: await credentials(dir, 'self'),
      cleanup: () => rm(dir, { recursive: true, force: true }),
    };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
};
