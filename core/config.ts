import { z } from 'zod';
import type { Thresholds } from './detectors';

/**
 * selfheal's configuration: every environment variable (docs/ARCHITECTURE.md, Configuration), validated once at each entry point.
 * Defaults are the conservative ones, so a fresh install observes and escalates but never acts on its own.
 * Each field's documentation (units, default) is its `.describe()` text, from which `.env.example` and the
 * README's configuration table are generated (`npm run docs:config`) and checked by a test.
 */

/** A whole number of seconds (durations are whole seconds in the contract). */
const seconds = (def: number, min = 1) =>
  z
    .string()
    .trim()
    .regex(/^\d+$/, { error: `expected a whole number of seconds >= ${min}` })
    .transform(Number)
    .pipe(
      z
        .number()
        .int()
        .min(min, { error: `expected a whole number of seconds >= ${min}` }),
    )
    .default(def);

/**
 * Default HEALING_CACHED_WORKFLOWS, sized from measurements of the compiled healing worker with selfheal up's memory
 * settings (2026-12-05) against the target of 250 MB per process. 500 anomalies healed at once (`npm run bench --
 * system --bursts 500`): with 100 cached runs the worker peaked at 237-254 MB in five runs (once 260 MB earlier that
 * day), with 50 at 214-234 MB in eleven, in about the same time (52.9-63.7 s against 53.2-73.2 s). 500 healings open
 * at once, waiting for approval (`npm run bench -- system --cache 25,50,100,200`): 152 MB at rest, and 201, 212, 218
 * and 261 MB once all waited with 25, 50, 100 and 200 cached runs (0.1-0.4 MB a cached run). A run out of the cache
 * replays its history (about 65 events) on its next workflow task: the 500 took 38, 31, 17.5 and 16.3 s to reach their
 * approval wait.
 */
export const HEALING_CACHED_WORKFLOWS_DEFAULT = 50;

const integer = (def: number, min: number, max = Number.MAX_SAFE_INTEGER, what = 'whole number') =>
  z
    .string()
    .trim()
    .regex(/^\d+$/, { error: `expected a ${what} between ${min} and ${max}` })
    .transform(Number)
    .pipe(
      z
        .number()
        .int()
        .min(min, { error: `expected a ${what} between ${min} and ${max}` })
        .max(max, { error: `expected a ${what} between ${min} and ${max}` }),
    )
    .default(def);

const decimal = (def: number, min: number, max: number) =>
  z
    .string()
    .trim()
    .regex(/^\d+(\.\d+)?$/, { error: `expected a number between ${min} and ${max}` })
    .transform(Number)
    .pipe(
      z
        .number()
        .min(min, { error: `expected a number between ${min} and ${max}` })
        .max(max, { error: `expected a number between ${min} and ${max}` }),
    )
    .default(def);

const boolean = (def: boolean) =>
  z
    .string()
    .trim()
    .toLowerCase()
    .refine((v) => ['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'].includes(v), {
      error: 'expected true or false',
    })
    .transform((v) => ['true', '1', 'yes', 'on'].includes(v))
    .default(def);

const urlString = (protocols: string[]) =>
  z
    .string()
    .trim()
    .refine(
      (v) => {
        try {
          return protocols.includes(new URL(v).protocol);
        } catch {
          return false;
        }
      },
      { error: `expected a URL (${protocols.map((p) => p.replace(':', '://')).join(' or ')}...)` },
    );
const url = (protocols: string[], def: string) => urlString(protocols).default(def);
const optionalUrl = (protocols: string[]) => urlString(protocols).optional();

/** Comma-separated list; blanks dropped. */
const list = (def: string, item?: { re: RegExp; expected: string }) =>
  z
    .string()
    .transform(splitList)
    .refine((items) => !item || items.every((s) => item.re.test(s)), {
      error: item ? `expected a comma-separated list of ${item.expected}` : 'invalid list',
    })
    .default(splitList(def));

function splitList(v: string): string[] {
  return v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** One `HEALTH_TARGETS` entry: the container a restart would act on, and the URL that tells its health. */
export interface HealthTarget {
  container: string;
  url: string;
}

const healthTargets = z
  .string()
  .transform((v, ctx): HealthTarget[] => {
    const out: HealthTarget[] = [];
    for (const raw of v.split(',')) {
      const pair = raw.trim();
      if (!pair) continue;
      const eq = pair.indexOf('=');
      const container = eq > 0 ? pair.slice(0, eq).trim() : '';
      const target = eq > 0 ? pair.slice(eq + 1).trim() : '';
      let ok = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(container);
      try {
        ok = ok && ['http:', 'https:'].includes(new URL(target).protocol);
      } catch {
        ok = false;
      }
      if (!ok) {
        ctx.addIssue({ code: 'custom', message: `expected comma-separated container=http://url pairs, got "${pair}"` });
        return z.NEVER;
      }
      out.push({ container, url: target });
    }
    return out;
  })
  .default([]);

/** Temporal frontend address, host:port. */
const hostPort = z
  .string()
  .trim()
  .regex(/^[A-Za-z0-9.-]+:\d{1,5}$/, { error: 'expected host:port, e.g. localhost:7233' });

export const configSchema = z.object({
  TEMPORAL_ADDRESS: hostPort.default('localhost:7233').describe('Temporal frontend, host:port.'),
  TEMPORAL_NAMESPACE: z
    .string()
    .trim()
    .regex(/^[A-Za-z0-9._-]+$/, { error: 'expected a namespace name' })
    .default('default')
    .describe('Temporal namespace.'),
  DATABASE_URL: url(['postgres:', 'postgresql:'], 'postgres://selfheal:selfheal@127.0.0.1:5432/selfheal').describe(
    "Postgres connection string of the watched pipeline's database (`documents`): read, and written only by actions on `documents`.",
  ),
  SELFHEAL_DATABASE_URL: optionalUrl(['postgres:', 'postgresql:']).describe(
    "Postgres connection string of selfheal's own tables (`healing_log`, `action_permits`); empty means `DATABASE_URL`.",
  ),
  REDIS_URL: url(['redis:', 'rediss:'], 'redis://127.0.0.1:6379').describe(
    "Redis connection string of the pipeline queues and selfheal's streams.",
  ),
  REDIS_KEY_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9:._-]*$/, { error: 'expected letters, digits and : . _ -' })
    .default('')
    .describe('Prefix of every Redis key (queues, locks, streams).'),
  OLLAMA_HOST: url(['http:', 'https:'], 'http://127.0.0.1:11434').describe(
    'Ollama server used for diagnosis; at this default, `selfheal up` starts the local one when nothing answers.',
  ),
  OLLAMA_MODEL: z
    .string()
    .trim()
    .min(1, { error: 'expected a model name' })
    .default('llama3.2:3b')
    .describe(
      "Ollama model name (for production: a few billion parameters); unset, `selfheal up`'s own local server uses `smollm2:135m`.",
    ),
  LLM_TIMEOUT_MS: integer(30_000, 100, 600_000, 'number of milliseconds').describe(
    'Milliseconds an LLM call may take before the runbook is used instead.',
  ),
  MONITOR_INTERVAL: seconds(60).describe("Seconds between monitoring cycles (the Schedule's interval)."),
  QUEUE_STALL_THRESHOLD: seconds(600).describe(
    'Seconds a non-empty queue may go without progress before `stalled_queue`.',
  ),
  ERROR_RATE_THRESHOLD: decimal(0.15, 0, 1).describe(
    'Fraction failed / (completed + failed) above which `error_rate_spike` fires.',
  ),
  ERROR_RATE_MIN_SAMPLES: integer(20, 1).describe('Samples needed in the window before an error rate counts.'),
  ERROR_RATE_WINDOW: seconds(300).describe('Seconds of the error-rate window.'),
  SLOWDOWN_FACTOR: decimal(3, 1, 1000).describe(
    'Recent mean processing time over the stage baseline that makes a `processing_time_anomaly`.',
  ),
  STUCK_DOCUMENT_THRESHOLD: seconds(1800).describe('Seconds a document may stay `processing` before it is stuck.'),
  HEALTH_TARGETS: healthTargets.describe('Comma-separated `container=url` pairs checked for health.'),
  HEALTH_FAILURES_BEFORE_UNHEALTHY: integer(3, 1, 100).describe(
    'Consecutive failed health checks before `unhealthy_container`.',
  ),
  MAX_ACTIONS_PER_HOUR: integer(5, 0, 10_000).describe('Global budget of remediation actions per rolling hour.'),
  AUTO_FIX_ENABLED: boolean(false).describe("When false (default) every action waits for a human's approval."),
  MIN_CONFIDENCE: decimal(0.8, 0, 1).describe('Plans below this confidence (0..1) wait for approval.'),
  APPROVAL_TIMEOUT: seconds(3600).describe('Seconds to wait for approval; no answer means reject.'),
  RESTART_COOLDOWN: seconds(600, 0).describe(
    'Seconds between two restarts of the same target; doubling with each restart in the hour (a crash loop backs off).',
  ),
  RESTART_BACKOFF_MAX: seconds(3600, 0).describe('Cap of the crash-loop backoff between two restarts of a target, s.'),
  MAX_REQUEUES: integer(3, 0, 100).describe('Times a document may be requeued before it is dead-lettered.'),
  CONTAINER_ALLOWLIST: list('pipeline-*', { re: /^[A-Za-z0-9_.*?[\]-]+$/, expected: 'container-name globs' }).describe(
    'Glob patterns of container names selfheal may restart.',
  ),
  CONTAINER_DENYLIST: list('*postgres*,*redis*,*temporal*,*ollama*,selfheal-*', {
    re: /^[A-Za-z0-9_.*?[\]-]+$/,
    expected: 'container-name globs',
  }).describe('Glob patterns of container names selfheal never touches; wins over the allow list.'),
  DOCKER_EVENTS: boolean(true).describe(
    "Follow Docker's event stream: a container that dies or turns unhealthy triggers a monitoring cycle at once.",
  ),
  AUTOHEAL_LABEL: boolean(true).describe(
    "Honour willfarrell/autoheal's labels: `autoheal=true` puts a container in scope like `selfheal.enable=true`.",
  ),
  ESCALATION_WEBHOOK_URL: optionalUrl(['http:', 'https:']).describe(
    'Webhook called on escalation (Slack-compatible or generic JSON).',
  ),
  ESCALATION_WEBHOOK_FORMAT: z
    .enum(['json', 'slack'], { error: 'expected json or slack' })
    .default('json')
    .describe('Escalation webhook body: `json` (`selfheal.escalation.v1` object) or `slack` (text and blocks).'),
  TEMPORAL_UI_URL: optionalUrl(['http:', 'https:']).describe(
    'Temporal Web UI base URL (e.g. http://127.0.0.1:8233): escalations link to the run.',
  ),
  METRICS_PORT: integer(8001, 1, 65_535, 'port number').describe('Port of the HTTP metrics server.'),
  METRICS_HOST: z
    .string()
    .trim()
    .regex(/^[A-Za-z0-9.:-]+$/, { error: 'expected a host name or IP address' })
    .default('127.0.0.1')
    .describe('Address the HTTP metrics server binds to.'),
  METRICS_RETENTION: seconds(86_400).describe('Seconds of snapshots kept in `monitoring:metrics`.'),
  VERIFY_DELAY: seconds(60, 0).describe('Seconds to wait after an action before verifying recovery.'),
  RUNBOOKS_FILE: z
    .string()
    .trim()
    .min(1)
    .optional()
    .describe(
      'YAML runbooks per anomaly type and target (README, Runbooks as files); default the built-in `runbooks/default.yaml`.',
    ),
  TEMPORAL_CLI_PATH: z
    .string()
    .trim()
    .min(1)
    .optional()
    .describe('Path of the `temporal` CLI binary; otherwise it is looked up on PATH.'),
  APPROVERS: list('', { re: /^[A-Za-z0-9@._-]+$/, expected: 'approver names' }).describe(
    'Comma-separated names allowed to approve; empty means anyone.',
  ),
  APPROVAL_SECRET: z
    .string()
    .min(16, { error: 'expected at least 16 characters' })
    .optional()
    .describe('Shared secret approvals must carry when set (at least 16 characters).'),
  WEBHOOK_TOKEN: z
    .string()
    .min(16, { error: 'expected at least 16 characters' })
    .optional()
    .describe('Bearer token `POST /webhooks/alertmanager` requires when set (at least 16 characters).'),
  PUBLIC_URL: optionalUrl(['http:', 'https:']).describe(
    'Base URL people reach the HTTP server at: notices then link to the healing and its approve and reject endpoints.',
  ),
  LOST_DOCUMENT_THRESHOLD: seconds(600).describe(
    'Seconds a document may stay `queued` in no list before `lost_documents`.',
  ),
  POISON_CRASHES: integer(3, 1, 100).describe(
    'Different workers that must die on one document before `poison_document`.',
  ),
  PIPELINE_STAGES: list('extract,evaluate', { re: /^[a-z0-9_-]+$/, expected: 'stage names' }).describe(
    'Stages of the monitored pipeline, in order (queues are `queue:<stage>`).',
  ),
  ANOMALY_FIRE_CYCLES: integer(2, 1, 100).describe('Consecutive cycles an anomaly must be seen before it fires.'),
  ANOMALY_CLEAR_CYCLES: integer(3, 1, 100).describe(
    'Consecutive cycles a fired anomaly must be absent before it clears (hysteresis).',
  ),
  SLOWDOWN_MIN_SAMPLES: integer(10, 1).describe(
    'Completions in the window, and earlier cycles for the baseline, needed before a slowdown counts.',
  ),
  REQUEUE_CAP: integer(1000, 1, 1_000_000).describe(
    'Documents one requeue action may move (larger plans are refused).',
  ),
  RATE_LIMIT_MAX_WAIT: seconds(3600, 0).describe(
    'Seconds a healing may wait on a durable timer for an action permit before it escalates instead.',
  ),
  SILENCE_RECHECK_INTERVAL: seconds(60, 1).describe(
    'Seconds between re-checks of a silence that holds a healing (a silence removed early is noticed within this, or within 1/200 of the silence when that is longer).',
  ),
  RESTART_STOP_TIMEOUT: seconds(10, 0).describe(
    'Seconds Docker gives a container to stop before it is killed, on restart.',
  ),
  LOG_LEVEL: z
    .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
    .default('info')
    .describe('pino log level.'),
  SDK_METRICS_PORT: integer(0, 0, 65_533, 'port number (0 = off)').describe(
    'SDK Prometheus `/metrics` port of the monitor worker; healing uses +1, actions +2; 0 = off.',
  ),
  SDK_METRICS_HOST: z
    .string()
    .trim()
    .regex(/^[A-Za-z0-9.:-]+$/, { error: 'expected a host name or IP address' })
    .default('127.0.0.1')
    .describe("Address the workers' SDK metrics endpoints bind to."),
  HEALING_CACHED_WORKFLOWS: integer(HEALING_CACHED_WORKFLOWS_DEFAULT, 0).describe(
    'Healing runs the healing worker keeps in memory (its workflow cache); a run out of it replays its history on its next step.',
  ),
});

export type Config = z.output<typeof configSchema>;

/** The detector thresholds a config implies; they reach workflows as input, never as globals. */
export function thresholdsFrom(config: Config): Thresholds {
  return {
    queueStallSeconds: config.QUEUE_STALL_THRESHOLD,
    errorRateThreshold: config.ERROR_RATE_THRESHOLD,
    errorRateMinSamples: config.ERROR_RATE_MIN_SAMPLES,
    errorRateWindowSeconds: config.ERROR_RATE_WINDOW,
    slowdownFactor: config.SLOWDOWN_FACTOR,
    slowdownMinSamples: config.SLOWDOWN_MIN_SAMPLES,
    stuckDocumentSeconds: config.STUCK_DOCUMENT_THRESHOLD,
    healthFailuresBeforeUnhealthy: config.HEALTH_FAILURES_BEFORE_UNHEALTHY,
    fireAfterCycles: config.ANOMALY_FIRE_CYCLES,
    clearAfterCycles: config.ANOMALY_CLEAR_CYCLES,
    poisonCrashes: config.POISON_CRASHES,
  };
}
export type ConfigKey = keyof z.input<typeof configSchema>;

/**
 * Variables whose unset value is another variable's value (shown so in `.env.example` and the README table):
 * `SELFHEAL_DATABASE_URL` defaults to `DATABASE_URL`, so a single-database install needs one URL.
 */
export const DEFAULTS_FROM: Readonly<Partial<Record<ConfigKey, ConfigKey>>> = {
  SELFHEAL_DATABASE_URL: 'DATABASE_URL',
};

/**
 * Where selfheal's own tables live (`healing_log`, `action_permits`): `SELFHEAL_DATABASE_URL`, else `DATABASE_URL`.
 * The watched pipeline's database (`DATABASE_URL`) only holds the pipeline's tables; selfheal never creates any there.
 */
export function selfhealDatabaseUrl(config: Pick<Config, 'DATABASE_URL' | 'SELFHEAL_DATABASE_URL'>): string {
  return config.SELFHEAL_DATABASE_URL ?? config.DATABASE_URL;
}

export interface ConfigProblem {
  variable: string;
  expected: string;
  got?: string;
}

export type ConfigResult = { ok: true; config: Config } | { ok: false; problems: ConfigProblem[] };

const SECRET_VARS = new Set([
  'APPROVAL_SECRET',
  'DATABASE_URL',
  'SELFHEAL_DATABASE_URL',
  'REDIS_URL',
  'ESCALATION_WEBHOOK_URL',
  'WEBHOOK_TOKEN',
]);

/**
 * Validates an environment. Empty strings count as unset, so `FOO=` in an env file falls back to the default.
 * Never throws: every bad variable is listed.
 */
export function parseConfig(env: Record<string, string | undefined>): ConfigResult {
  const input: Record<string, string> = {};
  for (const key of Object.keys(configSchema.shape)) {
    const v = env[key];
    if (v !== undefined && v.trim() !== '') input[key] = v;
  }
  const parsed = configSchema.safeParse(input);
  if (parsed.success) return { ok: true, config: parsed.data };
  const seen = new Set<string>();
  const problems: ConfigProblem[] = [];
  for (const issue of parsed.error.issues) {
    const variable = String(issue.path[0] ?? '(config)');
    if (seen.has(variable)) continue;
    seen.add(variable);
    const raw = input[variable];
    problems.push({
      variable,
      expected: issue.message,
      got: raw === undefined ? undefined : SECRET_VARS.has(variable) ? '(hidden)' : raw,
    });
  }
  return { ok: false, problems };
}

/** One message naming every bad variable, for stderr. */
export function formatConfigProblems(problems: ConfigProblem[]): string {
  const lines = problems.map(
    (p) => `  ${p.variable}: ${p.expected}${p.got === undefined ? '' : `, got ${JSON.stringify(p.got)}`}`,
  );
  return `selfheal: invalid configuration (${problems.length} ${problems.length === 1 ? 'problem' : 'problems'}):\n${lines.join('\n')}`;
}

/** Exit code for invalid configuration: nothing started, nothing written. */
export const CONFIG_EXIT_CODE = 2;
