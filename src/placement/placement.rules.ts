/**
 * The placement resolver's rules, without I/O: which regions a tenant may live in, which isolation
 * models its plan allows, and which cell it goes to. The caller supplies the candidate cells, locked.
 */
export type Isolation = 'shared' | 'pool' | 'silo';

export interface CellCandidate {
  id: string;
  slug: string;
  region: string;
  tenancy: 'shared' | 'dedicated';
  environmentTypes: string[];
  capacity: number;
  allocated: number;
}

export interface PlacementRequest {
  tenantId: string;
  tenantSlug: string;
  /** The tenant's home region (part of its slug). */
  region: string;
  environmentType: string;
  isolation?: Isolation | undefined;
  allowedRegions?: string[] | undefined;
  preferredRegion?: string | undefined;
  /** A cell the manifest pins the tenant to. */
  cell?: string | undefined;
  plan?: { code: string; isolationModels: Isolation[] } | undefined;
}

/** A refused request: a stable code naming the rule, the JSON pointer (below the manifest) and why. */
export interface Refusal {
  code:
    | 'placement.residency_violation'
    | 'placement.isolation_not_allowed'
    | 'placement.no_cell'
    | 'placement.no_capacity'
    | 'placement.migration_required';
  pointer: string;
  message: string;
  details: Record<string, unknown>;
}

export interface DataPartition {
  model: Isolation;
  /** shared: the row filter; pool: the schema; silo: the database. */
  kind: 'row-filter' | 'schema' | 'database';
  name: string;
}

export interface Binding {
  cell: string;
  cellUuid: string;
  region: string;
  isolation: Isolation;
  networkPartition: string;
  dataPartition: DataPartition;
}

export const isolationOf = (r: PlacementRequest): Isolation =>
  r.isolation ??
  (r.plan && !r.plan.isolationModels.includes('shared') ? r.plan.isolationModels[0]! : 'shared');

/** The regions a tenant may live in, preferred first, then its home region, then the rest as listed. */
export function regionOrder(r: PlacementRequest): string[] {
  const allowed = r.allowedRegions ?? [r.region];
  const order = [r.preferredRegion, r.region, ...allowed].filter((x): x is string => x !== undefined);
  return [...new Set(order)].filter((x) => allowed.includes(x));
}

/** Residency and plan rules that hold whatever cell is chosen; checked on every change. */
export function policyRefusal(r: PlacementRequest): Refusal | undefined {
  const allowed = r.allowedRegions ?? [r.region];
  if (!allowed.includes(r.region)) {
    return {
      code: 'placement.residency_violation',
      pointer: '/spec/residency/allowedRegions',
      message: `the tenant's own region "${r.region}" is not among its allowed regions (${allowed.join(', ')})`,
      details: { rule: 'residency', region: r.region, allowedRegions: allowed },
    };
  }
  if (r.preferredRegion !== undefined && !allowed.includes(r.preferredRegion)) {
    return {
      code: 'placement.residency_violation',
      pointer: '/spec/residency/preferredRegion',
      message: `preferred region "${r.preferredRegion}" is outside the allowed regions (${allowed.join(', ')})`,
      details: { rule: 'residency', region: r.preferredRegion, allowedRegions: allowed },
    };
  }
  const isolation = isolationOf(r);
  if (r.plan && !r.plan.isolationModels.includes(isolation)) {
    return {
      code: 'placement.isolation_not_allowed',
      pointer: r.isolation ? '/spec/isolation' : '/spec/plan',
      message: `plan "${r.plan.code}" allows ${r.plan.isolationModels.join(', ')}, not ${isolation}`,
      details: { rule: 'plan.isolation', plan: r.plan.code, isolation, allowed: r.plan.isolationModels },
    };
  }
  return undefined;
}

export function partitionsOf(
  tenant: { id: string; slug: string },
  cell: string,
  isolation: Isolation,
): Pick<Binding, 'networkPartition' | 'dataPartition'> {
  const base = tenant.slug.replace(/-/g, '_');
  return {
    networkPartition: `${cell}/${isolation === 'silo' ? 'dedicated' : 'shared'}`,
    dataPartition:
      isolation === 'silo'
        ? { model: isolation, kind: 'database', name: `tenantry_${base}` }
        : isolation === 'pool'
          ? { model: isolation, kind: 'schema', name: `t_${base}` }
          : { model: isolation, kind: 'row-filter', name: `tenant_id = '${tenant.id}'` },
  };
}

/**
 * Picks a cell: the tenant's policy first, then, among cells of an allowed region that host its
 * environment type with the right tenancy (silo → dedicated, else shared), the first region in
 * `regionOrder`, then the most free capacity, then the name.
 */
export function chooseCell(r: PlacementRequest, cells: CellCandidate[]): Binding | Refusal {
  const policy = policyRefusal(r);
  if (policy) return policy;
  const isolation = isolationOf(r);
  const tenancy = isolation === 'silo' ? 'dedicated' : 'shared';
  const regions = regionOrder(r);
  const at = r.cell !== undefined ? '/spec/cell' : '/spec';
  if (r.cell !== undefined) {
    const pinned = cells.find((c) => c.slug === r.cell);
    if (pinned && !regions.includes(pinned.region)) {
      return {
        code: 'placement.residency_violation',
        pointer: '/spec/cell',
        message: `cell "${pinned.slug}" is in region "${pinned.region}", outside the allowed regions (${regions.join(', ')})`,
        details: { rule: 'residency', cell: pinned.slug, region: pinned.region, allowedRegions: regions },
      };
    }
  }
  const fitting = cells.filter(
    (c) =>
      (r.cell === undefined || c.slug === r.cell) &&
      regions.includes(c.region) &&
      c.tenancy === tenancy &&
      c.environmentTypes.includes(r.environmentType),
  );
  if (fitting.length === 0) {
    return {
      code: 'placement.no_cell',
      pointer: at,
      message: `no ${tenancy} cell hosts ${r.environmentType} tenants in ${regions.join(', ')}${r.cell ? ` (pinned: ${r.cell})` : ''}`,
      details: { rule: 'placement', regions, tenancy, environmentType: r.environmentType },
    };
  }
  const free = fitting
    .filter((c) => c.allocated < c.capacity)
    .sort(
      (a, b) =>
        regions.indexOf(a.region) - regions.indexOf(b.region) ||
        b.capacity - b.allocated - (a.capacity - a.allocated) ||
        a.slug.localeCompare(b.slug),
    );
  const cell = free[0];
  if (!cell) {
    return {
      code: 'placement.no_capacity',
      pointer: at,
      message: `every fitting cell is full: ${fitting.map((c) => `${c.slug} ${c.allocated}/${c.capacity}`).join(', ')}`,
      details: {
        rule: 'capacity',
        cells: fitting.map((c) => ({ cell: c.slug, allocated: c.allocated, capacity: c.capacity })),
      },
    };
  }
  return {
    cell: cell.slug,
    cellUuid: cell.id,
    region: cell.region,
    isolation,
    ...partitionsOf({ id: r.tenantId, slug: r.tenantSlug }, cell.slug, isolation),
  };
}

export const isRefusal = (x: Binding | Refusal): x is Refusal => 'code' in x;
