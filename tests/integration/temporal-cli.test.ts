/**
 * README "Driving it with the `temporal` CLI": every command of that section, read from the README itself, run with
 * the real binary against the run's dev server and a running `selfheal up --no-pipeline` (auto-fix off, the LLM down
 * so plans are the runbook's). Two real stale locks (owners `worker-7` and `worker-8`, as in the README) make two
 * healings wait for approval. Only the address, the namespace and the example plan id are substituted.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { findTemporalCli } from '../../starter/temporal-local';
import { healingWorkflowId, MONITOR_SCHEDULE_ID } from '../../workflows/definitions';
import type { HealingStatus } from '../../workflows/healing';
import { type TestEnv, uniqueId, waitFor } from '../helpers/env';
import { ROOT } from '../helpers/selfheal';
import { startStack, type Stack } from '../helpers/stack';
import { healingStatus } from '../helpers/temporal';

const SECTION = '### Driving it with the `temporal` CLI';
const README_PLAN_ID = '3f9c2a7d5e1b8c40';
const OWNERS = ['worker-7', 'worker-8'] as const;

/** The section's shell commands, continuation lines joined, comments dropped. */
function readmeCommands(): string[] {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf(SECTION);
  if (start < 0) throw new Error(`README.md has no section "${SECTION}"`);
  const block = /```sh\n([\s\S]*?)```/.exec(readme.slice(start));
  if (!block) throw new Error(`no sh block in "${SECTION}"`);
  return block[1]!
    .replace(/\\\n\s*/g, '')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('temporal '));
}

describe('the README temporal CLI commands', () => {
  let stack: Stack;
  let t: TestEnv;
  let ns: string;
  let client: Client;
  let commands: string[];
  const temporal = findTemporalCli()!;
  const [idSignal, idUpdate] = OWNERS.map((o) => healingWorkflowId('stale_locks', o)) as [string, string];

  /** The README command that starts with `prefix` (and contains `having`), one of a kind. */
  function command(prefix: string, having = ''): string {
    const found = commands.filter((c) => c.startsWith(prefix) && c.includes(having));
    expect(found, `README commands starting with "${prefix}" and containing "${having}"`).toHaveLength(1);
    return found[0]!;
  }

  /** Runs a README command as written, with the test server's address and namespace (and `extra` flags). */
  function exec(cmd: string, extra = '') {
    expect(cmd).toContain('--address localhost:7233 --namespace default');
    const line = cmd
      .replace(/^temporal /, `'${temporal}' `)
      .replace(
        '--address localhost:7233 --namespace default',
        `--address ${inject('temporalAddress')} --namespace ${ns}`,
      );
    return spawnSync('bash', ['-c', `${line}${extra}`], { encoding: 'utf8', timeout: 60_000 });
  }

  /** Like exec, for a command that must succeed: its stdout. */
  function run(cmd: string, extra = ''): string {
    const r = exec(cmd, extra);
    expect(r.status, `${cmd}${extra}\n${r.stderr}`).toBe(0);
    return r.stdout;
  }

  const status = (id: string) => healingStatus(client, id);

  beforeAll(async () => {
    commands = readmeCommands();
    stack = await startStack({
      // Ollama answers its tags (no llm_unavailable anomaly) but every chat fails: plans come from the runbook.
      ollama: { replies: [{ kind: 'status', status: 500 }] },
      env: ({ ollama }) => ({
        OLLAMA_HOST: ollama.url,
        AUTO_FIX_ENABLED: 'false',
        MAX_ACTIONS_PER_HOUR: '100',
        VERIFY_DELAY: '2',
      }),
    });
    ({ t, ns, client } = stack);
    // Real stale locks: owners that never had a heartbeat in this environment's prefix.
    for (const owner of OWNERS)
      await t.redis.set(t.keys.lock(String(Math.floor(Math.random() * 1e9))), `${owner}:${uniqueId('tok')}`);
    for (const id of [idSignal, idUpdate])
      await waitFor(async () => (await status(id))?.phase === 'awaiting_approval', {
        timeoutMs: 60_000,
        what: `${id} awaiting approval`,
      });
  }, 180_000);

  afterAll(() => stack?.stop());

  it('the README section has the commands of every kind', () => {
    expect(commands.map((c) => c.split(' --')[0])).toEqual([
      'temporal workflow list',
      'temporal workflow query',
      'temporal workflow signal',
      'temporal workflow update execute',
      'temporal schedule describe',
      'temporal schedule toggle',
      'temporal schedule toggle',
      'temporal workflow show',
    ]);
  });

  it('workflow list by HealPhase lists exactly the healings awaiting approval', async () => {
    const list = command('temporal workflow list');
    // Visibility follows the search attribute a moment after the workflow sets it.
    const rows = await waitFor(
      () => {
        const r = JSON.parse(run(list, ' -o json')) as { execution: { workflowId: string }; type: { name: string } }[];
        return r.length === 2 ? r : undefined;
      },
      { what: 'two healings listed as awaiting_approval' },
    );
    expect(rows.map((r) => r.execution.workflowId).sort()).toEqual([idSignal, idUpdate]);
    expect(rows.map((r) => r.type.name)).toEqual(['healingWorkflow', 'healingWorkflow']);
  });

  it('workflow query --type status shows the phase, the anomaly and the runbook plan', () => {
    const out = JSON.parse(run(command('temporal workflow query'), ' -o json')) as { queryResult: HealingStatus[] };
    const st = out.queryResult[0]!;
    expect(st.phase).toBe('awaiting_approval');
    expect(st.anomaly).toMatchObject({ type: 'stale_locks', target: 'worker-7' });
    expect(st.plan).toMatchObject({ action: 'clear_stale_locks', source: 'runbook' });
    expect(st.decision).toBeNull();
  });

  it('workflow signal approve with the README input heals the first one', async () => {
    run(command('temporal workflow signal', '--name approve'));
    const done = (await client.workflow.getHandle(idSignal).result()) as HealingStatus;
    expect(done.phase).toBe('healed');
    expect(done.decision).toMatchObject({
      decision: 'approve',
      by: 'alice',
      reason: 'the owner is gone',
      via: 'signal',
    });
    expect(done.actions.map((a) => a.action)).toEqual(['clear_stale_locks']);
    const left = await t.redis.keys(`${t.prefix}lock:document:*`);
    for (const key of left) expect(await t.redis.get(key)).not.toMatch(/^worker-7:/);
  });

  it('workflow update execute decide answers the decision and heals the second one', async () => {
    const cmd = command('temporal workflow update execute', '--name decide');
    // A plan id that is not the current plan is refused by the update's validator: the command fails.
    const refused = exec(cmd);
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(/is not the current plan/);
    expect((await status(idUpdate))?.phase).toBe('awaiting_approval');

    const plan = (await status(idUpdate))!.plan!;
    const out = JSON.parse(run(cmd.replace(README_PLAN_ID, plan.id), ' -o json')) as { name: string; result: string };
    expect(out).toMatchObject({ name: 'decide', result: 'approve' });
    const done = (await client.workflow.getHandle(idUpdate).result()) as HealingStatus;
    expect(done.phase).toBe('healed');
    expect(done.decision).toMatchObject({ decision: 'approve', by: 'alice', planId: plan.id, via: 'update' });
    // Nothing awaits approval any more.
    await waitFor(() => (JSON.parse(run(command('temporal workflow list'), ' -o json')) as unknown[]).length === 0, {
      what: 'no healing listed as awaiting_approval',
    });
  });

  it('schedule describe shows the monitor Schedule as selfheal up configured it', () => {
    const out = JSON.parse(run(command('temporal schedule describe'), ' -o json')) as {
      schedule: {
        spec: { interval: { interval: string }[] };
        action: { startWorkflow: { workflowType: { name: string }; taskQueue: { name: string } } };
        policies: { overlapPolicy: string };
        state: { paused?: boolean };
      };
      info: { actionCount?: string };
    };
    expect(out.schedule.spec.interval[0]!.interval).toBe('1s');
    expect(out.schedule.action.startWorkflow.workflowType.name).toBe('monitoringCycleWorkflow');
    expect(out.schedule.action.startWorkflow.taskQueue.name).toBe('selfheal-monitor');
    expect(out.schedule.policies.overlapPolicy).toBe('SCHEDULE_OVERLAP_POLICY_SKIP');
    expect(out.schedule.state.paused ?? false).toBe(false);
    expect(Number(out.info.actionCount)).toBeGreaterThan(0);
  });

  it('schedule toggle pauses with the reason as note, and unpauses', async () => {
    const handle = client.schedule.getHandle(MONITOR_SCHEDULE_ID);
    run(command('temporal schedule toggle', '--pause'));
    let d = await handle.describe();
    expect(d.state.paused).toBe(true);
    expect(d.state.note).toBe('alice: investigating INC-42');
    run(command('temporal schedule toggle', '--unpause'));
    d = await handle.describe();
    expect(d.state.paused).toBe(false);
    expect(d.state.note).toBe('alice: INC-42 resolved');
  });

  it('workflow show prints the history, with the approve signal', () => {
    const out = JSON.parse(run(command('temporal workflow show'), ' -o json')) as {
      events: { eventType: string; workflowExecutionSignaledEventAttributes?: { signalName: string } }[];
    };
    const types = out.events.map((e) => e.eventType);
    expect(types[0]).toBe('EVENT_TYPE_WORKFLOW_EXECUTION_STARTED');
    expect(types.at(-1)).toBe('EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED');
    expect(
      out.events
        .filter((e) => e.eventType === 'EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED')
        .map((e) => e.workflowExecutionSignaledEventAttributes!.signalName),
    ).toContain('approve');
  });
});
