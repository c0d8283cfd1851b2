/** `selfheal audit`: the `healing_log` audit trail, from Postgres. */
import { selfhealDatabaseUrl, type Config } from '../core/config';
import { createPool } from '../db/pool';
import { CliError } from './healings';

/** `30s`, `15m`, `2h`, `7d` to milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)\s*(s|m|h|d)$/.exec(text.trim());
  if (!m)
    throw new CliError(`duration: expected a number and s, m, h or d (e.g. 30m, 24h), got "${text}"`, 'invalid_input');
  return Number(m[1]) * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
}

export interface AuditRow {
  id: number;
  created_at: Date;
  workflow_id: string;
  run_id: string;
  step: string;
  anomaly_type: string;
  target: string;
  action: string | null;
  params: Record<string, unknown>;
  decided_by: string | null;
  confidence: number | null;
  outcome: string | null;
  error: string | null;
  idempotency_key: string | null;
}

export async function readAudit(
  config: Config,
  opts: { sinceMs: number; workflowId?: string; limit?: number },
): Promise<AuditRow[]> {
  const pool = createPool(selfhealDatabaseUrl(config), { max: 1, application: 'selfheal-audit' });
  try {
    const { rows } = await pool.query<AuditRow>(
      `SELECT id, created_at, workflow_id, run_id, step, anomaly_type, target, action, params, decided_by, confidence,
              outcome, error, idempotency_key
         FROM healing_log
        WHERE created_at > now() - make_interval(secs => $1) AND ($2::text IS NULL OR workflow_id = $2)
        ORDER BY id LIMIT $3`,
      [opts.sinceMs / 1000, opts.workflowId ?? null, opts.limit ?? 1000],
    );
    return rows;
  } finally {
    await pool.end();
  }
}
