import { describe, expect, it } from 'vitest';
import {
  type CellCandidate,
  chooseCell,
  isRefusal,
  type PlacementRequest,
  regionOrder,
} from './placement.rules.js';

const cell = (slug: string, region: string, extra: Partial<CellCandidate> = {}): CellCandidate => ({
  id: `id-${slug}`,
  slug,
  region,
  tenancy: 'shared',
  environmentTypes: ['prod'],
  capacity: 10,
  allocated: 0,
  ...extra,
});
const req = (extra: Partial<PlacementRequest> = {}): PlacementRequest => ({
  tenantId: '00000000-0000-4000-8000-000000000001',
  tenantSlug: 'acme-eu-prod',
  region: 'eu',
  environmentType: 'prod',
  ...extra,
});

describe('placement rules', () => {
  it('orders regions: preferred, home, then the allowed list', () => {
    expect(regionOrder(req({ allowedRegions: ['ch', 'eu', 'uk'], preferredRegion: 'uk' }))).toEqual([
      'uk',
      'eu',
      'ch',
    ]);
    expect(regionOrder(req())).toEqual(['eu']);
  });

  it('prefers the preferred region, then the cell with most room', () => {
    const cells = [
      cell('eu-a', 'eu', { allocated: 5 }),
      cell('eu-b', 'eu', { allocated: 2 }),
      cell('ch-a', 'ch'),
    ];
    expect(chooseCell(req({ allowedRegions: ['eu', 'ch'] }), cells)).toMatchObject({ cell: 'eu-b' });
    expect(chooseCell(req({ allowedRegions: ['eu', 'ch'], preferredRegion: 'ch' }), cells)).toMatchObject({
      cell: 'ch-a',
      region: 'ch',
    });
  });

  it('falls over to another allowed region when the home region is full, never to a disallowed one', () => {
    const cells = [cell('eu-a', 'eu', { allocated: 10 }), cell('us-a', 'us'), cell('ch-a', 'ch')];
    expect(chooseCell(req({ allowedRegions: ['eu', 'ch'] }), cells)).toMatchObject({ cell: 'ch-a' });
    const full = chooseCell(req(), cells);
    expect(isRefusal(full) && full.code).toBe('placement.no_capacity');
  });

  it('puts silos in dedicated cells with a database partition, shared tenants behind a row filter', () => {
    const cells = [cell('eu-a', 'eu'), cell('eu-silo', 'eu', { tenancy: 'dedicated', capacity: 1 })];
    expect(
      chooseCell(req({ isolation: 'silo', plan: { code: 'ent', isolationModels: ['silo'] } }), cells),
    ).toMatchObject({
      cell: 'eu-silo',
      networkPartition: 'eu-silo/dedicated',
      dataPartition: { kind: 'database', name: 'tenantry_acme_eu_prod' },
    });
    expect(chooseCell(req(), cells)).toMatchObject({
      cell: 'eu-a',
      isolation: 'shared',
      dataPartition: { kind: 'row-filter', name: "tenant_id = '00000000-0000-4000-8000-000000000001'" },
    });
  });

  it('names the rule of every refusal', () => {
    const cells = [cell('eu-a', 'eu'), cell('us-a', 'us')];
    const code = (r: PlacementRequest) => {
      const out = chooseCell(r, cells);
      return isRefusal(out) ? [out.code, out.pointer] : undefined;
    };
    expect(code(req({ cell: 'us-a' }))).toEqual(['placement.residency_violation', '/spec/cell']);
    expect(code(req({ preferredRegion: 'us' }))).toEqual([
      'placement.residency_violation',
      '/spec/residency/preferredRegion',
    ]);
    expect(code(req({ allowedRegions: ['us'] }))).toEqual([
      'placement.residency_violation',
      '/spec/residency/allowedRegions',
    ]);
    expect(
      code(req({ isolation: 'silo', plan: { code: 'std', isolationModels: ['shared', 'pool'] } })),
    ).toEqual(['placement.isolation_not_allowed', '/spec/isolation']);
    expect(code(req({ environmentType: 'dev' }))).toEqual(['placement.no_cell', '/spec']);
    // A plan without shared defaults the tenant to its first model.
    expect(chooseCell(req({ plan: { code: 'p', isolationModels: ['pool'] } }), cells)).toMatchObject({
      isolation: 'pool',
    });
  });
});
