/**
 * `selfheal status`: one screen for an operator. Temporal (address, namespace, server version), the monitor
 * Schedule (paused, note, last run and its result, next run), the pollers of each task queue, open healings by
 * phase (search attribute HealPhase), and the open anomalies of the latest monitoring cycle (the record the HTTP
 * /metrics shows, read from the Redis stream `monitoring:metrics`).
 */
import { ScheduleNotFoundError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { Redis } from 'ioredis';
import { latestCycleRecord } from '../activities/metrics-stream';
import { listSilences } from '../activities/silences';
import { selfhealDatabaseUrl, type Config } from '../core/config';
import { matchingSilence, type Silence } from '../core/silence';
import { createPool } from '../db/pool';
import { createKeys } from '../core/keys';
import { MONITOR_SCHEDULE_ID, TaskQueue } from '../workflows/definitions';
import { listHealings, withClient } from './healings';
import { formatTable } from './output';
import { errorFirstLine } from '../core/errors';

/** Open healings listed to count phases; beyond this the counts say `truncated`. */
const OPEN_HEALINGS_CAP = 1000;
const REDIS_TIMEOUT_MS = 3_000;

/** The poller types each queue needs: the actions worker runs activities only. */
const EXPECTED_POLLERS: Record<TaskQueue, ('workflow' | 'activity')[]> = {
  [TaskQueue.monitor]: ['workflow', 'activity'],
  [TaskQueue.healing]: ['workflow', 'activity'],
  [TaskQueue.actions]: ['activity'],
};

export interface ScheduleStatus {
  id: string;
  exists: boolean;
  paused?: boolean;
  note?: string;
  overlap?: string;
  /** Interval between cycles, ms. */
  everyMs?: number;
  lastRun?: { workflowId: string; runId: string; takenAt: string; status: string } | null;
  /** ISO time of the next scheduled cycle (none while paused). */
  nextRun?: string | null;
  runningCycles?: number;
  actionsTaken?: number;
  skippedOverlap?: number;
}

export interface TaskQueueStatus {
  name: string;
  workflowPollers: number;
  activityPollers: number;
  /** Every expected poller type has at least one poller. */
  ok: boolean;
  /** Most recent poll, ISO time, or null when nobody polled lately. */
  lastPollAt: string | null;
  identities: string[];
}

export type AnomaliesStatus =
  | {
      available: true;
      /** ISO time the latest cycle collected its snapshot, or null when no cycle was recorded yet. */
      cycleAt: string | null;
      /** `silencedBy`: the silence (maintenance window) that holds it, when one does. */
      open: { type: string; target: string; severity: string; summary: string; silencedBy?: number }[];
    }
  | { available: false; error: string };

export interface StatusReport {
  temporal: { address: string; namespace: string; reachable: true; serverVersion: string };
  schedule: ScheduleStatus;
  taskQueues: TaskQueueStatus[];
  healings: { open: number; byPhase: Record<string, number>; truncated: boolean };
  anomalies: AnomaliesStatus;
}

function iso(d: Date | null | undefined): string | null {
  return d ? d.toISOString() : null;
}

async function scheduleStatus(client: Client): Promise<ScheduleStatus> {
  let d;
  try {
    d = await client.schedule.getHandle(MONITOR_SCHEDULE_ID).describe();
  } catch (err) {
    if (err instanceof ScheduleNotFoundError) return { id: MONITOR_SCHEDULE_ID, exists: false };
    throw err;
  }
  const last = d.info.recentActions.at(-1);
  let lastRun: ScheduleStatus['lastRun'] = null;
  if (last) {
    const { workflowId, firstExecutionRunId } = last.action.workflow;
    let status = 'unknown';
    try {
      status = (await client.workflow.getHandle(workflowId, firstExecutionRunId).describe()).status.name;
    } catch (err) {
      // Past retention the cycle is gone; the Schedule still remembers it ran.
      if (!(err instanceof WorkflowNotFoundError)) throw err;
    }
    lastRun = { workflowId, runId: firstExecutionRunId, takenAt: last.takenAt.toISOString(), status };
  }
  return {
    id: MONITOR_SCHEDULE_ID,
    exists: true,
    paused: d.state.paused,
    note: d.state.note ?? '',
    overlap: d.policies.overlap,
    everyMs: d.spec.intervals?.[0]?.every,
    lastRun,
    nextRun: d.state.paused ? null : iso(d.info.nextActionTimes[0]),
    runningCycles: d.info.runningActions.length,
    actionsTaken: d.info.numActionsTaken,
    skippedOverlap: d.info.numActionsSkippedOverlap,
  };
}

async function taskQueueStatus(client: Client, name: TaskQueue): Promise<TaskQueueStatus> {
  const { TASK_QUEUE_TYPE_WORKFLOW, TASK_QUEUE_TYPE_ACTIVITY } = temporal.api.enums.v1.TaskQueueType;
  const [wf, act] = await Promise.all(
    [TASK_QUEUE_TYPE_WORKFLOW, TASK_QUEUE_TYPE_ACTIVITY].map((taskQueueType) =>
      client.workflowService.describeTaskQueue({
        namespace: client.options.namespace,
        taskQueue: { name },
        taskQueueType,
      }),
    ),
  );
  const pollers = [...(wf?.pollers ?? []), ...(act?.pollers ?? [])];
  const counts = { workflow: wf?.pollers?.length ?? 0, activity: act?.pollers?.length ?? 0 };
  const lastMs = Math.max(
    0,
    ...pollers.map(
      (p) => Number(p.lastAccessTime?.seconds ?? 0) * 1000 + Math.floor((p.lastAccessTime?.nanos ?? 0) / 1e6),
    ),
  );
  return {
    name,
    workflowPollers: counts.workflow,
    activityPollers: counts.activity,
    ok: EXPECTED_POLLERS[name].every((type) => counts[type] > 0),
    lastPollAt: lastMs > 0 ? new Date(lastMs).toISOString() : null,
    identities: [...new Set(pollers.map((p) => p.identity ?? ''))].filter(Boolean).sort(),
  };
}

async function healingCounts(client: Client): Promise<StatusReport['healings']> {
  const rows = await listHealings(client, { open: true, limit: OPEN_HEALINGS_CAP });
  const byPhase: Record<string, number> = {};
  for (const r of rows) byPhase[r.phase || 'unknown'] = (byPhase[r.phase || 'unknown'] ?? 0) + 1;
  return { open: rows.length, byPhase, truncated: rows.length >= OPEN_HEALINGS_CAP };
}

/** The silences open now, to mark the anomalies they hold; none when Postgres does not answer (not fatal). */
async function openSilences(config: Config): Promise<Silence[]> {
  const pool = createPool(selfhealDatabaseUrl(config), { max: 1, application: 'selfheal-status' });
  try {
    return await listSilences(pool, { openAfter: Date.now() });
  } catch {
    return [];
  } finally {
    await pool.end().catch(() => undefined);
  }
}

/** The latest cycle record's open anomalies; a Redis that does not answer is reported, not fatal. */
export async function latestAnomalies(config: Config): Promise<AnomaliesStatus> {
  const redis = new Redis(config.REDIS_URL, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    connectTimeout: REDIS_TIMEOUT_MS,
    retryStrategy: () => null,
  });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    const [record, silences] = await Promise.all([
      latestCycleRecord(redis, createKeys(config.REDIS_KEY_PREFIX)),
      openSilences(config),
    ]);
    const now = Date.now();
    return {
      available: true,
      cycleAt: record ? new Date(record.snapshot.at).toISOString() : null,
      open: (record?.active ?? []).map(({ type, target, severity, summary }) => {
        const silence = matchingSilence(silences, { type, target }, now);
        return { type, target, severity, summary, ...(silence ? { silencedBy: silence.id } : {}) };
      }),
    };
  } catch (err) {
    return { available: false, error: errorFirstLine(err) };
  } finally {
    redis.disconnect();
  }
}

/** Everything on the screen; Temporal must answer (the caller's connection), Redis may not. */
export async function collectStatus(client: Client, config: Config): Promise<StatusReport> {
  const [system, schedule, taskQueues, healings, anomalies] = await Promise.all([
    client.workflowService.getSystemInfo({}),
    scheduleStatus(client),
    Promise.all(Object.values(TaskQueue).map((q) => taskQueueStatus(client, q))),
    healingCounts(client),
    latestAnomalies(config),
  ]);
  return {
    temporal: {
      address: config.TEMPORAL_ADDRESS,
      namespace: client.options.namespace,
      reachable: true,
      serverVersion: system.serverVersion ?? '',
    },
    schedule,
    taskQueues,
    healings,
    anomalies,
  };
}

function ago(isoTime: string, now: number): string {
  const s = Math.round((now - Date.parse(isoTime)) / 1000);
  return s < 0 ? `in ${-s} s` : `${s} s ago`;
}

/** The screen, for a person. */
export function formatStatus(r: StatusReport, now = Date.now()): string {
  const s = r.schedule;
  const lines = [
    `Temporal   ${r.temporal.address}, namespace ${r.temporal.namespace} (server ${r.temporal.serverVersion || '?'})`,
  ];
  if (!s.exists) {
    lines.push(`Schedule   ${s.id}: missing (\`selfheal up\` creates it)`);
  } else {
    const every = s.everyMs ? `every ${s.everyMs / 1000} s` : '';
    lines.push(
      `Schedule   ${s.id}: ${s.paused ? 'PAUSED' : 'active'}${every ? `, ${every}` : ''}, overlap ${s.overlap}` +
        `${s.note ? ` (note: ${s.note})` : ''}`,
      `  last run ${s.lastRun ? `${s.lastRun.takenAt} (${ago(s.lastRun.takenAt, now)}) ${s.lastRun.status.toLowerCase()}, ${s.lastRun.workflowId}` : 'none yet'}`,
      `  next run ${s.nextRun ? `${s.nextRun} (${ago(s.nextRun, now)})` : s.paused ? 'none while paused' : 'none'}` +
        `; ${s.runningCycles ?? 0} running, ${s.actionsTaken ?? 0} taken, ${s.skippedOverlap ?? 0} skipped (overlap)`,
    );
  }
  lines.push(
    '',
    formatTable(
      ['task queue', 'workflow pollers', 'activity pollers', 'last poll', 'workers'],
      r.taskQueues.map((q) => [
        `${q.name}${q.ok ? '' : ' (NO WORKER)'}`,
        EXPECTED_POLLERS[q.name as TaskQueue]?.includes('workflow') ? String(q.workflowPollers) : '-',
        String(q.activityPollers),
        q.lastPollAt ? ago(q.lastPollAt, now) : 'never',
        q.identities.join(', '),
      ]),
    ).trimEnd(),
    '',
  );
  const phases = Object.entries(r.healings.byPhase)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([phase, n]) => `${phase} ${n}`)
    .join(', ');
  lines.push(`Healings   ${r.healings.open}${r.healings.truncated ? '+' : ''} open${phases ? `: ${phases}` : ''}`);
  const a = r.anomalies;
  if (!a.available) lines.push(`Anomalies  unavailable (Redis: ${a.error})`);
  else if (!a.cycleAt) lines.push('Anomalies  no monitoring cycle recorded yet');
  else {
    lines.push(`Anomalies  ${a.open.length} open in the latest cycle (${a.cycleAt}, ${ago(a.cycleAt, now)})`);
    for (const o of a.open) {
      const silenced = o.silencedBy !== undefined ? ` (silenced by #${o.silencedBy})` : '';
      lines.push(`  ${o.type} on ${o.target} (${o.severity}): ${o.summary}${silenced}`);
    }
  }
  return lines.join('\n') + '\n';
}

/** `selfheal status [--json]` (cli.ts defines the command). */
export async function statusCommand(config: Config, opts: { json?: boolean }): Promise<void> {
  const report = await withClient(config, (client) => collectStatus(client, config));
  process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : formatStatus(report));
}
