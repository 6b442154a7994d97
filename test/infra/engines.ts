/**
 * Tests that need an engine (Kafka, Azurite) skip with a one-line reason when it is absent, except
 * where TENANTRY_TEST_REQUIRE_ENGINES is set (CI: .ci/run), where an absent engine fails the run.
 */
export function skipReason(what: string, reason: string | undefined): string | undefined {
  if (!reason) return undefined;
  if (process.env.TENANTRY_TEST_REQUIRE_ENGINES)
    throw new Error(`${what}: ${reason} (TENANTRY_TEST_REQUIRE_ENGINES is set: nothing may skip)`);
  console.warn(`skipping ${what}: ${reason}`);
  return reason;
}
