import pg from 'pg';

// bigint ids and counts come back as strings by default; ours fit in a JS number.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

export type Pool = pg.Pool;

/** A pool with short connection timeouts, so an unreachable database is reported, not waited on forever. */
export function createPool(connectionString: string, opts: { max?: number; application?: string } = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max: opts.max ?? 5,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 10_000,
    application_name: opts.application ?? 'selfheal',
  });
  // An idle client losing its connection must not crash the process; the next query reports it.
  pool.on('error', () => undefined);
  return pool;
}
