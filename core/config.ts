import { z } from 'zod';

/**
 * selfheal's configuration: every environment variable of DESIGN.md §7, validated once at each entry point.
 * Defaults are the conservative ones, so a fresh install observes and escalates but never acts on its own.
 */

/** A whole number of seconds (durations are whole seconds in the contract). */
const seconds = (def: number, min = 1) =>
  z
    .string()
    .trim()
    .regex(/^\d+$/, { error: `expected a whole number of seconds >= ${min}` })
    .transform(Number)
    .pipe(z.number().int().min(min, { error: `expected a whole number of seconds >= ${min}` }))
    .default(def);

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

const url = (protocols: string[], def?: string) => {
  const schema = z
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
  return def === undefined ? schema.optional() : schema.default(def);
};

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
  /** Temporal frontend, host:port. Default `localhost:7233`. */
  TEMPORAL_ADDRESS: hostPort.default('localhost:7233'),
  /** Temporal namespace. Default `default`. */
  TEMPORAL_NAMESPACE: z
    .string()
    .trim()
    .regex(/^[A-Za-z0-9._-]+$/, { error: 'expected a namespace name' })
    .default('default'),
  /** Postgres connection string of the monitored pipeline and of `healing_log`. */
  DATABASE_URL: url(['postgres:', 'postgresql:'], 'postgres://selfheal:selfheal@127.0.0.1:5432/selfheal'),
  /** Redis connection string of the pipeline queues and selfheal's streams. */
  REDIS_URL: url(['redis:', 'rediss:'], 'redis://127.0.0.1:6379'),
  /** Prefix of every Redis key (queues, locks, streams). Default none. */
  REDIS_KEY_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9:._-]*$/, { error: 'expected letters, digits and : . _ -' })
    .default(''),
  /** Ollama server used for diagnosis. */
  OLLAMA_HOST: url(['http:', 'https:'], 'http://127.0.0.1:11434'),
  /** Ollama model name. */
  OLLAMA_MODEL: z.string().trim().min(1, { error: 'expected a model name' }).default('llama3.2:3b'),
  /** Milliseconds an LLM call may take before the runbook is used instead. Default 30000. */
  LLM_TIMEOUT_MS: integer(30_000, 100, 600_000, 'number of milliseconds'),
  /** Seconds between monitoring cycles (the Schedule's interval). Default 60. */
  MONITOR_INTERVAL: seconds(60),
  /** Seconds a non-empty queue may go without progress before `stalled_queue`. Default 600. */
  QUEUE_STALL_THRESHOLD: seconds(600),
  /** Fraction failed / (completed + failed) above which `error_rate_spike` fires. Default 0.2. */
  ERROR_RATE_THRESHOLD: decimal(0.2, 0, 1),
  /** Samples needed in the window before an error rate counts. Default 20. */
  ERROR_RATE_MIN_SAMPLES: integer(20, 1),
  /** Seconds of the error-rate window. Default 300. */
  ERROR_RATE_WINDOW: seconds(300),
  /** Recent mean processing time over the stage baseline that makes a `processing_time_anomaly`. Default 3. */
  SLOWDOWN_FACTOR: decimal(3, 1, 1000),
  /** Seconds a document may stay `processing` before it is stuck. Default 900. */
  STUCK_DOCUMENT_THRESHOLD: seconds(900),
  /** Comma-separated `container=url` pairs checked for health. Default none. */
  HEALTH_TARGETS: healthTargets,
  /** Consecutive failed health checks before `unhealthy_container`. Default 3. */
  HEALTH_FAILURES_BEFORE_UNHEALTHY: integer(3, 1, 100),
  /** Global budget of remediation actions per rolling hour. Default 5. */
  MAX_ACTIONS_PER_HOUR: integer(5, 0, 10_000),
  /** When false (default) every action waits for a human's approval. */
  AUTO_FIX_ENABLED: boolean(false),
  /** Plans below this confidence (0..1) wait for approval. Default 0.8. */
  MIN_CONFIDENCE: decimal(0.8, 0, 1),
  /** Seconds to wait for approval; no answer means reject. Default 3600. */
  APPROVAL_TIMEOUT: seconds(3600),
  /** Seconds between two restarts of the same target. Default 600. */
  RESTART_COOLDOWN: seconds(600, 0),
  /** Times a document may be requeued before it is dead-lettered. Default 3. */
  MAX_REQUEUES: integer(3, 0, 100),
  /** Glob patterns of container names selfheal may restart. Default `pipeline-*`. */
  CONTAINER_ALLOWLIST: list('pipeline-*', { re: /^[A-Za-z0-9_.*?[\]-]+$/, expected: 'container-name globs' }),
  /** Glob patterns of container names selfheal never touches; wins over the allow list. */
  CONTAINER_DENYLIST: list('*postgres*,*redis*,*temporal*,*ollama*,selfheal-*', {
    re: /^[A-Za-z0-9_.*?[\]-]+$/,
    expected: 'container-name globs',
  }),
  /** Webhook called on escalation (Slack-compatible or generic JSON). Default none. */
  ESCALATION_WEBHOOK_URL: url(['http:', 'https:']),
  /** Port of the HTTP metrics server. Default 8001. */
  METRICS_PORT: integer(8001, 1, 65_535, 'port number'),
  /** Address the HTTP metrics server binds to. Default 127.0.0.1. */
  METRICS_HOST: z
    .string()
    .trim()
    .regex(/^[A-Za-z0-9.:-]+$/, { error: 'expected a host name or IP address' })
    .default('127.0.0.1'),
  /** Seconds of snapshots kept in `monitoring:metrics`. Default 86400. */
  METRICS_RETENTION: seconds(86_400),
  /** Seconds to wait after an action before verifying recovery. Default 60. */
  VERIFY_DELAY: seconds(60, 0),
  /** Path of the `temporal` CLI binary; otherwise it is looked up on PATH. */
  TEMPORAL_CLI_PATH: z.string().trim().min(1).optional(),
  /** Comma-separated names allowed to approve; empty means anyone. */
  APPROVERS: list('', { re: /^[A-Za-z0-9@._-]+$/, expected: 'approver names' }),
  /** Shared secret approvals must carry when set (at least 16 characters). */
  APPROVAL_SECRET: z.string().min(16, { error: 'expected at least 16 characters' }).optional(),
  /** Seconds a document may stay `queued` in no list before `lost_documents`. Default 600. */
  LOST_DOCUMENT_THRESHOLD: seconds(600),
  /** Different workers that must die on one document before `poison_document`. Default 3. */
  POISON_CRASHES: integer(3, 1, 100),
  /** pino log level. Default info. */
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type Config = z.output<typeof configSchema>;
export type ConfigKey = keyof z.input<typeof configSchema>;

export interface ConfigProblem {
  variable: string;
  expected: string;
  got?: string;
}

export type ConfigResult = { ok: true; config: Config } | { ok: false; problems: ConfigProblem[] };

const SECRET_VARS = new Set(['APPROVAL_SECRET', 'DATABASE_URL', 'REDIS_URL', 'ESCALATION_WEBHOOK_URL']);

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
