/**
 * `selfheal demo [--auto-approve] [--json] [--ui-port 8233]`: brings the local system up with the reference pipeline
 * (as `selfheal up` does), keeps documents flowing, waits for a baseline, then injects one fault per seed class, one
 * at a time, and follows each healing through its `status` query to a terminal phase on a live timeline. Ends with a
 * summary table (or JSON). Ctrl-C stops everything it started.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import {
  Client,
  Connection,
  ScheduleNotFoundError,
  WorkflowNotFoundError,
  type WorkflowExecutionInfo,
} from '@temporalio/client';
import Docker from 'dockerode';
import { Redis } from 'ioredis';
import type pg from 'pg';
import { CONFIG_EXIT_CODE, formatConfigProblems, parseConfig } from '../core/config';
import { createKeys, STAGES, type Keys } from '../core/keys';
import type { AnomalyType, HealPhase } from '../core/types';
import { createPool } from '../db/pool';
import { createChaos, runChaos, type Chaos, type ChaosResult } from '../pipeline/chaos';
import { generateDocuments } from '../pipeline/generator';
import { readRegistrations, type WorkerRegistration } from '../pipeline/registry';
import { answers200 } from '../pipeline/runner';
import {
  approveSignal,
  healingWorkflowId,
  MONITOR_SCHEDULE_ID,
  SearchAttr,
  statusQuery,
  WorkflowType,
} from '../workflows/definitions';
import type { HealingStatus } from '../workflows/healing';
import { formatTable } from './output';
import { startReferencePipeline } from './pipeline-up';
import { ensureMonitorSchedule } from './schedule';
import { temporalAnswers } from './temporal-local';
import { DEMO_APPROVER, DEMO_DEFAULTS } from './demo-settings';
import { dataDir, up, type UpHandle } from './up';

export { DEMO_APPROVER, DEMO_DEFAULTS };

/** Phases a healing ends in. */
const TERMINAL: readonly string[] = ['healed', 'escalated', 'rejected', 'failed'] satisfies HealPhase[];

/** Documents per tick and tick length of the steady traffic: 40 documents/s. */
const TRAFFIC = { perTick: 10, tickMs: 250 };
const POLL_MS = 500;

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

export class DemoError extends Error {
  readonly type = 'demo_failed';
}
class DemoInterrupted extends Error {
  readonly type = 'interrupted';
}

/** Outcome of a step: the healing's terminal phase, or why there is none. */
export type StepOutcome = HealPhase | 'not_detected' | 'timed_out' | 'injection_failed' | 'interrupted';

export interface DemoStepResult {
  /** Seed fault class, as `selfheal chaos` names it. */
  fault: string;
  /** The `selfheal chaos` invocations that injected it. */
  chaos: string[];
  anomalyType: AnomalyType;
  target: string;
  workflowId: string | null;
  runId: string | null;
  webUi: string | null;
  /** Seconds from injection to the monitor's detection. */
  detectedSeconds: number | null;
  /** Actions taken, in order (a ladder may take several). */
  actions: string[];
  /** The remedy: the last action taken, else the plan's action. */
  action: string | null;
  outcome: StepOutcome;
  /** Seconds from injection to the terminal phase. */
  healSeconds: number | null;
  decidedBy: string | null;
  note: string | null;
}

export interface OtherHealing {
  workflowId: string;
  anomalyType: string;
  target: string;
  phase: string;
  /** The fault being demonstrated when it started, or `baseline`. */
  during: string;
}

export interface DemoResult {
  ok: boolean;
  interrupted: boolean;
  namespace: string;
  temporalAddress: string;
  webUi: string;
  autoApprove: boolean;
  /** Demo-scaled settings applied (variables the environment did not set). */
  settings: Record<string, string>;
  pipeline: { worker: string; stage: string; kind: string; container: string | null }[];
  baseline: { seconds: number; documentsPerSecond: number } | null;
  steps: DemoStepResult[];
  otherHealings: OtherHealing[];
  totalSeconds: number;
}

/** One scripted fault: what to inject and which healing it must lead to. */
interface StepSpec {
  fault: string;
  chaos: string[][];
  type: AnomalyType;
  /** The anomaly's target; stale locks are named by their owner, which the injection makes up. */
  target: (results: ChaosResult[]) => string;
}

/**
 * One fault per seed class, in order. Restarts are spread over the containers (kill: a worker of the last stage;
 * errors: the second worker of the first stage; slowness: the first) so that no container nears the circuit
 * breaker (3 restarts an hour).
 */
export function demoSteps(workers: WorkerRegistration[]): StepSpec[] {
  const first = STAGES[0];
  const last = STAGES[STAGES.length - 1]!;
  const of = (stage: string) => workers.filter((w) => w.stage === stage);
  const [a, b] = of(first);
  const victim = of(last)[0];
  if (!a || !b || !victim) {
    throw new DemoError(`the demo needs two ${first} workers and a ${last} worker; found ${workers.length} workers`);
  }
  const name = (w: WorkerRegistration) => w.container ?? w.worker;
  return [
    {
      fault: 'stuck-documents',
      chaos: [['stuck-documents', '5', first]],
      type: 'stuck_documents',
      target: () => first,
    },
    {
      fault: 'kill-worker',
      chaos: [['kill-worker', victim.worker]],
      type: 'unhealthy_container',
      target: () => name(victim),
    },
    {
      fault: 'error-rate',
      chaos: [['error-rate', first, '0.9', b.worker]],
      type: 'error_rate_spike',
      target: () => first,
    },
    { fault: 'slow', chaos: [['slow', first, '25', a.worker]], type: 'processing_time_anomaly', target: () => first },
    {
      fault: `hang-worker silent (every ${first} worker)`,
      chaos: [
        ['hang-worker', a.worker, 'silent'],
        ['hang-worker', b.worker, 'silent'],
      ],
      type: 'stalled_queue',
      target: () => first,
    },
    {
      fault: 'stale-lock',
      chaos: [['stale-lock', '3']],
      type: 'stale_locks',
      target: (results) => {
        const owner = results[0]?.owner;
        return typeof owner === 'string' ? owner : '';
      },
    },
  ];
}

/** One line saying what a fault really did. */
function describeInjection(r: ChaosResult): string {
  const s = (v: unknown) => (typeof v === 'string' || typeof v === 'number' ? String(v) : JSON.stringify(v));
  switch (r.fault) {
    case 'stuck-documents':
      return `${(r.documents as unknown[]).length} documents left processing on ${s(r.stage)} by ${s(r.owner)}, a worker with no heartbeat`;
    case 'kill-worker':
      return r.kind === 'container'
        ? `docker kill of container ${s(r.container)}`
        : `SIGKILL of ${s(r.worker)} (pid ${s(r.pid)})`;
    case 'error-rate':
      return `${Number(r.fraction) * 100}% of ${r.worker ? `${s(r.worker)}'s` : 'the'} ${s(r.stage)} documents fail`;
    case 'slow':
      return `${r.worker ? `${s(r.worker)}'s` : 'the'} ${s(r.stage)} processing ${s(r.factor)}x slower`;
    case 'hang-worker':
      return `${s(r.worker)} stops taking documents${r.silent ? ', /health still answers 200' : ', /health answers 503'}`;
    case 'stale-lock':
      return `${(r.documents as unknown[]).length} document locks held by ${s(r.owner)}, which has no heartbeat`;
    default:
      return JSON.stringify(r);
  }
}

const PHASE_LABEL: Partial<Record<HealPhase, string>> = {
  analyzing: 'analysing',
  awaiting_approval: 'awaiting approval',
  rate_limited: 'rate limited',
};

const oneLine = (text: string, max = 160) => {
  const t = text.replace(/\s+/g, ' ').trim();
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
};

/** A healing workflow run the demo has seen start. */
interface Tracked {
  workflowId: string;
  runId: string;
  type: string;
  target: string;
  startedAt: number;
  /** Step it started during (-1: the baseline), and the time its elapsed seconds count from. */
  step: number;
  t0: number;
  closed: boolean;
  status?: HealingStatus;
  printed: number;
  decisionShown: boolean;
  /** Plan ids approved by the demo, or whose approve/reject commands were shown. */
  handledPlans: Set<string>;
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

  const applied = Object.entries(demo.applied).map(([k, v]) => `${k}=${v}`);
  say(
    applied.length > 0
      ? `demo: demo-scaled settings for variables your environment does not set: ${applied.join(' ')}`
      : 'demo: every demo setting comes from your environment',
  );
  if (Object.keys(demo.kept).length > 0) {
    say(
      `demo: kept from your environment: ${Object.entries(demo.kept)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ')}`,
    );
  }
  say(
    `demo: ${config.AUTO_FIX_ENABLED ? 'AUTO_FIX_ENABLED=true' : 'auto-fix is off'}; ${autoApprove ? `plans awaiting approval are approved by "${DEMO_APPROVER}"` : 'plans awaiting approval wait for you (the commands are shown)'}`,
  );

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
  /** The step's row from its healing (found by workflow id, started after the injection). */
  const fillRow = (row: DemoStepResult, injectedAt: number) => {
    const t = [...tracked.values()].find((x) => x.workflowId === row.workflowId && x.startedAt >= injectedAt - 1_000);
    if (!t) return;
    row.runId = t.runId;
    const st = t.status;
    if (st) {
      row.detectedSeconds = Number(((st.anomaly.detectedAt - injectedAt) / 1000).toFixed(1));
      row.actions = st.actions.map((a) => a.action);
      row.action = row.actions.at(-1) ?? st.plan?.action ?? null;
      row.decidedBy = st.decision ? st.decision.by : null;
      if (t.closed) {
        row.outcome = TERMINAL.includes(st.phase) ? st.phase : 'failed';
        row.healSeconds = Number((((st.history.at(-1)?.at ?? Date.now()) - injectedAt) / 1000).toFixed(1));
        row.note = st.history.at(-1)?.note ?? null;
      }
    } else if (t.closed) {
      row.outcome = 'failed';
      row.note = 'the workflow run did not complete';
    }
  };

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

    // ---- the tracker: every healing started since the demo began, followed through its status query ---------
    let currentStep = -1;
    let stepT0 = Date.now();
    const since = new Date(t00 - 1_000).toISOString();
    const stamp = (t: Tracked | undefined, at: number) => {
      const s = ((at - (t?.t0 ?? stepT0)) / 1000).toFixed(1);
      return `[${s.padStart(6)}s]`;
    };

    const follow = async (t: Tracked, listed: WorkflowExecutionInfo) => {
      const h = client.workflow.getHandle(t.workflowId, t.runId);
      const name = listed.status.name;
      if (name === 'RUNNING') {
        const st = (await h.query(statusQuery).catch(() => undefined)) as HealingStatus | undefined;
        if (st) t.status = st;
      } else if (name === 'COMPLETED') {
        t.status = (await h.result()) as HealingStatus;
        t.closed = true;
      } else {
        t.closed = true;
        say(`${stamp(t, Date.now())} ${t.workflowId}  ${name.toLowerCase()} (the run did not complete)`);
      }
      const st = t.status;
      if (!st) return;
      // New timeline entries and the decision, in the workflow's order.
      const events = st.history
        .slice(t.printed)
        .map((e) => ({ at: e.at, text: `${PHASE_LABEL[e.phase] ?? e.phase}: ${oneLine(e.note)}` }));
      if (st.decision && !t.decisionShown) {
        t.decisionShown = true;
        const d = st.decision;
        events.push({
          at: d.at,
          text: `${d.decision === 'approve' ? 'approved' : 'rejected'} by ${d.by} (${d.via}, plan ${d.planId})`,
        });
      }
      for (const e of events.sort((x, y) => x.at - y.at)) say(`${stamp(t, e.at)} ${t.workflowId}  ${e.text}`);
      t.printed = st.history.length;
      if (!st.decision) t.decisionShown = false;
      const plan = st.plan;
      if (!t.closed && st.phase === 'awaiting_approval' && plan && !st.decision && !t.handledPlans.has(plan.id)) {
        t.handledPlans.add(plan.id);
        if (autoApprove) {
          await h.signal(approveSignal, { by: DEMO_APPROVER, reason: 'selfheal demo --auto-approve', planId: plan.id });
        } else {
          const cli = 'selfheal';
          say(
            `           ${t.workflowId} waits for you: ${plan.action} (plan ${plan.id}, ${plan.source}, confidence ${plan.confidence.toFixed(2)})`,
          );
          say(`             approve: ${cli} approve ${t.workflowId} --by NAME --plan ${plan.id}`);
          say(`             reject:  ${cli} reject ${t.workflowId} --by NAME --reason TEXT --plan ${plan.id}`);
          say(`             (no decision within ${config.APPROVAL_TIMEOUT} s rejects it)`);
        }
      }
    };

    const poll = async () => {
      const query = `WorkflowType = '${WorkflowType.healing}' AND StartTime >= '${since}'`;
      for await (const wf of client.workflow.list({ query })) {
        let t = tracked.get(wf.runId);
        if (!t) {
          const sa = wf.typedSearchAttributes;
          t = {
            workflowId: wf.workflowId,
            runId: wf.runId,
            type: sa.get(SearchAttr.AnomalyType) ?? '?',
            target: sa.get(SearchAttr.HealTarget) ?? '?',
            startedAt: wf.startTime.getTime(),
            step: currentStep,
            t0: stepT0,
            closed: false,
            printed: 0,
            decisionShown: false,
            handledPlans: new Set(),
          };
          tracked.set(wf.runId, t);
          say(
            `${stamp(t, t.startedAt)} detected: ${t.type} on ${t.target}, workflow ${t.workflowId} started  ${link(t.workflowId)}`,
          );
        }
        if (!t.closed) await follow(t, wf);
      }
    };
    const awaitingApproval = () =>
      [...tracked.values()].some((t) => !t.closed && t.status?.phase === 'awaiting_approval');

    /**
     * Polls until `done()` or `boundMs` of active time pass; time while a healing awaits approval does not count
     * (that wait has its own bound, APPROVAL_TIMEOUT, after which the workflow rejects).
     */
    const pollUntil = async (done: () => boolean | Promise<boolean>, boundMs: number): Promise<boolean> => {
      let active = 0;
      for (;;) {
        checkAbort();
        await poll();
        if (await done()) return true;
        if (active > boundMs) return false;
        const before = Date.now();
        await sleep(POLL_MS);
        if (!awaitingApproval()) active += Date.now() - before;
      }
    };

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
      currentStep = i;
      stepT0 = injectedAt;
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
        row.note = err instanceof Error ? err.message : String(err);
        say(`${stamp(undefined, Date.now())} injection failed: ${row.note}`);
      }
      if (row.outcome !== 'injection_failed') {
        row.target = spec.target(results);
        const id = healingWorkflowId(spec.type, row.target);
        row.workflowId = id;
        row.webUi = link(id);
        const primary = () =>
          [...tracked.values()].find((t) => t.workflowId === id && t.startedAt >= injectedAt - 1_000);
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
        fillRow(row, injectedAt);
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
    if (current) fillRow(current.row, current.injectedAt);
    for (const s of result.steps) if (!TERMINAL.includes(s.outcome)) s.outcome = 'interrupted';
  } finally {
    say('');
    say('stopping: traffic, faults, open healings, the Schedule, then everything up started...');
    const quietly = async (what: string, body: () => Promise<unknown>) => {
      try {
        await body();
      } catch (err) {
        say(`stopping: ${what}: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
      }
    };
    if (traffic) await quietly('traffic', () => traffic!.stop());
    if (chaos) await quietly('clearing faults', () => chaos!.clear());
    if (connection) {
      const client = new Client({ connection, namespace: ns });
      for (const t of tracked.values()) {
        if (t.closed) continue;
        await quietly(`terminating ${t.workflowId}`, async () => {
          try {
            await client.workflow.getHandle(t.workflowId, t.runId).terminate('selfheal demo stopped');
            say(`stopping: terminated ${t.workflowId} (still ${t.status?.phase ?? 'running'})`);
          } catch (err) {
            // It ended between the last poll and now: nothing to stop.
            if (!(err instanceof WorkflowNotFoundError)) throw err;
          }
        });
      }
      await quietly('the Schedule', async () => {
        if (scheduleExisted === false) {
          await client.schedule.getHandle(MONITOR_SCHEDULE_ID).delete();
          say(`stopping: Schedule ${MONITOR_SCHEDULE_ID} deleted (the demo created it)`);
        } else if (userConfig.ok) {
          await ensureMonitorSchedule(client, userConfig.config);
          say(`stopping: Schedule ${MONITOR_SCHEDULE_ID} set back to your configuration`);
        }
      });
    }
    for (const t of tracked.values()) {
      const primary = result.steps.some((s) => s.runId === t.runId);
      if (primary) continue;
      result.otherHealings.push({
        workflowId: t.workflowId,
        anomalyType: t.type,
        target: t.target,
        phase: t.status?.phase ?? (t.closed ? 'failed' : 'running'),
        during: t.step < 0 ? 'baseline' : (result.steps[t.step]?.fault ?? '?'),
      });
    }
    redis?.disconnect();
    if (pool) await quietly('Postgres pool', () => pool!.end());
    if (connection) await quietly('Temporal connection', () => connection!.close());
    if (handle) await quietly('up', () => handle!.stop());
    say('stopped.');
  }
  result.totalSeconds = Number(((Date.now() - t00) / 1000).toFixed(1));
  return result;
}

/** New documents at a steady rate until stopped: error rates and processing means need traffic. */
function startTraffic(
  pool: pg.Pool,
  redis: Redis,
  keys: Keys,
  onError: (message: string) => void,
  sleep: (ms: number) => Promise<void>,
  signal: AbortSignal,
): { stop(): Promise<void> } {
  let stopped = false;
  let lastError = '';
  const done = (async () => {
    while (!stopped && !signal.aborted) {
      try {
        await generateDocuments({ pool, redis, keys, count: TRAFFIC.perTick });
        lastError = '';
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        if (message !== lastError) onError(message);
        lastError = message;
      }
      await sleep(TRAFFIC.tickMs);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await done;
    },
  };
}

/** The summary as a table: one row per fault. */
export function formatDemoSummary(result: DemoResult): string {
  const secs = (v: number | null) => (v === null ? '-' : `${v.toFixed(1)} s`);
  const rows = result.steps.map((s) => [
    s.fault,
    secs(s.detectedSeconds),
    s.actions.length > 0 ? s.actions.join(' -> ') : s.action ? `${s.action} (not run)` : '-',
    s.outcome,
    secs(s.healSeconds),
    s.workflowId ?? '-',
  ]);
  return formatTable(['fault', 'detected after', 'action', 'outcome', 'time to heal', 'workflow'], rows);
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
    process.stderr.write(`selfheal: ${(err instanceof Error ? err.message : String(err)).split('\n')[0]}\n`);
    process.exitCode = 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
