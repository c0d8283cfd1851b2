import os from 'node:os';
import path from 'node:path';
import { defineConfig } from 'vitest/config';

/**
 * Integration files that run one at a time, after the parallel ones: those that drive the real model or a browser,
 * each taking most of a core while it runs (about 10 s each). The files that kill and restart the services they
 * depend on are as isolated as the others and run beside them: outage kills a private Postgres and Redis, restarts a
 * Temporal server of its own, each brought back on a port no other file can take meanwhile (`heldPort`,
 * tests/helpers/env.ts); the crash loop times each crash from selfheal's own state, not from the clock.
 */
const SERIAL = [
  'tests/integration/llm-real.test.ts',
  'tests/integration/local-model.test.ts',
  'tests/integration/web-ui.test.ts',
];

/**
 * Integration files at once (SELFHEAL_TEST_WORKERS, default 5). Each stands up its own selfheal, pipeline
 * containers, namespace, schema and Redis prefix (tests/helpers/stack.ts), so they are isolated and may run side by
 * side. Most of their time is waiting on the system under test (cycles, thresholds, timers), not the CPU: on a fresh
 * clone the 2 cores were idle 41 % of a CI run with three at a time (852 s), 22 % with four (677-750 s) and 27 % with
 * five (597 s) (vmstat; 996 s when the files above were serial too).
 * The 5-minute chaos soak (project chaos-soak) takes one of the five for its whole run.
 */
const PARALLEL = Number(process.env.SELFHEAL_TEST_WORKERS ?? 5);

const integration = {
  globalSetup: ['tests/helpers/global-setup.ts'],
  testTimeout: 120_000,
  hookTimeout: 120_000,
};

/**
 * vitest keeps each file's last duration here, outside the clone (with the other install caches, SELFHEAL_CACHE_DIR),
 * so that a clean clone's run also starts the longest files first and two workers end close together.
 */
const CACHE_DIR = path.join(
  process.env.SELFHEAL_CACHE_DIR ??
    path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'selfheal'),
  'vitest',
);

export default defineConfig({
  cacheDir: CACHE_DIR,
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
          exclude: SERIAL,
          maxWorkers: PARALLEL,
          ...integration,
          // After the unit tests, beside the compose deployment (project deploy below).
          sequence: { groupOrder: 2 },
        },
      },
      {
        test: {
          name: 'integration-serial',
          include: SERIAL,
          fileParallelism: false,
          ...integration,
          // A group of its own: vitest runs projects of one group with one worker limit.
          sequence: { groupOrder: 3 },
        },
      },
      {
        test: {
          // The 5-minute chaos soak (tests/soak/soak.test.ts): its own `selfheal up`, dev server, schema, Redis prefix
          // and pipeline containers, so it runs beside the integration files, in their group and worker limit. Named
          // to sort first: vitest starts the projects of a group in name order, and the longest file must start first.
          name: 'chaos-soak',
          include: ['tests/soak/**/*.test.ts'],
          maxWorkers: PARALLEL,
          testTimeout: 1_200_000,
          sequence: { groupOrder: 2 },
        },
      },
      {
        test: {
          // The compose deployment (tests/deploy/compose.test.ts, one file): its own Temporal, Postgres and
          // containers on the host's ports 7233, 8080 and 8001, which no integration file uses (they take free
          // ports), and containers labelled apart from theirs. So it runs beside the integration files, before
          // them and after the soak (projects of a group start in name order), in their group and with their worker limit (vitest requires
          // one limit per group). A second file here would run beside it on the same ports: give it a group then.
          name: 'deploy',
          include: ['tests/deploy/**/*.test.ts'],
          maxWorkers: PARALLEL,
          testTimeout: 600_000,
          hookTimeout: 1_800_000,
          sequence: { groupOrder: 2 },
        },
      },
    ],
  },
});
