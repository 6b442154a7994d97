/**
 * The key-encryption key file of the test run (test/global-setup.ts writes it and sets
 * TENANTRY_SECRETS_KEY_FILE): every test process and every process a test spawns seals and opens
 * secrets with the same KEK, as every process of one installation does.
 */
export const secretsKeyEnv = (): { TENANTRY_SECRETS_KEY_FILE?: string } =>
  process.env.TENANTRY_SECRETS_KEY_FILE
    ? { TENANTRY_SECRETS_KEY_FILE: process.env.TENANTRY_SECRETS_KEY_FILE }
    : {};
