/** Manifests for the runtime inventory tests (src/runtime). */
export const doc = (kind: string, metadata: Record<string, unknown>, spec: Record<string, unknown>) => ({
  apiVersion: 'tenantry.dev/v1',
  kind,
  metadata,
  spec,
});
export const DIGEST = `sha256:${'c'.repeat(64)}`;

/** A tenant `acme-eu-prod` on plan `compute` (computeUnits 10) with the deployment `acme-eu-prod-plan`. */
export function runtimeBase(computeUnits = 10): unknown[] {
  return [
    doc(
      'Plan',
      { name: 'compute' },
      { displayName: 'Compute', isolationModels: ['shared'], quotas: { computeUnits } },
    ),
    doc('Customer', { name: 'acme' }, { displayName: 'Acme', shortCode: 'acme' }),
    doc('Tenant', {}, { customer: 'acme', region: 'eu', environmentType: 'prod', plan: 'compute' }),
    doc('System', { name: 'plan' }, { displayName: 'Plan', serviceId: 'plan' }),
    doc('Deployment', {}, { tenant: 'acme-eu-prod', system: 'plan' }),
  ];
}
export const serviceDoc = (spec: Record<string, unknown> = {}) =>
  doc(
    'Service',
    {},
    {
      deployment: 'acme-eu-prod-plan',
      component: 'api',
      image: `registry.example/plan@${DIGEST}`,
      version: '1.0.0',
      replicas: 2,
      unitCost: 2,
      ...spec,
    },
  );
export const policyDoc = (maxReplicas: number, minReplicas = 1) =>
  doc(
    'ScalingPolicy',
    {},
    {
      service: 'acme-eu-prod-plan-api',
      metric: 'cpu',
      minReplicas,
      maxReplicas,
      targetUtilization: 70,
    },
  );
export const configDoc = (version: number, content: Record<string, unknown>, state = 'active', extra = {}) =>
  doc(
    'Configuration',
    {},
    {
      tenant: 'acme-eu-prod',
      name: 'plan',
      version,
      content,
      state,
      reason: `version ${version}`,
      ...extra,
    },
  );
