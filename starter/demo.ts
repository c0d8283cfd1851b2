/**
 * `selfheal demo [--auto-approve] [--json] [--ui-port 8233]`: brings the local system up with the reference pipeline
 * (as `selfheal up` does), keeps documents flowing, waits for a baseline, then injects one fault per seed class, one
 * at a time, and follows each healing through its `status` query to a terminal phase on a live timeline. Ends with a
 * summary table (or JSON). Ctrl-C stops everything it started.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Client, Connection, ScheduleNotFoundError } from '@temporalio/client';
import Docker from 'dockerode';
import { Redis } from 'ioredis';
import type pg from 'pg';
import { CONFIG_EXIT_CODE, formatConfigProblems, parseConfig } from '../core/config';
import { createKeys } from '../core/keys';
import { createPool } from '../db/pool';
import { createChaos, runChaos, type Chaos, type ChaosResult } from '../pipeline/chaos';
import { readRegistrations, type WorkerRegistration } from '../pipeline/registry';
import { answers200 } from '../pipeline/runner';
import { healingWorkflowId, MONITOR_SCHEDULE_ID } from '../workflows/definitions';
import { announceSettings, describeInjection, formatDemoSummary } from './demo-output';
import { DEMO_APPROVER, DEMO_DEFAULTS } from './demo-settings';
import { demoSteps } from './demo-steps';
import { stopDemo } from './demo-stop';
import { createTracker, fillRow, POLL_MS, stepHealing, type Tracked } from './demo-tracker';
import { startTraffic, TRAFFIC } from './demo-traffic';
import { DemoError, DemoInterrupted, TERMINAL, type DemoResult, type DemoStepResult } from './demo-types';
import { startReferencePipeline } from './pipeline-up';
import { temporalAnswers } from '../workers/temporal-connection';
import { dataDir, up, type UpHandle } from './up';
import { errorMessage } from '../core/errors';

export { DEMO_APPROVER, DEMO_DEFAULTS };
export { demoSteps, formatDemoSummary, DemoError };
export type { DemoResult, DemoStepResult, OtherHealing, StepOutcome } from './demo-types';

const isSet = (v: string | undefined) => v !== undefined && v.trim() !== '';

/**
 * The demo's environment: the caller's, plus DEMO_DEFAULTS for what it leaves unset, plus a container-name prefix
 * of its own (restart cooldowns and the circuit breaker are per container name, so a second demo within the hour
 * must not inherit the first one's restarts, and a running `selfheal up` keeps its containers).
 */
export function demoEnvironment(env: NodeJS.ProcessEnv): {
  env: NodeJS.ProcessEnv;
  applied: Record<string, string>;
  kept: Record<string, string>;
} {
  const out: NodeJS.ProcessEnv = { ...env };
  const applied: Record<string, string> = {};
  const kept: Record<string, string> = {};
  for (const [key, value] of Object.entries(DEMO_DEFAULTS)) {
    if (isSet(env[key])) kept[key] = env[key]!.trim();
    else out[key] = applied[key] = value;
  }
  if (!isSet(env.PIPELINE_CONTAINER_PREFIX)) {
    out.PIPELINE_CONTAINER_PREFIX =
      applied.PIPELINE_CONTAINER_PREFIX = `pipeline-demo-${randomBytes(3).toString('hex')}`;
  }
  return { env: out, applied, kept };
}

export interface DemoOptions {
  /** The caller's environment (demo defaults are added to it). */
  env: NodeJS.ProcessEnv;
  autoApprove: boolean;
  /** Web UI port: of the dev server `up` starts, and of the links. */
  uiPort: number;
  /** Timeline lines. */
  say: (line: string) => void;
  /** Aborted on Ctrl-C: the demo stops, clears its faults and stops everything it started. */
  signal: AbortSignal;
}

/** Runs the whole demo; resolves with the summary, also when interrupted (then `interrupted` is true). */
export async function runDemo(opts: DemoOptions): Promise<DemoResult> {
  const t00 = Date.now();
  const { say, signal, autoApprove } = opts;
  const demo = demoEnvironment(opts.env);
  const parsed = parseConfig(demo.env);
  if (!parsed.ok) throw new DemoError(formatConfigProblems(parsed.problems));
  const config = parsed.config;
  const userConfig = parseConfig(opts.env);
  if (autoApprove && config.APPROVERS.length > 0 && !config.APPROVERS.includes(DEMO_APPROVER)) {
    throw new DemoError(
      `--auto-approve approves as "${DEMO_APPROVER}", which APPROVERS does not list: add it, or run without --auto-approve`,
    );
  }
  const ns = config.TEMPORAL_NAMESPACE;
  const uiBase = `http://localhost:${opts.uiPort}/namespaces/${encodeURIComponent(ns)}/workflows`;
  const link = (workflowId: string) => `${uiBase}/${encodeURIComponent(workflowId)}`;

  announceSettings(say, demo, config.AUTO_FIX_ENABLED, autoApprove);

  const result: DemoResult = {
    ok: false,
    interrupted: false,
    namespace: ns,
    temporalAddress: config.TEMPORAL_ADDRESS,
    webUi: uiBase,
    autoApprove,
    settings: demo.applied,
    pipeline: [],
    baseline: null,
    steps: [],
    otherHealings: [],
    totalSeconds: 0,
  };

  const checkAbort = () => {
    if (signal.aborted) throw new DemoInterrupted('interrupted');
  };
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      if (signal.aborted) return resolve();
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      }
      signal.addEventListener('abort', done);
    });

  // Whether the Schedule exists before the demo: one the demo creates is deleted at the end; one it found is put
  // back to the caller's configuration (the demo's monitor rewrote it with demo thresholds).
  let scheduleExisted: boolean | undefined;
  if (await temporalAnswers(config.TEMPORAL_ADDRESS)) {
    const connection = await Connection.connect({ address: config.TEMPORAL_ADDRESS });
    try {
      await new Client({ connection, namespace: ns }).schedule.getHandle(MONITOR_SCHEDULE_ID).describe();
      scheduleExisted = true;
    } catch (err) {
      if (!(err instanceof ScheduleNotFoundError)) throw err;
      scheduleExisted = false;
    } finally {
      await connection.close();
    }
  }

  let handle: UpHandle | undefined;
  let connection: Connection | undefined;
  let pool: pg.Pool | undefined;
  let redis: Redis | undefined;
  let chaos: Chaos | undefined;
  let traffic: { stop(): Promise<void> } | undefined;
  const tracked = new Map<string, Tracked>();
  /** The step under way, so that an interrupt still reports what its healing had reached. */
  let current: { row: DemoStepResult; injectedAt: number } | undefined;

  try {
    handle = await up({
      config,
      env: demo.env,
      pipeline: true,
      uiPort: opts.uiPort,
      say: (line) => say(`up: ${line}`),
      startPipeline: startReferencePipeline,
    });
    say(`up: ready in ${handle.startupSeconds.toFixed(1)} s; healings in the Web UI: ${uiBase}`);
    checkAbort();

    connection = await Connection.connect({ address: config.TEMPORAL_ADDRESS });
    const client = new Client({ connection, namespace: ns });
    pool = createPool(config.DATABASE_URL, { max: 3, application: 'selfheal-demo' });
    redis = new Redis(config.REDIS_URL, { maxRetriesPerRequest: 2 });
    const keys = createKeys(config.REDIS_KEY_PREFIX);
    chaos = createChaos({
      pool,
      redis,
      keys,
      docker: new Docker(),
      spawnEnv: demo.env,
      logDir: path.join(dataDir(demo.env), 'logs', 'pipeline'),
    });

    // The workers up started (registrations that answer now; a crashed earlier run may have left others).
    const regs = await readRegistrations(redis, keys);
    const workers: WorkerRegistration[] = [];
    for (const r of regs) if (await answers200(r.healthUrl)) workers.push(r);
    result.pipeline = workers.map((w) => ({
      worker: w.worker,
      stage: w.stage,
      kind: w.kind,
      container: w.container ?? null,
    }));
    const steps = demoSteps(workers);

    const tracker = createTracker({
      client,
      tracked,
      since: new Date(t00 - 1_000).toISOString(),
      autoApprove,
      approvalTimeout: config.APPROVAL_TIMEOUT,
      link,
      say,
      sleep,
      checkAbort,
    });
    const { poll, stamp, awaitingApproval, pollUntil } = tracker;

    // ---- traffic and baseline -------------------------------------------------------------------------------
    traffic = startTraffic(pool, redis, keys, (err) => say(`traffic: ${err}`), sleep, signal);
    const baselineStart = Date.now();
    const baselineMs =
      (config.ERROR_RATE_WINDOW + config.SLOWDOWN_MIN_SAMPLES * config.MONITOR_INTERVAL + 2 * config.MONITOR_INTERVAL) *
      1000;
    say(
      `baseline: ${(TRAFFIC.perTick * 1000) / TRAFFIC.tickMs} documents/s for ${baselineMs / 1000} s (the slowdown detector needs normal timings first)`,
    );
    const db = pool;
    const completedSince = async (from: number) =>
      (
        await db.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM document_events WHERE outcome = 'completed' AND at >= to_timestamp($1 / 1000.0)",
          [from],
        )
      ).rows[0]!.n;
    await pollUntil(
      async () => Date.now() - baselineStart >= baselineMs && (await completedSince(baselineStart)) > 0,
      baselineMs + 60_000,
    );
    const baselineSeconds = (Date.now() - baselineStart) / 1000;
    const perSecond = (await completedSince(baselineStart)) / baselineSeconds;
    result.baseline = { seconds: Number(baselineSeconds.toFixed(1)), documentsPerSecond: Number(perSecond.toFixed(1)) };
    say(`baseline: ${perSecond.toFixed(1)} stage completions/s over ${baselineSeconds.toFixed(1)} s`);
    if (perSecond === 0) throw new DemoError('no document was processed during the baseline: see the pipeline logs');

    // Bounds: detection within the slowest threshold plus the fire cycles, plus a minute; a healing's active time
    // (without approval waits) within two minutes plus a few verifications.
    const slowestThreshold = Math.max(
      config.QUEUE_STALL_THRESHOLD,
      config.STUCK_DOCUMENT_THRESHOLD,
      config.ERROR_RATE_WINDOW,
      config.HEALTH_FAILURES_BEFORE_UNHEALTHY * config.MONITOR_INTERVAL,
    );
    const detectBoundMs = (slowestThreshold + (config.ANOMALY_FIRE_CYCLES + 2) * config.MONITOR_INTERVAL + 60) * 1000;
    const healBoundMs = (120 + 4 * (config.VERIFY_DELAY + config.ERROR_RATE_WINDOW)) * 1000;

    const settle = async () => {
      const open = () => [...tracked.values()].every((t) => t.closed);
      if (!(await pollUntil(open, healBoundMs))) say('settle: some healings are still open; going on');
      const healthy = async () => (await Promise.all(workers.map((w) => answers200(w.healthUrl)))).every(Boolean);
      if (!(await pollUntil(healthy, 30_000))) say('settle: not every pipeline worker answers 200; going on');
    };
    await settle();

    // ---- the faults -----------------------------------------------------------------------------------------
    for (const [i, spec] of steps.entries()) {
      checkAbort();
      const commands = spec.chaos.map((c) => c.join(' '));
      say('');
      say(`── ${i + 1}/${steps.length} ${spec.fault}: selfheal chaos ${commands.join(' ; selfheal chaos ')}`);
      const injectedAt = Date.now();
      tracker.startStep(i, injectedAt);
      const row: DemoStepResult = {
        fault: spec.fault,
        chaos: commands,
        anomalyType: spec.type,
        target: '',
        workflowId: null,
        runId: null,
        webUi: null,
        detectedSeconds: null,
        actions: [],
        action: null,
        outcome: 'not_detected',
        healSeconds: null,
        decidedBy: null,
        note: null,
      };
      result.steps.push(row);
      current = { row, injectedAt };
      const results: ChaosResult[] = [];
      try {
        for (const args of spec.chaos) {
          const r = await runChaos(chaos, args[0]!, args.slice(1));
          results.push(r);
          say(`${stamp(undefined, Date.now())} fault injected: ${describeInjection(r)}`);
        }
      } catch (err) {
        row.outcome = 'injection_failed';
        row.note = errorMessage(err);
        say(`${stamp(undefined, Date.now())} injection failed: ${row.note}`);
      }
      if (row.outcome !== 'injection_failed') {
        row.target = spec.target(results);
        const id = healingWorkflowId(spec.type, row.target);
        row.workflowId = id;
        row.webUi = link(id);
        const primary = () => stepHealing(tracked, id, injectedAt);
        let active = 0;
        for (;;) {
          checkAbort();
          await poll();
          const t = primary();
          if (t?.closed) break;
          if (!t && Date.now() - injectedAt > detectBoundMs) {
            row.note = `no ${spec.type} healing for ${row.target} within ${Math.round(detectBoundMs / 1000)} s`;
            say(`${stamp(undefined, Date.now())} ${row.note}`);
            break;
          }
          if (t && active > healBoundMs) {
            row.outcome = 'timed_out';
            row.note = `still ${t.status?.phase ?? 'running'} after ${Math.round(healBoundMs / 1000)} s (approval waits not counted)`;
            say(`${stamp(t, Date.now())} ${id}  ${row.note}`);
            break;
          }
          const before = Date.now();
          await sleep(POLL_MS);
          if (t && !awaitingApproval()) active += Date.now() - before;
        }
        fillRow(tracked, row, injectedAt);
      }
      // Undo what is left of the fault (a restart cures the process faults; the peer of a stalled stage is still
      // hung; a killed worker the healing did not restart is started again).
      const cleared = await chaos.clear();
      const faultsCleared = cleared.faultsCleared as string[];
      const failed = cleared.failed as { fault: string; error: string }[];
      if (faultsCleared.length > 0) say(`${stamp(undefined, Date.now())} fault cleared: ${faultsCleared.join(', ')}`);
      for (const f of failed) say(`${stamp(undefined, Date.now())} clearing ${f.fault} failed: ${f.error}`);
      await settle();
    }
    result.ok = result.steps.every((s) => TERMINAL.includes(s.outcome));
  } catch (err) {
    if (!(err instanceof DemoInterrupted)) throw err;
    result.interrupted = true;
    if (current) fillRow(tracked, current.row, current.injectedAt);
    for (const s of result.steps) if (!TERMINAL.includes(s.outcome)) s.outcome = 'interrupted';
  } finally {
    await stopDemo(
      { handle, connection, pool, redis, chaos, traffic },
      { say, namespace: ns, tracked, result, scheduleExisted, userConfig },
    );
  }
  result.totalSeconds = Number(((Date.now() - t00) / 1000).toFixed(1));
  return result;
}

/**
 * `selfheal demo`'s action (cli.ts defines the command): its own configuration parse, since the demo adds its
 * defaults to the environment first.
 */
export async function demoCommand(opts: { autoApprove?: boolean; json?: boolean; uiPort: number }): Promise<void> {
  const parsed = parseConfig(demoEnvironment(process.env).env);
  if (!parsed.ok) {
    process.stderr.write(formatConfigProblems(parsed.problems) + '\n');
    process.exit(CONFIG_EXIT_CODE);
  }
  const out = opts.json ? process.stderr : process.stdout;
  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = () => {
    if (++interrupts > 1) process.exit(130);
    out.write('\ninterrupted: stopping everything the demo started (Ctrl-C again to quit at once)\n');
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const result = await runDemo({
      env: process.env,
      autoApprove: Boolean(opts.autoApprove),
      uiPort: opts.uiPort,
      say: (line) => out.write(`${line}\n`),
      signal: controller.signal,
    });
    if (opts.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    else process.stdout.write(`\n${formatDemoSummary(result)}\ndemo took ${result.totalSeconds} s\n`);
    process.exitCode = result.interrupted ? 130 : result.ok ? 0 : 1;
  } catch (err) {
    process.stderr.write(`selfheal: ${errorMessage(err).split('\n')[0]}\n`);
    process.exitCode = 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
