/**
 * Runbooks as files (RUNBOOKS_FILE), against the real services:
 * - end to end: `selfheal up` with a file that makes stuck documents of `extract` escalate-only: the healing
 *   escalates, no requeue is executed, the documents stay as they were; the same fault on `evaluate` (the type's
 *   built-in ladder) is requeued;
 * - a file with an error: `selfheal up`, a compiled worker and `selfheal doctor` fail naming the file and the line;
 * - the analysis activity holds the LLM to the file's ladder (fake Ollama) and the safety activity takes the file's
 *   cooldown, breaker and approval (Postgres, Redis), both re-reading an edited file.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { createAnalysisActivities, createOllamaClient } from '../../activities/analysis';
import { createRunbookSource } from '../../activities/runbook-source';
import { createSafetyActivities, type SafetyPolicy } from '../../activities/safety';
import type { Plan } from '../../core/plan';
import { runbookPlan } from '../../core/runbook';
import type { CycleRecord } from '../../core/snapshot';
import type { Anomaly } from '../../core/types';
import { healingWorkflowId } from '../../workflows/definitions';
import { buildOnce, CLI, COMPILED_CLI, ROOT } from '../helpers/cli';
import { createTestEnv, type TestEnv } from '../helpers/env';
import { planReply, startFakeOllama } from '../helpers/fake-ollama';
import { FAST_CONFIG } from '../helpers/selfheal';
import { snapshot } from '../helpers/snapshots';
import { startStack, type Stack } from '../helpers/stack';
import { endedRun } from '../helpers/temporal';

const dir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-runbooks-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Writes a runbooks file; its mtime is moved on by `bump` s so that a rewrite within one clock tick is seen. */
function writeRunbooks(name: string, text: string, bump = 0): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  if (bump) {
    const t = Date.now() / 1000 + bump;
    utimesSync(file, t, t);
  }
  return file;
}

const ESCALATE_EXTRACT = `version: 1
runbooks:
  # Stuck documents of extract: a human looks, nothing is requeued.
  - type: stuck_documents
    target: "extract*"
    ladder: [escalate_to_human]
`;

/** A file with an unknown action on line 7. */
const BAD = `version: 1
runbooks:
  - type: stale_locks
    ladder: [clear_stale_locks, escalate_to_human]
  - type: stuck_documents
    ladder:
      - reboot
`;

describe('a runbooks file end to end (selfheal up, real Temporal, Postgres, Redis)', () => {
  let s: Stack;
  beforeAll(async () => {
    const file = writeRunbooks('escalate-extract.yaml', ESCALATE_EXTRACT);
    s = await startStack({
      // The LLM is down: every plan is the runbook's.
      ollama: { replies: [{ kind: 'status', status: 500 }] },
      env: (p) => ({
        OLLAMA_HOST: p.ollama.url,
        AUTO_FIX_ENABLED: 'true',
        MIN_CONFIDENCE: '0.6',
        VERIFY_DELAY: '2',
        MAX_ACTIONS_PER_HOUR: '100',
        RUNBOOKS_FILE: file,
      }),
    });
  }, 180_000);
  afterAll(async () => {
    await s?.stop();
  });

  const executed = async (workflowId: string, action: string) =>
    (
      await s.t.pool.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM healing_log WHERE workflow_id = $1 AND step = 'executed' AND action = $2",
        [workflowId, action],
      )
    ).rows[0]!.n;

  it('stuck documents of extract escalate: no requeue, the documents untouched', async () => {
    const since = Date.now();
    const r = s.selfheal.cli(['chaos', 'stuck-documents', '5', 'extract', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const ids = (JSON.parse(r.stdout) as { documents: number[] }).documents;
    const id = healingWorkflowId('stuck_documents', 'extract');
    const { status } = await endedRun(s.client, id, { since, timeoutMs: 90_000 });
    expect(status.phase, JSON.stringify(status.history)).toBe('escalated');
    expect(status.plan?.action).toBe('escalate_to_human');
    expect(status.actions.map((a) => a.action)).not.toContain('requeue_documents');
    expect(await executed(id, 'requeue_documents')).toBe(0);
    const proposed = await s.t.pool.query<{ action: string }>(
      "SELECT action FROM healing_log WHERE workflow_id = $1 AND step = 'proposed'",
      [id],
    );
    expect(proposed.rows.map((row) => row.action)).toEqual(['escalate_to_human']);
    const docs = await s.t.pool.query<{ status: string; requeue_count: number }>(
      'SELECT status, requeue_count FROM documents WHERE id = ANY($1::bigint[])',
      [ids],
    );
    expect(docs.rows).toHaveLength(5);
    for (const d of docs.rows) expect(d).toEqual({ status: 'processing', requeue_count: 0 });
  });

  it('the same fault on evaluate, which no entry of the file matches, is requeued by the built-in ladder', async () => {
    const since = Date.now();
    const r = s.selfheal.cli(['chaos', 'stuck-documents', '3', 'evaluate', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const ids = (JSON.parse(r.stdout) as { documents: number[] }).documents;
    const id = healingWorkflowId('stuck_documents', 'evaluate');
    const { status } = await endedRun(s.client, id, { since, timeoutMs: 90_000 });
    expect(
      status.actions.map((a) => a.action),
      JSON.stringify(status.history),
    ).toContain('requeue_documents');
    expect(await executed(id, 'requeue_documents')).toBeGreaterThanOrEqual(1);
    const docs = await s.t.pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM documents WHERE id = ANY($1::bigint[]) AND requeue_count > 0',
      [ids],
    );
    expect(docs.rows[0]!.n).toBe(3);
  });
});

describe('a runbooks file with an error', () => {
  let t: TestEnv;
  let bad: string;
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    buildOnce();
    t = await createTestEnv();
    bad = writeRunbooks('bad.yaml', BAD);
    env = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...t.env,
      ...FAST_CONFIG,
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      SELFHEAL_DATA_DIR: mkdtempSync(path.join(dir, 'data-')),
      RUNBOOKS_FILE: bad,
    };
  }, 300_000);
  afterAll(async () => {
    await t?.cleanup();
  });

  const named = (stderr: string) => {
    expect(stderr).toContain('RUNBOOKS_FILE');
    expect(stderr).toContain(
      `${bad}:7: runbooks[1].ladder[0]: "reboot" is not an action of stuck_documents (allowed: requeue_documents, restart_worker, escalate_to_human, no_action)`,
    );
  };

  it('selfheal up exits 2 before starting anything, naming the file and the line', () => {
    const r = spawnSync(process.execPath, [...CLI, 'up', '--no-pipeline'], { env, encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stdout + r.stderr).toBe(2);
    named(r.stderr);
    expect(r.stdout).not.toMatch(/selfheal is up/);
  });

  it('the compiled CLI and a compiled worker too', async () => {
    const up = spawnSync(process.execPath, [COMPILED_CLI, 'up', '--no-pipeline'], {
      env,
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(up.status, up.stdout + up.stderr).toBe(2);
    named(up.stderr);
    const worker = spawn(process.execPath, [path.join(ROOT, 'dist/workers/healing.js')], { env });
    let stderr = '';
    worker.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => worker.once('exit', resolve));
    expect(code, stderr).toBe(2);
    named(stderr);
  });

  it('selfheal doctor reports it as a failing check with the line; the built-in file of the build is fine', () => {
    const r = spawnSync(process.execPath, [COMPILED_CLI, 'doctor', '--json'], {
      env,
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(1);
    const rows = JSON.parse(r.stdout) as { dependency: string; status: string; detail: string }[];
    const row = rows.find((x) => x.dependency === 'Runbooks')!;
    expect(row.status).toBe('missing');
    expect(row.detail).toContain(`${bad}:7: runbooks[1].ladder[0]: "reboot" is not an action of stuck_documents`);

    const { RUNBOOKS_FILE: _unset, ...builtIn } = env;
    const ok = spawnSync(process.execPath, [COMPILED_CLI, 'doctor', '--json'], {
      env: builtIn,
      encoding: 'utf8',
      timeout: 60_000,
    });
    const okRow = (JSON.parse(ok.stdout) as { dependency: string; status: string; detail: string }[]).find(
      (x) => x.dependency === 'Runbooks',
    )!;
    expect(okRow).toMatchObject({ status: 'ok' });
    expect(okRow.detail).toBe(`${path.join(ROOT, 'dist/runbooks/default.yaml')} (built-in): 11 entries`);
  });
});

describe('the activities read the file at each decision', () => {
  const stuck: Anomaly = {
    type: 'stuck_documents',
    target: 'extract',
    severity: 'warning',
    fingerprint: 'stuck_documents:extract',
    summary: 'stuck_documents on extract: 3 documents',
    evidence: { count: 3, documentIds: [101, 102, 103], deadOwners: ['pipeline-a'] },
    detectedAt: 1_800_000_000_000,
  };

  it("the LLM's plan is held to the file's ladder; an edit of the file applies to the next analysis", async () => {
    const ollama = await startFakeOllama({
      models: ['m'],
      replies: [planReply('requeue_documents', 'requeue the stuck documents')],
    });
    try {
      const file = writeRunbooks(
        'analysis.yaml',
        ESCALATE_EXTRACT.replace('ladder:', 'verifyDelaySeconds: 9\n    ladder:'),
      );
      const { analyzeAnomaly } = createAnalysisActivities({
        ollama: createOllamaClient({ host: ollama.url, timeoutMs: 5_000 }),
        model: 'm',
        timeoutMs: 5_000,
        runbooks: createRunbookSource(file),
      });
      const held = await analyzeAnomaly({ anomaly: stuck, rung: 0, context: { containers: ['pipeline-a'] } });
      expect(held.llm.used).toBe(true);
      expect(held.plan).toMatchObject({ action: 'escalate_to_human', source: 'runbook', verifyDelaySeconds: 9 });
      expect(held.plan.fallbackReason).toMatch(/^disallowed: requeue_documents is not allowed for stuck_documents/);
      // The model was offered escalation only.
      const format = JSON.stringify(ollama.requests.at(-1)?.body.format);
      expect(format).toContain('escalate_to_human');
      expect(format).not.toContain('requeue_documents');

      writeRunbooks('analysis.yaml', 'version: 1\nrunbooks: []\n', 5);
      const free = await analyzeAnomaly({ anomaly: stuck, rung: 0, context: { containers: ['pipeline-a'] } });
      expect(free.plan).toMatchObject({ action: 'requeue_documents', source: 'llm' });
      expect(free.plan.verifyDelaySeconds).toBeUndefined();
    } finally {
      await ollama.close();
    }
  });

  describe('safety', () => {
    let t: TestEnv;
    const NOW = 1_800_000_000_000;
    const MIN = 60_000;
    const policy: SafetyPolicy = {
      autoFix: true,
      minConfidence: 0.5,
      allowlist: ['pipeline-*'],
      denylist: [],
      cooldownSeconds: 600,
      breakerRestarts: 3,
      breakerWindowSeconds: 3600,
      requeueCap: 100,
    };
    const restart = (container: string): Plan => ({
      id: `p-${container}`,
      anomalyType: 'unhealthy_container',
      action: 'restart_worker',
      target: container,
      params: { container },
      reasoning: 'test',
      confidence: 0.9,
      source: 'runbook',
      rung: 0,
    });
    const permit = (key: string, container: string, at: number) =>
      t.pool.query(
        `INSERT INTO action_permits (idempotency_key, workflow_id, action, target, stage, reserved_at_ms, finished_at_ms, outcome)
         VALUES ($1, 'wf-other', 'restart_worker', $2, 'extract', $3, $4, 'done')`,
        [key, container, at, at + 1000],
      );

    beforeAll(async () => {
      t = await createTestEnv();
      const record: CycleRecord = {
        snapshot: snapshot(NOW, {
          containers: ['pipeline-a', 'pipeline-b', 'pipeline-c'].map((name) => ({
            name,
            state: 'running',
            running: true,
            restartCount: 0,
            stage: 'extract',
          })),
          health: [
            { container: 'pipeline-a', url: 'http://127.0.0.1:1/health', ok: false, status: 503, latencyMs: 1 },
            { container: 'pipeline-b', url: 'http://127.0.0.1:2/health', ok: false, status: 503, latencyMs: 1 },
            { container: 'pipeline-c', url: 'http://127.0.0.1:3/health', ok: true, status: 200, latencyMs: 1 },
          ],
        }),
        candidates: [],
        active: [],
      };
      await t.redis.xadd(t.keys.metricsStream(), '*', 'record', JSON.stringify(record));
      await permit('k-a', 'pipeline-a', NOW - 20 * MIN);
      await permit('k-b', 'pipeline-b', NOW - 5 * MIN);
    });
    afterAll(async () => {
      await t?.cleanup();
    });

    it("the file's breaker, cooldown and approval replace the configured ones, per target", async () => {
      const file = writeRunbooks(
        'safety.yaml',
        `version: 1
runbooks:
  - type: unhealthy_container
    target: pipeline-a
    breaker: { restarts: 1, windowSeconds: 3600 }
  - type: unhealthy_container
    target: pipeline-b
    cooldownSeconds: 60
  - type: stuck_documents
    approval: always
`,
      );
      const with_ = createSafetyActivities({
        pool: t.pool,
        redis: t.redis,
        keys: t.keys,
        runbooks: createRunbookSource(file),
      });
      const without = createSafetyActivities({ pool: t.pool, redis: t.redis, keys: t.keys });
      const check = (s: typeof with_, plan: Plan) => s.checkSafety({ plan, policy, workflowId: 'wf1', now: NOW });

      // pipeline-a: one restart 20 min ago; the configured breaker (3/h) and cooldown (600 s) allow another.
      expect((await check(without, restart('pipeline-a'))).verdict.decision).toBe('allow');
      const a = await check(with_, restart('pipeline-a'));
      expect(a.verdict.decision).toBe('escalate');
      expect(a.verdict.reasons.join(';')).toMatch(/circuit breaker open: 1 restarts of pipeline-a/);

      // pipeline-b: one restart 5 min ago; RESTART_COOLDOWN 600 s waits, the file's 60 s does not.
      expect((await check(without, restart('pipeline-b'))).verdict.decision).toBe('wait');
      expect((await check(with_, restart('pipeline-b'))).verdict.decision).toBe('allow');

      // approval: always holds a requeue that auto-fix would run.
      const requeue = runbookPlan(stuck, 0, { containers: [] });
      expect((await check(without, requeue)).verdict.decision).toBe('allow');
      const held = await check(with_, requeue);
      expect(held.verdict.decision).toBe('needs_approval');
      expect(held.verdict.reasons).toContain('the runbook (safety.yaml runbooks[2]) always asks for approval');

      // An edit applies to the next check (of a healing still waiting).
      writeRunbooks('safety.yaml', 'version: 1\nrunbooks: []\n', 5);
      expect((await check(with_, requeue)).verdict.decision).toBe('allow');
      expect((await check(with_, restart('pipeline-a'))).verdict.decision).toBe('allow');
    });
  });
});
