import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';

/** Advisory lock key serializing concurrent migrations (any constant unique to selfheal). */
const MIGRATION_LOCK = 0x5e1f4ea1;

/** Applies db/init.sql. Idempotent, and safe when several processes start at once. */
export async function migrate(pool: pg.Pool): Promise<void> {
  const sql = await readFile(path.join(__dirname, 'init.sql'), 'utf8');
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
