import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['tests/unit/**/*.test.ts'],
          // Not a speed limit (speed is measured by npm run bench): the few unit tests that spawn the CLI, compile a
          // schema or fuzz 3,000 replies took 5.5-8 s on the loaded 2-core machine, over vitest's 5 s default.
          testTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['tests/integration/**/*.test.ts'],
          globalSetup: ['tests/helpers/global-setup.ts'],
          // Integration tests share one Temporal server, Postgres, Redis and Docker: run them one file at a time.
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
      {
        test: {
          // The compose deployment (tests/deploy/): its own Temporal, Postgres and containers on the host's ports
          // 7233, 8080 and 8001. A group of its own (groupOrder 1, after the unit tests; vitest runs the integration
          // files, one at a time, as a group after that), so that its containers (labelled like the reference
          // pipeline's) never meet an integration test's.
          name: 'deploy',
          include: ['tests/deploy/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 600_000,
          hookTimeout: 1_800_000,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
