/**
 * Where the key-encryption key (KEK) lives. Tenantry never sees a KEK outside its provider: it
 * hands the provider a data key (DEK) to wrap or a wrapped DEK to unwrap, with a context string
 * the wrapping is bound to (the DEK's id and tenant), like a KMS's encryption context.
 *
 * Only the local file provider (local-file-key-provider.ts) is built. A KMS or Vault provider
 * implements the same three calls (AWS KMS Encrypt/Decrypt with EncryptionContext, Vault transit
 * encrypt/decrypt with `context`); nothing else in Tenantry changes.
 */
export interface KeyProvider {
  /** The id of the KEK that wraps new and re-wrapped data keys. */
  currentKeyId(): Promise<string>;
  /** Wraps `dek` under the current KEK, bound to `context`. */
  wrap(dek: Buffer, context: string): Promise<{ keyId: string; wrapped: Buffer }>;
  /** Unwraps a DEK wrapped by `wrap`; fails when the key id, the wrapping or the context differ. */
  unwrap(keyId: string, wrapped: Buffer, context: string): Promise<Buffer>;
}
