import { SecretStore } from '../../src/providers/postgres/secret-store.js';
import {
  type DatabaseCredentials,
  ResourceCredentialsService,
} from '../../src/registry/resource-credentials.js';
import { secretCipherFor } from '../../src/secrets/index.js';
import type { ControllerTestFile } from './controller.js';

/** A database resource's credentials as `GET /v1/integration-resources/{ref}/credentials` answers them. */
export async function credentialsOf(f: ControllerTestFile, resourceId: string): Promise<DatabaseCredentials> {
  const service = new ResourceCredentialsService(
    f.t.db,
    new SecretStore(f.t.db, secretCipherFor(f.t.db, f.t.config)),
  );
  return service.reveal(f.ctx, await f.registry.get(f.ctx, 'IntegrationResource', resourceId));
}
