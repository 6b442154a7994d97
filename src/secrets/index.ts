import type { Config } from '../config/config.js';
import { asPlatform, type Db } from '../db/database.js';
import { LocalFileKeyProvider } from './local-file-key-provider.js';
import { SecretCipher } from './secret-cipher.js';

export type { KeyProvider } from './key-provider.js';
export { LocalFileKeyProvider } from './local-file-key-provider.js';
export { isSealed, type SecretBinding, SecretCipher } from './secret-cipher.js';

/** The cipher of a process: the KEKs of config.secretsKeyFile, data keys in the platform scope of `db`. */
export const secretCipherFor = (db: Db, config: Pick<Config, 'secretsKeyFile'>): SecretCipher =>
  new SecretCipher(new LocalFileKeyProvider(config.secretsKeyFile), (work) =>
    asPlatform(db, (trx) => work(trx)),
  );
