/**
 * Watching an existing pipeline: a Postgres schema holding only the contract's `documents` table (the
 * columns of docs/ARCHITECTURE.md; no document_events, none of the reference pipeline's indexes or extra columns), its own Redis prefix and
 * stages (`ingest`, `ocr`, `index`), and selfheal's tables in another schema given by SELFHEAL_DATABASE_URL.
 *
 * 1. selfheal itself (`selfheal up --no-pipeline`, the Schedule, 1 s cycles, the three workers) watches it while a
 *    test feeder writes rows as the pipeline would; faults are injected by writing rows and keys directly: every
 *    seed detector fires (`stalled_queue`, `error_rate_spike`, `processing_time_anomaly`, `unhealthy_container` from
 *    an HTTP health target answering 503, `stuck_documents`, and `stale_locks`), with outcomes read from `documents`;
 *    a target answering 204 stays healthy. Afterwards the watched schema holds exactly what it held before (the
 *    table `documents`, its columns, its key) and `healing_log` lives in selfheal's schema.
 * 2. The remediation actions on `documents` (requeue, quarantine) act on the watched database and record their
 *    executed rows in selfheal's, exactly once whatever the retries.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Client } from '@temporalio/client';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { Redis } from 'ioredis';
import type pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createActionActivities, type ActionInput, type ActionResult } from '../../activities/actions';
import { createKeys, type Keys } from '../../core/keys';
import type { Plan } from '../../core/plan';
import type { Anomaly } from '../../core/types';
import { migrate } from '../../db/migrate';
import { createPool } from '../../db/pool';
import type { DoctorRow } from '../../starter/doctor';
import { healingWorkflowId } from '../../workflows/definitions';
import { TEST_DATABASE_URL, TEST_REDIS_URL, uniqueId, waitFor, withSearchPath, type TestEnv } from '../helpers/env';
import { startFakeOllama, type FakeOllama } from '../helpers/fake-ollama';
import { FAST_CONFIG, startSelfheal, type RunningSelfheal } from '../helpers/selfheal';
import { allocateNamespace, connectClient } from '../helpers/temporal';
import { cycleRecords } from '../helpers/stream';

/** The contract's `documents` table and nothing more: docs/ARCHITECTURE.md's columns, a primary key, no other index. */
const CONTRACT_DOCUMENTS = `
  CREATE TABLE documents (
    id            bigserial   PRIMARY KEY,
    stage         text        NOT NULL,
    status        text        NOT NULL,
    worker_id     text        NULL,
    attempts      integer     NOT NULL DEFAULT 0,
    requeue_count integer     NOT NULL DEFAULT 0,
    error         text        NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz NULL,
    completed_at  timestamptz NULL,
    processing_ms integer     NULL
  )`;

/**
 * Two schemas of the test database: `watched`, the existing pipeline's (only `documents`), and `own`, selfheal's
 * (empty: `selfheal up` / `migrate` fill it). Each selected by the search_path of its URL.
 */
interface Databases {
  watched: { schema: string; url: string; pool: pg.Pool };
  own: { schema: string; url: string; pool: pg.Pool };
  drop(): Promise<void>;
}

async function createDatabases(id: string): Promise<Databases> {
  const admin = createPool(TEST_DATABASE_URL, { max: 1 });
  const watchedSchema = `test_${id}_watched`;
  const ownSchema = `test_${id}_selfheal`;
  await admin.query(`CREATE SCHEMA ${watchedSchema}`);
  await admin.query(`CREATE SCHEMA ${ownSchema}`);
  const watchedUrl = withSearchPath(TEST_DATABASE_URL, watchedSchema);
  const ownUrl = withSearchPath(TEST_DATABASE_URL, ownSchema);
  const watched = { schema: watchedSchema, url: watchedUrl, pool: createPool(watchedUrl, { max: 4 }) };
  const own = { schema: ownSchema, url: ownUrl, pool: createPool(ownUrl, { max: 4 }) };
  await watched.pool.query(CONTRACT_DOCUMENTS);
  return {
    watched,
    own,
    async drop() {
      await watched.pool.end();
      await own.pool.end();
      await admin.query(`DROP SCHEMA ${watchedSchema} CASCADE`);
      await admin.query(`DROP SCHEMA ${ownSchema} CASCADE`);
      await admin.end();
    },
  };
}

/** Everything a schema holds: relations (with their kind), columns of each table, functions, triggers. */
async function schemaObjects(pool: pg.Pool, schema: string): Promise<string[]> {
  const { rows } = await pool.query<{ o: string }>(
    `SELECT 'relation ' || c.relkind::text || ' ' || c.relname AS o FROM pg_class c WHERE c.relnamespace = $1::regnamespace
     UNION ALL
     SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
      WHERE c.relnamespace = $1::regnamespace AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
     UNION ALL
     SELECT 'function ' || p.proname FROM pg_proc p WHERE p.pronamespace = $1::regnamespace
     UNION ALL
     SELECT 'trigger ' || t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
      WHERE c.relnamespace = $1::regnamespace AND NOT t.tgisinternal
     ORDER BY 1`,
    [schema],
  );
  return rows.map((r) => r.o);
}

async function tables(pool: pg.Pool, schema: string): Promise<string[]> {
  const { rows } = await pool.query<{ tablename: string }>(
    'SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename',
    [schema],
  );
  return rows.map((r) => r.tablename);
}

async function deletePrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (found.length > 0) await redis.unlink(...found);
  } while (cursor !== '0');
}

describe('selfheal watching an existing pipeline (only the contract documents table)', () => {
  const id = uniqueId();
  const prefix = `${id}:`;
  const keys = createKeys(prefix);
  let db: Databases;
  let redis: Redis;
  let ollama: FakeOllama;
  let selfheal: RunningSelfheal | undefined;
  let client: Client | undefined;
  let closeClient: (() => Promise<void>) | undefined;
  let feeder: NodeJS.Timeout | undefined;
  let watchedBefore: string[];

  // Health targets: `/health/<container>` answers the status set for it here.
  const healthStatus = new Map<string, number>([
    ['legacy-ocr-1', 200],
    ['legacy-index-1', 204],
  ]);
  const healthServer = http.createServer((req, res) => {
    res.writeHead(healthStatus.get(req.url!.replace('/health/', '')) ?? 404).end();
  });

  // What the pipeline does, as its rows show it: ocr completes 8 documents/s, index 4/s (plus failures when faulty).
  const traffic = { ocrMs: 20, indexFailuresPerTick: 0 };
  let feedError: unknown;
  async function feed(): Promise<void> {
    const q = `INSERT INTO documents (stage, status, worker_id, attempts, processing_ms, created_at, started_at,
                                      completed_at, updated_at)
               SELECT $1::text, $2::text, $3::text, 1, $4::int, now(), now() - make_interval(secs => $4::int / 1000.0),
                      CASE WHEN $2::text = 'completed' THEN now() END, now()
                 FROM generate_series(1, $5::int)`;
    await db.watched.pool.query(q, ['ocr', 'completed', 'ocr-worker-1', traffic.ocrMs, 2]);
    await db.watched.pool.query(q, ['index', 'completed', 'index-worker-1', 15, 1]);
    if (traffic.indexFailuresPerTick > 0) {
      await db.watched.pool.query(q, ['index', 'failed', 'index-worker-1', null, traffic.indexFailuresPerTick]);
    }
  }

  const records = (sinceMs = 0) => cycleRecords(redis, keys, sinceMs);

  async function alerts(sinceMs: number): Promise<Anomaly[]> {
    const entries = await redis.xrange(keys.alertsStream(), String(sinceMs), '+');
    return entries.map(([, f]) => JSON.parse(f[1]!) as Anomaly);
  }

  beforeAll(async () => {
    db = await createDatabases(id);
    redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 2 });
    watchedBefore = await schemaObjects(db.watched.pool, db.watched.schema);
    await new Promise<void>((resolve) => healthServer.listen(0, '127.0.0.1', resolve));
    ollama = await startFakeOllama({ replies: [{ kind: 'status', status: 500 }] });
  });

  afterAll(async () => {
    if (feeder) clearInterval(feeder);
    await selfheal?.stop();
    await closeClient?.();
    await ollama?.close();
    healthServer.closeAllConnections();
    await new Promise<void>((resolve) => healthServer.close(() => resolve()));
    if (redis) {
      await deletePrefix(redis, prefix);
      redis.disconnect();
    }
    await db?.drop();
  });

  it('every seed detector fires from documents alone; the watched database is left as it was; the audit is in selfheal’s', async () => {
    // The pipeline's own live worker (heartbeat), before selfheal looks.
    await redis.set(keys.heartbeat('ocr-worker-1'), String(Date.now()), 'EX', 3600);
    feeder = setInterval(() => {
      feed().catch((err: unknown) => (feedError ??= err));
    }, 250);

    const port = (healthServer.address() as AddressInfo).port;
    const watchedEnv: TestEnv['env'] = {
      DATABASE_URL: db.watched.url,
      REDIS_URL: TEST_REDIS_URL,
      REDIS_KEY_PREFIX: prefix,
    };
    const ns = await allocateNamespace();
    selfheal = await startSelfheal({ env: watchedEnv } as TestEnv, ns, {
      SELFHEAL_DATABASE_URL: db.own.url,
      PIPELINE_STAGES: 'ingest,ocr,index',
      HEALTH_TARGETS: [...healthStatus.keys()].map((c) => `${c}=http://127.0.0.1:${port}/health/${c}`).join(','),
      OLLAMA_HOST: ollama.url,
    });
    ({ client, close: closeClient } = await connectClient(ns));
    expect(selfheal.output()).toMatch(/selfheal's schema applied \(SELFHEAL_DATABASE_URL\)/);

    // Baseline: cycles over a healthy pipeline, enough for the slowdown detector's baseline (its minimum number of
    // earlier cycles, wholly before the window), and not one candidate anomaly in them.
    const started = Date.now();
    const baselineCycles =
      Number(FAST_CONFIG.SLOWDOWN_MIN_SAMPLES) +
      Number(FAST_CONFIG.ERROR_RATE_WINDOW) / Number(FAST_CONFIG.MONITOR_INTERVAL) +
      3;
    await waitFor(async () => (await records(started)).length >= baselineCycles, {
      timeoutMs: 90_000,
      intervalMs: 500,
      what: `${baselineCycles} healthy cycles`,
    });
    const baseline = await records(started);
    expect(baseline.flatMap((r) => r.candidates.map((a) => `${a.type}:${a.target}`))).toEqual([]);
    const last = baseline[baseline.length - 1]!.snapshot;
    expect(last.sources.postgres).toEqual({ ok: true });
    expect(last.outcomes).toBe('documents');
    expect(last.stages.map((s) => s.stage)).toEqual(['ingest', 'ocr', 'index']);
    const ocr = last.stages.find((s) => s.stage === 'ocr')!;
    expect(ocr.recentSamples).toBeGreaterThanOrEqual(Number(FAST_CONFIG.SLOWDOWN_MIN_SAMPLES));
    expect(ocr.recentMeanMs).toBe(20);
    expect(ocr.workers).toEqual([expect.objectContaining({ worker: 'ocr-worker-1', failed: 0 })]);
    expect(last.health.map((h) => [h.container, h.ok, h.status])).toEqual([
      ['legacy-ocr-1', true, 200],
      ['legacy-index-1', true, 204],
    ]);

    // The faults, written directly, all at once.
    const injectedAt = Date.now();
    // ingest: documents wait in its queue and nothing takes them.
    const waiting = await db.watched.pool.query<{ id: string }>(
      `INSERT INTO documents (stage, status) SELECT 'ingest', 'queued' FROM generate_series(1, 5) RETURNING id::text`,
    );
    await redis.lpush(keys.queue('ingest'), ...waiting.rows.map((r) => r.id));
    // ocr: a document processing for an hour under its live worker (past STUCK_DOCUMENT_THRESHOLD), and every
    // completion now takes 10 times as long.
    const stuck = await db.watched.pool.query<{ id: string }>(
      `INSERT INTO documents (stage, status, worker_id, attempts, started_at, updated_at)
       VALUES ('ocr', 'processing', 'ocr-worker-1', 1, now() - interval '1 hour', now() - interval '1 hour')
       RETURNING id::text`,
    );
    await redis.lpush(keys.processing('ocr', 'ocr-worker-1'), stuck.rows[0]!.id);
    traffic.ocrMs = 200;
    // index: three failures for each completion; and a finished document still leased by a worker that is gone.
    traffic.indexFailuresPerTick = 3;
    const leased = await db.watched.pool.query<{ id: string }>(
      `INSERT INTO documents (stage, status, worker_id, attempts, processing_ms, completed_at)
       VALUES ('index', 'completed', 'index-worker-gone', 1, 15, now()) RETURNING id::text`,
    );
    await redis.set(keys.lock(leased.rows[0]!.id), 'index-worker-gone:lease-1', 'EX', 3600);
    // A container whose health check answers 503.
    healthStatus.set('legacy-ocr-1', 503);

    const expected = [
      'error_rate_spike:index',
      'processing_time_anomaly:ocr',
      'stale_locks:index-worker-gone',
      'stalled_queue:ingest',
      'stuck_documents:ocr',
      'unhealthy_container:legacy-ocr-1',
    ];
    const fired = await waitFor(
      async () => {
        const seen = await alerts(injectedAt);
        const byKey = new Map(seen.map((a) => [`${a.type}:${a.target}`, a]));
        return expected.every((k) => byKey.has(k)) ? byKey : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 500, what: expected.join(', ') },
    );
    expect(feedError).toBeUndefined();
    // The container answering 204 never failed its check; only the expected anomalies fired.
    expect([...new Set((await alerts(started)).map((a) => `${a.type}:${a.target}`))].sort()).toEqual(expected);
    // It fires as soon as the window's rate passes the threshold (the window still holds earlier completions).
    const spike = fired.get('error_rate_spike:index')!.evidence;
    expect(spike).toMatchObject({ threshold: Number(FAST_CONFIG.ERROR_RATE_THRESHOLD), suspects: [] });
    expect(spike.errorRate).toBeGreaterThan(Number(FAST_CONFIG.ERROR_RATE_THRESHOLD));
    expect(spike.failed as number).toBeGreaterThanOrEqual(3);
    expect(fired.get('processing_time_anomaly:ocr')!.evidence).toMatchObject({ baselineMs: 20 });
    expect(fired.get('stuck_documents:ocr')!.evidence).toMatchObject({
      documentIds: [Number(stuck.rows[0]!.id)],
      deadOwners: [],
    });
    expect(fired.get('stale_locks:index-worker-gone')!.evidence).toMatchObject({
      documentIds: [leased.rows[0]!.id],
    });
    expect(fired.get('unhealthy_container:legacy-ocr-1')!.evidence).toMatchObject({ status: 503 });
    // Every cycle read Postgres, its outcomes from documents.
    for (const r of await records(started)) {
      expect(r.snapshot.sources.postgres).toEqual({ ok: true });
      expect(r.snapshot.outcomes).toBe('documents');
    }

    // Each anomaly's healing workflow audits in selfheal's schema.
    const detected = await waitFor(
      async () => {
        const { rows } = await db.own.pool.query<{ k: string }>(
          `SELECT DISTINCT anomaly_type || ':' || target AS k FROM healing_log WHERE step = 'detected' ORDER BY 1`,
        );
        const found = rows.map((r) => r.k);
        return expected.every((k) => found.includes(k)) ? found : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500, what: "the healings' detected rows in selfheal's schema" },
    );
    expect(detected).toEqual(expect.arrayContaining(expected));
    const stuckHealing = await client.workflow.getHandle(healingWorkflowId('stuck_documents', 'ocr')).describe();
    expect(stuckHealing.type).toBe('healingWorkflow');

    // `selfheal migrate` and `selfheal audit` use SELFHEAL_DATABASE_URL; doctor sees documents without
    // document_events, and says the stuck-document query lacks its partial index.
    const migrated = selfheal.cli(['migrate']);
    expect(migrated.status, migrated.stderr).toBe(0);
    const audit = selfheal.cli(['audit', '--json']);
    expect(audit.status, audit.stderr).toBe(0);
    const auditRows = JSON.parse(audit.stdout) as { step: string; anomaly_type: string }[];
    expect(auditRows.filter((r) => r.step === 'detected').map((r) => r.anomaly_type)).toEqual(
      expect.arrayContaining(['stalled_queue', 'stuck_documents']),
    );
    const doctor = selfheal.cli(['doctor', '--json']);
    const postgres = (JSON.parse(doctor.stdout) as DoctorRow[]).find((r) => r.dependency === 'Postgres')!;
    expect(postgres).toMatchObject({ status: 'degraded', hint: expect.stringMatching(/WHERE status = 'processing'/) });
    expect(postgres.detail).toMatch(/outcomes from documents \(no document_events\)/);

    // Nothing was created or altered in the watched database: the same objects, and only the documents table.
    clearInterval(feeder);
    feeder = undefined;
    expect(await tables(db.watched.pool, db.watched.schema)).toEqual(['documents']);
    expect(await schemaObjects(db.watched.pool, db.watched.schema)).toEqual(watchedBefore);
    // selfheal's own tables are all in its schema.
    expect(await tables(db.own.pool, db.own.schema)).toEqual([
      'action_permits',
      'healing_log',
      'silence_log',
      'silences',
    ]);
  }, 300_000);
});

describe('actions on an existing pipeline: documents changed there, executed rows in selfheal’s database', () => {
  const quiet = new DefaultLogger('ERROR');
  let db: Databases;
  let redis: Redis;
  let keys: Keys;
  let prefix: string;
  let actions: ReturnType<typeof createActionActivities>;

  beforeAll(async () => {
    const id = uniqueId();
    db = await createDatabases(id);
    await migrate(db.own.pool);
    prefix = `${id}:`;
    keys = createKeys(prefix);
    redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 2 });
    actions = createActionActivities({
      pool: db.own.pool,
      pipelinePool: db.watched.pool,
      redis,
      keys,
      docker: undefined as never, // no Docker action here
      log: pino({ level: 'silent' }),
      config: {
        maxRequeues: 3,
        requeueCap: 1000,
        restartStopTimeoutSeconds: 5,
        healthTargets: [],
        containerAllowlist: [],
        containerDenylist: [],
        stages: ['ingest', 'ocr', 'index'],
      },
    });
  });

  afterAll(async () => {
    if (redis) {
      await deletePrefix(redis, prefix);
      redis.disconnect();
    }
    await db?.drop();
  });

  /** One activity attempt of a healing run (MockActivityEnvironment gives the ids written to healing_log). */
  function run(workflowId: string, runId: string, activityId: string, name: 'requeueDocuments' | 'quarantineDocument') {
    return (input: ActionInput): Promise<ActionResult> =>
      new MockActivityEnvironment({ activityId, workflowExecution: { workflowId, runId } }, { logger: quiet }).run(
        actions[name],
        input,
      );
  }

  function plan(action: Plan['action'], params: Plan['params']): Plan {
    return {
      id: `plan-${uniqueId()}`,
      anomalyType: 'stuck_documents',
      action,
      target: 'ocr',
      params,
      reasoning: 'integration test',
      confidence: 0.9,
      source: 'runbook',
      rung: 0,
    };
  }

  it('requeue and quarantine act on the watched documents once, and record in selfheal’s healing_log', async () => {
    const { rows } = await db.watched.pool.query<{ id: string }>(
      `INSERT INTO documents (stage, status, worker_id, attempts, started_at, updated_at)
       SELECT 'ocr', 'processing', 'ocr-dead', 1, now() - interval '1 hour', now() - interval '1 hour'
         FROM generate_series(1, 4) RETURNING id::text`,
    );
    const ids = rows.map((r) => Number(r.id));
    await redis.rpush(keys.processing('ocr', 'ocr-dead'), ...ids.slice(0, 3).map(String));
    const workflowId = `heal-stuck_documents-ocr-${uniqueId()}`;
    const runId = randomUUID();
    const key = `requeue-${uniqueId()}`;
    const requeue = plan('requeue_documents', { documentIds: ids.slice(0, 3), stage: 'ocr' });

    const first = await run(workflowId, runId, '1', 'requeueDocuments')({ plan: requeue, idempotencyKey: key });
    expect(first).toMatchObject({ outcome: 'done', details: { requeued: ids.slice(0, 3) } });
    // A retry of the same execution (same key, a later attempt) replays the record and changes nothing.
    const retry = await run(workflowId, runId, '1', 'requeueDocuments')({ plan: requeue, idempotencyKey: key });
    expect(retry).toMatchObject({ outcome: 'done', details: { requeued: ids.slice(0, 3), replayed: true } });

    const quarantine = plan('quarantine_document', { documentIds: [ids[3]!], reason: 'poison' });
    const dead = await run(
      workflowId,
      runId,
      '2',
      'quarantineDocument',
    )({
      plan: quarantine,
      idempotencyKey: `quarantine-${uniqueId()}`,
    });
    expect(dead).toMatchObject({ outcome: 'done', details: { quarantined: [ids[3]] } });

    const docs = await db.watched.pool.query<{ id: string; status: string; requeue_count: number; error: string }>(
      'SELECT id::text, status, requeue_count, error FROM documents ORDER BY id',
    );
    expect(docs.rows.map((d) => [Number(d.id), d.status, d.requeue_count])).toEqual([
      [ids[0], 'queued', 1],
      [ids[1], 'queued', 1],
      [ids[2], 'queued', 1],
      [ids[3], 'dead', 0],
    ]);
    expect(docs.rows[3]!.error).toMatch(/quarantined by selfheal: poison/);
    expect((await redis.lrange(keys.queue('ocr'), 0, -1)).map(Number).sort((a, b) => a - b)).toEqual(ids.slice(0, 3));
    expect(await redis.llen(keys.processing('ocr', 'ocr-dead'))).toBe(0);

    const executed = await db.own.pool.query<{ action: string; idempotency_key: string; workflow_id: string }>(
      `SELECT action, idempotency_key, workflow_id FROM healing_log WHERE step = 'executed' ORDER BY id`,
    );
    expect(executed.rows.map((r) => [r.action, r.workflow_id])).toEqual([
      ['requeue_documents', workflowId],
      ['quarantine_document', workflowId],
    ]);
    expect(await tables(db.watched.pool, db.watched.schema)).toEqual(['documents']);
  });
});
