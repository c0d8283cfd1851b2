/**
 * `selfheal demo --auto-approve --json` end to end, as a user runs it: a child process against the run's Temporal dev
 * server (a namespace of its own), real Postgres, Redis and Docker. It brings the system and the reference pipeline
 * up, injects one fault per seed class and follows each healing; the test checks the JSON summary, the audit trail
 * and that the pipeline containers it started are gone afterwards.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { DemoResult } from '../../starter/demo';
import { createTestEnv, pipelineBasePort, type TestEnv, heldPort } from '../helpers/env';
import { testDocker } from '../helpers/pipeline';
import { CLI } from '../helpers/selfheal';
import { allocateNamespace } from '../helpers/temporal';

/** What each seed fault class must lead to: the anomaly, the remedy, the outcome. */
const EXPECTED: Record<string, { type: string; action: string; outcome: string }> = {
  'stuck-documents': { type: 'stuck_documents', action: 'requeue_documents', outcome: 'healed' },
  'kill-worker': { type: 'unhealthy_container', action: 'restart_worker', outcome: 'healed' },
  'error-rate': { type: 'error_rate_spike', action: 'restart_worker', outcome: 'healed' },
  slow: { type: 'processing_time_anomaly', action: 'restart_worker', outcome: 'healed' },
  'hang-worker silent (every extract worker)': { type: 'stalled_queue', action: 'restart_worker', outcome: 'healed' },
  'stale-lock': { type: 'stale_locks', action: 'clear_stale_locks', outcome: 'healed' },
};

describe('selfheal demo --auto-approve --json', () => {
  let t: TestEnv;
  let dataDir: string;
  let namespace: string;
  let run: { code: number | null; stdout: string; stderr: string };

  beforeAll(async () => {
    t = await createTestEnv();
    namespace = await allocateNamespace();
    dataDir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-demo-'));
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...t.env,
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: namespace,
      METRICS_PORT: String(await heldPort()),
      // Nothing listens there: every plan is the runbook's, fast and deterministic.
      OLLAMA_HOST: `http://127.0.0.1:${await heldPort()}`,
      SELFHEAL_DATA_DIR: dataDir,
      PIPELINE_BASE_PORT: String(pipelineBasePort()),
      LOG_LEVEL: 'warn',
    };
    const child = spawn(
      process.execPath,
      [...CLI, 'demo', '--auto-approve', '--json', '--ui-port', String(inject('temporalUiPort'))],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    run = { code, stdout, stderr };
  }, 600_000);

  afterAll(async () => {
    await t?.cleanup();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('heals one fault per seed class, with a detection time, an action and an outcome each, and exits 0', async () => {
    const timeline = run.stderr;
    expect(run.code, timeline.slice(-4000)).toBe(0);
    const result = JSON.parse(run.stdout) as DemoResult;
    console.log(
      'selfheal demo:',
      result.steps.map((s) => `${s.fault}: detected ${s.detectedSeconds} s, ${s.outcome} at ${s.healSeconds} s`),
      `total ${result.totalSeconds} s`,
    );
    expect(result.ok).toBe(true);
    expect(result.namespace).toBe(namespace);
    expect(result.steps.map((s) => s.fault)).toEqual(Object.keys(EXPECTED));
    for (const step of result.steps) {
      const want = EXPECTED[step.fault]!;
      const why = `${step.fault}: ${JSON.stringify(step)}`;
      expect(step.anomalyType, why).toBe(want.type);
      expect(step.outcome, why).toBe(want.outcome);
      expect(step.actions, why).toContain(want.action);
      expect(step.detectedSeconds, why).toEqual(expect.any(Number));
      expect(step.healSeconds, why).toEqual(expect.any(Number));
      expect(step.decidedBy, why).toBe('selfheal-demo');
      expect(step.webUi).toBe(
        `http://localhost:${inject('temporalUiPort')}/namespaces/${namespace}/workflows/${step.workflowId}`,
      );
      // The live timeline named the healing, its approval and its end.
      expect(timeline).toContain(`workflow ${step.workflowId} started`);
      expect(timeline).toMatch(new RegExp(`${step.workflowId}  approved by selfheal-demo \\(signal`));
      expect(timeline).toContain(`${step.workflowId}  ${want.outcome}:`);
    }
    // Every approval is in the audit trail, by the demo, and every healed step really acted.
    const { rows } = await t.pool.query<{ workflow_id: string; step: string; decided_by: string | null }>(
      "SELECT workflow_id, step, decided_by FROM healing_log WHERE step IN ('approved', 'executed')",
    );
    for (const step of result.steps) {
      expect(rows.filter((r) => r.workflow_id === step.workflowId && r.step === 'executed').length).toBeGreaterThan(0);
      expect(
        rows.filter((r) => r.workflow_id === step.workflowId && r.step === 'approved').map((r) => r.decided_by),
      ).toContain('selfheal-demo');
    }
  });

  it('leaves no pipeline container behind and no fault set', async () => {
    const result = JSON.parse(run.stdout) as DemoResult;
    const containers = result.pipeline.map((w) => w.container).filter((c): c is string => c !== null);
    expect(containers.length).toBeGreaterThanOrEqual(4);
    const docker = testDocker();
    const left = await docker.listContainers({ all: true, filters: { label: [`selfheal.prefix=${t.prefix}`] } });
    expect(left.map((c) => c.Names)).toEqual([]);
    for (const name of containers) {
      await expect(docker.getContainer(name).inspect()).rejects.toMatchObject({ statusCode: 404 });
    }
    expect(await t.redis.hgetall(t.keys.pipelineFaults())).toEqual({});
  });
});
