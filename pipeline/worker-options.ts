/** Options, state, counters and faults of a pipeline worker (pipeline/worker.ts). */
import { z } from 'zod';
import { STAGES, type Stage } from '../core/keys';
import { workerIdSchema } from './registry';

export const workerOptionsSchema = z
  .object({
    stage: z.enum(STAGES),
    /** Worker id: lease owner, processing-list suffix, registration field. No ':'. */
    worker: workerIdSchema,
    /** Port of `GET /health`; 0 picks a free one. */
    port: z.number().int().min(0).max(65_535),
    /** Address the health server binds to. Default 127.0.0.1. */
    host: z.string().default('127.0.0.1'),
    databaseUrl: z.string().min(1),
    redisUrl: z.string().min(1),
    /** REDIS_KEY_PREFIX. Default none. */
    prefix: z.string().default(''),
    /** Simulated work per document: uniform between minMs and maxMs milliseconds. Defaults 5 and 20. */
    minMs: z.number().min(0).default(5),
    maxMs: z.number().min(0).default(20),
    /** Lease TTL in ms; renewed every third of it while a document is processed. Default 30000. */
    lockTtlMs: z.number().int().min(1_000).default(30_000),
    /** Heartbeat period in ms; the key lives 3 periods. Default 1000. */
    heartbeatMs: z.number().int().min(50).default(1_000),
    /** Period in ms of reading `pipeline:faults`. Default 500. */
    faultPollMs: z.number().int().min(50).default(500),
    /** Seconds BLMOVE blocks before the loop looks at faults and shutdown again. Default 1. */
    blockTimeoutS: z.number().min(0.01).max(30).default(1),
    kind: z.enum(['process', 'container']).default('process'),
    /** Container name when running in Docker. */
    container: z.string().optional(),
    /** Recorded in the registration so chaos can respawn a killed process worker. */
    command: z
      .object({ argv: z.array(z.string()).min(1), cwd: z.string(), env: z.record(z.string(), z.string()) })
      .optional(),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .refine((o) => o.maxMs >= o.minMs, { error: 'maxMs must be >= minMs', path: ['maxMs'] });

export type PipelineWorkerOptions = z.input<typeof workerOptionsSchema>;

/** The options after validation, defaults applied. */
export type WorkerOptions = z.output<typeof workerOptionsSchema>;

/** Counters of one worker since it started. */
export interface WorkerStats {
  completed: number;
  failed: number;
  /** Entries dropped by the exactly-once guard (lease held elsewhere, row not queued in this stage). */
  skipped: number;
  /** Entries given back to the queue untouched (hang, shutdown, database errors). */
  givenBack: number;
}

export type WorkerState = 'idle' | 'processing' | 'hung' | 'stopping';

export interface PipelineWorkerHandle {
  worker: string;
  stage: Stage;
  /** The port `/health` actually listens on. */
  port: number;
  healthUrl: string;
  state(): WorkerState;
  stats(): WorkerStats;
  /** Finishes the current document, gives untouched entries back, deregisters, closes everything. Idempotent. */
  stop(): Promise<void>;
}

export interface Faults {
  errorRate: number;
  slow: number;
  hang: boolean;
  /** A hang /health does not see (its HTTP server and heartbeat are fine; the consumer loop is stuck). */
  silentHang: boolean;
}

export function parseFaults(hash: Record<string, string>, stage: Stage, worker: string): Faults {
  const num = (v: string | undefined, min: number, max: number, def: number) => {
    const n = v === undefined ? NaN : Number(v);
    return Number.isFinite(n) && n >= min && n <= max ? n : def;
  };
  // A stage-wide fault (the input, a dependency) and a fault of this process alone: the worse one applies.
  return {
    errorRate: Math.max(num(hash[`error-rate:${stage}`], 0, 1, 0), num(hash[`error-rate@${worker}`], 0, 1, 0)),
    slow: Math.max(num(hash[`slow:${stage}`], 0, 10_000, 1), num(hash[`slow@${worker}`], 0, 10_000, 1)),
    hang: hash[`hang:${worker}`] === '1' || hash[`hang:${worker}`] === 'silent',
    silentHang: hash[`hang:${worker}`] === 'silent',
  };
}
