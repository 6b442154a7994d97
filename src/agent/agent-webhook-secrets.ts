import { CompactEncrypt, compactDecrypt, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';

/**
 * How an endpoint's signing secrets reach the agent that signs for it (issue 22): sealed to that
 * agent's own key, never in clear on the wire or in a log. The agent makes an X25519 key pair when it
 * starts (the private key stays in its memory, never on disk and never sent) and sends the public key
 * with each claim; the control plane opens the endpoint's stored secrets (src/secrets) just before and
 * seals them as a JWE (RFC 7516, ECDH-ES key agreement with an ephemeral key, A256GCM; jose does the
 * cryptography). The protected header, authenticated by the encryption, binds the ciphertext to the
 * cell and the endpoint: the agent refuses a secret sealed for another of either.
 */
export interface AgentSecretBinding {
  cellId: string;
  endpointId: string;
}

/** The public half of an agent's key, as it sends it (an OKP JWK on X25519). */
export interface AgentPublicKey {
  kty: 'OKP';
  crv: 'X25519';
  x: string;
}

/** Seals the signing secrets of one endpoint for the agent holding `publicKey`. */
export async function sealForAgent(
  secrets: string[],
  publicKey: AgentPublicKey,
  at: AgentSecretBinding,
): Promise<string> {
  const key = await importJWK({ kty: publicKey.kty, crv: publicKey.crv, x: publicKey.x }, 'ECDH-ES');
  return new CompactEncrypt(new TextEncoder().encode(JSON.stringify(secrets)))
    .setProtectedHeader({ alg: 'ECDH-ES', enc: 'A256GCM', 'tenantry-cell': at.cellId, kid: at.endpointId })
    .encrypt(key);
}

/** The agent's key pair: made at start, kept in memory only. */
export class AgentKey {
  private constructor(
    private readonly privateKey: CryptoKey,
    readonly publicKey: AgentPublicKey,
  ) {}

  static async generate(): Promise<AgentKey> {
    const { privateKey, publicKey } = await generateKeyPair('ECDH-ES', { crv: 'X25519' });
    const jwk: JWK = await exportJWK(publicKey);
    return new AgentKey(privateKey as CryptoKey, { kty: 'OKP', crv: 'X25519', x: String(jwk.x) });
  }

  /** Opens secrets sealed for this key; throws when altered or sealed for another cell or endpoint. */
  async open(sealed: string, at: AgentSecretBinding): Promise<string[]> {
    const { plaintext, protectedHeader: h } = await compactDecrypt(sealed, this.privateKey, {
      keyManagementAlgorithms: ['ECDH-ES'],
      contentEncryptionAlgorithms: ['A256GCM'],
    });
    if (h['tenantry-cell'] !== at.cellId || h.kid !== at.endpointId)
      throw new Error('the signing secret was sealed for another cell or endpoint');
    const secrets = JSON.parse(new TextDecoder().decode(plaintext)) as unknown;
    if (!Array.isArray(secrets) || !secrets.every((s) => typeof s === 'string'))
      throw new Error('the sealed signing secret is malformed');
    return secrets;
  }
}
