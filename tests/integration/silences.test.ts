/**
 * Silences (maintenance windows) against the real services: a silence added with the real CLI on one container holds
 * the restart that would otherwise run (the anomaly is detected, counted and shown; the container is not touched),
 * is listed and audited (who, why, when), an expired silence of a lower id changes nothing, and once the silence is
 * removed the held healing goes on: restarted, healed.
 */
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addSilence } from '../../activities/silences';
import { decideUpdate, healingWorkflowId } from '../../workflows/definitions';
import { makeUnhealthy, removeTestContainers, runTestContainer, SLEEPER } from '../helpers/containers';
import { waitFor } from '../helpers/env';
import { startStack, type Stack } from '../helpers/stack';
import { endedRun, healingStatus } from '../helpers/temporal';

const runbooks = (id: string) => path.join(os.tmpdir(), `selfheal-silences-${id}.yaml`);

describe('silences', () => {
  let s: Stack;
  const name = (role: string) => `sil-${s.t.id}-${role}`;
  const startedAt = async (n: string) => (await s.docker.getContainer(n).inspect()).State.StartedAt;

  async function audit(id: string) {
    const { rows } = await s.t.pool.query<{
      step: string;
      action: string | null;
      outcome: string | null;
      decided_by: string | null;
      params: Record<string, unknown>;
    }>(`SELECT step, action, outcome, decided_by, params FROM healing_log WHERE workflow_id = $1 ORDER BY id`, [id]);
    return rows;
  }

  beforeAll(async () => {
    s = await startStack({
      ollama: { replies: [{ kind: 'status', status: 500 }] },
      async beforeSelfheal({ docker, t }) {
        const names = [`sil-${t.id}-web`, `sil-${t.id}-gone`, `sil-${t.id}-appr`];
        // One container whose restarts always wait for a human (a runbook file), for the approval held by a silence.
        writeFileSync(
          runbooks(t.id),
          `version: 1\nrunbooks:\n  - type: unhealthy_container\n    target: "sil-${t.id}-appr"\n    approval: always\n`,
        );
        for (const n of names) {
          await runTestContainer(docker, t, n, SLEEPER, { labels: { 'selfheal.enable': 'true' }, healthcheck: true });
        }
        await waitFor(
          async () => {
            const states = await Promise.all(names.map((n) => docker.getContainer(n).inspect()));
            return states.every((st) => st.State.Health?.Status === 'healthy');
          },
          { timeoutMs: 30_000, what: 'the HEALTHCHECKs to pass' },
        );
      },
      env: ({ t }) => ({
        AUTO_FIX_ENABLED: 'true',
        VERIFY_DELAY: '2',
        RESTART_COOLDOWN: '0',
        SILENCE_RECHECK_INTERVAL: '1',
        RUNBOOKS_FILE: runbooks(t.id),
        APPROVAL_TIMEOUT: '10',
      }),
    });
  }, 180_000);

  afterAll(async () => {
    if (s) await removeTestContainers(s.docker, s.t);
    await s?.stop();
    if (s) rmSync(runbooks(s.t.id), { force: true });
  });

  it('holds the restart while the silence matches, lists and audits it, and heals once it is removed', async () => {
    const target = name('web');
    // An expired silence of every anomaly and target, with a lower id: it must change nothing.
    const expired = await s.t.pool.query<{ id: number }>(
      `INSERT INTO silences (anomaly_type, target_glob, starts_at, ends_at, reason, created_by)
       VALUES (NULL, NULL, now() - interval '2 hours', now() - interval '1 hour', 'old window', 'carol') RETURNING id`,
    );
    const expiredId = expired.rows[0]!.id;

    // Bad input is refused with one line and stores nothing.
    const bad = s.selfheal.cli(['silence', 'add', '--target', target, '--reason', 'x']);
    expect(bad.status).toBe(1);
    expect(bad.stderr.trim()).toBe(
      'selfheal: give exactly one of --for DURATION (e.g. 1h) or --until TIME (ISO, e.g. 2026-01-01T18:00:00Z)',
    );

    const added = s.selfheal.cli([
      'silence',
      'add',
      '--type',
      'unhealthy_container',
      '--target',
      `sil-${s.t.id}-w*`,
      '--for',
      '1h',
      '--reason',
      'maintenance of web',
      '--by',
      'alice',
      '--json',
    ]);
    expect(added.stderr).toBe('');
    expect(added.status).toBe(0);
    const silence = JSON.parse(added.stdout) as { id: number; state: string; endsAt: string; createdBy: string };
    expect(silence).toMatchObject({ state: 'active', createdBy: 'alice', target: `sil-${s.t.id}-w*` });
    expect(silence.id).toBeGreaterThan(expiredId);

    const before = await startedAt(target);
    makeUnhealthy(target);
    const id = healingWorkflowId('unhealthy_container', target);

    // The healing reaches the hold: audited with the silence, shown in its status.
    const held = await waitFor(async () => (await audit(id)).find((r) => r.step === 'silenced'), {
      timeoutMs: 90_000,
      what: 'the silenced audit row',
    });
    expect(held).toMatchObject({
      action: 'restart_worker',
      decided_by: 'alice',
      outcome: `silenced by #${silence.id}`,
      params: { silenceId: silence.id, reason: 'maintenance of web', silencedBy: 'alice' },
    });
    const status = await healingStatus(s.client, id);
    expect(status?.phase).toBe('silenced');
    expect(status?.history.at(-1)?.note).toBe(
      `silenced by #${silence.id} (alice: maintenance of web) until ${new Date(silence.endsAt).toISOString()}`,
    );
    const shown = s.selfheal.cli(['show', id]);
    expect(shown.status).toBe(0);
    expect(shown.stdout).toContain(`phase silenced`);
    expect(shown.stdout).toContain(`silenced by #${silence.id} (alice: maintenance of web)`);

    // Still detected and counted: the metrics show the open anomaly as silenced.
    await waitFor(
      async () => {
        const text = await (await fetch(`${s.selfheal.metricsUrl}/metrics/prometheus`)).text();
        return /^selfheal_anomalies_silenced\{type="unhealthy_container"\} 1$/m.test(text);
      },
      { timeoutMs: 30_000, what: 'selfheal_anomalies_silenced 1' },
    );
    const view = (await (await fetch(`${s.selfheal.metricsUrl}/metrics`)).json()) as {
      openAnomalies: { target: string; silencedBy?: { id: number } }[];
    };
    expect(view.openAnomalies.find((a) => a.target === target)?.silencedBy).toMatchObject({ id: silence.id });
    // `selfheal status` marks it, and counts the held healing by its phase (visibility may lag a moment).
    const heldLine = new RegExp(`^  unhealthy_container on ${target} \\(.*\\(silenced by #${silence.id}\\)$`, 'm');
    await waitFor(
      () => {
        const screen = s.selfheal.cli(['status']).stdout;
        return heldLine.test(screen) && /^Healings .*silenced 1/m.test(screen);
      },
      { timeoutMs: 30_000, intervalMs: 1_000, what: 'selfheal status showing the silenced anomaly and healing' },
    );

    // Several re-checks later, still held: no restart ran, nothing executed.
    const rechecks = (await audit(id)).length;
    await new Promise((r) => setTimeout(r, 4_000));
    expect((await healingStatus(s.client, id))?.phase).toBe('silenced');
    expect((await audit(id)).length).toBe(rechecks);
    expect((await audit(id)).filter((r) => r.step === 'executed')).toEqual([]);
    expect(await startedAt(target)).toBe(before);
    expect((await s.docker.getContainer(target).inspect()).State.Health?.Status).toBe('unhealthy');

    // Listed, with who, why and when; audited in silence_log.
    const listed = s.selfheal.cli(['silence', 'list', '--json']);
    expect(listed.status).toBe(0);
    const rows = JSON.parse(listed.stdout) as Record<string, unknown>[];
    expect(rows.find((r) => r.id === silence.id)).toMatchObject({
      state: 'active',
      anomalyType: 'unhealthy_container',
      reason: 'maintenance of web',
      createdBy: 'alice',
      removedAt: null,
    });
    const table = s.selfheal.cli(['silence', 'list', '--all']);
    expect(table.stdout).toMatch(
      new RegExp(`^#${silence.id} +unhealthy_container .* alice +active +maintenance of web$`, 'm'),
    );
    expect(table.stdout).toMatch(new RegExp(`^#${expiredId} +\\* +\\* .* carol +expired +old window$`, 'm'));

    // An unknown id is an error; the removal is audited, a second one says so and changes nothing.
    const unknown = s.selfheal.cli(['silence', 'remove', '999999']);
    expect(unknown.status).toBe(1);
    expect(unknown.stderr.trim()).toBe('selfheal: no silence #999999');
    const removed = s.selfheal.cli(['silence', 'remove', String(silence.id), '--by', 'bob', '--reason', 'done']);
    expect(removed.stderr).toBe('');
    expect(removed.stdout).toMatch(new RegExp(`^silence #${silence.id} removed by bob`));
    const again = s.selfheal.cli(['silence', 'remove', String(silence.id), '--by', 'bob']);
    expect(again.status).toBe(0);
    expect(again.stdout).toMatch(new RegExp(`^silence #${silence.id} already removed by bob at `));
    const log = await s.t.pool.query<{ event: string; actor: string; reason: string | null; created_at: Date }>(
      `SELECT event, actor, reason, created_at FROM silence_log WHERE silence_id = $1 ORDER BY id`,
      [silence.id],
    );
    expect(log.rows.map((r) => [r.event, r.actor, r.reason])).toEqual([
      ['added', 'alice', 'maintenance of web'],
      ['removed', 'bob', 'done'],
    ]);
    expect(log.rows.every((r) => r.created_at instanceof Date)).toBe(true);
    await expect(s.t.pool.query(`DELETE FROM silence_log`)).rejects.toThrow(/append-only/);

    // The held healing goes on: the fault is still there, so the restart runs and heals.
    const ended = await endedRun(s.client, id, { timeoutMs: 90_000 });
    if (process.env.RECORD_HISTORIES) {
      // For the replay test (tests/unit/replay.test.ts): a healing held by a silence, then healed.
      const history = await s.client.workflow.getHandle(id, ended.runId).fetchHistory();
      writeFileSync(path.join(__dirname, '../fixtures/histories/healing-silenced.json'), historyToJSON(history));
    }
    expect(ended.status.phase).toBe('healed');
    const steps = await audit(id);
    expect(steps.filter((r) => r.step === 'unsilenced').map((r) => r.outcome)).toEqual(['still there: proceeding']);
    expect(steps.filter((r) => r.step === 'executed').map((r) => [r.action, r.outcome])).toEqual([
      ['restart_worker', 'done'],
    ]);
    expect(steps.map((r) => r.step).indexOf('unsilenced')).toBeLessThan(steps.map((r) => r.step).indexOf('executed'));
    expect(await startedAt(target)).not.toBe(before);
    expect((await s.docker.getContainer(target).inspect()).State.Health?.Status).toBe('healthy');
    const after = JSON.parse(s.selfheal.cli(['silence', 'list', '--json']).stdout) as Record<string, unknown>[];
    expect(after.find((r) => r.id === silence.id)).toMatchObject({ state: 'removed', removedBy: 'bob' });
  }, 300_000);

  it('a fault gone while silenced ends the healing healed, without any action', async () => {
    const target = name('gone');
    const added = s.selfheal.cli(['silence', 'add', '--target', target, '--for', '2h', '--reason', 'disk swap']);
    expect(added.stderr).toBe('');
    const silenceId = Number(/^silence #(\d+) added: any anomaly on /.exec(added.stdout)?.[1]);
    expect(silenceId).toBeGreaterThan(0);
    const before = await startedAt(target);
    makeUnhealthy(target);
    const id = healingWorkflowId('unhealthy_container', target);
    await waitFor(async () => (await audit(id)).find((r) => r.step === 'silenced'), {
      timeoutMs: 90_000,
      what: 'the silenced audit row',
    });
    // The operator fixes it by hand during the window; Docker sees it healthy again.
    execFileSync('docker', ['exec', target, '/bin/busybox', 'touch', '/tmp/healthy']);
    await waitFor(async () => (await s.docker.getContainer(target).inspect()).State.Health?.Status === 'healthy', {
      timeoutMs: 30_000,
      what: 'healthy again',
    });
    expect(s.selfheal.cli(['silence', 'remove', `#${silenceId}`]).status).toBe(0);
    const ended = await endedRun(s.client, id, { timeoutMs: 90_000 });
    expect(ended.status.phase).toBe('healed');
    expect(ended.status.history.at(-1)?.note).toMatch(/^gone while silenced: unhealthy_container no longer detected/);
    const steps = await audit(id);
    expect(steps.filter((r) => r.step === 'unsilenced').map((r) => r.outcome)).toEqual(['gone']);
    expect(steps.filter((r) => r.step === 'executed')).toEqual([]);
    expect(ended.status.actions).toEqual([]);
    expect(await startedAt(target)).toBe(before);
  }, 240_000);
  it('a healing awaiting approval is held by a silence past its approval timeout, and waits again once it is removed', async () => {
    const target = name('appr');
    const id = healingWorkflowId('unhealthy_container', target);
    const before = await startedAt(target);
    makeUnhealthy(target);
    await waitFor(async () => (await healingStatus(s.client, id))?.phase === 'awaiting_approval', {
      timeoutMs: 90_000,
      what: `${id} awaiting approval`,
    });
    // Added straight into the store (the CLI's `silence add` is the first test's), so that it is in place well
    // before the approval wait runs out however slowly a CLI process starts on a loaded machine.
    const silence = await addSilence(s.t.pool, {
      anomalyType: null,
      targetGlob: target,
      startsAt: Date.now(),
      endsAt: Date.now() + 3_600_000,
      reason: 'patching',
      createdBy: 'test',
    });
    // APPROVAL_TIMEOUT is 10 s: the wait runs out during the silence, which holds it instead of rejecting it.
    await waitFor(async () => (await healingStatus(s.client, id))?.phase === 'silenced', {
      timeoutMs: 30_000,
      what: `${id} held by the silence`,
    });
    await new Promise((r) => setTimeout(r, 6_000));
    expect((await healingStatus(s.client, id))?.phase).toBe('silenced');
    const steps = (await audit(id)).map((r) => r.step);
    expect(steps).toContain('silenced');
    expect(steps).not.toContain('rejected');
    expect(await startedAt(target)).toBe(before);

    const removed = s.selfheal.cli(['silence', 'remove', String(silence.id), '--by', 'bob']);
    expect(removed.status, removed.stderr).toBe(0);
    // The fault is still there: the request waits again, and an approval now restarts it.
    await waitFor(async () => (await healingStatus(s.client, id))?.phase === 'awaiting_approval', {
      timeoutMs: 30_000,
      what: `${id} awaiting approval again`,
    });
    // Through the update `selfheal approve` sends, at once: a CLI process starting on a loaded machine could miss
    // the 10 s wait.
    await s.client.workflow.getHandle(id).executeUpdate(decideUpdate, { args: [{ decision: 'approve', by: 'alice' }] });
    const { status } = await endedRun(s.client, id, { timeoutMs: 60_000 });
    expect(status.phase, JSON.stringify(status.history)).toBe('healed');
    expect(await startedAt(target)).not.toBe(before);
    const after = (await audit(id)).map((r) => r.step);
    expect(after.filter((st) => st === 'approved')).toHaveLength(1);
    expect(after).not.toContain('rejected');
  });
});
