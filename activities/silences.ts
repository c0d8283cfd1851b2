/**
 * The silences store (table `silences`, audit `silence_log`, db/init.sql) and the healing worker's activity that asks
 * whether a silence holds an anomaly now. `selfheal silence` and the metrics server use the store functions.
 */
import type pg from 'pg';
import { matchingSilence, silenceNote, type NewSilence, type Silence } from '../core/silence';
import type { AnomalyType } from '../core/types';

interface SilenceRow {
  id: number;
  anomaly_type: string | null;
  target_glob: string | null;
  starts_at: Date;
  ends_at: Date;
  reason: string;
  created_by: string;
  created_at: Date;
  removed_at: Date | null;
  removed_by: string | null;
}

const COLUMNS = `id, anomaly_type, target_glob, starts_at, ends_at, reason, created_by, created_at, removed_at, removed_by`;

function fromRow(r: SilenceRow): Silence {
  return {
    id: r.id,
    anomalyType: r.anomaly_type as AnomalyType | null,
    targetGlob: r.target_glob,
    startsAt: r.starts_at.getTime(),
    endsAt: r.ends_at.getTime(),
    reason: r.reason,
    createdBy: r.created_by,
    createdAt: r.created_at.getTime(),
    removedAt: r.removed_at?.getTime() ?? null,
    removedBy: r.removed_by,
  };
}

/** Stores a silence and its `added` audit row, in one transaction. */
export async function addSilence(pool: pg.Pool, s: NewSilence): Promise<Silence> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query<SilenceRow>(
      `INSERT INTO silences (anomaly_type, target_glob, starts_at, ends_at, reason, created_by)
       VALUES ($1, $2, to_timestamp($3 / 1000.0), to_timestamp($4 / 1000.0), $5, $6) RETURNING ${COLUMNS}`,
      [s.anomalyType, s.targetGlob, s.startsAt, s.endsAt, s.reason, s.createdBy],
    );
    const silence = fromRow(rows[0]!);
    await client.query(
      `INSERT INTO silence_log (silence_id, event, actor, reason, details) VALUES ($1, 'added', $2, $3, $4)`,
      [
        silence.id,
        s.createdBy,
        s.reason,
        { anomalyType: s.anomalyType, targetGlob: s.targetGlob, startsAt: s.startsAt, endsAt: s.endsAt },
      ],
    );
    await client.query('COMMIT');
    return silence;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/**
 * The silences, newest first: all of them; with `openAfter`, only those not removed that end after it (the ones that
 * can match); with `recentSince`, those that end, or were removed, after it.
 */
export async function listSilences(
  pool: pg.Pool,
  opts: { openAfter?: number; recentSince?: number; limit?: number } = {},
) {
  const { rows } = await pool.query<SilenceRow>(
    `SELECT ${COLUMNS} FROM silences
      WHERE ($1::double precision IS NULL OR (removed_at IS NULL AND ends_at > to_timestamp($1 / 1000.0)))
        AND ($2::double precision IS NULL OR ends_at > to_timestamp($2 / 1000.0)
             OR removed_at > to_timestamp($2 / 1000.0))
      ORDER BY id DESC LIMIT $3`,
    [opts.openAfter ?? null, opts.recentSince ?? null, opts.limit ?? 1000],
  );
  return rows.map(fromRow);
}

export type RemoveResult =
  | { outcome: 'removed'; silence: Silence }
  | { outcome: 'already_removed'; silence: Silence }
  | { outcome: 'not_found' };

/** Marks a silence removed (never deletes it) and audits the removal; a second removal changes nothing. */
export async function removeSilence(pool: pg.Pool, id: number, by: string, reason?: string): Promise<RemoveResult> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query<SilenceRow>(`SELECT ${COLUMNS} FROM silences WHERE id = $1 FOR UPDATE`, [id]);
    if (!rows[0]) {
      await client.query('ROLLBACK');
      return { outcome: 'not_found' };
    }
    if (rows[0].removed_at !== null) {
      await client.query('ROLLBACK');
      return { outcome: 'already_removed', silence: fromRow(rows[0]) };
    }
    const updated = await client.query<SilenceRow>(
      `UPDATE silences SET removed_at = now(), removed_by = $2 WHERE id = $1 RETURNING ${COLUMNS}`,
      [id, by],
    );
    await client.query(`INSERT INTO silence_log (silence_id, event, actor, reason) VALUES ($1, 'removed', $2, $3)`, [
      id,
      by,
      reason ?? null,
    ]);
    await client.query('COMMIT');
    return { outcome: 'removed', silence: fromRow(updated.rows[0]!) };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/** What a healing needs to know of the silence that holds it. */
export interface SilenceHold {
  id: number;
  reason: string;
  createdBy: string;
  endsAt: number;
  /** `silenced by #12 (alice: deploy) until …`. */
  note: string;
}

/** Healing worker: whether a silence holds the anomaly at the workflow's `now`. */
export function createSilenceActivities({ pool }: { pool: pg.Pool }) {
  return {
    async activeSilence(input: { anomalyType: string; target: string; now: number }): Promise<SilenceHold | null> {
      const open = await listSilences(pool, { openAfter: input.now });
      const s = matchingSilence(open, { type: input.anomalyType, target: input.target }, input.now);
      if (!s) return null;
      return { id: s.id, reason: s.reason, createdBy: s.createdBy, endsAt: s.endsAt, note: silenceNote(s) };
    },
  };
}
