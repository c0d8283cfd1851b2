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

/**
 * selfheal's two databases: `selfheal` holds selfheal's own tables (`healing_log`, `action_permits`; URL
 * SELFHEAL_DATABASE_URL, default DATABASE_URL), `pipeline` is the watched pipeline's (`documents`; DATABASE_URL).
 * When both URLs are the same there is one pool, and `selfheal === pipeline` (the actions then keep a change to
 * `documents` and its audit row in one transaction).
 */
export interface Pools {
  selfheal: pg.Pool;
  pipeline: pg.Pool;
  end(): Promise<void>;
}

export function createPools(
  urls: { DATABASE_URL: string; SELFHEAL_DATABASE_URL?: string },
  opts: { max?: number; application?: string } = {},
): Pools {
  const pipeline = createPool(urls.DATABASE_URL, opts);
  const own = urls.SELFHEAL_DATABASE_URL;
  const selfheal = own === undefined || own === urls.DATABASE_URL ? pipeline : createPool(own, opts);
  return {
    selfheal,
    pipeline,
    async end() {
      await Promise.all([...new Set([selfheal, pipeline])].map((p) => p.end()));
    },
  };
}
