/** The worker script's command line and environment, validated (pipeline/worker.ts). */
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { configSchema } from '../core/config';
import { STAGES } from '../core/keys';
import { processCommandLine, workerIdSchema } from './registry';
import { errorMessage } from '../core/errors';
import type { PipelineWorkerOptions } from './worker-options';

const cliNumber = (flag: string, opts: { int?: boolean; min: number; max: number }) =>
  z
    .string({ error: `${flag}: required` })
    .trim()
    .regex(opts.int ? /^\d+$/ : /^\d+(\.\d+)?$/, {
      error: `${flag}: expected ${opts.int ? 'a whole number' : 'a number'} between ${opts.min} and ${opts.max}`,
    })
    .transform(Number)
    .pipe(
      z
        .number()
        .min(opts.min, { error: `${flag}: expected a number between ${opts.min} and ${opts.max}` })
        .max(opts.max, { error: `${flag}: expected a number between ${opts.min} and ${opts.max}` }),
    );

const cliSchema = z.object({
  stage: z.enum(STAGES, { error: `--stage: expected one of ${STAGES.join(', ')}` }),
  worker: z.string({ error: '--worker: required' }).pipe(workerIdSchema),
  port: cliNumber('--port', { int: true, min: 0, max: 65_535 }),
  host: z.string().optional(),
  'min-ms': cliNumber('--min-ms', { min: 0, max: 3_600_000 }).optional(),
  'max-ms': cliNumber('--max-ms', { min: 0, max: 3_600_000 }).optional(),
  'lock-ttl-ms': cliNumber('--lock-ttl-ms', { int: true, min: 1_000, max: 86_400_000 }).optional(),
  'heartbeat-ms': cliNumber('--heartbeat-ms', { int: true, min: 50, max: 600_000 }).optional(),
  'fault-poll-ms': cliNumber('--fault-poll-ms', { int: true, min: 50, max: 600_000 }).optional(),
  'block-timeout-s': cliNumber('--block-timeout-s', { min: 0.01, max: 30 }).optional(),
});

const envSchema = configSchema.pick({ DATABASE_URL: true, REDIS_URL: true, REDIS_KEY_PREFIX: true }).extend({
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Set by the runner for container workers: the container's name. */
  PIPELINE_CONTAINER: z.string().optional(),
});

export type ParsedWorkerCli = { ok: true; options: PipelineWorkerOptions } | { ok: false; error: string };

/** Validates the command line and environment of the worker script; every problem is listed. */
export function parseWorkerCli(argv: string[], env: Record<string, string | undefined>): ParsedWorkerCli {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: Object.fromEntries(Object.keys(cliSchema.shape).map((k) => [k, { type: 'string' as const }])),
    }).values;
  } catch (err) {
    return { ok: false, error: errorMessage(err) };
  }
  const problems: string[] = [];
  const args = cliSchema.safeParse(values);
  if (!args.success) {
    for (const issue of args.error.issues) {
      const flag = `--${String(issue.path[0] ?? '')}`;
      problems.push(issue.message.startsWith('--') ? issue.message : `${flag}: ${issue.message}`);
    }
  }
  const envInput = Object.fromEntries(
    ['DATABASE_URL', 'REDIS_URL', 'REDIS_KEY_PREFIX', 'LOG_LEVEL', 'PIPELINE_CONTAINER'].flatMap((k) => {
      const v = env[k];
      return v !== undefined && v.trim() !== '' ? [[k, v]] : [];
    }),
  );
  const e = envSchema.safeParse(envInput);
  if (!e.success) for (const issue of e.error.issues) problems.push(`${String(issue.path[0])}: ${issue.message}`);
  if (!args.success || !e.success) return { ok: false, error: problems.join('; ') };
  const a = args.data;
  if (a['min-ms'] !== undefined && a['max-ms'] !== undefined && a['max-ms'] < a['min-ms']) {
    return { ok: false, error: '--max-ms: must be >= --min-ms' };
  }
  const container = e.data.PIPELINE_CONTAINER;
  const options: PipelineWorkerOptions = {
    stage: a.stage,
    worker: a.worker,
    port: a.port,
    host: a.host,
    databaseUrl: e.data.DATABASE_URL,
    redisUrl: e.data.REDIS_URL,
    prefix: e.data.REDIS_KEY_PREFIX,
    minMs: a['min-ms'],
    maxMs: a['max-ms'] ?? (a['min-ms'] !== undefined ? Math.max(a['min-ms'], 20) : undefined),
    lockTtlMs: a['lock-ttl-ms'],
    heartbeatMs: a['heartbeat-ms'],
    faultPollMs: a['fault-poll-ms'],
    blockTimeoutS: a['block-timeout-s'],
    logLevel: e.data.LOG_LEVEL,
    kind: container ? 'container' : 'process',
    container,
    command: container
      ? undefined
      : {
          // Exactly as the kernel has it (chaos compares it before signalling), else as Node reports it.
          argv: processCommandLine(process.pid) ?? [process.execPath, ...process.execArgv, ...process.argv.slice(1)],
          cwd: process.cwd(),
          env: { REDIS_KEY_PREFIX: e.data.REDIS_KEY_PREFIX, LOG_LEVEL: e.data.LOG_LEVEL },
        },
  };
  return { ok: true, options };
}
