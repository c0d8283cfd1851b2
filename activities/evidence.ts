/**
 * `gatherEvidence`: what an SRE would look at before choosing a remedy for an anomaly — the target's recent document
 * error messages (Postgres `documents`) and the last lines of its container's log (Docker). It runs on the
 * selfheal-actions task queue, the only worker with a Docker client. Everything it returns is bounded and redacted
 * (core/evidence.ts), because it is untrusted text and it is kept in the workflow's history. It never throws for a
 * source it cannot read: that part is left out and named in `unavailable`.
 */
import type Docker from 'dockerode';
import type pg from 'pg';
import {
  boundEvidence,
  demuxDockerLog,
  EVIDENCE_SKIPPED_TYPES,
  distinctDocumentErrors,
  EVIDENCE_LOG_LINES,
  logTail,
  type AnalysisEvidence,
  type ErrorRow,
} from '../core/evidence';
import { deriveParams } from '../core/runbook';
import type { Anomaly, AnomalyType } from '../core/types';
import { errorMessage } from '../core/errors';

/** Rows read to find the distinct recent messages. */
const ERROR_ROWS = 50;
/** ms any one source may take. */
const SOURCE_TIMEOUT_MS = 3_000;
/** Bytes of log read from Docker at most (the tail is asked for; this bounds a single enormous line). */
const LOG_BYTES_MAX = 64 * 1024;
const STAGE_NAME = /^[A-Za-z0-9_.-]{1,100}$/;

export interface GatherEvidenceInput {
  anomaly: Anomaly;
  /** Known container names (HEALTH_TARGETS), for anomalies whose container is a dead owner. */
  containers?: readonly string[];
}

function idsOf(anomaly: Anomaly): number[] {
  const raw = anomaly.evidence.documentIds;
  if (!Array.isArray(raw)) return [];
  return raw
    .map((v) => Number(v))
    .filter((n) => Number.isSafeInteger(n) && n > 0)
    .slice(0, 200);
}

/** The stage the anomaly is about, when it names one (stage-level types use it as their target). */
function stageOf(anomaly: Anomaly): string | undefined {
  const stage = typeof anomaly.evidence.stage === 'string' ? anomaly.evidence.stage : undefined;
  if (stage && STAGE_NAME.test(stage)) return stage;
  const stageTargets: AnomalyType[] = [
    'stuck_documents',
    'stalled_queue',
    'error_rate_spike',
    'processing_time_anomaly',
    'lost_documents',
  ];
  return stageTargets.includes(anomaly.type) && STAGE_NAME.test(anomaly.target) ? anomaly.target : undefined;
}

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_r, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${SOURCE_TIMEOUT_MS} ms`)), SOURCE_TIMEOUT_MS);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

const firstLine = (e: unknown) => errorMessage(e).split('\n')[0]!.slice(0, 160);

export function createEvidenceActivities({ docker, pool }: { docker?: Docker; pool?: pg.Pool }) {
  async function documentErrors(anomaly: Anomaly): Promise<ErrorRow[]> {
    if (!pool) return [];
    const ids = idsOf(anomaly);
    const stage = stageOf(anomaly);
    if (ids.length === 0 && !stage) return [];
    const client = await pool.connect();
    try {
      await client.query('BEGIN READ ONLY');
      await client.query(`SET LOCAL statement_timeout = ${SOURCE_TIMEOUT_MS}`);
      // The anomaly's own documents first (primary key); else the stage's recent failures.
      const { rows } =
        ids.length > 0
          ? await client.query<ErrorRow>(
              `SELECT id, status, error FROM documents
                WHERE id = ANY($1::bigint[]) AND error IS NOT NULL
                ORDER BY updated_at DESC LIMIT ${ERROR_ROWS}`,
              [ids],
            )
          : await client.query<ErrorRow>(
              `SELECT id, status, error FROM documents
                WHERE stage = $1 AND status IN ('failed', 'dead') AND error IS NOT NULL
                  AND updated_at > now() - interval '1 day'
                ORDER BY updated_at DESC LIMIT ${ERROR_ROWS}`,
              [stage],
            );
      await client.query('COMMIT');
      return rows;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  async function containerLog(container: string): Promise<string[]> {
    if (!docker) return [];
    const out = (await docker
      .getContainer(container)
      .logs({ stdout: true, stderr: true, tail: EVIDENCE_LOG_LINES, follow: false })) as unknown as Uint8Array;
    const buf = out.length > LOG_BYTES_MAX ? out.subarray(out.length - LOG_BYTES_MAX) : out;
    return logTail(demuxDockerLog(buf));
  }

  async function gatherEvidence(input: GatherEvidenceInput): Promise<AnalysisEvidence> {
    const { anomaly } = input;
    const evidence: AnalysisEvidence = { documentErrors: [] };
    if (EVIDENCE_SKIPPED_TYPES.includes(anomaly.type)) return evidence;
    const unavailable: string[] = [];
    // The container a restart would act on: the same derivation as the runbook's, never the model's.
    const restart = deriveParams(anomaly, 'restart_worker', { containers: [...(input.containers ?? [])] });
    const container = restart.ok ? restart.value.container : undefined;
    const [errors, log] = await Promise.allSettled([
      withTimeout(documentErrors(anomaly), 'documents'),
      container ? withTimeout(containerLog(container), `logs of ${container}`) : Promise.resolve(null),
    ]);
    if (errors.status === 'fulfilled') evidence.documentErrors = distinctDocumentErrors(errors.value);
    else unavailable.push(`document errors: ${firstLine(errors.reason)}`);
    if (log.status === 'fulfilled') {
      if (log.value && container) evidence.containerLog = { container, lines: log.value };
    } else unavailable.push(`container log: ${firstLine(log.reason)}`);
    if (unavailable.length > 0) evidence.unavailable = unavailable;
    return boundEvidence(evidence) ?? { documentErrors: [] };
  }

  return { gatherEvidence };
}
