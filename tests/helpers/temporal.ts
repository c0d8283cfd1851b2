/** Temporal for integration tests: the run's dev server, and a namespace of one's own. */
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import type { temporal } from '@temporalio/proto';
import { Redis } from 'ioredis';
import { inject } from 'vitest';
import { statusQuery } from '../../workflows/definitions';
import type { healingWorkflow, HealingStatus } from '../../workflows/healing';
import { TEST_REDIS_URL, waitFor } from './env';

/**
 * Takes the next unused namespace of this run's pool (counted in Redis, so test files in different workers never
 * share one). Healing workflow ids and the Schedule id are fixed by the contract; a namespace keeps them apart.
 */
export async function allocateNamespace(): Promise<string> {
  const pool = inject('temporalNamespaces');
  const redis = new Redis(TEST_REDIS_URL);
  try {
    const key = `selfheal-tests:${inject('testRunId')}:namespace`;
    const n = await redis.incr(key);
    await redis.expire(key, 86_400);
    const ns = pool[n - 1];
    if (!ns)
      throw new Error(`the namespace pool (${pool.length}) is exhausted: raise it in tests/helpers/global-setup.ts`);
    return ns;
  } finally {
    redis.disconnect();
  }
}

export async function connectClient(namespace: string): Promise<{ client: Client; close: () => Promise<void> }> {
  const connection = await Connection.connect({ address: inject('temporalAddress') });
  return { client: new Client({ connection, namespace }), close: () => connection.close() };
}

/**
 * The run of healing `workflowId` started at or after `since` (epoch ms), once there is one: its id and handle
 * (healing ids are reused once a run closed).
 */
export async function runSince(
  client: Client,
  workflowId: string,
  { since = 0, timeoutMs = 90_000, intervalMs = 100 } = {},
): Promise<{ runId: string; handle: WorkflowHandle<typeof healingWorkflow> }> {
  const runId = await waitFor(
    () =>
      client.workflow
        .getHandle(workflowId)
        .describe()
        .then(
          (d) => (d.startTime.getTime() >= since ? d.runId : undefined),
          () => undefined,
        ),
    { timeoutMs, intervalMs, what: `a run of ${workflowId}` },
  );
  return { runId, handle: client.workflow.getHandle<typeof healingWorkflow>(workflowId, runId) };
}

/** The run of healing `workflowId` started at or after `since` (epoch ms), once it has ended: its id and result. */
export async function endedRun(
  client: Client,
  workflowId: string,
  opts: { since?: number; timeoutMs?: number; intervalMs?: number } = {},
): Promise<{ runId: string; status: HealingStatus }> {
  const { runId, handle } = await runSince(client, workflowId, opts);
  return { runId, status: await handle.result() };
}

/** The status a healing answers to its query now, or undefined (not started yet, or between runs). */
export async function healingStatus(client: Client, workflowId: string): Promise<HealingStatus | undefined> {
  return client.workflow
    .getHandle<typeof healingWorkflow>(workflowId)
    .query(statusQuery)
    .catch(() => undefined);
}

/**
 * RECORD_HISTORIES=1: saves real histories of completed workflows for the replay test (tests/unit/replay.test.ts),
 * one per kind: monitoring cycles (quiet, starting a healing, signalling an open one, spending gone marks) and
 * healings by final phase. A kind that has a file already keeps it: an old history is what proves that runs started
 * by earlier code still replay, so a new recording never replaces it (delete the file to record it again).
 */
export async function recordHistories(client: Client): Promise<void> {
  if (!process.env.RECORD_HISTORIES) return;
  const dir = path.join(__dirname, '../fixtures/histories');
  mkdirSync(dir, { recursive: true });
  const seen = new Set<string>(readdirSync(dir).map((f) => f.replace(/\.json$/, '')));
  let looked = 0;
  for await (const wf of client.workflow.list({ query: "ExecutionStatus = 'Completed'" })) {
    if (++looked > 400) break;
    const handle = client.workflow.getHandle(wf.workflowId, wf.runId);
    const r = (await handle.result()) as { phase?: string; started?: string[]; signalled?: string[] };
    let history: temporal.api.history.v1.IHistory | undefined;
    let kind: string;
    if (wf.type === 'healingWorkflow') kind = `healing-${r.phase}`;
    else if (r.started?.length || r.signalled?.length) {
      history = await handle.fetchHistory();
      const spends = history.events?.some(
        (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'spendGoneMarks',
      );
      kind = spends
        ? 'monitoring-spends-gone-marks'
        : r.started?.length
          ? 'monitoring-starts-healing'
          : 'monitoring-signals-open-healing';
    } else kind = 'monitoring-quiet';
    if (seen.has(kind)) continue;
    seen.add(kind);
    writeFileSync(path.join(dir, `${kind}.json`), historyToJSON(history ?? (await handle.fetchHistory())));
  }
}
