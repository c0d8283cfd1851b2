import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { HealthTarget } from '../../core/config';
import type { Keys } from '../../core/keys';
import { redactSecrets } from '../../core/redact';
import { errorFirstLine } from '../../core/errors';

export interface MetricsDeps {
  redis: Redis;
  pool: pg.Pool;
  keys: Keys;
  stages: string[];
  healthTargets: HealthTarget[];
  ollamaHost: string;
  ollamaModel: string;
  /** s of the error-rate and recent-processing-time window. */
  windowSeconds: number;
  /** s a document may stay queued in no list before it is lost (LOST_DOCUMENT_THRESHOLD). */
  lostDocumentSeconds: number;
  /**
   * s back from now that the `documents` fallback looks for a stage's last progress (completions and failures; a
   * bound keeps the query cheap on a large table). Older progress reads as none, which the stall detector treats as
   * older than its threshold: give at least QUEUE_STALL_THRESHOLD. Default: no bound.
   */
  progressLookbackSeconds?: number;
  /** Reconcile Postgres with the Redis lists (lost documents, orphan entries). Default true; off for benchmarks. */
  reconcile?: boolean;
  /** The clock, injectable for tests. */
  now?: () => number;
}

/** First line of an error, credentials redacted (errors quote URLs, and URLs may carry passwords). */
export function errorLine(err: unknown): string {
  return redactSecrets(errorFirstLine(err)).slice(0, 300);
}
