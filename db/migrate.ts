import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';

/** Advisory lock key serializing concurrent schema changes (any constant unique to selfheal). */
const MIGRATION_LOCK = 0x5e1f4ea1;

/** Runs idempotent schema SQL under the advisory lock, so that several processes starting at once are safe. */
export async function applySchema(pool: pg.Pool, sql: string): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    try {
      await client.query(sql);
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]);
    }
  } finally {
    client.release();
  }
}

/**
 * Applies db/init.sql: selfheal's own tables (`healing_log`, `action_permits`) and nothing else. Give it the pool of
 * SELFHEAL_DATABASE_URL; it never creates or alters a table of the watched pipeline. Idempotent.
 */
export async function migrate(pool: pg.Pool): Promise<void> {
  await applySchema(pool, await readFile(path.join(__dirname, 'init.sql'), 'utf8'));
}
