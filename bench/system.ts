/**
 * The whole system as an operator runs it: `selfheal up --no-pipeline` (which starts its own Temporal dev server
 * with a database file) and its real worker processes.
 * - startup: seconds until every task queue has a poller;
 * - healing throughput: N stale-lock anomalies (real locks of owners with no heartbeat) started at once as healing
 *   workflows, auto-fix on, until every one is terminal; each checked in Redis (lock gone) and Postgres (one
 *   executed row each);
 * - peak memory (VmHWM) of every process `up` started, read after the largest burst.
 * And detection latency, from `selfheal demo --auto-approve --json` (real pipeline containers, one fault per seed
 * class), against each class's bound.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { parseConfig, thresholdsFrom, type Config } from '../core/config';
import type { Anomaly } from '../core/types';
import { DEMO_DEFAULTS, type DemoResult } from '../starter/demo';
import { nodeCommand, projectScript } from '../workers/project';
import { healingPolicy } from '../workers/schedule';
import { findTemporalCli, freePort } from '../starter/temporal-local';
import { temporalAnswers } from '../workers/temporal-connection';
import { healingWorkflowId, MONITOR_SCHEDULE_ID } from '../workflows/definitions';
import type { HealingInput, HealingStatus } from '../workflows/healing';
import { staleLock } from '../tests/helpers/anomalies';
import { createTestEnv, waitFor, type TestEnv } from '../tests/helpers/env';
import { planReply, startFakeOllama, type FakeOllama } from '../tests/helpers/fake-ollama';
import { procMiB, progress, round1, type Row } from './common';

/** The CLI as this benchmark runs: from the sources, through tsx's hook (`npm run bench -- cli` times the compiled one). */
const [NODE, ...CLI] = nodeCommand(projectScript('starter/cli'));

export interface SystemResult {
  startupSeconds: number;
  throughput: Row[];
  memory: Row[];
}

/** MiB to MB (the targets are in MB). */
const toMB = (mib: number | undefined) => (mib === undefined ? undefined : Math.round(mib * 1.048576));

const TERMINAL = new Set(['healed', 'escalated', 'rejected', 'failed']);

async function burst(client: Client, t: TestEnv, config: Config, n: number): Promise<Row> {
  const anomalies = await Promise.all(
    Array.from({ length: n }, () => staleLock(t, { ownerPrefix: 'bench-dead-', documentIds: 1e12 })),
  );
  const input = (anomaly: Anomaly): HealingInput => ({
    anomaly,
    policy: healingPolicy(config),
    thresholds: thresholdsFrom(config),
    containers: [],
    containerLabels: [],
  });
  const before = await t.pool.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM healing_log WHERE step = 'executed'",
  );
  const t0 = performance.now();
  const handles = await Promise.all(
    anomalies.map((a) =>
      client.workflow.start('healingWorkflow', {
        taskQueue: 'selfheal-healing',
        workflowId: healingWorkflowId(a.type, a.target),
        args: [input(a)],
      }),
    ),
  );
  const started = performance.now() - t0;
  const results = (await Promise.all(handles.map((h) => h.result()))) as HealingStatus[];
  const seconds = (performance.now() - t0) / 1000;
  const phases: Record<string, number> = {};
  for (const r of results) phases[r.phase] = (phases[r.phase] ?? 0) + 1;
  const pipe = t.redis.pipeline();
  for (const a of anomalies) pipe.exists(t.keys.lock((a.evidence.locks as { documentId: string }[])[0]!.documentId));
  const locksLeft = ((await pipe.exec()) ?? []).filter(([, v]) => v === 1).length;
  const after = await t.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM healing_log WHERE step = 'executed'");
  const row: Row = {
    anomalies: n,
    seconds_to_all_terminal: round1(seconds),
    workflows_per_s: round1(n / seconds),
    start_calls_ms: Math.round(started),
    phases: Object.entries(phases)
      .map(([p, k]) => `${p} ${k}`)
      .join(', '),
    all_terminal: results.every((r) => TERMINAL.has(r.phase)),
    locks_left: locksLeft,
    executed_rows: after.rows[0]!.n - before.rows[0]!.n,
  };
  progress(`throughput: ${JSON.stringify(row)}`);
  return row;
}

/**
 * `server`: `db-file` lets `selfheal up` start its dev server with a database file (as operators run it);
 * `in-memory` starts a dev server without one first (up then uses it), to show what the file's SQLite writes cost.
 */
export async function benchSystem(
  bursts: number[],
  server: 'db-file' | 'in-memory' = 'db-file',
): Promise<SystemResult> {
  const t = await createTestEnv();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-bench-'));
  let ollama: FakeOllama | undefined;
  let child: ChildProcess | undefined;
  let memoryServer: ChildProcess | undefined;
  try {
    ollama = await startFakeOllama({ replies: [planReply('clear_stale_locks', 'owner is dead')] });
    const temporalAddress = `127.0.0.1:${await freePort()}`;
    if (server === 'in-memory') {
      const cli = findTemporalCli();
      if (!cli) throw new Error('no temporal CLI (scripts/dev.sh setup)');
      const [, port] = temporalAddress.split(':');
      memoryServer = spawn(
        cli,
        ['server', 'start-dev', '--ip', '127.0.0.1', '--port', port!, '--headless', '--log-level', 'error'],
        { stdio: 'ignore' },
      );
      await waitFor(() => temporalAnswers(temporalAddress), { timeoutMs: 60_000, what: 'the in-memory dev server' });
    }
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      ...t.env,
      TEMPORAL_ADDRESS: temporalAddress,
      METRICS_PORT: String(await freePort()),
      SELFHEAL_DATA_DIR: dataDir,
      OLLAMA_HOST: ollama.url,
      AUTO_FIX_ENABLED: 'true',
      // The bursts are the measurement: a budget and a verification delay that do not throttle them.
      MAX_ACTIONS_PER_HOUR: '10000',
      VERIFY_DELAY: '1',
      MONITOR_INTERVAL: '60',
      LOG_LEVEL: 'warn',
    };
    const parsed = parseConfig(env);
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
    progress(`system: selfheal up --no-pipeline (Temporal dev server: ${server})`);
    const t0 = Date.now();
    const proc = spawn(NODE, [...CLI, 'up', '--no-pipeline', '--ui-port', String(await freePort())], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const m = await waitFor(() => /selfheal is up in ([\d.]+) s/.exec(out), { timeoutMs: 180_000, what: 'up' });
    const startupSeconds = Number(m[1]);
    progress(`system: up in ${startupSeconds} s (${((Date.now() - t0) / 1000).toFixed(1)} s wall)`);

    const connection = await Connection.connect({ address: temporalAddress });
    const client = new Client({ connection, namespace: parsed.config.TEMPORAL_NAMESPACE });
    // The bursts alone: no monitoring cycle in between.
    await client.schedule.getHandle(MONITOR_SCHEDULE_ID).pause('benchmark: healing throughput');
    const throughput: Row[] = [];
    for (const n of bursts) throughput.push(await burst(client, t, parsed.config, n));
    await connection.close();

    const state = JSON.parse(readFileSync(path.join(dataDir, 'up.json'), 'utf8')) as {
      pid: number;
      components: { name: string; pid?: number }[];
    };
    const memory: Row[] = [{ process: 'selfheal up (the CLI)', pid: state.pid }, ...state.components]
      .map((c) => ({
        process: 'process' in c ? c.process : c.name,
        pid: c.pid,
        peak_rss_mb: c.pid ? toMB(procMiB(c.pid, 'VmHWM')) : undefined,
        rss_mb_now: c.pid ? toMB(procMiB(c.pid, 'VmRSS')) : undefined,
      }))
      .filter((r) => r.pid !== undefined);
    progress(`system: memory ${JSON.stringify(memory)}`);
    return { startupSeconds, throughput, memory };
  } finally {
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child!.once('exit', r));
    }
    memoryServer?.kill('SIGTERM');
    await ollama?.close();
    rmSync(dataDir, { recursive: true, force: true });
    await t.cleanup();
  }
}

/** Per seed fault class: the time the detector's condition needs after the injection, in cycles or seconds. */
function conditionSeconds(fault: string, s: Record<string, number>): { seconds: number; why: string } {
  const interval = s.MONITOR_INTERVAL!;
  if (fault === 'kill-worker')
    return {
      seconds: (s.HEALTH_FAILURES_BEFORE_UNHEALTHY! - 1) * interval,
      why: `${s.HEALTH_FAILURES_BEFORE_UNHEALTHY} failed health checks in a row`,
    };
  if (fault.startsWith('hang-worker'))
    return {
      seconds: s.QUEUE_STALL_THRESHOLD!,
      why: `no progress for QUEUE_STALL_THRESHOLD ${s.QUEUE_STALL_THRESHOLD} s`,
    };
  if (fault === 'stuck-documents') return { seconds: 0, why: 'injected already older than the threshold' };
  if (fault === 'stale-lock') return { seconds: 0, why: 'owner has no heartbeat from the start' };
  return { seconds: 0, why: 'visible once the window holds its minimum samples (traffic-dependent, not counted)' };
}

export async function benchDetection(): Promise<Row[]> {
  const t = await createTestEnv();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-bench-demo-'));
  try {
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...t.env,
      TEMPORAL_ADDRESS: `127.0.0.1:${await freePort()}`,
      METRICS_PORT: String(await freePort()),
      // Nothing listens there: every plan is the runbook's, as in the demo's test.
      OLLAMA_HOST: `http://127.0.0.1:${await freePort()}`,
      SELFHEAL_DATA_DIR: dataDir,
      PIPELINE_BASE_PORT: String(await freePort()),
      LOG_LEVEL: 'warn',
    };
    progress('detection: selfheal demo --auto-approve --json (one fault per seed class, real containers)');
    const child = spawn(NODE, [...CLI, 'demo', '--auto-approve', '--json', '--ui-port', String(await freePort())], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      for (const line of d.toString().split('\n')) if (line.trim()) progress(`  demo: ${line.trim()}`);
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    if (code !== 0 && !stdout.trim()) throw new Error(`selfheal demo exited ${code}`);
    const result = JSON.parse(stdout) as DemoResult;
    const cfg = parseConfig({ ...t.env, ...DEMO_DEFAULTS, ...result.settings });
    if (!cfg.ok) throw new Error(JSON.stringify(cfg.problems));
    const s = cfg.config as unknown as Record<string, number>;
    const interval = s.MONITOR_INTERVAL!;
    const fire = s.ANOMALY_FIRE_CYCLES!;
    return result.steps.map((step) => {
      const cond = conditionSeconds(step.fault, s);
      // Seen in FIRE_CYCLES consecutive cycles once the condition holds, plus one interval for the cycle's phase.
      const bound = cond.seconds + (fire - 1) * interval + interval;
      const over = step.detectedSeconds === null ? null : round1(step.detectedSeconds - bound);
      return {
        fault: step.fault,
        anomaly: step.anomalyType,
        condition_s: cond.seconds,
        condition: cond.why,
        bound_s: bound,
        detected_s: step.detectedSeconds,
        over_bound_s: over,
        within_target: over !== null && over <= interval + 1,
        action: step.action,
        outcome: step.outcome,
        heal_s: step.healSeconds,
      };
    });
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
    await t.cleanup();
  }
}
