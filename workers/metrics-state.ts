/**
 * What the HTTP server shows: the latest cycle record from `monitoring:metrics`, healing counts from
 * `healing_log`, and the Prometheus registry built from them. Labels stay bounded: stages, statuses, queue kinds,
 * anomaly types, container names of the pipeline; never document ids.
 */
import type { Redis } from 'ioredis';
import type pg from 'pg';
import client from 'prom-client';
import { cycleRecordsAfter, latestCycleRecord } from '../activities/metrics-stream';
import { listSilences } from '../activities/silences';
import { matchingSilence, type Silence } from '../core/silence';
import type { Keys } from '../core/keys';
import type { CycleRecord } from '../core/snapshot';
import { AnomalyType } from '../core/types';

export interface MetricsStateDeps {
  redis: Redis;
  pool: pg.Pool;
  keys: Keys;
}

export interface MetricsView {
  latest: CycleRecord | null;
  /** Rows of healing_log by step in the last 24 h. */
  healings24h: Record<string, number>;
  /** Ids of the healing workflows with an anomaly open in the latest cycle. */
  openAnomalies: {
    type: string;
    target: string;
    severity: string;
    summary: string;
    fingerprint: string;
    /** The silence that holds it now ("silenced by #12"): detected and shown, but no action runs. */
    silencedBy?: { id: number; reason: string; by: string; until: string };
  }[];
}

const CYCLE_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30];

export function createMetricsState(deps: MetricsStateDeps) {
  const registry = new client.Registry();
  const g = (name: string, help: string, labelNames: string[] = []) =>
    new client.Gauge({ name, help, labelNames, registers: [registry] });
  const queueDepth = g('selfheal_queue_depth', 'Items in a pipeline list', ['stage', 'kind']);
  const documents = g(
    'selfheal_documents',
    'Documents by stage and status (completed, and any count above 10,000, is the planner estimate)',
    ['stage', 'status'],
  );
  const errorRate = g('selfheal_stage_error_rate', 'failed / (completed + failed) in the error-rate window', ['stage']);
  const outcomes = g('selfheal_stage_window_outcomes', 'Processing outcomes in the error-rate window', [
    'stage',
    'outcome',
  ]);
  const processingMs = g('selfheal_stage_processing_ms', 'Mean processing time of completions in the window, ms', [
    'stage',
  ]);
  const containerUp = g('selfheal_container_healthy', '1 when the container answers its health check (or runs)', [
    'container',
  ]);
  const ollamaUp = g('selfheal_ollama_up', '1 when Ollama answers and the model is present');
  const sourceUp = g('selfheal_monitoring_source_up', '1 when the source could be read in the last cycle', ['source']);
  const outcomesTable = g(
    'selfheal_outcomes_table',
    '1 for the table the last cycle read outcomes from: document_events, or documents when the pipeline has no events',
    ['table'],
  );
  const openAnomalies = g('selfheal_open_anomalies', 'Anomalies open after noise control, by type', ['type']);
  const silenced = g('selfheal_anomalies_silenced', 'Open anomalies a silence (maintenance window) holds, by type', [
    'type',
  ]);
  const staleLocks = g('selfheal_stale_locks', 'Document locks held by a worker without heartbeat');
  const lastCycle = g('selfheal_last_cycle_timestamp_seconds', 'When the latest monitoring cycle collected');
  const cycleDuration = new client.Histogram({
    name: 'selfheal_cycle_duration_seconds',
    help: 'Monitoring cycle duration up to detection',
    buckets: CYCLE_BUCKETS_S,
    registers: [registry],
  });
  const healingSteps = new client.Counter({
    name: 'selfheal_healing_steps_total',
    help: 'Healing steps written to healing_log, by step (executed, escalated, verified...)',
    labelNames: ['step'],
    registers: [registry],
  });

  let lastStreamId: string | undefined;
  let lastLogId = 0;

  async function latestRecord(): Promise<CycleRecord | null> {
    return (await latestCycleRecord(deps.redis, deps.keys)) ?? null;
  }

  /** Observes the cycle durations of the records written since the last scrape (bounded read). */
  async function observeNewCycles(): Promise<void> {
    const entries = await cycleRecordsAfter(deps.redis, deps.keys, lastStreamId, 1000);
    for (const { id, record } of entries) {
      lastStreamId = id;
      if (record?.cycleMs !== undefined) cycleDuration.observe(record.cycleMs / 1000);
    }
  }

  async function countNewSteps(): Promise<void> {
    const { rows } = await deps.pool.query<{ step: string; n: number; max_id: number }>(
      `SELECT step, count(*)::int AS n, max(id) AS max_id FROM healing_log WHERE id > $1 GROUP BY step`,
      [lastLogId],
    );
    for (const r of rows) {
      healingSteps.inc({ step: r.step }, r.n);
      lastLogId = Math.max(lastLogId, r.max_id);
    }
  }

  /** The silences open now (one small query); none when they cannot be read. */
  async function openSilences(): Promise<Silence[]> {
    return listSilences(deps.pool, { openAfter: Date.now() }).catch(() => []);
  }

  function setGauges(latest: CycleRecord | null, silences: Silence[]): void {
    for (const m of [
      queueDepth,
      documents,
      errorRate,
      outcomes,
      processingMs,
      containerUp,
      openAnomalies,
      silenced,
      sourceUp,
      outcomesTable,
    ])
      m.reset();
    if (!latest) return;
    const s = latest.snapshot;
    lastCycle.set(s.at / 1000);
    for (const [source, st] of Object.entries(s.sources)) sourceUp.set({ source }, st.ok ? 1 : 0);
    if (s.outcomes) outcomesTable.set({ table: s.outcomes }, 1);
    for (const st of s.stages) {
      queueDepth.set({ stage: st.stage, kind: 'queue' }, st.queueDepth);
      queueDepth.set({ stage: st.stage, kind: 'processing' }, st.processingDepth);
      for (const [status, n] of Object.entries(st.counts)) documents.set({ stage: st.stage, status }, n);
      const samples = st.windowCompleted + st.windowFailed;
      errorRate.set({ stage: st.stage }, samples ? st.windowFailed / samples : 0);
      outcomes.set({ stage: st.stage, outcome: 'completed' }, st.windowCompleted);
      outcomes.set({ stage: st.stage, outcome: 'failed' }, st.windowFailed);
      if (st.recentMeanMs !== null) processingMs.set({ stage: st.stage }, st.recentMeanMs);
    }
    const healthy = new Map<string, boolean>();
    for (const c of s.containers) healthy.set(c.name, c.running);
    for (const h of s.health) healthy.set(h.container, (healthy.get(h.container) ?? true) && h.ok);
    for (const [container, ok] of healthy) containerUp.set({ container }, ok ? 1 : 0);
    ollamaUp.set(s.ollama.reachable && s.ollama.modelPresent ? 1 : 0);
    staleLocks.set(s.staleLockTotal);
    for (const type of Object.values(AnomalyType)) {
      openAnomalies.set({ type }, latest.active.filter((a) => a.type === type).length);
      silenced.set(
        { type },
        latest.active.filter((a) => a.type === type && matchingSilence(silences, a, Date.now())).length,
      );
    }
  }

  return {
    registry,
    /** The JSON view of /metrics. */
    async view(): Promise<MetricsView> {
      const [latest, steps, silences] = await Promise.all([
        latestRecord(),
        deps.pool.query<{ step: string; n: number }>(
          `SELECT step, count(*)::int AS n FROM healing_log WHERE created_at > now() - interval '24 hours' GROUP BY step`,
        ),
        openSilences(),
      ]);
      const now = Date.now();
      return {
        latest,
        healings24h: Object.fromEntries(steps.rows.map((r) => [r.step, r.n])),
        openAnomalies: (latest?.active ?? []).map(({ type, target, severity, summary, fingerprint }) => {
          const s = matchingSilence(silences, { type, target }, now);
          return {
            type,
            target,
            severity,
            summary,
            fingerprint,
            ...(s
              ? { silencedBy: { id: s.id, reason: s.reason, by: s.createdBy, until: new Date(s.endsAt).toISOString() } }
              : {}),
          };
        }),
      };
    },
    /** Prometheus text exposition, refreshed from Redis and Postgres on each scrape. */
    async prometheus(): Promise<string> {
      // A source that cannot be read leaves its metrics as they were; the scrape still answers.
      const [latest, , , silences] = await Promise.allSettled([
        latestRecord(),
        observeNewCycles(),
        countNewSteps(),
        openSilences(),
      ]);
      if (latest.status === 'fulfilled') setGauges(latest.value, silences.status === 'fulfilled' ? silences.value : []);
      return registry.metrics();
    },
  };
}
