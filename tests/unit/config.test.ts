import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  CONFIG_EXIT_CODE,
  configSchema,
  formatConfigProblems,
  parseConfig,
  selfhealDatabaseUrl,
} from '../../core/config';
import { ENV_EXAMPLE_PATH, README_PATH, renderEnvExample, renderReadme } from '../../starter/config-docs';
import { CLI } from '../helpers/cli';

describe('parseConfig: good environments', () => {
  const cases: { name: string; env: Record<string, string>; expect: Record<string, unknown> }[] = [
    {
      name: 'empty environment gives the conservative defaults',
      env: {},
      expect: {
        TEMPORAL_ADDRESS: 'localhost:7233',
        TEMPORAL_NAMESPACE: 'default',
        MONITOR_INTERVAL: 60,
        QUEUE_STALL_THRESHOLD: 600,
        // The seed's thresholds: an error rate above 15 %, a document processing for more than 30 minutes.
        ERROR_RATE_THRESHOLD: 0.15,
        STUCK_DOCUMENT_THRESHOLD: 1800,
        MAX_ACTIONS_PER_HOUR: 5,
        AUTO_FIX_ENABLED: false,
        METRICS_PORT: 8001,
        METRICS_HOST: '127.0.0.1',
        HEALTH_TARGETS: [],
        APPROVERS: [],
        CONTAINER_ALLOWLIST: ['pipeline-*'],
      },
    },
    {
      name: 'empty strings count as unset',
      env: { MONITOR_INTERVAL: '', AUTO_FIX_ENABLED: '  ' },
      expect: { MONITOR_INTERVAL: 60, AUTO_FIX_ENABLED: false },
    },
    {
      name: 'numbers, booleans and lists are parsed',
      env: {
        MONITOR_INTERVAL: '2',
        ERROR_RATE_THRESHOLD: '0.35',
        AUTO_FIX_ENABLED: 'TRUE',
        MIN_CONFIDENCE: '1',
        RESTART_COOLDOWN: '0',
        CONTAINER_ALLOWLIST: 'pipeline-*, worker-?',
        APPROVERS: 'alice,bob@example.org',
      },
      expect: {
        MONITOR_INTERVAL: 2,
        ERROR_RATE_THRESHOLD: 0.35,
        AUTO_FIX_ENABLED: true,
        MIN_CONFIDENCE: 1,
        RESTART_COOLDOWN: 0,
        CONTAINER_ALLOWLIST: ['pipeline-*', 'worker-?'],
        APPROVERS: ['alice', 'bob@example.org'],
      },
    },
    {
      name: 'HEALTH_TARGETS pairs keep the container a restart would act on',
      env: {
        HEALTH_TARGETS:
          'pipeline-extract-1=http://127.0.0.1:9101/health, pipeline-evaluate-1=http://localhost:9201/health',
      },
      expect: {
        HEALTH_TARGETS: [
          { container: 'pipeline-extract-1', url: 'http://127.0.0.1:9101/health' },
          { container: 'pipeline-evaluate-1', url: 'http://localhost:9201/health' },
        ],
      },
    },
    {
      name: 'URLs and secrets',
      env: {
        DATABASE_URL: 'postgresql://u:p@db:5432/x',
        REDIS_URL: 'rediss://cache:6380',
        ESCALATION_WEBHOOK_URL: 'https://hooks.example.org/x',
        APPROVAL_SECRET: '0123456789abcdef',
      },
      expect: { DATABASE_URL: 'postgresql://u:p@db:5432/x', APPROVAL_SECRET: '0123456789abcdef' },
    },
  ];
  it.each(cases)('$name', ({ env, expect: want }) => {
    const r = parseConfig(env);
    if (!r.ok) throw new Error(formatConfigProblems(r.problems));
    expect(r.config).toMatchObject(want);
  });

  it('leaves optional variables unset and denies the infrastructure containers by default', () => {
    const r = parseConfig({});
    if (!r.ok) throw new Error(formatConfigProblems(r.problems));
    expect(r.config.ESCALATION_WEBHOOK_URL).toBeUndefined();
    expect(r.config.APPROVAL_SECRET).toBeUndefined();
    expect(r.config.TEMPORAL_CLI_PATH).toBeUndefined();
    expect(r.config.SELFHEAL_DATABASE_URL).toBeUndefined();
    expect(r.config.CONTAINER_DENYLIST).toEqual(
      expect.arrayContaining(['*postgres*', '*redis*', '*temporal*', 'selfheal-*']),
    );
  });
});

describe("SELFHEAL_DATABASE_URL: where selfheal's own tables live", () => {
  const watched = 'postgres://reader:pw@pipeline-db:5432/pipeline';
  it('defaults to DATABASE_URL (one database holds both)', () => {
    for (const env of [{ DATABASE_URL: watched }, { DATABASE_URL: watched, SELFHEAL_DATABASE_URL: '  ' }]) {
      const r = parseConfig(env);
      if (!r.ok) throw new Error(formatConfigProblems(r.problems));
      expect(selfhealDatabaseUrl(r.config)).toBe(watched);
    }
  });
  it("when set, holds selfheal's tables and leaves DATABASE_URL to the watched pipeline", () => {
    const own = 'postgresql://selfheal:pw@selfheal-db:5432/selfheal';
    const r = parseConfig({ DATABASE_URL: watched, SELFHEAL_DATABASE_URL: own });
    if (!r.ok) throw new Error(formatConfigProblems(r.problems));
    expect(selfhealDatabaseUrl(r.config)).toBe(own);
    expect(r.config.DATABASE_URL).toBe(watched);
  });
  it('must be a Postgres URL, and is a secret: never echoed', () => {
    const r = parseConfig({ SELFHEAL_DATABASE_URL: 'mysql://selfheal:hunter2@db/x' });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.problems).toEqual([{ variable: 'SELFHEAL_DATABASE_URL', expected: expect.any(String), got: '(hidden)' }]);
    expect(formatConfigProblems(r.problems)).not.toContain('hunter2');
    expect(formatConfigProblems(r.problems)).toMatch(
      /SELFHEAL_DATABASE_URL: expected a URL \(postgres:\/\/ or postgresql:\/\/\.\.\.\)/,
    );
  });
});

describe('parseConfig: bad environments list every bad variable', () => {
  const cases: { name: string; env: Record<string, string>; bad: string[]; message?: RegExp }[] = [
    {
      name: 'not a number',
      env: { MONITOR_INTERVAL: 'soon' },
      bad: ['MONITOR_INTERVAL'],
      message: /whole number of seconds/,
    },
    { name: 'zero interval', env: { MONITOR_INTERVAL: '0' }, bad: ['MONITOR_INTERVAL'] },
    { name: 'fractional seconds', env: { VERIFY_DELAY: '1.5' }, bad: ['VERIFY_DELAY'] },
    { name: 'negative', env: { MAX_REQUEUES: '-1' }, bad: ['MAX_REQUEUES'] },
    {
      name: 'fraction above 1',
      env: { ERROR_RATE_THRESHOLD: '1.5', MIN_CONFIDENCE: '2' },
      bad: ['ERROR_RATE_THRESHOLD', 'MIN_CONFIDENCE'],
    },
    { name: 'boolean', env: { AUTO_FIX_ENABLED: 'maybe' }, bad: ['AUTO_FIX_ENABLED'], message: /true or false/ },
    { name: 'port out of range', env: { METRICS_PORT: '70000' }, bad: ['METRICS_PORT'] },
    {
      name: 'wrong URL scheme',
      env: { DATABASE_URL: 'mysql://x', REDIS_URL: 'http://x' },
      bad: ['DATABASE_URL', 'REDIS_URL'],
    },
    {
      name: 'temporal address',
      env: { TEMPORAL_ADDRESS: 'http://localhost:7233' },
      bad: ['TEMPORAL_ADDRESS'],
      message: /host:port/,
    },
    {
      name: 'health target without url',
      env: { HEALTH_TARGETS: 'pipeline-1' },
      bad: ['HEALTH_TARGETS'],
      message: /container=http/,
    },
    { name: 'health target with bad url', env: { HEALTH_TARGETS: 'a=http://x/h,b=ftp://y' }, bad: ['HEALTH_TARGETS'] },
    { name: 'short secret', env: { APPROVAL_SECRET: 'short' }, bad: ['APPROVAL_SECRET'], message: /16 characters/ },
    { name: 'bad glob', env: { CONTAINER_DENYLIST: 'postgres,bad name' }, bad: ['CONTAINER_DENYLIST'] },
    {
      name: 'several at once, all listed',
      env: {
        MONITOR_INTERVAL: 'x',
        METRICS_PORT: 'y',
        AUTO_FIX_ENABLED: 'z',
        LLM_TIMEOUT_MS: '5',
        OLLAMA_HOST: 'nope',
      },
      bad: ['AUTO_FIX_ENABLED', 'LLM_TIMEOUT_MS', 'METRICS_PORT', 'MONITOR_INTERVAL', 'OLLAMA_HOST'],
    },
  ];
  it.each(cases)('$name', ({ env, bad, message }) => {
    const r = parseConfig(env);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.problems.map((p) => p.variable).sort()).toEqual(bad);
    const text = formatConfigProblems(r.problems);
    for (const v of bad) expect(text).toContain(v);
    if (message) expect(text).toMatch(message);
  });

  it('never echoes secrets in the message', () => {
    const r = parseConfig({ DATABASE_URL: 'mysql://user:hunter2@db/x' });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(formatConfigProblems(r.problems)).not.toContain('hunter2');
  });
});

describe('the CLI with a bad environment', () => {
  it('exits 2 before doing anything and names every bad variable', () => {
    const run = spawnSync(process.execPath, [...CLI, 'migrate'], {
      env: { PATH: process.env.PATH, MONITOR_INTERVAL: 'abc', DATABASE_URL: 'nope', METRICS_PORT: '0' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(run.status).toBe(CONFIG_EXIT_CODE);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/invalid configuration \(3 problems\)/);
    for (const v of ['MONITOR_INTERVAL', 'DATABASE_URL', 'METRICS_PORT']) expect(run.stderr).toContain(v);
  });
});

describe('generated configuration docs', () => {
  it('every schema variable is documented', () => {
    for (const [name, schema] of Object.entries(configSchema.shape)) {
      expect(schema.description, name).toBeTruthy();
    }
  });
  it('.env.example and the README table are current (run npm run docs:config)', async () => {
    expect(readFileSync(ENV_EXAMPLE_PATH, 'utf8')).toBe(renderEnvExample());
    const readme = readFileSync(README_PATH, 'utf8');
    expect(readme).toBe(await renderReadme(readme));
  });
});
