/**
 * One monitoring cycle that fires several anomalies at once, against Postgres, Redis and a Temporal dev server, with
 * selfheal running as `selfheal up --no-pipeline` (the Schedule, 1 s cycles, approval required so that every healing
 * stays open) and the fake Ollama server answering 500 (every plan is the runbook's):
 * - the cycle starts every healing in one workflow task (the start commands together, after the patch marker), not
 *   one start per workflow task;
 * - a later cycle in which some of them fire again together with new ones starts the new ones and signals the open
 *   ones (the signals together, in the workflow task after the starts), and leaves the lasting ones alone.
 */
import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { healingWorkflowId, statusQuery, type CycleResult } from '../../workflows/definitions';
import { CONCURRENT_STARTS_PATCH } from '../../workflows/monitoring';
import { createTestEnv, type TestEnv, uniqueId, waitFor } from '../helpers/env';
import { startFakeOllama, type FakeOllama } from '../helpers/fake-ollama';
import { startSelfheal, type RunningSelfheal } from '../helpers/selfheal';
import { cycleRecords } from '../helpers/stream';
import { allocateNamespace, connectClient } from '../helpers/temporal';

const EventType = temporal.api.enums.v1.EventType;
type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

/** A stale lock of a dead owner on a document of its own: the key and its value, to plant and remove at once. */
interface PlantedLock {
  owner: string;
  key: string;
  value: string;
}

async function lockOf(t: TestEnv): Promise<PlantedLock> {
  const owner = uniqueId('dead-');
  const { rows } = await t.pool.query<{ id: string }>(
    "INSERT INTO documents (stage, status) VALUES ('evaluate', 'completed') RETURNING id::text AS id",
  );
  return { owner, key: t.keys.lock(rows[0]!.id), value: `${owner}:${uniqueId('tok')}` };
}

const idOf = (l: PlantedLock) => healingWorkflowId('stale_locks', l.owner);

/** The monitoring cycle (workflow id and run) that started a healing. */
async function parentCycle(client: Client, healingId: string): Promise<{ workflowId: string; runId: string }> {
  const parent = (await client.workflow.getHandle(healingId).describe()).parentExecution;
  if (!parent?.workflowId || !parent.runId) throw new Error(`${healingId} has no parent cycle`);
  return { workflowId: parent.workflowId, runId: parent.runId };
}

/** The workflow task (its WorkflowTaskCompleted event id) whose commands recorded each event of a type. */
function taskIds(events: HistoryEvent[], type: temporal.api.enums.v1.EventType): number[] {
  return events
    .filter((e) => e.eventType === type)
    .map((e) =>
      Number(
        e.startChildWorkflowExecutionInitiatedEventAttributes?.workflowTaskCompletedEventId ??
          e.signalExternalWorkflowExecutionInitiatedEventAttributes?.workflowTaskCompletedEventId ??
          e.markerRecordedEventAttributes?.workflowTaskCompletedEventId,
      ),
    );
}

function patchMarkers(events: HistoryEvent[]): string[] {
  return events
    .filter((e) => e.eventType === EventType.EVENT_TYPE_MARKER_RECORDED)
    .map((e) => {
      const payload = e.markerRecordedEventAttributes?.details?.['patch-data']?.payloads?.[0]?.data;
      return payload ? (JSON.parse(Buffer.from(payload).toString()) as { id: string }).id : '';
    });
}

describe('a cycle that fires several anomalies at once', () => {
  let t: TestEnv;
  let ollama: FakeOllama;
  let selfheal: RunningSelfheal;
  let client: Client;
  let closeClient: () => Promise<void>;

  beforeAll(async () => {
    t = await createTestEnv();
    const ns = await allocateNamespace();
    ollama = await startFakeOllama({ replies: [{ kind: 'status', status: 500 }] });
    selfheal = await startSelfheal(t, ns, {
      OLLAMA_HOST: ollama.url,
      AUTO_FIX_ENABLED: 'false',
      APPROVAL_TIMEOUT: '3600',
    });
    ({ client, close: closeClient } = await connectClient(ns));
  }, 180_000);

  afterAll(async () => {
    await selfheal?.stop();
    await closeClient?.();
    await ollama?.close();
    await t?.cleanup();
  });

  it('starts them all in one workflow task, then signals the open ones that fire again and starts the new ones', async () => {
    const first = await Promise.all(Array.from({ length: 6 }, () => lockOf(t)));
    // All at once (one MSET): the same cycles see them all, so they fire in one cycle.
    await t.redis.mset(Object.fromEntries(first.map((l) => [l.key, l.value])));
    const status = (id: string) => client.workflow.getHandle(id).query(statusQuery);
    const waiting = async (ids: string[]) =>
      (await Promise.all(ids.map((id) => status(id).catch(() => undefined)))).every(
        (s) => s?.phase === 'awaiting_approval',
      );
    await waitFor(() => waiting(first.map(idOf)), { timeoutMs: 90_000, what: 'six healings awaiting approval' });

    const parents = await Promise.all(first.map((l) => parentCycle(client, idOf(l))));
    expect(new Set(parents.map((p) => p.runId)).size).toBe(1);
    const cycle = client.workflow.getHandle(parents[0]!.workflowId, parents[0]!.runId);
    expect(((await cycle.result()) as CycleResult).started.sort()).toEqual(first.map(idOf).sort());
    const events = (await cycle.fetchHistory()).events!;
    expect(patchMarkers(events)).toEqual([CONCURRENT_STARTS_PATCH]);
    const starts = taskIds(events, EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED);
    expect(starts).toHaveLength(6);
    // One workflow task issued every start (and the marker before them).
    expect(new Set(starts).size).toBe(1);
    expect(taskIds(events, EventType.EVENT_TYPE_MARKER_RECORDED)).toEqual([starts[0]]);

    // Three of them clear (their locks go away for ANOMALY_CLEAR_CYCLES cycles), then come back together with two
    // new owners' locks: the cycle that fires the five signals the three open healings and starts two.
    const back = first.slice(0, 3);
    const lasting = first.slice(3);
    await t.redis.del(...back.map((l) => l.key));
    const clearedAt = Date.now();
    await waitFor(
      async () => {
        const rs = await cycleRecords(t.redis, t.keys, clearedAt);
        const last = rs[rs.length - 1];
        return last !== undefined && back.every((l) => !last.active.some((a) => a.target === l.owner));
      },
      { timeoutMs: 60_000, intervalMs: 250, what: 'the three to clear' },
    );
    const fresh = await Promise.all(Array.from({ length: 2 }, () => lockOf(t)));
    await t.redis.mset(Object.fromEntries([...back, ...fresh].map((l) => [l.key, l.value])));
    await waitFor(() => waiting(fresh.map(idOf)), { timeoutMs: 90_000, what: 'two new healings awaiting approval' });
    await waitFor(async () => (await Promise.all(back.map((l) => status(idOf(l))))).every((s) => s.seen === 2), {
      timeoutMs: 30_000,
      what: 'the second firing of the three',
    });

    const freshParents = await Promise.all(fresh.map((l) => parentCycle(client, idOf(l))));
    expect(new Set(freshParents.map((p) => p.runId)).size).toBe(1);
    const second = client.workflow.getHandle(freshParents[0]!.workflowId, freshParents[0]!.runId);
    const result = (await second.result()) as CycleResult;
    expect(result.started.sort()).toEqual(fresh.map(idOf).sort());
    expect(result.signalled.sort()).toEqual(back.map(idOf).sort());
    const events2 = (await second.fetchHistory()).events!;
    const starts2 = taskIds(events2, EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED);
    const signals2 = taskIds(events2, EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED);
    expect(starts2).toHaveLength(5);
    expect(new Set(starts2).size).toBe(1);
    expect(signals2).toHaveLength(3);
    // The signals go out together, in a later workflow task than the starts (once the three have failed as started).
    expect(new Set(signals2).size).toBe(1);
    expect(signals2[0]).toBeGreaterThan(starts2[0]!);

    // The lasting ones were not told anything; every healing still waits, one run each.
    for (const l of lasting) expect((await status(idOf(l))).seen).toBe(1);
    expect(await waiting([...first, ...fresh].map(idOf))).toBe(true);
  }, 300_000);
});
