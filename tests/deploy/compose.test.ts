/**
 * The compose deployment end to end, as a user starts it: `scripts/dev.sh compose up` on this machine (images built
 * locally where they cannot be pulled), every service running or healthy, the Web UI on 8080, the monitoring
 * Schedule's runs listed by `temporal workflow list` on 7233; a pipeline worker killed with `docker kill` is healed
 * (auto-fix on) and its restart is in healing_log; with two healing and two actions agents and the `llm` profile
 * (Ollama with the small model, healthy, reported by /health, consulted by the healing agent), the healing agent that
 * ran a healing is killed while the healing waits for approval and the other one finishes it (one executed row);
 * `compose down --volumes` leaves nothing of the project behind.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HealingStatus } from '../../workflows/healing';
import { decideUpdate, healingWorkflowId, MONITOR_SCHEDULE_ID, statusQuery } from '../../workflows/definitions';
import { compose, ROOT } from '../helpers/compose';
import { waitFor } from '../helpers/env';

const TEMPORAL = path.join(ROOT, '.tools/python/bin/temporal');
const PROJECT = 'selfheal';
const ADDRESS = '127.0.0.1:7233';

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
}

const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8' }).trim();

interface PsEntry {
  Service: string;
  Name: string;
  State: string;
  Health: string;
  ExitCode: number;
}

function ps(): PsEntry[] {
  const out = compose(['ps', '-a', '--format', 'json']).trim();
  if (!out) return [];
  // One JSON object per line (Compose v2.21+), or one array (older).
  return out.startsWith('[') ? (JSON.parse(out) as PsEntry[]) : out.split('\n').map((l) => JSON.parse(l) as PsEntry);
}

function psql(sql: string): string {
  return docker('exec', `${PROJECT}-postgres-1`, 'psql', '-U', 'postgres', '-d', 'selfheal', '-tAc', sql);
}

function containerRunning(name: string): boolean {
  return docker('inspect', '-f', '{{.State.Running}}', name) === 'true';
}

function projectLeftovers(): string[] {
  const filter = `label=com.docker.compose.project=${PROJECT}`;
  return [
    ...docker('ps', '-aq', '--filter', filter)
      .split('\n')
      .filter(Boolean)
      .map((c) => `container ${c}`),
    ...docker('network', 'ls', '-q', '--filter', filter)
      .split('\n')
      .filter(Boolean)
      .map((n) => `network ${n}`),
    ...docker('volume', 'ls', '-q', '--filter', filter)
      .split('\n')
      .filter(Boolean)
      .map((v) => `volume ${v}`),
  ];
}

let connection: Connection | undefined;
let client: Client;

/** The run of `workflowId` started at or after `since` (epoch ms), once completed: ids are reused once a run closed. */
async function completedHealing(workflowId: string, since: number): Promise<{ status: HealingStatus; runId: string }> {
  const handle = client.workflow.getHandle(workflowId);
  await waitFor(
    async () => {
      const d = await handle.describe().catch(() => undefined);
      return d?.status.name === 'COMPLETED' && d.startTime.getTime() >= since - 1000;
    },
    { timeoutMs: 240_000, intervalMs: 1000, what: `${workflowId} started after the fault, completed` },
  );
  const desc = await handle.describe();
  return { status: await handle.query(statusQuery), runId: desc.runId };
}

describe('docker compose deployment', () => {
  beforeAll(() => {
    // A clean slate: nothing of an earlier run, then the stack as a user starts it.
    compose(['down', '--volumes']);
    expect(projectLeftovers()).toEqual([]);
    compose(['up']);
  }, 1_800_000);

  afterAll(async () => {
    await connection?.close();
    // Leaves nothing behind even when a test failed (the last test checks this on the success path).
    spawnSync('bash', [path.join(ROOT, 'scripts/dev.sh'), 'compose', 'down', '--volumes'], {
      cwd: ROOT,
      stdio: 'ignore',
      timeout: 300_000,
    });
  }, 300_000);

  it('every long-running service is running (healthy where it has a healthcheck), every one-shot exited 0', () => {
    const entries = ps();
    const byService = new Map<string, PsEntry[]>();
    for (const e of entries) byService.set(e.Service, [...(byService.get(e.Service) ?? []), e]);
    const oneShots = ['temporal-schema', 'temporal-setup', 'migrate'];
    const longRunning = [
      'postgres',
      'redis',
      'temporal',
      'temporal-ui',
      'docker-socket-proxy',
      'monitor-agent',
      'healing-agent',
      'actions-agent',
      'metrics',
      'pipeline-extract-1',
      'pipeline-extract-2',
      'pipeline-evaluate-1',
      'pipeline-evaluate-2',
    ];
    expect([...byService.keys()].sort()).toEqual([...oneShots, ...longRunning].sort());
    for (const name of oneShots) {
      for (const e of byService.get(name)!) expect([e.Service, e.State, e.ExitCode]).toEqual([name, 'exited', 0]);
    }
    for (const name of longRunning) {
      for (const e of byService.get(name)!)
        expect([e.Service, e.State, e.Health]).toEqual([name, 'running', 'healthy']);
    }
  });

  it('the Web UI answers on 8080', async () => {
    const page = await fetch('http://127.0.0.1:8080/');
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/<html/i);
  });

  it('metrics answer on 8001', async () => {
    const health = await fetch('http://127.0.0.1:8001/health');
    expect(health.status).toBe(200);
    const prom = await fetch('http://127.0.0.1:8001/metrics/prometheus');
    expect(await prom.text()).toMatch(/^# HELP /m);
  });

  it('`temporal workflow list` on 7233 lists the monitoring Schedule runs', async () => {
    connection = await Connection.connect({ address: ADDRESS });
    client = new Client({ connection, namespace: 'default' });
    const rows = await waitFor(
      () => {
        const out = run(TEMPORAL, [
          'workflow',
          'list',
          '--address',
          ADDRESS,
          '--query',
          "WorkflowType = 'monitoringCycleWorkflow' AND ExecutionStatus = 'Completed'",
          '--output',
          'json',
        ]);
        const list = JSON.parse(out || '[]') as { execution: { workflowId: string } }[];
        return list.length >= 2 ? list : undefined;
      },
      { timeoutMs: 120_000, intervalMs: 2000, what: 'two completed monitoring cycles' },
    );
    for (const r of rows) expect(r.execution.workflowId).toMatch(new RegExp(`^${MONITOR_SCHEDULE_ID}-`));
    // The Web UI reads the same runs through its own API.
    const query = encodeURIComponent("WorkflowType = 'monitoringCycleWorkflow'");
    const api = await fetch(`http://127.0.0.1:8080/api/v1/namespaces/default/workflows?query=${query}`);
    expect(api.status).toBe(200);
    const { executions } = (await api.json()) as { executions?: { execution: { workflowId: string } }[] };
    expect(executions?.map((e) => e.execution.workflowId)).toEqual(
      expect.arrayContaining(rows.map((r) => r.execution.workflowId)),
    );
  });

  it('docker kill of a pipeline worker: a healing restarts it, audited in healing_log', async () => {
    const target = 'pipeline-extract-1';
    const startedBefore = docker('inspect', '-f', '{{.State.StartedAt}}', target);
    const killedAt = Date.now();
    docker('kill', target);
    const { status, runId } = await completedHealing(healingWorkflowId('unhealthy_container', target), killedAt);
    expect(status.phase).toBe('healed');
    expect(containerRunning(target)).toBe(true);
    expect(docker('inspect', '-f', '{{.State.StartedAt}}', target)).not.toBe(startedBefore);
    const executed = psql(
      `SELECT action || '|' || target FROM healing_log WHERE run_id = '${runId}' AND step = 'executed'`,
    );
    expect(executed.split('\n')).toEqual([`restart_worker|${target}`]);
  });

  it('scaled out with the model, a healing agent killed while its healing awaits approval: the other one finishes it', async () => {
    // Approval on, so the healing stops in the middle (whatever the model's confidence); two agents of each kind; the
    // llm profile (through COMPOSE_PROFILES, as a user may give it) adds Ollama, the offline image with its model.
    compose(['up', '--scale', 'healing-agent=2', '--scale', 'actions-agent=2'], {
      AUTO_FIX_ENABLED: 'false',
      COMPOSE_PROFILES: 'llm',
    });
    const agents = ps().filter((e) => e.Service === 'healing-agent' && e.State === 'running');
    expect(agents).toHaveLength(2);
    expect(ps().filter((e) => e.Service === 'actions-agent' && e.State === 'running')).toHaveLength(2);
    expect(
      ps()
        .filter((e) => e.Service === 'ollama')
        .map((e) => [e.State, e.Health]),
    ).toEqual([['running', 'healthy']]);
    // ollama-pull is started after `up --wait`, and exits at once since the image holds the model.
    const pull = await waitFor(() => ps().find((e) => e.Service === 'ollama-pull' && e.State === 'exited'), {
      timeoutMs: 60_000,
      intervalMs: 1000,
      what: 'ollama-pull exited',
    });
    expect(pull.ExitCode).toBe(0);
    const health = (await (await fetch('http://127.0.0.1:8001/health')).json()) as { dependencies: { name: string }[] };
    expect(health.dependencies.find((d) => d.name === 'ollama')).toMatchObject({
      answers: true,
      model: 'smollm2:135m',
      modelPresent: true,
      ok: true,
    });

    const target = 'pipeline-evaluate-1';
    const workflowId = healingWorkflowId('unhealthy_container', target);
    const scaledKillAt = Date.now();
    docker('kill', target);
    const handle = client.workflow.getHandle(workflowId);
    await waitFor(async () => (await handle.query(statusQuery).catch(() => undefined))?.phase === 'awaiting_approval', {
      timeoutMs: 180_000,
      intervalMs: 1000,
      what: `${workflowId} awaiting approval`,
    });

    // The agent that ran the healing's last workflow task (identity <pid>@<container hostname>) holds it in its cache.
    const identities = ((await handle.fetchHistory()).events ?? [])
      .map((e) => e.workflowTaskStartedEventAttributes?.identity)
      .filter((id): id is string => !!id);
    const holder = identities.at(-1)!.split('@')[1]!;
    const victim = agents.find((a) => docker('inspect', '-f', '{{.Config.Hostname}}', a.Name) === holder);
    expect(victim, `a healing agent with hostname ${holder}`).toBeDefined();
    const survivor = agents.find((a) => a !== victim)!;
    const survivorHost = docker('inspect', '-f', '{{.Config.Hostname}}', survivor.Name);
    // Dead for good (no restart policy) so that only the other agent can go on.
    docker('update', '--restart=no', victim!.Name);
    docker('kill', victim!.Name);
    const killedAt = Date.now();

    await handle.executeUpdate(decideUpdate, { args: [{ decision: 'approve', by: 'deploy-test' }] });
    const { status, runId } = await completedHealing(workflowId, scaledKillAt);
    expect(status.phase).toBe('healed');
    expect(containerRunning(target)).toBe(true);
    expect(containerRunning(victim!.Name)).toBe(false);

    // Every workflow task after the kill ran on the survivor.
    const after: string[] = [];
    for (const e of (await handle.fetchHistory()).events ?? []) {
      const at = Number(e.eventTime?.seconds ?? 0) * 1000;
      const id = e.workflowTaskStartedEventAttributes?.identity;
      if (id && at > killedAt) after.push(id.split('@')[1]!);
    }
    expect(after.length).toBeGreaterThan(0);
    expect(new Set(after)).toEqual(new Set([survivorHost]));
    const executed = psql(
      `SELECT action || '|' || target FROM healing_log WHERE run_id = '${runId}' AND step = 'executed'`,
    );
    expect(executed.split('\n')).toEqual([`restart_worker|${target}`]);
    // The healing agent asked the model: the plan is the model's, or the runbook stood in for a reply the model gave
    // (invalid, unsafe, too slow), never for a model it could not reach or did not find.
    const proposed = psql(
      `SELECT decided_by || '|' || coalesce(outcome, '') FROM healing_log WHERE run_id = '${runId}' AND step = 'proposed'`,
    );
    expect(proposed).toMatch(/^(llm\||runbook\|(invalid_reply|unsafe_action|timeout))$/);
  });

  it('compose down --volumes leaves no container, network or volume of the project', () => {
    compose(['down', '--volumes']);
    expect(projectLeftovers()).toEqual([]);
  });
});
