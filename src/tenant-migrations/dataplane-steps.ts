/**
 * The steps of a data-plane class (IsolationDataPlane, RegionDataPlane): methods of one JSON
 * argument, run in this process or by a cell's agent as its commands (src/agent/agent-ops.ts).
 */
export type StepInput<T, S extends keyof T> = T[S] extends (input: infer I) => Promise<unknown> ? I : never;
export type StepOutput<T, S extends keyof T> = T[S] extends (input: never) => Promise<infer O> ? O : never;

/** The steps `S` of `T`, wherever they run. */
export type Executor<T, S extends keyof T> = {
  [K in S]: (input: StepInput<T, K>) => Promise<StepOutput<T, K>>;
};
