/**
 * The chaos soak (`npm run bench -- soak --minutes 30 [--seed N] [--write]`; a few-minute run of it is meant for
 * CI, once it passes there): the reference pipeline (worker containers) under a steady stream of documents, with every
 * fault of `selfheal chaos` injected at random times (a seeded RNG: the seed is printed, the same seed draws the same
 * schedule), several open at once, auto-fix on. Then a drain (no new faults, no new documents, the faults the soak
 * ends itself ended) until every document is terminal and no healing is open, and the checks:
 * - documents lost: not completed, failed or dead (quarantined) after the drain: must be 0;
 * - documents processed twice: more than one outcome in one stage in `document_events`: must be 0;
 * - false remediations: executed actions (not escalations) in `healing_log` whose healing no injected fault open at
 *   its detection accounts for (anomaly type, target and, for a restart, the container): must be 0;
 * - per fault: healed, escalated (escalated, rejected, failed), open (still running), gone (no healing: duplicate
 *   entries the workers took and skipped before they were detected) or missed (no healing at all);
 * - time from each fault to its healing's `healed` row, p50 and p95, per fault kind and overall.
 * Everything is read from the stores (Postgres rows, Redis, Docker), never from logs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Docker from 'dockerode';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import { scanAll } from '../activities/metrics';
import type { Keys, Stage } from '../core/keys';
import { errorMessage } from '../core/errors';
import { demuxDockerLog } from '../core/evidence';
import { createChaos, registerLlmProcess, type Chaos } from '../pipeline/chaos';
import { generateDocuments } from '../pipeline/generator';
import { processCommandLine, readRegistrations } from '../pipeline/registry';
import { answers200 } from '../pipeline/runner';
import { freePort } from '../starter/temporal-local';
import { nodeCommand, projectScript } from '../workers/project';
import { createTestEnv, pipelineBasePort, waitFor } from '../tests/helpers/env';
import { stopTestPipeline } from '../tests/helpers/pipeline';
import { percentile, progress, round1, type Row, writeMarkdown } from './common';
import { machine, mdTable, readResults, type BenchResults } from './report';

const ROOT = path.resolve(__dirname, '..');

/**
 * selfheal's settings for the soak, on top of the test configuration: auto-fix on, thresholds of seconds but with
 * room for a loaded 2-core machine (a 2 s cycle, a queue stalled for 15 s, 3 failed health checks), no restart
 * cooldown and a budget the faults cannot spend, low-confidence plans (stage-wide remedies) rejected after a minute.
 */
export const SOAK_ENV: Readonly<Record<string, string>> = {
  MONITOR_INTERVAL: '2',
  QUEUE_STALL_THRESHOLD: '15',
  ERROR_RATE_THRESHOLD: '0.2',
  ERROR_RATE_MIN_SAMPLES: '10',
  ERROR_RATE_WINDOW: '6',
  SLOWDOWN_FACTOR: '3',
  SLOWDOWN_MIN_SAMPLES: '5',
  STUCK_DOCUMENT_THRESHOLD: '30',
  LOST_DOCUMENT_THRESHOLD: '15',
  HEALTH_FAILURES_BEFORE_UNHEALTHY: '3',
  ANOMALY_FIRE_CYCLES: '2',
  ANOMALY_CLEAR_CYCLES: '3',
  AUTO_FIX_ENABLED: 'true',
  // Stalled queue's runbook restart (0.6) acts; stage-wide plans (0.5) wait for approval and are rejected.
  MIN_CONFIDENCE: '0.6',
  APPROVAL_TIMEOUT: '60',
  VERIFY_DELAY: '3',
  RESTART_COOLDOWN: '0',
  MAX_ACTIONS_PER_HOUR: '1000',
  LLM_TIMEOUT_MS: '2000',
  CONTAINER_ALLOWLIST: 'pipeline-*',
  METRICS_RETENTION: '3600',
  LOG_LEVEL: 'warn',
};

/** The fault kinds: every fault `selfheal chaos` offers (hang-worker twice: one worker, and silently a whole stage). */
export const SOAK_KINDS = [
  'kill-worker',
  'hang-worker',
  'hang-worker silent (stage)',
  'error-rate',
  'slow',
  'stale-lock',
  'stuck-documents',
  'llm-down',
  'redis-flush',
  'duplicate-entries',
  'poison',
] as const;
export type SoakKind = (typeof SOAK_KINDS)[number];

/** Documents per tick and tick length of the steady load: 40 documents/s, as the demo's. */
const TRAFFIC = { perTick: 10, tickMs: 250 };
/**
 * Faults the reference pipeline can absorb by itself before they are detected: duplicate and orphaned entries, which
 * a worker takes and skips (the document is not queued for its stage). One gone without a healing is `gone`; any
 * other fault without a healing is `missed`, whatever ended it (Docker's restart policy, say).
 */
const ABSORBED: ReadonlySet<SoakKind> = new Set(['duplicate-entries']);
/** Seconds after a fault ended during which anomalies it leaves behind (error windows, hysteresis) are its own. */
const SLACK_S = 30;
/** Most faults open at once. */
const MAX_OPEN = 3;

export interface SoakWorker {
  worker: string;
  stage: Stage;
  container: string;
  healthUrl: string;
}

/** A stand-in LLM server in a process of its own (`llm-down` SIGSTOPs it): models listed, every chat a 500. */
export interface LlmStandIn {
  url: string;
  pid: number;
  argv: string[];
  stop(): Promise<void>;
}

const LLM_SCRIPT = `
const http = require('node:http');
const model = process.argv[2];
http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    const p = new URL(req.url, 'http://x').pathname;
    res.setHeader('content-type', 'application/json');
    if (p === '/api/tags') return res.end(JSON.stringify({ models: [{ name: model, model }] }));
    if (p === '/api/version') return res.end('{"version":"0.0.0"}');
    res.statusCode = 500;
    res.end('{"error":"soak stand-in: no model"}');
  });
}).listen(Number(process.argv[1]), '127.0.0.1');
`;

export async function startLlmStandIn(model = 'llama3.2:3b'): Promise<LlmStandIn> {
  const port = await freePort();
  const child: ChildProcess = spawn(process.execPath, ['-e', LLM_SCRIPT, String(port), model], {
    stdio: 'ignore',
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(`${url}/api/tags`).catch(() => undefined))?.ok, {
    timeoutMs: 30_000,
    what: 'the stand-in LLM',
  });
  const pid = child.pid!;
  return {
    url,
    pid,
    argv: processCommandLine(pid) ?? [],
    async stop() {
      if (child.exitCode !== null) return;
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        /* gone */
      }
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** mulberry32: a small seeded PRNG, so that a seed repeats the schedule. */
function rngFrom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One injected fault and what may legitimately follow from it. */
export interface InjectedFault {
  n: number;
  kind: SoakKind;
  detail: string;
  injectedAt: number;
  /** When its effect was seen gone (healed, or ended by the soak); undefined: lasts until healed (data faults). */
  endedAt?: number;
  endedBy?: 'gone' | 'soak';
  /** The healings it must lead to: anomaly type and target (`*`: any target). */
  expect: { type: string; target: string }[];
  /** Anomalies it may also cause (documents a dead worker held, a stalled stage...). */
  allow: { type: string; target: string }[];
  /** Containers a restart may legitimately hit because of it. */
  containers: string[];
  /** Ends the fault if it still holds (worker and LLM faults); undefined for data faults, which only healing ends. */
  end?: () => Promise<void>;
  /** Whether the effect is gone (polled each second). */
  gone?: () => Promise<boolean>;
  /** Epoch ms after which the soak ends it itself. */
  expiresAt?: number;
}

export interface SoakOptions {
  pool: pg.Pool;
  redis: Redis;
  keys: Keys;
  docker: Docker;
  workers: SoakWorker[];
  llm: LlmStandIn;
  /** Environment of processes chaos may respawn (not used with container workers) and its log dir. */
  spawnEnv?: NodeJS.ProcessEnv;
  logDir?: string;
  minutes: number;
  seed: number;
  /** Seconds of normal traffic before the first fault (the slowdown detector needs a baseline). Default 40. */
  warmupSeconds?: number;
  /** Longest drain, seconds. Default 300. */
  drainSeconds?: number;
  say?: (line: string) => void;
}

export interface SoakFaultRow {
  n: number;
  kind: SoakKind;
  detail: string;
  injectedAt: string;
  /** `gone`: no healing, and the pipeline absorbed the fault before it was detected (ABSORBED kinds only). */
  outcome: 'healed' | 'escalated' | 'open' | 'gone' | 'missed';
  healSeconds: number | null;
  endedBy: string;
  healings: string[];
}

export interface SoakResult {
  measuredAt: string;
  machine: BenchResults['machine'];
  seed: number;
  minutes: number;
  settings: Record<string, string>;
  workers: string[];
  load: { mean1m: number; max1m: number; atEnd: number[] };
  drainSeconds: number;
  drainQuiet: boolean;
  documents: {
    total: number;
    byStatus: Record<string, number>;
    lost: number;
    /** Where the lost ones are: in a stage's queue (a backlog), in a processing list (taken), or in no list at all. */
    lostWhere: { inQueue: number; inProcessing: number; inNoList: number };
    processedTwice: number;
  };
  injectionsSkipped: number;
  healings: { runs: number; executed: number; byPhase: Record<string, number> };
  /** Each with what its healing was started for (the `detected` row): the summary and the evidence's source. */
  falseRemediations: {
    workflowId: string;
    action: string;
    target: string;
    container?: string;
    at: string;
    detected?: { at: string; summary?: string; source?: string };
    /**
     * A requeue's first documents (of its evidence) as they ended the soak: their row and every processing outcome
     * in `document_events`, to tell what took them out of every list.
     */
    documents?: DocumentTrail[];
    /**
     * A restart's container: its last log lines before the anomaly was detected (Docker's log of the container, both
     * streams), for diagnosis only (no check reads them).
     */
    containerLog?: string[];
  }[];
  faults: SoakFaultRow[];
  table: Row[];
  ok: boolean;
}

/** One document's row and processing outcomes, oldest first (`stage outcome worker at`). */
interface DocumentTrail {
  id: string;
  stage: string;
  status: string;
  workerId: string | null;
  attempts: number;
  requeues: number;
  createdAt: string;
  updatedAt: string;
  events: string[];
}

/** Documents of a false requeue shown in the soak's result. */
const TRAIL_DOCUMENTS = 5;

async function documentTrails(pool: pg.Pool, ids: unknown[]): Promise<DocumentTrail[]> {
  const wanted = ids
    .map(String)
    .filter((id) => /^\d{1,18}$/.test(id))
    .slice(0, TRAIL_DOCUMENTS);
  if (wanted.length === 0) return [];
  const { rows } = await pool.query<{
    id: string;
    stage: string;
    status: string;
    worker_id: string | null;
    attempts: number;
    requeue_count: number;
    created_at: Date;
    updated_at: Date;
    events: string[] | null;
  }>(
    `SELECT d.id::text, d.stage, d.status, d.worker_id, d.attempts, d.requeue_count, d.created_at, d.updated_at,
            (SELECT array_agg(e.stage || ' ' || e.outcome || ' ' || e.worker_id || ' ' || e.at::text ORDER BY e.id)
               FROM document_events e WHERE e.document_id = d.id) AS events
       FROM documents d WHERE d.id = ANY($1::bigint[]) ORDER BY d.id`,
    [wanted],
  );
  return rows.map((r) => ({
    id: r.id,
    stage: r.stage,
    status: r.status,
    workerId: r.worker_id,
    attempts: r.attempts,
    requeues: r.requeue_count,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
    events: r.events ?? [],
  }));
}

/** The last 30 lines of a container's log in the 10 minutes before `at`, or why there are none. */
async function containerLogBefore(docker: Docker, container: string, at: Date): Promise<string[]> {
  try {
    const until = Math.ceil(at.getTime() / 1000);
    const raw = await docker.getContainer(container).logs({
      stdout: true,
      stderr: true,
      timestamps: true,
      since: until - 600,
      until,
      follow: false,
    });
    return demuxDockerLog(raw)
      .split('\n')
      .filter((l) => l.trim().length > 0)
      .map((l) => l.slice(0, 400))
      .slice(-30);
  } catch (err) {
    return [`(no log: ${errorMessage(err)})`];
  }
}

interface RunRow {
  run_id: string;
  workflow_id: string;
  anomaly_type: string;
  target: string;
  started: Date;
  phase: string | null;
  ended: Date | null;
  /** The terminal row's note (why it escalated, what verification saw). */
  note: string | null;
}

async function healingRuns(pool: pg.Pool, since: Date): Promise<RunRow[]> {
  const { rows } = await pool.query<RunRow>(
    `SELECT run_id, min(workflow_id) AS workflow_id, min(anomaly_type) AS anomaly_type, min(target) AS target,
            min(created_at) AS started,
            (array_agg(step ORDER BY id DESC))[1] AS last_step,
            (array_agg(step ORDER BY id DESC) FILTER (WHERE step IN ('healed', 'escalated', 'rejected')))[1] AS phase,
            max(created_at) FILTER (WHERE step IN ('healed', 'escalated', 'rejected')) AS ended,
            (array_agg(coalesce(outcome, error) ORDER BY id DESC)
              FILTER (WHERE step IN ('healed', 'escalated', 'rejected', 'failed')))[1] AS note,
            max(created_at) AS last_at
       FROM healing_log WHERE created_at >= $1 GROUP BY run_id ORDER BY min(created_at)`,
    [since],
  );
  // A run whose last row is `failed` (an activity out of retries) ended too.
  return (rows as (RunRow & { last_step: string; last_at: Date })[]).map((r) =>
    r.phase === null && r.last_step === 'failed' ? { ...r, phase: 'failed', ended: r.last_at } : r,
  );
}

const matches = (list: { type: string; target: string }[], r: { anomaly_type: string; target: string }) =>
  list.some((e) => e.type === r.anomaly_type && (e.target === '*' || e.target === r.target));

/** Runs the soak against a pipeline and selfheal already up; resolves with the checks (never throws on a fault). */
export async function runSoak(opts: SoakOptions): Promise<SoakResult> {
  const { pool, redis, keys, docker, workers, llm } = opts;
  const say = opts.say ?? progress;
  const rng = rngFrom(opts.seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]!;
  const t0 = new Date(Date.now() - 1_000);
  const chaos: Chaos = createChaos({
    pool,
    redis,
    keys,
    docker,
    spawnEnv: opts.spawnEnv,
    logDir: opts.logDir,
    ollamaContainer: `no-such-ollama-${opts.seed}`,
  });
  await registerLlmProcess(redis, keys, { pid: llm.pid, url: llm.url, argv: llm.argv });
  const stages = [...new Set(workers.map((w) => w.stage))];
  const ofStage = (s: Stage) => workers.filter((w) => w.stage === s);
  const faults: InjectedFault[] = [];
  let skipped = 0;
  const loads: number[] = [];
  const stamp = () => new Date().toISOString().slice(11, 19);

  // ---- steady load ------------------------------------------------------------------------------------------------
  let trafficOn = true;
  const traffic = (async () => {
    let last = '';
    while (trafficOn) {
      try {
        await generateDocuments({ pool, redis, keys, count: TRAFFIC.perTick });
        last = '';
      } catch (err) {
        if (errorMessage(err) !== last) say(`traffic: ${errorMessage(err)}`);
        last = errorMessage(err);
      }
      await sleep(TRAFFIC.tickMs);
    }
  })();
  const loadTimer = setInterval(() => loads.push(os.loadavg()[0]!), 10_000);

  try {
    const warmup = (opts.warmupSeconds ?? 40) * 1000;
    say(`soak: seed ${opts.seed}, ${opts.minutes} min of faults after ${warmup / 1000} s of warm-up, 40 documents/s`);
    await sleep(warmup);

    // ---- faults -------------------------------------------------------------------------------------------------
    const open = () => faults.filter((f) => f.endedAt === undefined && f.end !== undefined);
    const watched = () => faults.filter((f) => f.endedAt === undefined && f.gone !== undefined);
    const openData = (kind: SoakKind) => faults.some((f) => f.kind === kind && !dataDone(f));
    /** Data faults count as open (for not stacking the same one) for a minute. */
    const dataDone = (f: InjectedFault) => f.end !== undefined || Date.now() - f.injectedAt > 60_000;
    const busy = (c: string) => open().some((f) => f.containers.includes(c));
    const running = async (c: string) =>
      (
        await docker
          .getContainer(c)
          .inspect()
          .catch(() => undefined)
      )?.State.Running === true;
    const idle = async (s?: Stage) => {
      const out: SoakWorker[] = [];
      for (const w of s ? ofStage(s) : workers)
        if (!busy(w.container) && (await running(w.container)) && (await answers200(w.healthUrl))) out.push(w);
      return out;
    };
    const faultsHash = () => redis.hgetall(keys.pipelineFaults());
    const hdel = async (...fields: string[]) => {
      await redis.hdel(keys.pipelineFaults(), ...fields);
    };
    const duration = () => (60 + rng() * 30) * 1000;

    /** Injects one fault of `kind`, or returns undefined when no target fits now (it is tried again later). */
    async function inject(kind: SoakKind): Promise<Omit<InjectedFault, 'n' | 'injectedAt'> | undefined> {
      const stage = pick(stages);
      switch (kind) {
        case 'kill-worker':
        case 'hang-worker': {
          const free = await idle();
          if (free.length === 0) return undefined;
          const w = pick(free);
          const c = w.container;
          const allow = [
            ...['stuck_documents', 'stalled_queue'].map((type) => ({ type, target: w.stage })),
            { type: 'poison_document', target: '*' },
            // A killed process leaves its lease (a stale lock named after it) and, between its commit and its push,
            // a document queued in the next stage in no list.
            { type: 'stale_locks', target: c },
            ...stages.map((s) => ({ type: 'lost_documents', target: s })),
          ];
          const common = {
            expect: [{ type: 'unhealthy_container', target: c }],
            allow,
            containers: [c],
            expiresAt: Date.now() + duration(),
          };
          if (kind === 'kill-worker') {
            await chaos.killWorker(w.worker);
            return {
              kind,
              detail: `kill-worker ${c}`,
              ...common,
              gone: () => running(c),
              end: async () => {
                if (!(await running(c))) await docker.getContainer(c).start();
              },
            };
          }
          await chaos.hangWorker(w.worker);
          return {
            kind,
            detail: `hang-worker ${c}`,
            ...common,
            gone: async () => (await faultsHash())[`hang:${w.worker}`] === undefined,
            end: () => hdel(`hang:${w.worker}`),
          };
        }
        case 'hang-worker silent (stage)': {
          const all = ofStage(stage);
          if ((await idle(stage)).length !== all.length || openData(kind)) return undefined;
          for (const w of all) await chaos.hangWorker(w.worker, true);
          const fields = all.map((w) => `hang:${w.worker}`);
          return {
            kind,
            detail: `hang-worker silent ${all.map((w) => w.container).join(', ')}`,
            expect: [
              { type: 'stalled_queue', target: stage },
              ...all.map((w) => ({ type: 'unhealthy_container', target: w.container })),
            ],
            allow: ['stuck_documents', 'lost_documents'].map((type) => ({ type, target: stage })),
            containers: all.map((w) => w.container),
            expiresAt: Date.now() + duration(),
            gone: async () => {
              const h = await faultsHash();
              return fields.every((f) => h[f] === undefined);
            },
            end: () => hdel(...fields),
          };
        }
        case 'error-rate':
        case 'slow': {
          if (faults.some((f) => f.kind === kind && f.endedAt === undefined && f.detail.includes(` ${stage} `)))
            return undefined;
          const free = await idle(stage);
          if (free.length === 0) return undefined;
          const w = pick(free);
          const field = `${kind}@${w.worker}`;
          if (kind === 'error-rate') await chaos.errorRate(stage, 0.9, w.worker);
          else await chaos.slow(stage, 25, w.worker);
          return {
            kind,
            detail: `${kind} ${stage} ${kind === 'error-rate' ? '0.9' : '25'} ${w.container}`,
            expect: [{ type: kind === 'error-rate' ? 'error_rate_spike' : 'processing_time_anomaly', target: stage }],
            allow: [],
            containers: [w.container],
            expiresAt: Date.now() + duration(),
            gone: async () => (await faultsHash())[field] === undefined,
            end: () => hdel(field),
          };
        }
        case 'stale-lock': {
          const r = await chaos.staleLocks(3);
          const owner = String(r.owner);
          return {
            kind,
            detail: `stale-lock 3 (owner ${owner})`,
            expect: [{ type: 'stale_locks', target: owner }],
            allow: [],
            containers: [],
          };
        }
        case 'stuck-documents': {
          await chaos.stuckDocuments(5, stage);
          return {
            kind,
            detail: `stuck-documents 5 ${stage}`,
            expect: [{ type: 'stuck_documents', target: stage }],
            allow: [],
            containers: [],
          };
        }
        case 'llm-down': {
          if (open().some((f) => f.kind === 'llm-down')) return undefined;
          await chaos.llmDown();
          const state = () => {
            try {
              return readFileSync(`/proc/${llm.pid}/stat`, 'utf8').split(') ')[1]?.[0];
            } catch {
              return undefined;
            }
          };
          return {
            kind,
            detail: 'llm-down (SIGSTOP of the LLM server)',
            expect: [{ type: 'llm_unavailable', target: 'ollama' }],
            allow: [],
            containers: [],
            expiresAt: Date.now() + (30 + rng() * 30) * 1000,
            gone: () => Promise.resolve(state() !== 'T'),
            end: async () => {
              process.kill(llm.pid, 'SIGCONT');
              await Promise.resolve();
            },
          };
        }
        case 'redis-flush': {
          if (openData(kind)) return undefined;
          // Not onto a backlog of more than one requeue's worth: over LOST_EVIDENCE_CAP (1,000) lost documents, the
          // first requeue leaves some, verification escalates and the rest stay lost (reported, not soaked again).
          const backlog = (await Promise.all(stages.map((s) => redis.llen(keys.queue(s))))).reduce((x, y) => x + y, 0);
          if (backlog > 400) return undefined;
          // A backlog first, so that the flush loses queued documents (with an empty queue it loses nothing).
          await generateDocuments({ pool, redis, keys, count: 300 });
          const r = await chaos.redisFlush();
          return {
            kind,
            detail: `redis-flush (${String(r.deleted)} keys, after a burst of 300 documents)`,
            expect: stages.map((s) => ({ type: 'lost_documents', target: s })),
            allow: stages.flatMap((s) =>
              ['stuck_documents', 'orphaned_entries', 'stalled_queue'].map((type) => ({ type, target: s })),
            ),
            containers: [],
          };
        }
        case 'duplicate-entries': {
          if (openData(kind)) return undefined;
          const first = stages[0]!;
          // Entries waiting in the queue to duplicate: a burst, orphans pushed behind it.
          await generateDocuments({ pool, redis, keys, count: 600 });
          const r = await chaos.duplicateEntries(5, first);
          const duplicates = (r.duplicates as string[]).map(String);
          const orphans = (r.orphans as string[]).map(String);
          return {
            kind,
            detail: `duplicate-entries 5 ${first} (${duplicates.length} duplicates, ${orphans.length} orphans, after a burst of 600 documents)`,
            expect: [{ type: 'orphaned_entries', target: first }],
            allow: [],
            containers: [],
            // Gone once the queue holds none of the orphans and each duplicate at most once: a healing removed
            // them, or the workers took them (a worker skips a document that is not queued for its stage).
            gone: async () => {
              const entries = await redis.lrange(keys.queue(first), 0, -1);
              const count = (id: string) => entries.filter((e) => e === id).length;
              return orphans.every((id) => count(id) === 0) && duplicates.every((id) => count(id) <= 1);
            },
          };
        }
        case 'poison': {
          const free = await idle(stage);
          if (free.length !== ofStage(stage).length || openData(kind)) return undefined;
          const r = await chaos.poison(1, stage);
          const all = ofStage(stage).map((w) => w.container);
          return {
            kind,
            detail: `poison 1 ${stage} (document ${(r.documents as number[]).join(', ')})`,
            expect: [
              { type: 'poison_document', target: '*' },
              ...all.map((c) => ({ type: 'unhealthy_container', target: c })),
            ],
            // Each death on it leaves that worker's lease, as a kill does; it lasts until the document is dead. A
            // death's requeue (stuck_documents) pushes the document back to queue:<stage>, and the restart's
            // quarantine of it is Postgres-only: the dead document's entry waits in the queue until a worker skips
            // it or orphaned_entries removes it (a 5-minute soak under load did, 3 s after the poison was dead).
            allow: [
              ...['stuck_documents', 'stalled_queue', 'orphaned_entries'].map((type) => ({ type, target: stage })),
              ...all.map((c) => ({ type: 'stale_locks', target: c })),
              ...stages.map((s) => ({ type: 'lost_documents', target: s })),
            ],
            containers: all,
            gone: async () => {
              const { rows } = await pool.query<{ n: number }>(
                "SELECT count(*)::int AS n FROM documents WHERE id = ANY($1::bigint[]) AND status IN ('queued', 'processing')",
                [r.documents as number[]],
              );
              return rows[0]!.n === 0;
            },
          };
        }
      }
    }

    const end = Date.now() + opts.minutes * 60_000;
    // Faults at random times, a mean gap chosen so that the run sees each kind at least about twice.
    const meanGap = Math.min(40, Math.max(12, (opts.minutes * 60) / (SOAK_KINDS.length * 2)));
    const firstPass: SoakKind[] = [...SOAK_KINDS];
    for (let i = firstPass.length - 1; i > 0; i--) {
      const j = Math.floor(rng() * (i + 1));
      [firstPass[i], firstPass[j]] = [firstPass[j]!, firstPass[i]!];
    }
    let nextAt = Date.now();
    let n = 0;
    let deferred = false;
    while (Date.now() < end) {
      for (const f of watched()) {
        if (f.gone && (await f.gone().catch(() => false))) {
          f.endedAt = Date.now();
          f.endedBy = 'gone';
          say(`${stamp()} #${f.n} ${f.detail}: gone after ${round1((f.endedAt - f.injectedAt) / 1000)} s`);
        } else if (f.end && f.expiresAt !== undefined && Date.now() >= f.expiresAt) {
          await f.end().catch((err: unknown) => say(`ending #${f.n}: ${errorMessage(err)}`));
          f.endedAt = Date.now();
          f.endedBy = 'soak';
          say(
            `${stamp()} #${f.n} ${f.detail}: still there after ${round1((f.endedAt - f.injectedAt) / 1000)} s, ended by the soak`,
          );
        }
      }
      if (Date.now() >= nextAt && open().length < MAX_OPEN) {
        // Each kind once first (in a shuffled order); after a kind found no target, a random one, so that a kind
        // that cannot be injected for a while (redis-flush onto a backlog) does not hold the others back.
        const kind = !deferred && firstPass[0] ? firstPass[0] : pick(SOAK_KINDS);
        const at = Date.now();
        let made: Awaited<ReturnType<typeof inject>>;
        try {
          made = await inject(kind);
        } catch (err) {
          say(`${stamp()} ${kind}: not injected now: ${errorMessage(err)}`);
          made = undefined;
        }
        if (made) {
          if (firstPass.includes(kind)) firstPass.splice(firstPass.indexOf(kind), 1);
          deferred = false;
          const f: InjectedFault = { ...made, n: ++n, injectedAt: at };
          faults.push(f);
          say(`${stamp()} #${f.n} injected ${f.detail}`);
          // Exponential gaps (a Poisson process), at least 3 s apart.
          nextAt = Date.now() + Math.max(3, -Math.log(1 - rng()) * meanGap) * 1000;
        } else {
          skipped++;
          // Nothing fits now (its targets are busy): another kind first, this one later.
          if (firstPass[0] === kind) firstPass.push(firstPass.shift()!);
          deferred = !deferred;
          nextAt = Date.now() + 2_000;
        }
      }
      await sleep(1_000);
    }

    // ---- drain --------------------------------------------------------------------------------------------------
    const drainStart = Date.now();
    say(`${stamp()} drain: no new faults or documents; the faults still holding are ended`);
    trafficOn = false;
    await traffic;
    for (const f of open()) {
      if (f.gone && (await f.gone().catch(() => false))) {
        f.endedAt = Date.now();
        f.endedBy = 'gone';
      } else {
        await f.end!().catch((err: unknown) => say(`ending #${f.n}: ${errorMessage(err)}`));
        f.endedAt = Date.now();
        f.endedBy = 'soak';
      }
    }
    const drainMs = (opts.drainSeconds ?? 300) * 1000;
    let quietSince: number | undefined;
    let drainQuiet = false;
    while (Date.now() - drainStart < drainMs) {
      for (const f of watched()) {
        if (await f.gone!().catch(() => false)) {
          f.endedAt = Date.now();
          f.endedBy = 'gone';
        }
      }
      const { rows } = await pool.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM documents WHERE status IN ('queued', 'processing')",
      );
      const openRuns = (await healingRuns(pool, t0)).filter((r) => r.phase === null).length;
      if (rows[0]!.n === 0 && openRuns === 0) {
        quietSince ??= Date.now();
        // Quiet for a few cycles: nothing left for a detector to find.
        if (Date.now() - quietSince >= 15_000) {
          drainQuiet = true;
          break;
        }
      } else quietSince = undefined;
      await sleep(2_000);
    }
    const drainSeconds = round1((Date.now() - drainStart) / 1000);
    say(`${stamp()} drain: ${drainQuiet ? 'quiet' : 'NOT quiet'} after ${drainSeconds} s`);
    return await evaluate({
      pool,
      redis,
      docker,
      keys,
      stages,
      t0,
      faults,
      skipped,
      loads,
      drainSeconds,
      drainQuiet,
      opts,
    });
  } finally {
    trafficOn = false;
    clearInterval(loadTimer);
    await traffic;
    // Whatever is left (a failed run): undone, so the pipeline is whole for whoever stops it.
    await chaos.clear().catch(() => undefined);
  }
}

async function evaluate(a: {
  pool: pg.Pool;
  redis: Redis;
  docker: Docker;
  keys: Keys;
  stages: Stage[];
  t0: Date;
  faults: InjectedFault[];
  skipped: number;
  loads: number[];
  drainSeconds: number;
  drainQuiet: boolean;
  opts: SoakOptions;
}): Promise<SoakResult> {
  const { pool, t0, faults, opts } = a;
  const { rows: statuses } = await pool.query<{ status: string; n: number }>(
    'SELECT status, count(*)::int AS n FROM documents GROUP BY status ORDER BY status',
  );
  const byStatus = Object.fromEntries(statuses.map((r) => [r.status, r.n]));
  const total = statuses.reduce((s, r) => s + r.n, 0);
  const lost = (byStatus.queued ?? 0) + (byStatus.processing ?? 0);
  const lostWhere = await whereUnfinished(a.pool, a.redis, a.keys, a.stages);
  const { rows: twice } = await pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM (SELECT document_id, stage FROM document_events GROUP BY 1, 2 HAVING count(*) > 1) d`,
  );
  const processedTwice = twice[0]!.n;

  const runs = await healingRuns(pool, t0);
  const at = (d: Date | null) => (d ? d.getTime() : Number.POSITIVE_INFINITY);
  /** The end of a fault's window: when it ended plus the slack; data faults until their first healing ended. */
  const windowEnd = (f: InjectedFault, related: RunRow[]) => {
    if (f.endedAt !== undefined) return f.endedAt + SLACK_S * 1000;
    const endedRuns = related.filter((r) => r.ended).map((r) => at(r.ended));
    return endedRuns.length > 0 ? Math.min(...endedRuns) + SLACK_S * 1000 : Number.POSITIVE_INFINITY;
  };
  const overlaps = (f: InjectedFault, r: RunRow, end: number) =>
    r.started.getTime() <= end && at(r.ended) >= f.injectedAt - 2_000;

  const rows: SoakFaultRow[] = [];
  const windows = new Map<InjectedFault, number>();
  for (const f of faults) {
    const primary = runs.filter((r) => matches(f.expect, r) && overlaps(f, r, Number.POSITIVE_INFINITY));
    const end = windowEnd(f, primary);
    windows.set(f, end);
    const mine = primary.filter((r) => overlaps(f, r, end));
    const healed = mine.filter((r) => r.phase === 'healed').sort((x, y) => at(x.ended) - at(y.ended))[0];
    const outcome: SoakFaultRow['outcome'] = healed
      ? 'healed'
      : mine.some((r) => r.phase !== null)
        ? 'escalated'
        : mine.length > 0
          ? 'open'
          : f.endedBy === 'gone' && ABSORBED.has(f.kind)
            ? 'gone'
            : 'missed';
    rows.push({
      n: f.n,
      kind: f.kind,
      detail: f.detail,
      injectedAt: new Date(f.injectedAt).toISOString(),
      outcome,
      healSeconds: healed ? round1((at(healed.ended) - f.injectedAt) / 1000) : null,
      endedBy:
        f.endedAt === undefined ? 'healing' : f.endedBy === 'gone' ? (mine.length > 0 ? 'healing' : 'itself') : 'soak',
      healings: mine.map(
        (r) => `${r.workflow_id} ${r.phase ?? 'open'}${r.phase && r.phase !== 'healed' && r.note ? `: ${r.note}` : ''}`,
      ),
    });
  }

  // Executed actions, each accounted for by a fault open when its healing started, or a false remediation.
  const { rows: executed } = await pool.query<{
    run_id: string;
    workflow_id: string;
    anomaly_type: string;
    target: string;
    action: string;
    params: { request?: { container?: string } };
    created_at: Date;
  }>(
    `SELECT run_id, workflow_id, anomaly_type, target, action, params, created_at FROM healing_log
      WHERE step = 'executed' AND created_at >= $1 AND action NOT IN ('escalate_to_human', 'no_action')
      ORDER BY id`,
    [t0],
  );
  const started = new Map(runs.map((r) => [r.run_id, r.started.getTime()]));
  const { rows: detectedRows } = await pool.query<{
    run_id: string;
    params: { summary?: string; evidence?: { source?: string; documentIds?: unknown[] } };
    created_at: Date;
  }>(`SELECT run_id, params, created_at FROM healing_log WHERE step = 'detected' AND run_id = ANY($1::text[])`, [
    executed.map((e) => e.run_id),
  ]);
  const detected = new Map(detectedRows.map((r) => [r.run_id, r]));
  const falseRemediations: SoakResult['falseRemediations'] = [];
  for (const e of executed) {
    const s = started.get(e.run_id) ?? e.created_at.getTime();
    const container = e.params.request?.container;
    const ok = faults.some(
      (f) =>
        s >= f.injectedAt - 2_000 &&
        s <= windows.get(f)! &&
        matches([...f.expect, ...f.allow], e) &&
        (e.action !== 'restart_worker' || (container !== undefined && f.containers.includes(container))),
    );
    if (!ok) {
      const d = detected.get(e.run_id);
      const ids = d?.params.evidence?.documentIds;
      const documents =
        e.action === 'requeue_documents' && Array.isArray(ids) ? await documentTrails(pool, ids) : undefined;
      // Up to the detection: the restart's own start-up lines come later, and the death may be minutes before.
      const containerLog =
        e.action === 'restart_worker' && container
          ? await containerLogBefore(a.docker, container, d?.created_at ?? e.created_at)
          : [];
      falseRemediations.push({
        workflowId: e.workflow_id,
        action: e.action,
        target: e.target,
        ...(container ? { container } : {}),
        at: e.created_at.toISOString(),
        ...(d
          ? {
              detected: {
                at: d.created_at.toISOString(),
                summary: d.params.summary,
                source: d.params.evidence?.source,
              },
            }
          : {}),
        ...(documents?.length ? { documents } : {}),
        ...(containerLog.length ? { containerLog } : {}),
      });
    }
  }

  const byPhase: Record<string, number> = {};
  for (const r of runs) byPhase[r.phase ?? 'open'] = (byPhase[r.phase ?? 'open'] ?? 0) + 1;
  const table = soakTable(rows);
  const load = {
    mean1m: round1(a.loads.length ? a.loads.reduce((x, y) => x + y, 0) / a.loads.length : os.loadavg()[0]!),
    max1m: round1(a.loads.length ? Math.max(...a.loads) : os.loadavg()[0]!),
    atEnd: os.loadavg().map(round1),
  };
  return {
    measuredAt: new Date(t0.getTime() + 1_000).toISOString(),
    machine: machine(),
    seed: opts.seed,
    minutes: opts.minutes,
    settings: { ...SOAK_ENV },
    workers: opts.workers.map((w) => w.container),
    load,
    drainSeconds: a.drainSeconds,
    drainQuiet: a.drainQuiet,
    documents: { total, byStatus, lost, lostWhere, processedTwice },
    injectionsSkipped: a.skipped,
    healings: { runs: runs.length, executed: executed.length, byPhase },
    falseRemediations,
    faults: rows,
    table,
    ok: lost === 0 && processedTwice === 0 && falseRemediations.length === 0,
  };
}

/**
 * Where the documents that are not terminal are: in a stage's queue, in a processing list, or in no list (lost from
 * Redis: what `lost_documents` reports). The lists are read whole: after the drain they hold the unfinished only.
 * After a drain that was not quiet, workers still move documents while this reads, so the three counts are a close
 * picture, not an exact split of `lost`.
 */
async function whereUnfinished(pool: pg.Pool, redis: Redis, keys: Keys, stages: Stage[]) {
  const { rows } = await pool.query<{ id: string }>(
    `SELECT id::text AS id FROM documents WHERE status IN ('queued', 'processing')`,
  );
  const queued = new Set<string>();
  const taken = new Set<string>();
  for (const s of stages) for (const id of await redis.lrange(keys.queue(s), 0, -1)) queued.add(id);
  for (const k of await scanAll(redis, keys.processingPattern())) {
    for (const id of await redis.lrange(k, 0, -1)) taken.add(id);
  }
  const where = { inQueue: 0, inProcessing: 0, inNoList: 0 };
  for (const { id } of rows) {
    if (queued.has(id)) where.inQueue++;
    else if (taken.has(id)) where.inProcessing++;
    else where.inNoList++;
  }
  return where;
}

/** Per fault kind and overall: injected, healed, escalated, open, gone, missed, time to healed p50/p95 (s). */
export function soakTable(rows: SoakFaultRow[]): Row[] {
  const line = (name: string, rs: SoakFaultRow[]): Row => {
    const times = rs.flatMap((r) => (r.healSeconds === null ? [] : [r.healSeconds]));
    const count = (o: SoakFaultRow['outcome']) => rs.filter((r) => r.outcome === o).length;
    return {
      fault: name,
      injected: rs.length,
      healed: count('healed'),
      escalated: count('escalated'),
      open: count('open'),
      gone: count('gone'),
      missed: count('missed'),
      heal_p50_s: times.length ? percentile(times, 50) : null,
      heal_p95_s: times.length ? percentile(times, 95) : null,
    };
  };
  const kinds = SOAK_KINDS.filter((k) => rows.some((r) => r.kind === k));
  return [
    ...kinds.map((k) =>
      line(
        k,
        rows.filter((r) => r.kind === k),
      ),
    ),
    line('all', rows),
  ];
}

/** Where the lost documents are, in words (results written before this was measured have no `lostWhere`). */
function lostWhere(r: SoakResult): string {
  const w = r.documents.lostWhere as SoakResult['documents']['lostWhere'] | undefined;
  if (!w) return 'where not recorded';
  return `${w.inQueue} in a queue, ${w.inProcessing} in a processing list, ${w.inNoList} in no list`;
}

/** The summary lines printed under the table. */
export function soakSummary(r: SoakResult): string[] {
  return [
    `seed ${r.seed}, ${r.minutes} min of faults, drain ${r.drainSeconds} s (${r.drainQuiet ? 'quiet' : 'not quiet'}); load average (1 min) mean ${r.load.mean1m}, max ${r.load.max1m}`,
    `documents: ${r.documents.total} (${Object.entries(r.documents.byStatus)
      .map(([s, n]) => `${s} ${n}`)
      .join(', ')})`,
    `documents lost: ${r.documents.lost} (must be 0)${r.documents.lost ? `: ${lostWhere(r)}` : ''}`,
    `documents processed twice: ${r.documents.processedTwice} (must be 0)`,
    `false remediations: ${r.falseRemediations.length} (must be 0)${r.falseRemediations.length ? ': ' + JSON.stringify(r.falseRemediations) : ''}`,
    `healings: ${r.healings.runs} runs (${Object.entries(r.healings.byPhase)
      .map(([p, n]) => `${p} ${n}`)
      .join(
        ', ',
      )}), ${r.healings.executed} actions executed; ${r.injectionsSkipped} injection attempts deferred (targets busy)`,
    ...notHealed(r).map((f) => `not healed: ${f}`),
  ];
}

/** One line per fault that did not end healed: what it was and what its healings said. */
function notHealed(r: SoakResult): string[] {
  return r.faults
    .filter((f) => f.outcome !== 'healed')
    .map((f) => `#${f.n} ${f.detail}: ${f.outcome}${f.healings.length ? ` (${f.healings.join('; ')})` : ''}`);
}

const SECTION = '## Chaos soak';

function notHealedList(r: SoakResult): string {
  const lines = notHealed(r);
  if (lines.length === 0) return '';
  return `\nFaults not healed, and what their healings said:\n\n${lines.map((l) => `- ${l}`).join('\n')}\n`;
}

/** The "Chaos soak" section of docs/RELIABILITY.md (replaced in place when there is one, else appended). */
export async function writeReliabilitySection(root: string, r: SoakResult): Promise<void> {
  const file = path.join(root, 'docs/RELIABILITY.md');
  const md = readFileSync(file, 'utf8');
  const settings = Object.entries(r.settings)
    .filter(([k]) => k !== 'LOG_LEVEL' && k !== 'METRICS_RETENTION')
    .map(([k, v]) => `\`${k}=${v}\``)
    .join(', ');
  const escalatedNote =
    'escalated: the healing ended escalated, rejected (a plan under `MIN_CONFIDENCE` not approved in time) or failed';
  const section = `${SECTION}

\`npm run bench -- soak --minutes ${r.minutes} --seed ${r.seed} --write\` (${r.measuredAt}). The reference pipeline with ${r.workers.length} worker
containers (${r.workers.join(', ')}) and \`selfheal up\` (auto-fix on), 40 documents/s, and for ${r.minutes} minutes
every fault of \`selfheal chaos\` at random times (seed ${r.seed}; exponential gaps; at most ${MAX_OPEN} open at once;
worker faults and \`llm-down\` ended by the soak after 30-90 s if no healing ended them; \`redis-flush\` and
\`duplicate-entries\` after a burst of documents, so that they have entries to lose or duplicate), then a drain without
faults or new documents until every document is terminal and no healing is open. Settings: ${settings}. Machine:
${r.machine.cores} cores, ${r.machine.memoryGiB} GiB, Node ${r.machine.node}; load average (1 min) at the start
${r.machine.loadAverageAtStart.join(' / ')}, during the soak mean ${r.load.mean1m} and max ${r.load.max1m}.

| check | result | must be |
| --- | --- | --- |
| documents lost (not completed, failed or dead after the drain) | ${r.documents.lost} of ${r.documents.total}${r.documents.lost ? ` (${lostWhere(r)})` : ''} | 0 |
| documents processed twice (two outcomes of one stage in \`document_events\`) | ${r.documents.processedTwice} | 0 |
| false remediations (executed actions no open fault accounts for) | ${r.falseRemediations.length} of ${r.healings.executed} | 0 |

Per fault kind (${escalatedNote}; gone: no healing, duplicate entries the workers took and skipped before they were
detected; missed: no healing at all by the end of the drain; heal: injection to the
healing's \`healed\` row, seconds):

${mdTable(r.table)}
${notHealedList(r)}`;
  const start = md.indexOf(SECTION);
  let out: string;
  if (start === -1) out = `${md.trimEnd()}\n\n${section}`;
  else {
    const next = md.indexOf('\n## ', start + SECTION.length);
    out = `${md.slice(0, start)}${section}${next === -1 ? '' : md.slice(next)}`;
  }
  await writeMarkdown(root, 'docs/RELIABILITY.md', out);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * One soak as a user starts it: its own schema, Redis prefix, container names and Temporal dev server, `selfheal up`
 * with the reference pipeline (`npm run bench -- soak`, and the 5-minute soak of CI: tests/soak/soak.test.ts).
 */
export async function soakWithSelfheal(opts: {
  minutes: number;
  seed: number;
  drainSeconds: number;
}): Promise<SoakResult> {
  const { minutes, seed } = opts;
  if (!(minutes > 0) || !Number.isInteger(seed)) throw new Error('--minutes must be above 0 and --seed a whole number');
  progress(`soak: seed ${seed} (repeat with --seed ${seed})`);
  const t = await createTestEnv();
  const docker = new Docker();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-bench-soak-'));
  const llm = await startLlmStandIn();
  let child: ChildProcess | undefined;
  try {
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...t.env,
      ...SOAK_ENV,
      TEMPORAL_ADDRESS: `127.0.0.1:${await freePort()}`,
      METRICS_PORT: String(await freePort()),
      SELFHEAL_DATA_DIR: dataDir,
      PIPELINE_BASE_PORT: String(pipelineBasePort()),
      PIPELINE_CONTAINER_PREFIX: `pipeline-${t.id}`,
      OLLAMA_HOST: llm.url,
    };
    const [node, ...cli] = nodeCommand(projectScript('starter/cli'));
    child = spawn(node, [...cli, 'up', '--ui-port', String(await freePort())], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor(
      () => {
        if (child!.exitCode !== null) throw new Error(`selfheal up exited:\n${out}`);
        return /selfheal is up in/.test(out);
      },
      { timeoutMs: 300_000, intervalMs: 500, what: 'selfheal up' },
    );
    const regs = await readRegistrations(t.redis, t.keys);
    const workers: SoakWorker[] = regs
      .filter((r) => r.kind === 'container' && r.container)
      .map((r) => ({ worker: r.worker, stage: r.stage, container: r.container!, healthUrl: r.healthUrl }));
    if (workers.length === 0) throw new Error('selfheal up started no container workers: is Docker up?');
    progress(`soak: selfheal up with ${workers.map((w) => w.container).join(', ')}`);
    return await runSoak({
      pool: t.pool,
      redis: t.redis,
      keys: t.keys,
      docker,
      workers,
      llm,
      minutes,
      seed,
      drainSeconds: opts.drainSeconds,
    });
  } finally {
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child!.once('exit', r));
    }
    await llm.stop();
    await stopTestPipeline(t, undefined, docker).catch(() => undefined);
    rmSync(dataDir, { recursive: true, force: true });
    await t.cleanup();
  }
}

/** `npm run bench -- soak [--minutes 30] [--seed N] [--drain 300] [--write]`: one soak, its table and checks. */
export async function benchSoak(args: string[]): Promise<boolean> {
  const { values } = parseArgs({
    args,
    options: {
      minutes: { type: 'string', default: '30' },
      seed: { type: 'string' },
      drain: { type: 'string', default: '300' },
      write: { type: 'boolean', default: false },
    },
  });
  const result = await soakWithSelfheal({
    minutes: Number(values.minutes),
    seed: values.seed !== undefined ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31),
    drainSeconds: Number(values.drain),
  });
  console.table(result.table);
  for (const line of soakSummary(result)) console.log(line);
  if (values.write) {
    // bench/results.json keeps the other parts' figures; the soak has a key of its own. Only with --write, as for
    // the other parts: a short trial run must not replace the recorded soak.
    const saved = readResults(ROOT) as BenchResults & { soak?: SoakResult };
    saved.soak = result;
    writeFileSync(path.join(ROOT, 'bench/results.json'), JSON.stringify(saved, null, 2) + '\n');
    console.log('written: bench/results.json (soak)');
    await writeReliabilitySection(ROOT, result);
    console.log('written: docs/RELIABILITY.md (Chaos soak)');
  }
  return result.ok;
}
