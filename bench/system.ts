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
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Worker } from '@temporalio/worker';
import { HEALING_CACHED_WORKFLOWS_DEFAULT, parseConfig, thresholdsFrom, type Config } from '../core/config';
import type { Anomaly } from '../core/types';
import { DEMO_DEFAULTS, type DemoResult } from '../starter/demo';
import { stopChild, workerEnv } from '../starter/up';
import { PROJECT_ROOT, projectScript } from '../workers/project';
import { healingPolicy, monitoringInput } from '../workers/schedule';
import { findTemporalCli, freePort, startDevServer, stopProcessGroup } from '../starter/temporal-local';
import { registerSearchAttributes, temporalAnswers, waitForPollers } from '../workers/temporal-connection';
import { healingWorkflowId, MONITOR_SCHEDULE_ID, TaskQueue, type CycleResult } from '../workflows/definitions';
import type { Snapshot } from '../core/snapshot';
import type { HealingInput, HealingStatus } from '../workflows/healing';
import { staleLock } from '../tests/helpers/anomalies';
import { createTestEnv, pipelineBasePort, waitFor, type TestEnv } from '../tests/helpers/env';
import { planReply, startFakeOllama, type FakeOllama } from '../tests/helpers/fake-ollama';
import { procMiB, progress, round1, type Row } from './common';
import { errorMessage } from '../core/errors';

/**
 * The CLI as operators run it: the compiled `bin/selfheal.cjs` (run `npm run build` first), so that `up` starts the
 * compiled workers with no TypeScript loader and their memory is what an operator's processes take.
 */
const NODE = process.execPath;
const CLI = [path.join(PROJECT_ROOT, 'bin', 'selfheal.cjs')];

export interface SystemResult {
  startupSeconds: number;
  throughput: Row[];
  memory: Row[];
}

/** MiB to MB (the targets are in MB). */
const toMB = (mib: number | undefined) => (mib === undefined ? undefined : Math.round(mib * 1.048576));

/** Results awaited at once (each a long poll of the workflow's history). */
const RESULT_WAITS = 400;

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
  // At most RESULT_WAITS long polls at once: the dev server refuses more than about 1,000 per namespace.
  const results: HealingStatus[] = new Array(handles.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(RESULT_WAITS, handles.length) }, async () => {
      for (let i = next++; i < handles.length; i = next++) results[i] = (await handles[i]!.result()) as HealingStatus;
    }),
  );
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
 * `extraEnv`: more environment for `selfheal up` and the processes it starts (a tuning to measure, e.g.
 * `MALLOC_ARENA_MAX=2`); it overrides the bench's own settings.
 */
export async function benchSystem(
  bursts: number[],
  server: 'db-file' | 'in-memory' = 'db-file',
  extraEnv: Record<string, string> = {},
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
      ...extraEnv,
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
    const m = await waitFor(
      () => {
        if (proc.exitCode !== null || proc.signalCode !== null)
          throw new Error(`selfheal up exited (${proc.exitCode ?? proc.signalCode})`);
        return /selfheal is up in ([\d.]+) s/.exec(out);
      },
      {
        timeoutMs: 180_000,
        what: 'up',
      },
    ).catch(async (err: unknown) => {
      // Its last words may still be in the pipes when it has exited: read them (for 2 s at most).
      if (proc.exitCode !== null || proc.signalCode !== null)
        await Promise.race([once(proc, 'close'), new Promise((r) => setTimeout(r, 2_000))]);
      throw new Error(`${errorMessage(err)}; up said:\n${out.slice(-4000)}`, { cause: err });
    });
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
    if (child && child.exitCode === null && child.signalCode === null) {
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
      PIPELINE_BASE_PORT: String(pipelineBasePort()),
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

/** A stale-lock anomaly of a dead owner of its own (no Redis behind it: the cycle only starts its healing). */
function syntheticAnomaly(i: number, now: number): Anomaly {
  const owner = `bench-owner-${i}`;
  return {
    type: 'stale_locks',
    target: owner,
    severity: 'warning',
    fingerprint: `stale_locks:${owner}`,
    summary: `1 document locks held by ${owner}, which has no heartbeat`,
    evidence: { owner, documentIds: [String(i)], count: 1, totalStale: 1, locks: [] },
    detectedAt: now,
  };
}

/**
 * The monitoring cycle's own cost of starting N healings, and of the client's N parallel starts, on a Temporal dev
 * server of its own (`db-file`: with a database file, as `selfheal up` runs it; `in-memory`: without one). The
 * cycle is the real `monitoringCycleWorkflow` on an in-process worker; only its collection and detection are stubs
 * (an empty snapshot; N anomalies fired), so the cycle's time is its starts. No healing worker polls: the healings
 * stay open, so a second cycle with the same N anomalies measures N signals to open runs. The client's starts are N
 * `workflow.start` calls at once on one connection, as bench/system.ts's bursts make them.
 */
export async function benchCycleStarts(
  counts: number[],
  servers: ('db-file' | 'in-memory')[] = ['db-file', 'in-memory'],
): Promise<Row[]> {
  const cli = findTemporalCli(process.env.TEMPORAL_CLI_PATH);
  if (!cli) throw new Error('no temporal CLI (scripts/dev.sh setup)');
  const parsed = parseConfig({});
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
  const input = monitoringInput(parsed.config);
  const rows: Row[] = [];
  for (const server of servers) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-bench-starts-'));
    const port = await freePort();
    const address = `127.0.0.1:${port}`;
    const dev = await startDevServer({
      cli,
      port,
      logFile: path.join(dir, 'temporal.log'),
      ...(server === 'db-file' ? { dbFile: path.join(dir, 'temporal.db') } : {}),
    });
    try {
      const connection = await Connection.connect({ address });
      await registerSearchAttributes(connection, 'default');
      const client = new Client({ connection, namespace: 'default' });
      const workerConnection = await NativeConnection.connect({ address });
      let fired: Anomaly[] = [];
      const emptySnapshot = (): Snapshot => ({
        at: Date.now(),
        durationMs: 0,
        sources: {} as Snapshot['sources'],
        stages: [],
        processing: [],
        processingTotal: 0,
        staleLocks: [],
        staleLockTotal: 0,
        locksTotal: 0,
        liveWorkers: [],
        health: [],
        containers: [],
        ollama: { reachable: false, modelPresent: false },
      });
      const monitor = await Worker.create({
        connection: workerConnection,
        taskQueue: TaskQueue.monitor,
        workflowsPath: projectScript('workflows/index'),
        activities: {
          collectMetrics: () => Promise.resolve(emptySnapshot()),
          detectAnomalies: () => Promise.resolve({ fired, active: fired }),
        },
      });
      const actions = await Worker.create({
        connection: workerConnection,
        taskQueue: TaskQueue.actions,
        activities: { inspectContainers: () => Promise.resolve({ ok: true, containers: [] }) },
      });
      const run = Promise.all([monitor.run(), actions.run()]);
      try {
        const cycle = async (id: string): Promise<{ ms: number; result: CycleResult }> => {
          const t0 = performance.now();
          const result: CycleResult = await client.workflow.execute('monitoringCycleWorkflow', {
            taskQueue: TaskQueue.monitor,
            workflowId: id,
            args: [input],
          });
          return { ms: performance.now() - t0, result };
        };
        // Warm-up: the workflow bundle is loaded, the first task served.
        fired = [];
        const quiet = await cycle('bench-quiet');
        for (const n of counts) {
          const now = Date.now();
          fired = Array.from({ length: n }, (_, i) => syntheticAnomaly(i + n * 1_000_000, now));
          const starts = await cycle(`bench-start-${n}`);
          const signals = await cycle(`bench-signal-${n}`);
          const t0 = performance.now();
          await Promise.all(
            Array.from({ length: n }, (_, i) =>
              client.workflow.start('healingWorkflow', {
                taskQueue: 'bench-no-worker',
                workflowId: `bench-client-${n}-${i}`,
                args: [],
              }),
            ),
          );
          const clientMs = performance.now() - t0;
          const row: Row = {
            server,
            anomalies: n,
            quiet_cycle_ms: Math.round(quiet.ms),
            cycle_starting_ms: Math.round(starts.ms),
            started: starts.result.started.length,
            cycle_signalling_ms: Math.round(signals.ms),
            signalled: signals.result.signalled.length,
            client_parallel_starts_ms: Math.round(clientMs),
          };
          progress(`cycle starts: ${JSON.stringify(row)}`);
          rows.push(row);
        }
      } finally {
        monitor.shutdown();
        actions.shutdown();
        await run;
        await workerConnection.close();
        await connection.close();
      }
    } finally {
      await stopProcessGroup(dev);
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return rows;
}

/**
 * What open healings cost the healing worker: the compiled healing worker (`dist/workers/healing.js`, as `selfheal
 * up` spawns it: with its memory settings, loading a workflow bundle built beforehand) and the actions worker beside
 * it (the approval notices run there), against a dev server of its own (in memory), approval required; N healings
 * started at once all end up waiting for approval (one `notified` row each), i.e. open and, up to the cache's bound,
 * cached. Per HEALING_CACHED_WORKFLOWS value (undefined: the default): the healing worker's resident set at rest,
 * once all N wait, and its peak.
 */
export async function benchHealingCache(n: number, caches: (number | undefined)[]): Promise<Row[]> {
  const cli = findTemporalCli(process.env.TEMPORAL_CLI_PATH);
  if (!cli) throw new Error('no temporal CLI (scripts/dev.sh setup)');
  const script = path.join(PROJECT_ROOT, 'dist', 'workers', 'healing.js');
  const bundleDir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-bench-bundle-'));
  const rows: Row[] = [];
  try {
    const bundle = path.join(bundleDir, 'workflow-bundle.js');
    const bundler = path.join(PROJECT_ROOT, 'dist', 'workers', 'bundle-workflows.js');
    const bundling = spawn(process.execPath, [bundler, bundle], { stdio: ['ignore', 'ignore', 'inherit'] });
    const [bundled] = (await once(bundling, 'exit')) as [number | null];
    if (bundled !== 0) throw new Error(`bundling the workflows failed (exit ${bundled})`);
    for (const cache of caches) rows.push(await healingCacheRow(cli, script, bundle, n, cache));
  } finally {
    rmSync(bundleDir, { recursive: true, force: true });
  }
  return rows;
}

async function healingCacheRow(
  cli: string,
  script: string,
  bundle: string,
  n: number,
  cache: number | undefined,
): Promise<Row> {
  const t = await createTestEnv();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-bench-cache-'));
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const dev = await startDevServer({ cli, port, logFile: path.join(dir, 'temporal.log') });
  const workers: ChildProcess[] = [];
  try {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      ...t.env,
      TEMPORAL_ADDRESS: address,
      // Nothing listens there: every plan is the runbook's, at once.
      OLLAMA_HOST: `http://127.0.0.1:${await freePort()}`,
      AUTO_FIX_ENABLED: 'false',
      APPROVAL_TIMEOUT: '3600',
      LOG_LEVEL: 'warn',
      DOCKER_EVENTS: 'false',
      SDK_METRICS_PORT: '0',
      SELFHEAL_WORKFLOW_BUNDLE: bundle,
      ...(cache === undefined ? {} : { HEALING_CACHED_WORKFLOWS: String(cache) }),
    };
    const parsed = parseConfig(env);
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
    const connection = await Connection.connect({ address });
    await registerSearchAttributes(connection, 'default');
    const client = new Client({ connection, namespace: 'default' });
    const start = (file: string): { proc: ChildProcess; exited: Promise<never> } => {
      let out = '';
      // With an IPC channel, as `selfheal up` spawns them: a worker stops when the bench goes, even by SIGKILL.
      const proc = spawn(process.execPath, [file], { env: workerEnv(env), stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
      workers.push(proc);
      proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<never>((_, reject) =>
        proc.once('exit', (code) => reject(new Error(`${path.basename(file)} exited ${code}: ${out}`))),
      );
      // Killed at the end on purpose: that exit is no failure.
      exited.catch(() => undefined);
      return { proc, exited };
    };
    const healing = start(script);
    const actions = start(path.join(path.dirname(script), 'actions.js'));
    const proc = healing.proc;
    progress(`healing cache ${cache ?? 'default'}: healing worker started (pid ${proc.pid})`);
    await Promise.race([
      waitForPollers(connection, 'default', [
        { name: TaskQueue.healing, type: 'workflow' },
        { name: TaskQueue.healing, type: 'activity' },
        { name: TaskQueue.actions, type: 'activity' },
      ]),
      healing.exited,
      actions.exited,
    ]);
    await new Promise((r) => setTimeout(r, 3_000));
    const rest = procMiB(proc.pid!, 'VmRSS');
    progress(`healing cache ${cache ?? 'default'}: worker polls, ${toMB(rest)} MB at rest; starting ${n} healings`);
    // Real stale locks: a healing re-runs its detector, and one whose anomaly is gone ends without waiting.
    const anomalies = await Promise.all(
      Array.from({ length: n }, () => staleLock(t, { ownerPrefix: 'bench-dead-', documentIds: 1e12 })),
    );
    const input = (anomaly: Anomaly): HealingInput => ({
      anomaly,
      policy: healingPolicy(parsed.config),
      thresholds: thresholdsFrom(parsed.config),
      containers: [],
      containerLabels: [],
    });
    const t0 = performance.now();
    await Promise.all(
      anomalies.map((a) =>
        client.workflow.start('healingWorkflow', {
          taskQueue: TaskQueue.healing,
          workflowId: healingWorkflowId(a.type, a.target),
          args: [input(a)],
        }),
      ),
    );
    let notified = 0;
    await Promise.race([
      waitFor(
        async () => {
          const r = await t.pool.query<{ n: number }>(
            "SELECT count(DISTINCT workflow_id)::int AS n FROM healing_log WHERE step = 'notified'",
          );
          if (r.rows[0]!.n !== notified) progress(`healing cache: ${(notified = r.rows[0]!.n)} waiting`);
          return r.rows[0]!.n >= n;
        },
        { timeoutMs: 900_000, intervalMs: 1_000, what: `${n} healings waiting for approval` },
      ),
      healing.exited,
      actions.exited,
    ]);
    const seconds = (performance.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 3_000));
    const waiting = procMiB(proc.pid!, 'VmRSS');
    const row: Row = {
      healing_cached_workflows: cache ?? `default (${HEALING_CACHED_WORKFLOWS_DEFAULT})`,
      open_healings: n,
      seconds_to_all_waiting: round1(seconds),
      rss_mb_at_rest: toMB(rest),
      rss_mb_all_waiting: toMB(waiting),
      peak_rss_mb: toMB(procMiB(proc.pid!, 'VmHWM')),
      mb_per_open_healing:
        rest !== undefined && waiting !== undefined ? Math.round((toMB(waiting - rest)! / n) * 100) / 100 : undefined,
    };
    progress(`healing cache: ${JSON.stringify(row)}`);
    await connection.close();
    return row;
  } finally {
    await Promise.all(workers.map((w) => stopChild(w)));
    await stopProcessGroup(dev);
    rmSync(dir, { recursive: true, force: true });
    await t.cleanup();
  }
}
