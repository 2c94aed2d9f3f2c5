// Mutation testing of the pure core with StrykerJS: `npm run mutate` (never in CI; run it under the
// heavy lock, `flock /tmp/jailfleet-heavy.lock npm run mutate`). It mutates only code that is pure
// and deterministic, where a unit test can say exactly what is right. It must never run the
// integration or e2e tests: they need root, real jails and a nats-server, and a mutant there could
// leave mounts behind.
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  packageManager: 'npm',
  testRunner: 'jest',
  // The project's jest is ESM through ts-jest (jest.config.js); the runner's workers need the flag.
  testRunnerNodeArgs: ['--experimental-vm-modules'],
  jest: {
    projectType: 'custom',
    configFile: 'jest.config.js',
    config: {
      testMatch: ['<rootDir>/test/unit/**/*.test.ts'],
      // plan-cli runs the built CLI (dist/), which no mutant reaches. The agent's own tests
      // (drivers, cgroups, console, flags, step limit) spawn processes and test the agent, not
      // the core; they only slow every mutant that a spec parse reaches.
      testPathIgnorePatterns: [
        '/node_modules/',
        '/test/unit/(plan-cli|freebsd-driver|cgroup-limits|console-log|agent-flags|step-limit)\\.test\\.ts$',
      ],
    },
    enableFindRelatedTests: false,
  },
  coverageAnalysis: 'perTest',
  // A static mutant (one in code run at import, like a zod schema's declaration) re-runs every
  // test: there are about 600 of them, 70 % of the run time, hours on two shared cores. They are
  // reported as ignored; set this to false for a full run that includes them.
  ignoreStatic: true,
  mutate: [
    'machines/**/*.ts',
    'contracts/**/*.ts',
    '!contracts/export-json-schema.ts',
    '!contracts/json-schema/**',
    'services/status/cluster-view.ts',
    'services/scheduler/packing.ts',
    'services/scheduler/plan.ts',
    'services/scheduler/live-packing.ts',
    // The scheduler's pure decisions, once they are split out of scheduler.ts; no match until then.
    'services/scheduler/decide*.ts',
    'services/scheduler/move*.ts',
  ],
  ignorePatterns: ['dist', 'coverage', 'reports', 'native', 'deploy', 'docs'],
  // Two cores, shared with other engineers.
  concurrency: 2,
  timeoutMS: 20000,
  // Re-runs test only the mutants whose code or covering tests changed.
  incremental: true,
  incrementalFile: 'reports/stryker-incremental.json',
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  clearTextReporter: { allowColor: false, reportMutants: false, reportTests: false },
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
};
