// Jest in ESM mode through ts-jest: tests import the TypeScript sources directly.
// Integration and end-to-end tests also spawn the built CLI (dist/), which `npm test` builds first.
export default {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  modulePathIgnorePatterns: ['<rootDir>/dist/'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: {
    '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.json', diagnostics: { warnOnly: false } }],
  },
  // Tests share the kernel (mounts, namespaces) and two cores: run files one at a time in CI.
  maxWorkers: 1,
  testTimeout: 60000,
  // every test file's scratch directories are removed when it ends (test/support/scratch.ts)
  setupFilesAfterEnv: ['<rootDir>/test/support/jest-scratch.ts'],
};
