import type { Command } from 'commander';
import { stringify } from 'yaml';
import type { DatabaseCredentials } from '../registry/resource-credentials.js';
import type { TenantryClient } from './client.js';
import { type OutputFormat, table } from './output.js';

interface Deps {
  client: () => TenantryClient;
  output: () => OutputFormat;
  run: (action: () => Promise<void>) => Promise<void>;
}

/** A value quoted for a POSIX shell. */
const sh = (v: string) => `'${v.replaceAll("'", `'\\''`)}'`;

/** `tenantry credentials RESOURCE`: the connection of a database resource (GET …/credentials). */
export function registerCredentialsCommands(program: Command, deps: Deps): void {
  program
    .command('credentials')
    .description(
      "a database resource's connection: host, port, database, user, password (audited; " +
        "platform admins and the tenant's admins)",
    )
    .argument('<resource>', 'integration resource slug or UUID, e.g. circlek-eu-uat.database')
    .option(
      '--env',
      'as shell exports: PGHOST … PGPASSWORD and DATABASE_URL (eval "$(tenantry credentials R --env)")',
    )
    .action(async (resource: string, opts: { env?: boolean }) => {
      await deps.run(async () => {
        const { body: c } = await deps
          .client()
          .request<DatabaseCredentials>(
            'GET',
            `/v1/integration-resources/${encodeURIComponent(resource)}/credentials`,
          );
        if (opts.env) {
          const vars: Record<string, string> = {
            PGHOST: c.host,
            PGPORT: String(c.port),
            PGDATABASE: c.database,
            PGUSER: c.username,
            PGPASSWORD: c.password,
            DATABASE_URL: c.url,
          };
          console.log(
            Object.entries(vars)
              .map(([k, v]) => `export ${k}=${sh(v)}`)
              .join('\n'),
          );
          return;
        }
        const format = deps.output();
        if (format === 'json') return console.log(JSON.stringify(c, null, 2));
        if (format === 'yaml') return console.log(stringify(c).trimEnd());
        console.log(
          table([
            ['FIELD', 'VALUE'],
            ...Object.entries(c).map(([k, v]) => [k, v === null ? '-' : String(v)]),
          ]),
        );
      });
    });
}
