/**
 * R16, a storm: 50 stuck documents, 3 dead worker containers and 200 stale locks, injected at once (the faults of
 * `selfheal chaos`, run concurrently) against the real pipeline (worker containers), Postgres, Redis, Docker and a
 * Temporal dev server, selfheal running as `selfheal up --no-pipeline`. Only the LLM is a fake (an Ollama-compatible
 * server that answers slowly, so that analyses pile up behind the healing worker's LLM concurrency cap).
 *
 * What must hold, checked in Postgres, Redis, Docker and Temporal:
 * - every stuck document is requeued once and then processed exactly once per stage (`document_events`);
 * - every stale lock is gone from Redis;
 * - every dead container is started by selfheal exactly once (Docker's own event stream) and is running again; two
 *   of one stage are restarted one after the other (one restart in flight per stage: the second waits);
 * - no action twice: one `executed` row per idempotency key, one permit per executed remedy, and exactly one
 *   requeue per stuck stage, one lock clearance per dead owner, one restart per restarted container;
 * - one healing run per anomaly (workflow id), also after the storm has passed;
 * - the LLM never serves more than the cap (2 per healing worker) at once, and the cap was reached.
 */
import type { Client } from '@temporalio/client';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LLM_CONCURRENCY } from '../../activities/analysis';
import { createChaos, runChaos } from '../../pipeline/chaos';
import { generateDocuments } from '../../pipeline/generator';
import type { RunningWorker } from '../../pipeline/runner';
import { healingWorkflowId } from '../../workflows/definitions';
import type { HealingStatus } from '../../workflows/healing';
import { type TestEnv, waitFor } from '../helpers/env';
import type { FakeOllama, Reply } from '../helpers/fake-ollama';
import { scanAll, waitForDocuments } from '../helpers/pipeline';
import { startStack, type Stack } from '../helpers/stack';
import { endedRun } from '../helpers/temporal';
import { watchDockerEvents } from '../helpers/docker-events';

/** ms the fake LLM takes per answer: long enough that the storm's analyses overlap and queue for a slot. */
const LLM_DELAY_MS = 2_500;

/**
 * An LLM that picks the first action the request's JSON schema allows (the runbook's first rung), confidently.
 * Its plans pass the default MIN_CONFIDENCE, so the cap is exercised by real analyses whose plans are then used.
 */
const firstAllowedAction: Reply = {
  kind: 'respond',
  respond: ({ body }) => {
    const format = body.format as { properties?: { action?: { enum?: string[] } } } | undefined;
    const action = format?.properties?.action?.enum?.[0] ?? 'escalate_to_human';
    return {
      kind: 'content',
      delayMs: LLM_DELAY_MS,
      content: JSON.stringify({ action, reasoning: `${action} fits the evidence`, confidence: 0.95 }),
    };
  },
};

describe('R16 storm: stuck documents, dead containers and stale locks at once', () => {
  let stack: Stack;
  let t: TestEnv;
  let ollama: FakeOllama;
  let workers: RunningWorker[];
  let client: Client;
  let docker: Docker;

  beforeAll(async () => {
    stack = await startStack({
      ollama: { replies: [firstAllowedAction] },
      pipeline: {
        work: { minMs: 2, maxMs: 6 },
        // Topology: every dead container keeps a live peer in its stage (3 extract, 2 evaluate; 2 + 1 die). Only two
        // stages exist, so two of the dead share a stage, and the policy allows one restart in flight per stage: the
        // second restart of extract waits for the first (a durable timer), then goes. Every dead container is
        // restarted.
        workers: [
          { stage: 'extract', kind: 'container', count: 3 },
          { stage: 'evaluate', kind: 'container', count: 2 },
        ],
      },
      env: ({ ollama, runner }) => ({
        OLLAMA_HOST: ollama.url,
        HEALTH_TARGETS: runner!.healthTargets(),
        AUTO_FIX_ENABLED: 'true',
        VERIFY_DELAY: '3',
        RESTART_COOLDOWN: '0',
        // The storm needs 9 actions (2 requeues, 4 lock clearances, 3 restarts); the default 5/h would park the rest
        // on the rate limiter for an hour. Raised to just above what the storm needs.
        MAX_ACTIONS_PER_HOUR: '12',
        CONTAINER_ALLOWLIST: 'pipeline-*',
        // Queueing for an LLM slot counts against this timeout: 9 analyses at 2.5 s, two at a time, need ~12 s.
        LLM_TIMEOUT_MS: '60000',
        // No fault of the storm slows processing, and with 2-6 ms of work per document the slowdown detector measures
        // the machine's load spikes (healing.test covers that detector). Its largest factor keeps it quiet; a healing
        // beyond the storm's anomalies still fails the test.
        SLOWDOWN_FACTOR: '1000',
      }),
    });
    ({ t, ollama, workers, client, docker } = stack);
    // Stale locks are put on finished documents: 400 of them, enough for 4 x 50 locks with room to spare.
    const ids = await generateDocuments({ pool: t.pool, redis: t.redis, keys: t.keys, count: 400 });
    await waitForDocuments(t, ids, { timeoutMs: 120_000 });
  }, 300_000);

  afterAll(() => stack?.stop());

  it('every fault handled once: stuck documents processed once per stage, locks gone, every dead container restarted exactly once (two of one stage in turn), one run per anomaly, LLM cap held', async () => {
    const byStage = (stage: string) => workers.filter((w) => w.stage === stage);
    const victims = [byStage('extract')[0]!, byStage('extract')[1]!, byStage('evaluate')[0]!];
    const victimNames = victims.map((v) => v.container!);
    const peers = workers.filter((w) => !victims.includes(w)).map((w) => w.container!);
    const watch = await watchDockerEvents(docker, [...victimNames, ...peers]);
    ollama.resetPeak();
    const requestsBefore = ollama.requests.length;

    // The storm, all at once: the faults of `selfheal chaos` (the same code, run here so that they land within
    // milliseconds of each other rather than a process start-up apart), concurrently.
    const chaos = createChaos({ pool: t.pool, redis: t.redis, keys: t.keys, docker });
    const injectedAt = Date.now();
    const results = await Promise.all([
      ...victims.map((v) => runChaos(chaos, 'kill-worker', [v.worker])),
      runChaos(chaos, 'stuck-documents', ['25', 'extract']),
      runChaos(chaos, 'stuck-documents', ['25', 'evaluate']),
      ...Array.from({ length: 4 }, () => runChaos(chaos, 'stale-lock', ['50'])),
    ]);
    const stuck = results.filter((r) => r.fault === 'stuck-documents') as unknown as {
      stage: string;
      documents: number[];
    }[];
    const stuckIds = stuck.flatMap((s) => s.documents);
    const lockFaults = results.filter((r) => r.fault === 'stale-lock') as unknown as {
      owner: string;
      keys: string[];
    }[];
    const lockKeys = lockFaults.flatMap((l) => l.keys);
    expect(stuckIds).toHaveLength(50);
    expect(new Set(lockKeys).size).toBe(200);

    // One healing per anomaly: 2 stuck stages, 3 containers, 4 dead lock owners.
    const expected = [
      ...stuck.map((s) => healingWorkflowId('stuck_documents', s.stage)),
      ...victimNames.map((n) => healingWorkflowId('unhealthy_container', n)),
      ...lockFaults.map((l) => healingWorkflowId('stale_locks', l.owner)),
    ];
    const ended = new Map<string, HealingStatus>();
    await Promise.all(
      expected.map(async (id) =>
        ended.set(id, (await endedRun(client, id, { since: injectedAt, timeoutMs: 180_000, intervalMs: 500 })).status),
      ),
    );
    const settledAt = Date.now();

    // Stuck documents: healed by one requeue each stage, then processed exactly once in every stage they go through.
    for (const s of stuck) {
      const status = ended.get(healingWorkflowId('stuck_documents', s.stage))!;
      expect(status.phase, JSON.stringify(status.history)).toBe('healed');
      expect(status.actions.map((a) => a.action)).toEqual(['requeue_documents']);
    }
    await waitForDocuments(t, stuckIds, { timeoutMs: 120_000 });
    const docs = await t.pool.query<{ id: number; requeue_count: number; extract: number; evaluate: number }>(
      `SELECT d.id::int AS id, d.requeue_count,
              count(*) FILTER (WHERE e.stage = 'extract' AND e.outcome = 'completed')::int AS extract,
              count(*) FILTER (WHERE e.stage = 'evaluate' AND e.outcome = 'completed')::int AS evaluate
         FROM documents d LEFT JOIN document_events e ON e.document_id = d.id
        WHERE d.id = ANY($1::bigint[]) GROUP BY d.id, d.requeue_count`,
      [stuckIds],
    );
    const stuckInExtract = new Set(stuck.find((s) => s.stage === 'extract')!.documents);
    expect(docs.rows).toHaveLength(50);
    for (const d of docs.rows) {
      // A document stuck in extract goes through both stages after the requeue; one stuck in evaluate only evaluate.
      expect(d, `document ${d.id}`).toEqual({
        id: d.id,
        requeue_count: 1,
        extract: stuckInExtract.has(d.id) ? 1 : 0,
        evaluate: 1,
      });
    }

    // Stale locks: each owner's healing cleared its locks; not one of the 200 is left in Redis.
    for (const l of lockFaults) {
      const status = ended.get(healingWorkflowId('stale_locks', l.owner))!;
      expect(status.phase, JSON.stringify(status.history)).toBe('healed');
      expect(status.actions.map((a) => a.action)).toEqual(['clear_stale_locks']);
    }
    expect(await t.redis.exists(...lockKeys)).toBe(0);
    expect(await scanAll(t, t.keys.lockPattern())).toEqual([]);

    // Dead containers: restarted once by selfheal and running, or refused by the in-flight rule and escalated.
    // Docker's own events: the chaos kill, then at most one start (a stopped container's restart is one start).
    await waitFor(
      () => {
        for (const name of victimNames) {
          const status = ended.get(healingWorkflowId('unhealthy_container', name))!;
          if (status.phase === 'healed' && watch.of(name, 'start').length === 0) return false;
        }
        return true;
      },
      { what: 'the start events of the restarted containers' },
    );
    for (const name of victimNames) {
      const status = ended.get(healingWorkflowId('unhealthy_container', name))!;
      const starts = watch.of(name, 'start').filter((e) => (e.time ?? 0) * 1000 >= injectedAt - 1_000);
      const running = (await docker.getContainer(name).inspect()).State.Running;
      const why = JSON.stringify({ history: status.history, docker: watch.actions(name) });
      expect(watch.of(name, 'kill'), why).toHaveLength(1);
      expect(status.phase, why).toBe('healed');
      expect(
        status.actions.map((a) => a.action),
        why,
      ).toEqual(['restart_worker']);
      expect(starts, why).toHaveLength(1);
      expect(watch.of(name, 'restart'), why).toHaveLength(1);
      expect(running, why).toBe(true);
    }
    // The peers were never touched.
    for (const name of peers) expect(watch.actions(name), name).toEqual([]);

    // Wait a few more monitoring cycles: a healed anomaly must not start a second run, nothing must act again.
    const cyclesAt = await t.redis.xlen(t.keys.metricsStream());
    await waitFor(async () => (await t.redis.xlen(t.keys.metricsStream())) >= cyclesAt + 5, {
      timeoutMs: 60_000,
      what: '5 more monitoring cycles',
    });
    watch.stop();

    // One run per healing workflow id, and no healing beyond the storm's anomalies.
    const runsById = new Map<string, number>();
    for await (const wf of client.workflow.list({ query: "WorkflowType = 'healingWorkflow'" })) {
      runsById.set(wf.workflowId, (runsById.get(wf.workflowId) ?? 0) + 1);
    }
    expect(Object.fromEntries(runsById)).toEqual(Object.fromEntries(expected.map((id) => [id, 1])));

    // No duplicate action: one executed row per key (escalations included), one permit per executed remedy, and
    // per target one action each.
    const executed = await t.pool.query<{ workflow_id: string; action: string; key: string }>(
      "SELECT workflow_id, action, idempotency_key AS key FROM healing_log WHERE step = 'executed'",
    );
    const keys = executed.rows.map((r) => r.key);
    expect(new Set(keys).size).toBe(keys.length);
    const remedies = executed.rows.filter((r) => r.action !== 'escalate_to_human');
    const permits = await t.pool.query<{ key: string }>(
      "SELECT idempotency_key AS key FROM action_permits WHERE coalesce(outcome, '') <> 'refused'",
    );
    expect(permits.rows.map((p) => p.key).sort()).toEqual(remedies.map((r) => r.key).sort());
    const workflowsOf = (action: string) =>
      remedies
        .filter((r) => r.action === action)
        .map((r) => r.workflow_id)
        .sort();
    expect(workflowsOf('requeue_documents')).toEqual(
      stuck.map((s) => healingWorkflowId('stuck_documents', s.stage)).sort(),
    );
    expect(workflowsOf('clear_stale_locks')).toEqual(
      lockFaults.map((l) => healingWorkflowId('stale_locks', l.owner)).sort(),
    );
    expect(workflowsOf('restart_worker')).toEqual(
      victimNames.map((n) => healingWorkflowId('unhealthy_container', n)).sort(),
    );

    // At most one restart in flight per stage at any time: from its `attempted` row (written before the Docker call)
    // to its `executed` row (after the health wait), no other restart of the stage. (Permits may overlap now: the
    // second restart of a stage holds its permit while it waits for the first.)
    const stageOf = new Map(victims.map((v) => [v.container!, v.stage]));
    const spans = await t.pool.query<{ target: string; from: Date; to: Date }>(
      `SELECT target, min(created_at) FILTER (WHERE step = 'attempted') AS from,
              max(created_at) FILTER (WHERE step = 'executed') AS to
         FROM healing_log WHERE action = 'restart_worker' AND step IN ('attempted', 'executed') GROUP BY target`,
    );
    expect(spans.rows.map((r) => r.target).sort()).toEqual([...victimNames].sort());
    for (const [i, x] of spans.rows.entries()) {
      expect(x.from, JSON.stringify(spans.rows)).not.toBeNull();
      expect(x.to, JSON.stringify(spans.rows)).not.toBeNull();
      for (const y of spans.rows.slice(i + 1)) {
        if (stageOf.get(x.target) !== stageOf.get(y.target)) continue;
        const [first, second] = x.from < y.from ? [x, y] : [y, x];
        expect(second.from.getTime(), JSON.stringify(spans.rows)).toBeGreaterThanOrEqual(first.to.getTime());
      }
    }

    // The LLM: every analysis was asked and answered (no 'busy' fallback), never more than the cap at once, and the
    // cap was reached: the storm's analyses really overlapped.
    const proposed = await t.pool.query<{ decided_by: string; latency: number }>(
      `SELECT decided_by, (params->'llm'->>'latencyMs')::int AS latency FROM healing_log WHERE step = 'proposed'`,
    );
    expect(proposed.rows.length).toBeGreaterThanOrEqual(expected.length);
    expect(proposed.rows.map((r) => r.decided_by)).toEqual(proposed.rows.map(() => 'llm'));
    expect(ollama.requests.length - requestsBefore).toBe(proposed.rows.length);
    expect(ollama.peakInFlight).toBeLessThanOrEqual(DEFAULT_LLM_CONCURRENCY);
    expect(ollama.peakInFlight).toBe(DEFAULT_LLM_CONCURRENCY);

    console.log('R16 storm:', {
      healings: expected.length,
      restarted: victimNames,
      executedRemedies: remedies.length,
      llmRequests: ollama.requests.length - requestsBefore,
      llmPeakInFlight: ollama.peakInFlight,
      llmMaxLatencyMs: Math.max(...proposed.rows.map((r) => r.latency)),
      secondsToAllHealingsEnded: Number(((settledAt - injectedAt) / 1000).toFixed(1)),
    });
  }, 420_000);
});
