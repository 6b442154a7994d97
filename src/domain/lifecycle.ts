/** The tenant lifecycle of DESIGN.md §1: Draft → Active ⇄ Suspended → Archived → Deleted. */
export const LIFECYCLE_STATES = ['Draft', 'Active', 'Suspended', 'Archived', 'Deleted'] as const;
export type LifecycleState = (typeof LIFECYCLE_STATES)[number];

export const LIFECYCLE_ACTIONS = ['activate', 'suspend', 'resume', 'archive', 'delete'] as const;
export type LifecycleAction = (typeof LIFECYCLE_ACTIONS)[number];

const TRANSITIONS: Record<LifecycleAction, { from: readonly LifecycleState[]; to: LifecycleState }> = {
  activate: { from: ['Draft'], to: 'Active' },
  suspend: { from: ['Active'], to: 'Suspended' },
  resume: { from: ['Suspended'], to: 'Active' },
  archive: { from: ['Suspended', 'Active'], to: 'Archived' },
  delete: { from: ['Archived', 'Draft'], to: 'Deleted' },
};

/** The state an action leads to, or undefined when the action is not allowed from `from`. */
export function nextState(from: LifecycleState, action: LifecycleAction): LifecycleState | undefined {
  const t = TRANSITIONS[action];
  return t.from.includes(from) ? t.to : undefined;
}

export function allowedActions(from: LifecycleState): LifecycleAction[] {
  return LIFECYCLE_ACTIONS.filter((a) => nextState(from, a) !== undefined);
}
