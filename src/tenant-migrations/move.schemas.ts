/**
 * Route schemas shared by the two ways a tenant moves: migrations (isolation or region) and
 * failovers. Both answer a dry run with a plan of the same shape (bindings, steps, policy verdicts)
 * and name the tenant and the record the same way.
 */
import { type TProperties, Type } from '@sinclair/typebox';

/** A tenant's placement binding, before or after the move. */
export const Binding = Type.Object({
  cell: Type.String(),
  cellUuid: Type.String({ format: 'uuid' }),
  region: Type.String(),
  isolation: Type.String(),
  networkPartition: Type.String(),
  dataPartition: Type.Object({ model: Type.String(), kind: Type.String(), name: Type.String() }),
});

export const Actor = Type.Object({ principal: Type.String(), kind: Type.String() });

/** The dry run's answer: from and to, the steps it would take and each policy's verdict. */
export function movePlanSchema<T extends TProperties>(extra: T) {
  return Type.Object({
    dryRun: Type.Literal(true),
    tenant: Type.String(),
    from: Binding,
    to: Binding,
    ...extra,
    steps: Type.Array(Type.String()),
    verdicts: Type.Array(Type.Object({ rule: Type.String(), outcome: Type.String(), detail: Type.String() })),
  });
}

export const TenantParams = Type.Object({ ref: Type.String({ minLength: 1, maxLength: 300 }) });

/** `/v1/tenants/{ref}/<records>/{id}` */
export const TenantRecordParams = Type.Object({
  ref: Type.String({ minLength: 1, maxLength: 300 }),
  id: Type.String({ minLength: 1, maxLength: 100 }),
});
