/**
 * Monitoring end to end, against the real pipeline, Postgres, Redis, Docker and Temporal, with test-scaled
 * thresholds (1 s cycles): a healthy pipeline stays quiet for 60 cycles; each of the five seed faults, injected with
 * `selfheal chaos`, fires by the second cycle after its threshold (counted in cycles) and gets a healing workflow
 * with the right id and search attributes; /metrics/prometheus parses with the Prometheus project's own parser.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CycleRecord } from '../../core/snapshot';
import type { Anomaly } from '../../core/types';
import { generateDocuments } from '../../pipeline/generator';
import type { RunningWorker } from '../../pipeline/runner';
import { healingWorkflowId, MONITOR_SCHEDULE_ID, SearchAttr } from '../../workflows/definitions';
import { type TestEnv, waitFor } from '../helpers/env';
import { FAST_CONFIG, ROOT, type RunningSelfheal } from '../helpers/selfheal';
import { startStack, type Stack } from '../helpers/stack';
import { recordHistories } from '../helpers/temporal';
import { cycleRecords } from '../helpers/stream';

const INTERVAL_S = Number(FAST_CONFIG.MONITOR_INTERVAL);

describe('monitoring end to end', () => {
  let stack: Stack;
  let t: TestEnv;
  let workers: RunningWorker[];
  let selfheal: RunningSelfheal;
  let client: Client;
  let feeder: NodeJS.Timeout | undefined;
  const latencies: Record<string, number> = {};

  const records = (sinceMs = 0) => cycleRecords(t.redis, t.keys, sinceMs);

  async function alerts(sinceMs: number): Promise<Anomaly[]> {
    const entries = await t.redis.xrange(t.keys.alertsStream(), String(sinceMs), '+');
    return entries.map(([, f]) => JSON.parse(f[1]!) as Anomaly);
  }

  beforeAll(async () => {
    stack = await startStack({
      pipeline: {
        work: { minMs: 5, maxMs: 15 },
        workers: [
          { stage: 'extract', kind: 'container', count: 1 },
          { stage: 'extract', count: 1 },
          { stage: 'evaluate', count: 1 },
        ],
      },
      beforeSelfheal: ({ t }) => {
        // Steady traffic: 20 documents/s.
        feeder = setInterval(() => {
          generateDocuments({ pool: t.pool, redis: t.redis, keys: t.keys, count: 5 }).catch(() => undefined);
        }, 250);
      },
      env: ({ ollama, runner }) => ({ OLLAMA_HOST: ollama.url, HEALTH_TARGETS: runner!.healthTargets() }),
    });
    ({ t, workers, selfheal, client } = stack);
  });

  afterAll(async () => {
    if (feeder) clearInterval(feeder);
    try {
      if (process.env.RECORD_HISTORIES && client) await recordHistories(client);
    } finally {
      await stack?.stop();
    }
    console.log('detection latency (s) from injection to the firing cycle:', latencies);
  });

  it('runs cycles from the Schedule selfheal-monitor, overlap SKIP', async () => {
    // Describe can miss while the scheduler workflow continues-as-new: poll.
    const described = await waitFor(
      () =>
        client.schedule
          .getHandle(MONITOR_SCHEDULE_ID)
          .describe()
          .catch(() => undefined),
      {
        what: 'the schedule',
      },
    );
    expect(described.policies.overlap).toBe('SKIP');
    expect(described.spec.intervals?.[0]?.every).toBe(INTERVAL_S * 1000);
    await waitFor(async () => (await records()).length >= 3, { timeoutMs: 30_000, what: 'three cycles' });
  });

  it('a healthy pipeline runs 60 cycles with zero anomalies', async () => {
    const start = Date.now();
    await waitFor(async () => (await records(start)).length >= 60, {
      timeoutMs: 180_000,
      intervalMs: 1_000,
      what: '60 cycles',
    });
    const cycles = (await records(start)).slice(0, 60);
    expect(cycles).toHaveLength(60);
    const seen = cycles.flatMap((r) => r.candidates.map((a) => `${a.type}:${a.target}`));
    expect(seen).toEqual([]);
    // It really looked: documents flowed, workers were alive, health was checked.
    const last = cycles[cycles.length - 1]!.snapshot;
    expect(last.sources).toMatchObject({ redis: { ok: true }, postgres: { ok: true }, docker: { ok: true } });
    expect(last.liveWorkers).toHaveLength(3);
    expect(last.health.filter((h) => h.ok)).toHaveLength(3);
    expect(last.containers.map((c) => c.name)).toEqual([workers[0]!.container]);
    expect(last.stages.find((s) => s.stage === 'evaluate')!.windowCompleted).toBeGreaterThan(10);
  }, 240_000);

  it('/metrics/prometheus is valid Prometheus text exposition (parsed by prometheus_client)', async () => {
    const res = await fetch(`${selfheal.metricsUrl}/metrics/prometheus`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/plain/);
    const text = await res.text();
    const parsed = execFileSync(
      'python3',
      [
        '-c',
        `import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {'type': f.type, 'samples': [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(out))`,
      ],
      { input: text, env: { ...process.env, PYTHONPATH: path.join(ROOT, '.tools/python') }, encoding: 'utf8' },
    );
    const families = JSON.parse(parsed) as Record<
      string,
      { type: string; samples: [string, Record<string, string>, number][] }
    >;
    expect(families.selfheal_queue_depth?.type).toBe('gauge');
    expect(families.selfheal_cycle_duration_seconds?.type).toBe('histogram');
    expect(families.selfheal_healing_steps?.type).toBe('counter');
    expect(families.selfheal_ollama_up?.samples[0]?.[2]).toBe(1);
    const depthLabels = families.selfheal_queue_depth!.samples.map((s) => `${s[1].stage}/${s[1].kind}`).sort();
    expect(depthLabels).toEqual(['evaluate/processing', 'evaluate/queue', 'extract/processing', 'extract/queue']);
    const count = families.selfheal_cycle_duration_seconds!.samples.find(
      (s) => s[0] === 'selfheal_cycle_duration_seconds_count',
    );
    expect(count?.[2]).toBeGreaterThan(0);
    // Bounded labels: no document ids anywhere.
    for (const f of Object.values(families)) {
      for (const [, labels] of f.samples) expect(Object.keys(labels).every((k) => !/id$/i.test(k))).toBe(true);
    }
    const json = (await (await fetch(`${selfheal.metricsUrl}/metrics`)).json()) as { latest: CycleRecord | null };
    expect(json.latest?.snapshot.stages).toHaveLength(2);
  });

  /** Injects a fault with the CLI, waits for its anomaly to fire, checks the healing workflow, then clears. */
  async function expectDetected(opts: {
    name: string;
    chaos: string[];
    type: string;
    target: string;
    thresholdS: number;
    prepare?: () => Promise<void>;
  }): Promise<void> {
    await opts.prepare?.();
    const injected = selfheal.cli(['chaos', ...opts.chaos, '--json']);
    expect(injected.status, injected.stderr).toBe(0);
    // Latency counts from the moment the chaos command has put the fault in place (it has exited).
    const injectedAt = Date.now();
    const fired = await waitFor(
      async () => (await alerts(injectedAt)).find((a) => a.type === opts.type && a.target === opts.target),
      { timeoutMs: (opts.thresholdS + 30) * 1000, intervalMs: 200, what: `${opts.type} on ${opts.target}` },
    );
    // A stall starts at the stage's last progress, which can follow the injection (the document in hand finishes).
    const lastProgress = typeof fired.evidence.lastProgressAt === 'number' ? fired.evidence.lastProgressAt : 0;
    const latencyS = (fired.detectedAt - Math.max(injectedAt, lastProgress)) / 1000;
    latencies[opts.name] = Number(latencyS.toFixed(2));
    // Counted in cycles, not in wall time (a loaded machine delays or skips a 1 s cycle, and speed is the bench's
    // business): the anomaly fires by the ANOMALY_FIRE_CYCLES-th cycle that collected once the fault had held for its
    // threshold, never later.
    const cycles = await waitFor(
      async () => {
        const all = await records(injectedAt);
        const firing = all.findIndex((r) => r.active.some((a) => a.type === opts.type && a.target === opts.target));
        return firing < 0 ? undefined : all.slice(0, firing + 1);
      },
      { what: `the cycle record that fired ${opts.type} on ${opts.target}` },
    );
    // A stall is of a non-empty queue: it starts no earlier than the last cycle that saw the queue empty (the workers
    // may have drained it as they hung; it fills again afterwards).
    const lastEmpty =
      opts.type === 'stalled_queue'
        ? Math.max(
            0,
            ...cycles
              .filter((r) => (r.snapshot.stages.find((st) => st.stage === opts.target)?.queueDepth ?? 0) === 0)
              .map((r) => r.snapshot.at),
          )
        : 0;
    const faultFrom = Math.max(injectedAt, lastProgress, lastEmpty) + opts.thresholdS * 1000;
    const firingCycle = cycles.at(-1)!;
    const cyclesAfterThreshold = cycles.filter((r) => r.snapshot.at >= faultFrom).length;
    expect(
      cyclesAfterThreshold,
      `fired by the cycle that started at ${firingCycle.snapshot.at}; fault in place from ${faultFrom}`,
    ).toBeLessThanOrEqual(Number(FAST_CONFIG.ANOMALY_FIRE_CYCLES));

    const id = healingWorkflowId(opts.type, opts.target);
    const handle = client.workflow.getHandle(id);
    const described = await waitFor(() => handle.describe().catch(() => undefined), { what: `workflow ${id}` });
    expect(described.type).toBe('healingWorkflow');
    expect(described.typedSearchAttributes.get(SearchAttr.AnomalyType)).toBe(opts.type);
    expect(described.typedSearchAttributes.get(SearchAttr.HealTarget)).toBe(opts.target);
    expect(described.typedSearchAttributes.get(SearchAttr.Severity)).toMatch(/^(info|warning|critical)$/);
    const listed = await waitFor(
      async () => {
        const found: string[] = [];
        for await (const wf of client.workflow.list({
          query: `AnomalyType = '${opts.type}' AND HealTarget = '${opts.target}'`,
        })) {
          found.push(wf.workflowId);
        }
        return found.length > 0 ? found : undefined;
      },
      { what: 'the healing workflow in a search-attribute query' },
    );
    expect(listed).toEqual([id]);

    const cleared = selfheal.cli(['chaos', 'clear']);
    expect(cleared.status, cleared.stderr).toBe(0);
  }

  it('stuck documents', () =>
    expectDetected({
      name: 'stuck_documents',
      chaos: ['stuck-documents', '4', 'extract'],
      type: 'stuck_documents',
      target: 'extract',
      thresholdS: 0, // their owner is dead: stuck at once
    }));

  it('error-rate spike', () =>
    expectDetected({
      name: 'error_rate_spike',
      chaos: ['error-rate', 'evaluate', '0.7'],
      type: 'error_rate_spike',
      target: 'evaluate',
      thresholdS: Number(FAST_CONFIG.ERROR_RATE_WINDOW),
    }));

  it('processing-time anomaly', () =>
    expectDetected({
      name: 'processing_time_anomaly',
      chaos: ['slow', 'evaluate', '10'],
      type: 'processing_time_anomaly',
      target: 'evaluate',
      thresholdS: Number(FAST_CONFIG.ERROR_RATE_WINDOW),
    }));

  it('unhealthy container', () =>
    expectDetected({
      name: 'unhealthy_container',
      chaos: ['kill-worker', workers[0]!.worker],
      type: 'unhealthy_container',
      target: workers[0]!.container!,
      thresholdS: Number(FAST_CONFIG.HEALTH_FAILURES_BEFORE_UNHEALTHY) * INTERVAL_S,
      // The previous fault's clear restarted nothing here; make sure the container is up before killing it.
      prepare: async () => {
        await waitFor(async () => (await fetch(workers[0]!.healthUrl).catch(() => undefined))?.status === 200);
      },
    }));

  it('stalled queue', async () => {
    const extract = workers.filter((w) => w.stage === 'extract');
    await waitFor(async () => {
      const ok = await Promise.all(
        extract.map((w) =>
          fetch(w.healthUrl).then(
            (r) => r.status === 200,
            () => false,
          ),
        ),
      );
      return ok.every(Boolean);
    });
    // Every extract worker hangs: the queue keeps filling and nothing takes from it.
    const first = selfheal.cli(['chaos', 'hang-worker', extract[1]!.worker]);
    expect(first.status, first.stderr).toBe(0);
    await expectDetected({
      name: 'stalled_queue',
      chaos: ['hang-worker', extract[0]!.worker],
      type: 'stalled_queue',
      target: 'extract',
      thresholdS: Number(FAST_CONFIG.QUEUE_STALL_THRESHOLD),
    });
  });
});
