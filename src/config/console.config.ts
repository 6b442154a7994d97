import { type Static, Type } from '@sinclair/typebox';
import { ValidationError } from '../errors/errors.js';
import { integerSetting } from './settings.js';

const OptionalString = (description: string) =>
  Type.Union([Type.String(), Type.Undefined()], { description });

/**
 * Sign-in with OpenID Connect (authorization code + PKCE) at a trusted issuer:
 * TENANTRY_CONSOLE_OIDC_ISSUER, _CLIENT_ID, optional _CLIENT_SECRET (absent: a public client), _SCOPE
 * (default `openid`) and _RESOURCE (the API's audience, as a resource indicator).
 */
export const ConsoleOidcConfigSchema = Type.Object({
  issuer: Type.String({ description: 'The issuer; it must also be a trusted issuer.' }),
  clientId: Type.String(),
  clientSecret: OptionalString('Absent: a public client (PKCE only).'),
  scope: Type.String(),
  resource: OptionalString("The API's audience, sent as a resource indicator."),
});
export type ConsoleOidcConfig = Static<typeof ConsoleOidcConfigSchema>;

/** The operator console's sign-in sessions (src/console). */
export const ConsoleConfigSchema = Type.Object({
  idleSeconds: Type.Integer({
    minimum: 1,
    description: 'A console session ends after this long without a request (TENANTRY_CONSOLE_IDLE_SECONDS).',
  }),
  absoluteSeconds: Type.Integer({
    minimum: 1,
    description: '…and this long after sign-in, whatever happens (TENANTRY_CONSOLE_MAX_SECONDS).',
  }),
  oidc: Type.Union([ConsoleOidcConfigSchema, Type.Undefined()]),
});
export type ConsoleConfig = Static<typeof ConsoleConfigSchema>;

export function parseConsoleConfig(env: NodeJS.ProcessEnv): ConsoleConfig {
  return {
    idleSeconds: integerSetting('TENANTRY_CONSOLE_IDLE_SECONDS', env.TENANTRY_CONSOLE_IDLE_SECONDS, 1800),
    absoluteSeconds: integerSetting('TENANTRY_CONSOLE_MAX_SECONDS', env.TENANTRY_CONSOLE_MAX_SECONDS, 43_200),
    oidc: consoleOidc(env),
  };
}

function consoleOidc(env: NodeJS.ProcessEnv): ConsoleOidcConfig | undefined {
  const issuer = env.TENANTRY_CONSOLE_OIDC_ISSUER;
  if (!issuer) return undefined;
  const clientId = env.TENANTRY_CONSOLE_OIDC_CLIENT_ID;
  if (!clientId)
    throw ValidationError.field(
      '/TENANTRY_CONSOLE_OIDC_CLIENT_ID',
      'config.invalid',
      'TENANTRY_CONSOLE_OIDC_ISSUER needs a client id',
    );
  return {
    issuer,
    clientId,
    clientSecret: env.TENANTRY_CONSOLE_OIDC_CLIENT_SECRET || undefined,
    scope: env.TENANTRY_CONSOLE_OIDC_SCOPE || 'openid',
    resource: env.TENANTRY_CONSOLE_OIDC_RESOURCE || undefined,
  };
}
