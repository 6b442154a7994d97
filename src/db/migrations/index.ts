import type { Migration, MigrationProvider } from 'kysely';
import * as m0001 from './0001-registry.js';

/** Forward-only, numbered. Add new files at the end; never edit one that has shipped. */
const migrations: Record<string, Migration> = {
  '0001-registry': m0001,
};

export const migrationProvider: MigrationProvider = {
  getMigrations: async () => migrations,
};
