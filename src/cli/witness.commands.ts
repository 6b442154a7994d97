import { createPublicKey } from 'node:crypto';
import fs from 'node:fs';
import type { Command } from 'commander';
import {
  type CosignedCheckpoint,
  openCosignedCheckpoint,
  parseWitnessVerifierKey,
  witnessVerifierKey,
} from '../audit/index.js';
import { AUDIT_LOG_ORIGIN } from '../audit/log-origin.js';
import { loadWitnessKey, serveWitness, WitnessService } from '../audit/witness-server.js';

interface WitnessDeps {
  run: (action: () => Promise<void>) => Promise<void>;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/**
 * `tenantry witness serve|key` (a transparency-log witness, c2sp.org/tlog-witness, run apart from
 * the log) and `tenantry audit verify-checkpoint` (checks a checkpoint's log signature and its
 * witness cosignatures offline).
 */
export function registerWitnessCommands(program: Command, deps: WitnessDeps): void {
  const witness = program
    .command('witness')
    .description('a witness that cosigns audit checkpoints only while the log stays append-only');

  witness
    .command('serve')
    .description('serve POST /add-checkpoint (c2sp.org/tlog-witness) until stopped')
    .requiredOption('--name <name>', 'the witness name, e.g. witness.example.com/w1')
    .requiredOption('--key <file>', "the witness's Ed25519 private key (PKCS#8 PEM; created if absent)")
    .requiredOption('--state <file>', 'where it keeps the latest checkpoint it cosigned per log')
    .requiredOption('--log-key <pem>', "the log's checkpoint public key (PEM file); repeatable", collect, [])
    .option(
      '--origin <origin>',
      `a log origin it witnesses (a prefix when it ends in "/"); repeatable, default "${AUDIT_LOG_ORIGIN}/"`,
      collect,
      [],
    )
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:7380')
    .action(
      (opts: {
        name: string;
        key: string;
        state: string;
        logKey: string[];
        origin: string[];
        listen: string;
      }) =>
        deps.run(async () => {
          const at = opts.listen.lastIndexOf(':');
          const service = await WitnessService.open({
            name: opts.name,
            privateKey: await loadWitnessKey(opts.key),
            logKeys: opts.logKey.map((f) => createPublicKey(fs.readFileSync(f, 'utf8'))),
            origins: opts.origin.length > 0 ? opts.origin : [`${AUDIT_LOG_ORIGIN}/`],
            stateFile: opts.state,
          });
          const server = await serveWitness(service, {
            host: opts.listen.slice(0, at),
            port: Number(opts.listen.slice(at + 1)),
          });
          // One line a supervisor (or a test) reads: where it listens and how to trust it.
          console.log(`witness listening on ${server.url} ${witnessVerifierKey(service.witness)}`);
          await new Promise<void>((resolve) => {
            process.once('SIGTERM', resolve);
            process.once('SIGINT', resolve);
          });
          await server.close();
        }),
    );

  witness
    .command('key')
    .description("print the witness's verifier key (creating its private key if absent)")
    .requiredOption('--name <name>', 'the witness name')
    .requiredOption('--key <file>', "the witness's Ed25519 private key (PKCS#8 PEM)")
    .action((opts: { name: string; key: string }) =>
      deps.run(async () => {
        const publicKey = createPublicKey(await loadWitnessKey(opts.key));
        console.log(witnessVerifierKey({ name: opts.name, publicKey }));
      }),
    );

  const audit = program.commands.find((c) => c.name() === 'audit');
  (audit ?? program)
    .command('verify-checkpoint')
    .description(
      'check a saved checkpoint offline: signed by the log and cosigned by a quorum of witnesses; exits 1 otherwise',
    )
    .argument('<file>', 'the checkpoint (signed note with its cosignatures)')
    .requiredOption(
      '--public-key <pem>',
      "the log's checkpoint public key (PEM file); repeatable",
      collect,
      [],
    )
    .option('--witness <vkey>', 'a trusted witness verifier key; repeatable', collect, [])
    .option('--quorum <n>', 'cosignatures required (default: all the witnesses given)')
    .action((file: string, opts: { publicKey: string[]; witness: string[]; quorum?: string }) =>
      deps.run(async () => {
        const witnesses = opts.witness.map(parseWitnessVerifierKey);
        const quorum = opts.quorum === undefined ? witnesses.length : Number(opts.quorum);
        if (!Number.isInteger(quorum) || quorum < 0 || quorum > witnesses.length)
          throw new Error(`--quorum must be between 0 and the ${witnesses.length} witnesses given`);
        let cp: CosignedCheckpoint;
        try {
          cp = openCosignedCheckpoint(
            fs.readFileSync(file, 'utf8'),
            opts.publicKey.map((f) => createPublicKey(fs.readFileSync(f, 'utf8'))),
            witnesses,
            quorum,
          );
        } catch (err) {
          console.log(`checkpoint NOT verified: ${(err as Error).message}`);
          process.exitCode = 1;
          return;
        }
        console.log(
          `checkpoint verified: ${cp.origin} at ${cp.size} entries, root ${cp.root.toString('hex')}; ` +
            `cosigned by ${cp.cosigners.map((c) => `${c.name} (${new Date(c.time * 1000).toISOString()})`).join(', ') || 'no witness'}`,
        );
      }),
    );
}
