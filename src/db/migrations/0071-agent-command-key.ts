import { type Kysely, sql } from 'kysely';

/**
 * Sealed hand-overs between agents (region migrations): the public half of each agent's key of the
 * moment (`x` of an X25519 JWK; the private half stays in the agent's memory), said with its command
 * requests. A region migration's source side seals the reader it hands out (a connection string with
 * its password, a SAS URL) for the receiving agent's key, so a command row holds ciphertext only.
 * Null until the agent's first command request, and again when another agent joins the cell.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table cell_agents add column command_key text check (command_key ~ '^[A-Za-z0-9_-]{43}$')`.execute(
    db,
  );
}
