/**
 * The default Cedar policy set. Principals are `User` or `Service` entities with attributes
 * `roles` (Set<String>), `tenant` (UUID, "" for platform scope), `customer` (UUID or ""),
 * `platform` (Bool) and `subject`; resources are `Resource` entities with `kind`, `tenant` and
 * `customer` ("" when the resource belongs to no tenant/customer) and, for sessions, `owner`.
 * Every route action (`<area>.<verb>`) is a member of one group: `read`, `operate` (lifecycle
 * workflows) or `write` (everything else), see src/authz/actions.ts.
 * Operators add policies with TENANTRY_POLICY_FILE; they are validated against the schema at start.
 */
export const DEFAULT_POLICIES: Record<string, string> = {
  'platform-admin': `permit (principal, action, resource)
when { principal.platform && principal.roles.contains("platform-admin") };`,

  'platform-operator': `permit (principal, action in [Action::"read", Action::"operate"], resource)
when { principal.platform && principal.roles.contains("platform-operator") };`,

  'tenant-admin': `permit (principal, action in [Action::"read", Action::"write", Action::"operate"], resource)
when { !principal.platform && principal.roles.contains("tenant-admin") && resource.tenant == principal.tenant };`,

  'tenant-reader': `permit (principal, action in Action::"read", resource)
when {
  !principal.platform &&
  (principal.roles.contains("tenant-reader") || principal.roles.contains("tenant-admin")) &&
  (resource.tenant == principal.tenant ||
    (resource.tenant == "" &&
      (resource.customer == principal.customer || ["System", "Region", "Cell", "Plan"].contains(resource.kind))))
};`,

  service: `permit (principal is Service, action in [Action::"read", Action::"operate"], resource)
when { principal.roles.contains("service") && (principal.platform || resource.tenant == principal.tenant) };`,

  'session-owner': `permit (principal, action == Action::"session.revoke", resource)
when { resource has owner && resource.owner == principal.subject };`,

  'break-glass-request': `permit (principal, action == Action::"breakglass.request", resource)
when { principal.platform && (principal.roles.contains("platform-operator") || principal.roles.contains("break-glass")) };`,

  'break-glass-owner': `permit (principal, action == Action::"breakglass.end", resource)
when { resource has owner && resource.owner == principal.subject };`,

  'tenant-boundary': `forbid (principal, action, resource)
when { !principal.platform && resource.tenant != "" && resource.tenant != principal.tenant };`,
};
