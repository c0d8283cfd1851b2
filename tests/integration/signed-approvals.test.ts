/**
 * Signed approvals (S5): with APPROVAL_SECRET set, write access to the Temporal namespace alone cannot approve. A
 * healing waits for approval of a real stale lock; unsigned, forged and mismatched decisions (update and signal)
 * change nothing and are audited; `selfheal approve` signs with the secret and the healing acts. The workers run in
 * this process with the secret in their configuration; the secret is never in the workflow's input or history.
 */
import { spawn } from 'node:child_process';
import { Connection, Client, WorkflowUpdateFailedError } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { signApproval } from '../../activities/approval';
import { parseConfig, thresholdsFrom, type Config } from '../../core/config';
import type { Anomaly } from '../../core/types';
import { healingPolicy } from '../../workers/schedule';
import { approveSignal, decideUpdate, healingWorkflowId, statusQuery, TaskQueue } from '../../workflows/definitions';
import { healingWorkflow } from '../../workflows/healing';
import { createTestEnv, waitFor, type TestEnv } from '../helpers/env';
import { startFakeOllama, type FakeOllama } from '../helpers/fake-ollama';
import { CLI, FAST_CONFIG } from '../helpers/selfheal';
import { allocateNamespace } from '../helpers/temporal';
import { createTestWorkers } from '../helpers/workers';

const SECRET = 'approval-secret-for-the-test-0123456789';

describe('signed approvals (APPROVAL_SECRET set)', () => {
  let t: TestEnv;
  let ns: string;
  let ollama: FakeOllama;
  let config: Config;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    t = await createTestEnv();
    ns = await allocateNamespace();
    ollama = await startFakeOllama({ replies: [{ kind: 'status', status: 500 }] });
    env = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...t.env,
      ...FAST_CONFIG,
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: ns,
      OLLAMA_HOST: ollama.url,
      AUTO_FIX_ENABLED: 'false',
      VERIFY_DELAY: '2',
      APPROVAL_SECRET: SECRET,
    };
    const parsed = parseConfig(env);
    if (!parsed.ok) throw new Error(JSON.stringify(parsed));
    config = parsed.config;
  });
  afterAll(async () => {
    await ollama?.close();
    await t?.cleanup();
  });

  /**
   * `selfheal <args>` with the test's environment, optionally without the secret. Asynchronous: the workers answering
   * its query run in this process.
   */
  function cli(args: string[], withSecret = true): Promise<{ status: number | null; stderr: string }> {
    const e = { ...env };
    if (!withSecret) delete e.APPROVAL_SECRET;
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [...CLI, ...args], { env: e, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.once('exit', (status) => resolve({ status, stderr }));
    });
  }

  it('unsigned, forged and mismatched decisions change nothing and are audited; selfheal approve signs and acts', async () => {
    // A real stale lock: a finished document leased by a worker that has no heartbeat.
    const { rows } = await t.pool.query<{ id: string }>(
      "INSERT INTO documents (stage, status) VALUES ('evaluate', 'completed') RETURNING id::text AS id",
    );
    const docId = rows[0]!.id;
    await t.redis.set(t.keys.lock(docId), 'dead-owner:tok-1');
    const anomaly: Anomaly = {
      type: 'stale_locks',
      target: 'dead-owner',
      severity: 'warning',
      fingerprint: 'stale_locks:dead-owner',
      summary: '1 document lock held by dead-owner, which has no heartbeat',
      evidence: {
        owner: 'dead-owner',
        documentIds: [docId],
        locks: [{ documentId: docId, owner: 'dead-owner', token: 'tok-1' }],
        count: 1,
        totalStale: 1,
      },
      detectedAt: Date.now(),
    };
    const policy = healingPolicy(config);
    expect(policy.signedApprovals).toBe(true);
    // The secret is nowhere in what the workflow receives.
    expect(JSON.stringify(policy)).not.toContain(SECRET);

    const worker = await NativeConnection.connect({ address: inject('temporalAddress') });
    const connection = await Connection.connect({ address: inject('temporalAddress') });
    const client = new Client({ connection, namespace: ns });
    const workers = await createTestWorkers({
      connection: worker,
      namespace: ns,
      t,
      config,
      only: ['healing', 'actions', 'monitor'],
    });
    const id = healingWorkflowId('stale_locks', 'dead-owner');
    try {
      await workers.run(async () => {
        const handle = await client.workflow.start(healingWorkflow, {
          workflowId: id,
          taskQueue: TaskQueue.healing,
          args: [{ anomaly, policy, thresholds: thresholdsFrom(config), containers: [], containerLabels: [] }],
        });
        const waiting = await waitFor(
          async () => {
            const st = await handle.query(statusQuery);
            return st.phase === 'awaiting_approval' ? st : undefined;
          },
          { what: 'awaiting approval' },
        );
        const planId = waiting.plan!.id;
        const update = (args: Record<string, unknown>) =>
          handle.executeUpdate(decideUpdate, { args: [{ decision: 'approve', planId, ...args } as never] }).then(
            () => 'accepted',
            (err: unknown) =>
              err instanceof WorkflowUpdateFailedError
                ? `refused: ${err.cause instanceof Error ? err.cause.message : String(err.cause)}`
                : `error: ${String(err)}`,
          );

        // Namespace access without the secret: unsigned, forged, and signed for someone else.
        expect(await update({ by: 'mallory' })).toMatch(/refused: a signed decision is required/);
        const forged = signApproval('not-the-secret-0123456789', {
          workflowId: id,
          planId,
          decision: 'approve',
          by: 'mallory',
        });
        expect(await update({ by: 'mallory', signature: forged })).toMatch(
          /refused: signature refused: signature does not match/,
        );
        const alices = signApproval(SECRET, { workflowId: id, planId, decision: 'approve', by: 'alice' });
        expect(await update({ by: 'mallory', signature: alices })).toMatch(/refused: signature refused/);
        const otherWorkflow = signApproval(SECRET, {
          workflowId: 'heal-x-y',
          planId,
          decision: 'approve',
          by: 'mallory',
        });
        expect(await update({ by: 'mallory', signature: otherWorkflow })).toMatch(/refused: signature refused/);
        await handle.signal(approveSignal, { by: 'mallory' });
        const ignored = await waitFor(
          async () => {
            const st = await handle.query(statusQuery);
            return st.ignored.some((i) => /signal approve by mallory: signature refused/.test(i.what)) ? st : undefined;
          },
          { what: 'the unsigned signal to be ignored' },
        );
        expect(ignored.phase).toBe('awaiting_approval');
        expect(ignored.decision).toBeNull();
        expect(await t.redis.get(t.keys.lock(docId))).toBe('dead-owner:tok-1');

        // The CLI without the secret cannot either: one error line.
        const unsigned = await cli(['approve', id, '--by', 'alice'], false);
        expect(unsigned.status).not.toBe(0);
        expect(unsigned.stderr.trim().split('\n')).toHaveLength(1);

        // With the secret, selfheal approve signs: the plan runs.
        const signed = await cli(['approve', id, '--by', 'alice', '--reason', 'owner is gone']);
        expect(signed.status, signed.stderr).toBe(0);
        const done = await handle.result();
        expect(done.phase).toBe('healed');
        expect(done.decision).toMatchObject({ decision: 'approve', by: 'alice', planId, via: 'update' });
        expect(await t.redis.get(t.keys.lock(docId))).toBeNull();

        const audit = await t.pool.query<{ step: string; decided_by: string; outcome: string }>(
          `SELECT step, decided_by, outcome FROM healing_log WHERE workflow_id = $1 AND step IN ('refused', 'approved')
            ORDER BY id`,
          [id],
        );
        const refused = audit.rows.filter((r) => r.step === 'refused');
        expect(refused.length).toBeGreaterThanOrEqual(4);
        for (const r of refused) {
          expect(r.decided_by).toBe('mallory');
          expect(r.outcome).toMatch(/^signature refused/);
        }
        expect(audit.rows.filter((r) => r.step === 'approved').map((r) => r.decided_by)).toEqual(['alice']);

        // Nothing in the history carries the secret.
        const history = JSON.stringify(await handle.fetchHistory());
        expect(history).not.toContain(SECRET);
      });
    } finally {
      await connection.close();
      await worker.close();
    }
  }, 180_000);
});
