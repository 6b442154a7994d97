import fs from 'node:fs';
import v8 from 'node:v8';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import type { RequestContext } from '../context/request-context.js';
import { TenantryError } from '../errors/errors.js';
import type { Metrics } from '../observability/metrics.js';
import { DEFAULT_POLICIES } from './default-policies.js';

// Node 20's V8 (11.3) aborts the whole process ("Fatal error: unreachable code" in
// Deoptimizer::DoComputeBuiltinContinuation) when optimised code that inlined a JS-to-WebAssembly
// call into Cedar is lazily deoptimised while that call runs. Listing 100k tenants page by page
// (hundreds of decisions per request; bench/suites/memory.ts) did it every time; Node 24 does not.
// Not inlining those wrappers costs nanoseconds against a Cedar call's ~0.2 ms. Set before any
// code calling Cedar is optimised (this module is what calls it); harmless where V8 is fixed.
v8.setFlagsFromString('--no-turbo-inline-js-wasm-calls');

/** The groups every action belongs to; policies grant groups or single actions. */
export const ACTION_GROUPS = ['read', 'write', 'operate', 'elevate'] as const;
export type ActionGroup = (typeof ACTION_GROUPS)[number];

const READ_VERBS = new Set(['read', 'list', 'get', 'history', 'search', 'verify', 'export']);
const OPERATE_VERBS = new Set([
  'activate',
  'suspend',
  'resume',
  'archive',
  'run',
  'retry',
  'replay',
  'cancel',
]);
const ACTION_NAME = /^[a-z][a-z0-9-]*\.[a-z][a-z0-9-]*$/;

/**
 * `<area>.<verb>`: reads are `read`, lifecycle workflows `operate`, break-glass `elevate` (granted
 * by no role group), anything else `write` (fail closed).
 */
export function groupOf(action: string): ActionGroup {
  const verb = action.slice(action.indexOf('.') + 1);
  if (READ_VERBS.has(verb)) return 'read';
  if (action.startsWith('breakglass.')) return 'elevate';
  if (OPERATE_VERBS.has(verb)) return 'operate';
  return 'write';
}

/** What a decision is about: the resource's kind and the tenant and customer it belongs to. */
export interface ResourceRef {
  kind: string;
  id?: string | null;
  /** The owning tenant's UUID; null for platform resources (customers, systems, …). */
  tenantId: string | null;
  customerId?: string | null;
  /** Sessions: the principal the session belongs to. */
  owner?: string;
}

export interface Decision {
  decision: 'allow' | 'deny';
  /** The policy ids that determined the decision (empty for a default deny). */
  policies: string[];
  action: string;
  roles: string[];
  elevation?: string;
  errors?: string[];
}

/** 403 with the decision, so that the caller can audit it. */
export class AccessDenied extends TenantryError {
  constructor(
    readonly decision: Decision,
    readonly resource: ResourceRef,
  ) {
    super(
      'authz.denied',
      403,
      `Not allowed: ${decision.action} on ${resource.kind}${resource.id ? ` ${resource.id}` : ''}.`,
      { details: { action: decision.action, policies: decision.policies } },
    );
  }
}

// Cedar keeps preparsed sets per thread under an id: one id per Authorizer, so that several coexist.
let instances = 0;
const MEMO_SIZE = 10_000;

const PRINCIPAL_SHAPE = {
  type: 'Record',
  attributes: {
    subject: { type: 'String' },
    roles: { type: 'Set', element: { type: 'String' } },
    tenant: { type: 'String' },
    customer: { type: 'String' },
    platform: { type: 'Boolean' },
  },
} as const;

/** One free-form part of a memo key: length-prefixed (so no value can imitate a separator); null and undefined apart. */
const part = (v: string | null | undefined): string =>
  v === undefined ? 'u|' : v === null ? 'n|' : `${v.length}:${v}|`;

/** The envelope parts a decision depends on, with the key built from them (one per envelope). */
interface PrincipalKey {
  actor: RequestContext['actor'];
  principal: string;
  kind: string;
  issuer: string | undefined;
  roles: RequestContext['roles'];
  scope: RequestContext['scope'];
  tenantId: string;
  customerId: RequestContext['customerId'];
  elevation: RequestContext['elevation'];
  key: string;
}
const principalKeys = new WeakMap<RequestContext, PrincipalKey>();

/**
 * The principal's part of a memo key: computed once per envelope and reused while every part it
 * was built from is still the same (an envelope copied or changed gets its own).
 */
function principalKey(ctx: RequestContext): string {
  const known = principalKeys.get(ctx);
  const tenantId = ctx.scope.kind === 'tenant' ? ctx.scope.tenantId : '';
  if (
    known &&
    known.actor === ctx.actor &&
    known.principal === ctx.actor.principal &&
    known.kind === ctx.actor.kind &&
    known.issuer === ctx.issuer &&
    known.roles === ctx.roles &&
    known.scope === ctx.scope &&
    known.tenantId === tenantId &&
    known.customerId === ctx.customerId &&
    known.elevation === ctx.elevation
  )
    return known.key;
  const roles = ctx.roles ?? [];
  let key = `${ctx.actor.kind}|${part(ctx.issuer)}${part(ctx.actor.principal)}${roles.length}|`;
  for (const r of roles) key += part(r);
  key += `${part(tenantId)}${part(ctx.customerId ?? '')}${part(ctx.elevation?.id)}`;
  principalKeys.set(ctx, {
    actor: ctx.actor,
    principal: ctx.actor.principal,
    kind: ctx.actor.kind,
    issuer: ctx.issuer,
    roles: ctx.roles,
    scope: ctx.scope,
    tenantId,
    customerId: ctx.customerId,
    elevation: ctx.elevation,
    key,
  });
  return key;
}

/**
 * Authorization decisions with Cedar (@cedar-policy/cedar-wasm, the Node build: its ESM entry
 * imports the .wasm file as a module, which Node cannot). The policy set (defaults plus the
 * operator's file) is parsed once, validated in strict mode against a schema generated from the
 * known actions, and decisions then use the preparsed set. Decisions are synchronous and in process.
 */
export class Authorizer {
  private readonly actions = new Set<string>();
  private policies: Record<string, string> = { ...DEFAULT_POLICIES };
  private sealed = false;
  private readonly id = `tenantry-${++instances}`;
  private readonly memo = new Map<string, Decision>();

  constructor(
    extraPolicyFile?: string,
    /** Where decisions are counted (the process's metrics, from src/app.ts). */
    private readonly metrics?: Metrics,
  ) {
    // The actions the default policies name.
    for (const a of [
      'session.read',
      'session.revoke',
      'breakglass.read',
      'breakglass.request',
      'breakglass.end',
    ])
      this.actions.add(a);
    if (extraPolicyFile) this.addPolicies(fs.readFileSync(extraPolicyFile, 'utf8'), extraPolicyFile);
  }

  /** Declares an action (each route's `config.action`, and the change path's actions). */
  registerAction(action: string): void {
    if (!ACTION_NAME.test(action))
      throw new Error(`Authorization action "${action}" must look like <area>.<verb> (lowercase).`);
    if (this.sealed && !this.actions.has(action))
      throw new Error(`Action "${action}" was declared after the policies were loaded.`);
    this.actions.add(action);
  }

  /** Cedar policy text; each policy needs an `@id("…")` annotation. Validated by `seal()`. */
  addPolicies(text: string, source = 'policies'): void {
    const parts = cedar.policySetTextToParts(text);
    if (parts.type === 'failure')
      throw new Error(`${source}: ${parts.errors.map((e) => e.message).join('; ')}`);
    for (const p of parts.policies) {
      const id = /@id\("([^"]+)"\)/.exec(p)?.[1];
      if (!id) throw new Error(`${source}: every policy needs an @id("…") annotation: ${p.slice(0, 80)}`);
      if (this.policies[id] !== undefined) throw new Error(`${source}: policy id "${id}" is already used`);
      this.policies[id] = p;
    }
  }

  /** The Cedar schema: principals, the one resource type, every action with its group. */
  schema(): cedar.SchemaJson<string> {
    const actions: Record<string, cedar.ActionType<string>> = {};
    for (const g of ACTION_GROUPS) actions[g] = {};
    for (const a of this.actions)
      actions[a] = {
        memberOf: [{ id: groupOf(a) }],
        appliesTo: { principalTypes: ['User', 'Service'], resourceTypes: ['Resource'] },
      };
    return {
      '': {
        entityTypes: {
          User: { shape: PRINCIPAL_SHAPE as never },
          Service: { shape: PRINCIPAL_SHAPE as never },
          Resource: {
            shape: {
              type: 'Record',
              attributes: {
                kind: { type: 'String' },
                tenant: { type: 'String' },
                customer: { type: 'String' },
                owner: { type: 'String', required: false },
              },
            } as never,
          },
        },
        actions,
      },
    };
  }

  /** Validates the policies against the schema (strict) and preparses them; fails start-up on errors. */
  seal(): void {
    const schema = this.schema();
    const answer = cedar.validate({
      schema,
      policies: { staticPolicies: this.policies },
      validationSettings: { mode: 'strict' },
    });
    if (answer.type === 'failure')
      throw new Error(`Cedar: ${answer.errors.map((e) => e.message).join('; ')}`);
    if (answer.validationErrors.length > 0)
      throw new Error(
        `Cedar policies are invalid: ${answer.validationErrors.map((e) => `${e.policyId}: ${e.error.message}`).join('; ')}`,
      );
    const parsed = cedar.preparsePolicySet(this.id, { staticPolicies: this.policies });
    if (parsed.type === 'failure')
      throw new Error(`Cedar: ${parsed.errors.map((e) => e.message).join('; ')}`);
    const parsedSchema = cedar.preparseSchema(this.id, schema);
    if (parsedSchema.type === 'failure')
      throw new Error(`Cedar schema: ${parsedSchema.errors.map((e) => e.message).join('; ')}`);
    this.sealed = true;
  }

  get policyIds(): string[] {
    return Object.keys(this.policies);
  }

  /**
   * One decision; never throws for a deny (see `authorize`). Decisions are a pure function of the
   * principal, action and resource (the policy set is fixed once sealed), so they are memoised by
   * exactly those inputs: a Cedar call through WebAssembly costs ~0.2 ms, a repeated one a map lookup.
   * The key is built without JSON (every free-form part length-prefixed, so it stays injective), and
   * the principal's part once per envelope (`principalKey`). The memo holds the whole frozen Decision.
   * It is a plain bounded Map, cleared when full (no LRU library is installed; it needs no more).
   */
  decide(ctx: RequestContext, action: string, resource: ResourceRef): Decision {
    if (!this.sealed) throw new Error('Authorizer.seal() has not run');
    if (!this.actions.has(action)) {
      const roles = [...(ctx.roles ?? [])];
      return {
        action,
        roles,
        ...(ctx.elevation ? { elevation: ctx.elevation.id } : {}),
        decision: 'deny',
        policies: [],
        errors: ['unknown action'],
      };
    }
    const key = `${principalKey(ctx)}${action}|${resource.kind}|${part(resource.id)}${part(resource.tenantId)}${part(resource.customerId)}${part(resource.owner)}`;
    const memo = this.memo.get(key);
    if (memo) return memo;
    const roles = [...(ctx.roles ?? [])];
    const decided: Decision = Object.freeze({
      action,
      roles: Object.freeze(roles) as string[],
      ...(ctx.elevation ? { elevation: ctx.elevation.id } : {}),
      ...this.evaluate(ctx, action, resource, roles),
    });
    if (this.memo.size >= MEMO_SIZE) this.memo.clear();
    this.memo.set(key, decided);
    return decided;
  }

  /** The Cedar call itself, without the memo. */
  evaluate(
    ctx: RequestContext,
    action: string,
    resource: ResourceRef,
    roles = [...(ctx.roles ?? [])],
  ): Pick<Decision, 'decision' | 'policies' | 'errors'> {
    const principalType = ctx.actor.kind === 'service' ? 'Service' : 'User';
    const principal = { type: principalType, id: `${ctx.issuer ?? ''}#${ctx.actor.principal}` };
    const tenant = ctx.scope.kind === 'tenant' ? ctx.scope.tenantId : '';
    const res = { type: 'Resource', id: `${resource.kind}/${resource.id ?? '*'}` };
    const answer = cedar.statefulIsAuthorized({
      principal,
      action: { type: 'Action', id: action },
      resource: res,
      context: {},
      preparsedPolicySetId: this.id,
      preparsedSchemaName: this.id,
      validateRequest: false,
      entities: [
        {
          uid: principal,
          attrs: {
            subject: ctx.actor.principal,
            roles,
            tenant,
            customer: ctx.customerId ?? '',
            platform: ctx.scope.kind === 'platform',
          },
          parents: [],
        },
        {
          uid: res,
          attrs: {
            kind: resource.kind,
            tenant: resource.tenantId ?? '',
            customer: resource.customerId ?? '',
            ...(resource.owner !== undefined ? { owner: resource.owner } : {}),
          },
          parents: [],
        },
        {
          uid: { type: 'Action', id: action },
          attrs: {},
          parents: [{ type: 'Action', id: groupOf(action) }],
        },
      ],
    });
    if (answer.type === 'failure')
      return { decision: 'deny', policies: [], errors: answer.errors.map((e) => e.message) };
    const { decision, diagnostics } = answer.response;
    return {
      decision,
      policies: diagnostics.reason,
      ...(diagnostics.errors.length
        ? { errors: diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`) }
        : {}),
    };
  }

  /** Decides and throws AccessDenied on deny; returns the decision for the audit record. */
  authorize(ctx: RequestContext, action: string, resource: ResourceRef): Decision {
    const started = performance.now();
    const d = this.decide(ctx, action, resource);
    // An evaluation error (not a plain deny) is counted apart: it pages (TenantryPolicyEvaluationFailures).
    const outcome = d.errors?.length && d.decision !== 'allow' ? 'error' : d.decision;
    this.metrics?.policyDuration.observe({ decision: outcome }, (performance.now() - started) / 1000);
    this.metrics?.policyDecisions.inc({ decision: outcome });
    if (d.decision !== 'allow') throw new AccessDenied(d, resource);
    ctx.decisions?.push({ action, resource });
    return d;
  }
}
