/**
 * `npm run bench`: every measurement of the performance report, with progress on the terminal (stderr), written to
 * `bench/results.json` and `docs/BENCHMARKS.md` (each figure next to its baseline from the same run, and the
 * targets met or missed). About 15 minutes on 2 cores; it needs the local services (scripts/dev.sh services) and
 * Docker, and uses schemas, Redis prefixes, containers and Temporal dev servers of its own that it removes.
 *
 * `npm run bench -- report` writes docs/BENCHMARKS.md again from bench/results.json (targets re-evaluated).
 * Parts, alone (printed, not written): `npm run bench -- <part> [options]`
 *   monitor    cycle cost against its floor; --sizes 10000,1000000,10000000 --cycles 30 --lost 1000 (lost at 1M)
 *   heal       restart / requeue / stale locks against the bare operation; --docs 100000 --cap 10000
 *              --locks 10000 --rounds 3
 *   system     `selfheal up` startup, healing throughput (--bursts 10,100,500) and peak memory per process (after
 *              `npm run build`: it runs the compiled CLI); --starts 10,100,500 instead times only the monitoring
 *              cycle's starts of N healings and the client's N parallel starts, on dev servers with and without a
 *              database file; --cache default,100 --open 500 instead measures the compiled healing worker's memory
 *              with 500 healings open (waiting for approval), per HEALING_CACHED_WORKFLOWS value; --server
 *              in-memory runs the bursts on a dev server without a database file; --env NAME=VALUE (repeated) adds
 *              environment for `up` and its processes (a tuning); --write puts the figures into bench/results.json
 *              and docs/BENCHMARKS.md (a tuning in a table of its own; the figures replaced first are kept as before)
 *   detection  Docker-native detection, events against polling (--trials 20 --interval 5; --write keeps it in the
 *              report), then the detection latency per fault class (`selfheal demo`) against its bound (--no-demo)
 *   up         startup time and resident memory of `selfheal up` with the reference pipeline
 *   pipeline   documents/s through the reference pipeline; --workers 2 --docs 1000 --kind process|container
 *   cli        start time of the compiled `selfheal --help` and `selfheal status` against `temporal --help`;
 *              --runs 30; --write also puts it into bench/results.json and docs/BENCHMARKS.md (the other parts kept)
 *   compose    `scripts/dev.sh compose up` first start, warm and no-op, and docker kill → healed through the
 *              deployed stack; --cold rebuilds the locally built images first; --write as for cli. Not in `all`: it
 *              takes the host's ports 7233, 8080 and 8001
 *   llm        the analyzer against the model at OLLAMA_HOST / OLLAMA_MODEL over bench/fixtures/llm-anomalies.json:
 *              schema-valid rate, agreement with the runbook, unsafe proposals caught, fallbacks by cause, latency,
 *              tokens/s; --only NAME runs the matching cases; --write as for cli. Not in `all`: it needs a model
 *   soak       chaos soak: the pipeline under load, every `selfheal chaos` fault at random times, auto-fix on; documents
 *              lost, processed twice, false remediations (exit 1 unless all 0), faults healed/escalated/missed and
 *              time to heal; --minutes 30 --seed N --drain 300; writes its key of bench/results.json, --write also
 *              the "Chaos soak" section of docs/RELIABILITY.md. Not in `all`: it takes half an hour
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Docker from 'dockerode';
import { generateDocuments } from '../pipeline/generator';
import { ensurePipelineImage } from '../pipeline/image';
import { nodeCommand, projectScript } from '../workers/project';
import { freePort } from '../starter/temporal-local';
import { createTestEnv, pipelineBasePort, waitFor } from '../tests/helpers/env';
import { createTestRunner, stopTestPipeline, waitForDocuments } from '../tests/helpers/pipeline';

import { benchCli, cliTargets } from './cli';
import { benchCompose } from './compose';
import { type Row, progress } from './common';
import { benchHealLocks, benchHealRequeue, benchHealRestart } from './heal';
import { benchLlm, llmTargets } from './llm';
import { benchMonitorSize } from './monitor';
import { type BenchResults, machine, readResults, writeReport } from './report';
import { benchDockerDetection } from './docker-detection';
import { benchCycleStarts, benchDetection, benchHealingCache, benchSystem, type SystemResult } from './system';
import { benchSoak } from './soak';
import { targets } from './targets';

export { targets };

const ROOT = path.resolve(__dirname, '..');

/** Resident set size of a process, MiB (from /proc). */
function rssMiB(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : undefined;
  } catch {
    return undefined;
  }
}

function table(rows: Row[]): void {
  console.table(rows);
}

async function benchUp(): Promise<void> {
  const t = await createTestEnv();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-bench-'));
  const env = {
    ...process.env,
    ...t.env,
    TEMPORAL_ADDRESS: `127.0.0.1:${await freePort()}`,
    METRICS_PORT: String(await freePort()),
    SELFHEAL_DATA_DIR: dataDir,
    PIPELINE_BASE_PORT: String(pipelineBasePort()),
    PIPELINE_CONTAINER_PREFIX: `pipeline-${t.id}`,
    OLLAMA_HOST: `http://127.0.0.1:${await freePort()}`,
    LOG_LEVEL: 'warn',
  };
  const t0 = Date.now();
  const [node, ...cli] = nodeCommand(projectScript('starter/cli'));
  const child = spawn(node, [...cli, 'up', '--ui-port', String(await freePort())], {
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  try {
    const m = await waitFor(() => /selfheal is up in ([\d.]+) s/.exec(out), {
      timeoutMs: 180_000,
      what: 'selfheal up',
    });
    const wall = (Date.now() - t0) / 1000;
    // Let the workers settle (bundles built, first cycles run) before reading memory.
    await new Promise((r) => setTimeout(r, 10_000));
    const state = JSON.parse(readFileSync(path.join(dataDir, 'up.json'), 'utf8')) as {
      components: { name: string; pid?: number }[];
    };
    const docker = new Docker();
    const rows: Record<string, string | number | undefined>[] = [];
    for (const c of state.components) {
      let pid = c.pid;
      let kind = 'process';
      if (pid === undefined && c.name.startsWith('pipeline-') && c.name !== 'pipeline-runner') {
        pid = (
          await docker
            .getContainer(c.name)
            .inspect()
            .catch(() => undefined)
        )?.State.Pid;
        kind = 'container';
      }
      if (pid !== undefined) rows.push({ component: c.name, kind, pid, rss_mib: rssMiB(pid) });
    }
    console.log(
      `selfheal up: ${m[1]} s to up as it reports it, ${wall.toFixed(1)} s wall time including the CLI start`,
    );
    table(rows);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    rmSync(dataDir, { recursive: true, force: true });
    await t.cleanup();
  }
}

async function benchPipeline(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      workers: { type: 'string', default: '2' },
      docs: { type: 'string', default: '1000' },
      kind: { type: 'string', default: 'process' },
    },
  });
  const perStage = Number(values.workers);
  const docs = Number(values.docs);
  const kind = values.kind === 'container' ? 'container' : 'process';
  const t = await createTestEnv();
  const docker = new Docker();
  const image = kind === 'container' ? (await ensurePipelineImage(docker)).image : undefined;
  const runner = createTestRunner(t, { docker, image });
  try {
    const workers = await runner.startMany([
      { stage: 'extract', kind, count: perStage },
      { stage: 'evaluate', kind, count: perStage },
    ]);
    const t0 = Date.now();
    const ids = await generateDocuments({ pool: t.pool, redis: t.redis, keys: t.keys, count: docs });
    await waitForDocuments(t, ids, { timeoutMs: 600_000 });
    const seconds = (Date.now() - t0) / 1000;
    console.log(
      `pipeline: ${docs} documents through both stages with ${perStage}+${perStage} ${kind} workers in ${seconds.toFixed(2)} s = ${(docs / seconds).toFixed(0)} documents/s`,
    );
    const rows = [];
    for (const w of workers) {
      const pid = w.pid ?? (w.container ? (await docker.getContainer(w.container).inspect()).State.Pid : undefined);
      rows.push({ worker: w.worker, kind: w.kind, rss_mib: pid ? rssMiB(pid) : undefined });
    }
    table(rows);
  } finally {
    await stopTestPipeline(t, runner, docker);
    await t.cleanup();
  }
}

function list(v: string | undefined, fallback: number[]): number[] {
  return v ? v.split(',').map((x) => Number(x.trim())) : fallback;
}

async function benchMonitor(args: string[]): Promise<Row[]> {
  const { values } = parseArgs({
    args,
    options: {
      sizes: { type: 'string' },
      cycles: { type: 'string', default: '30' },
      lost: { type: 'string', default: '1000' },
    },
  });
  const rows: Row[] = [];
  for (const docs of list(values.sizes, [10_000, 1_000_000, 10_000_000]))
    rows.push(await benchMonitorSize(docs, Number(values.cycles), docs === 1_000_000 ? Number(values.lost) : 0));
  return rows;
}

async function benchHeal(args: string[]): Promise<BenchResults['heal']> {
  const { values } = parseArgs({
    args,
    options: {
      docs: { type: 'string', default: '100000' },
      cap: { type: 'string', default: '10000' },
      locks: { type: 'string', default: '10000' },
      rounds: { type: 'string', default: '3' },
    },
  });
  const t = await createTestEnv();
  try {
    progress('heal: restart vs bare restart');
    const restart = await benchHealRestart(t, new Docker(), Number(values.rounds));
    progress(`heal: requeue ${values.docs} vs SQL + LPUSH`);
    const requeue = await benchHealRequeue(t, Number(values.docs), Number(values.cap));
    progress(`heal: ${values.locks} stale locks vs compare-and-delete`);
    const locks = await benchHealLocks(t, Number(values.locks));
    return { restart, requeue, locks };
  } finally {
    await t.cleanup();
  }
}

async function benchAll(): Promise<void> {
  const startedAt = new Date().toISOString();
  const m = machine();
  progress(`bench: all parts; machine ${JSON.stringify(m)}`);
  const monitor = await benchMonitor([]);
  const heal = await benchHeal([]);
  const system = await benchSystem([10, 100, 500]);
  const inMemory = await benchSystem([500], 'in-memory');
  system.throughput.push(...inMemory.throughput.map((r) => ({ ...r, server: IN_MEMORY })));
  for (const r of system.throughput) r.server ??= DB_FILE;
  const detection = await benchDetection();
  const cli = { measuredAt: new Date().toISOString(), machine: machine(), rows: await benchCli() };
  // The compose and llm parts run alone (the host's ports; a model): their last figures are kept.
  let compose: BenchResults['compose'];
  let llm: BenchResults['llm'];
  let dockerDetection: BenchResults['dockerDetection'];
  let systemBefore: BenchResults['systemBefore'];
  let systemTuned: BenchResults['systemTuned'];
  try {
    const saved = readResults(ROOT);
    compose = saved.compose;
    llm = saved.llm;
    dockerDetection = saved.dockerDetection;
    systemBefore = systemBeforeOf(saved);
    systemTuned = saved.systemTuned;
  } catch {
    compose = undefined;
  }
  const partial = {
    startedAt,
    machine: m,
    monitor,
    detection,
    heal,
    system,
    systemBefore,
    systemTuned,
    cli,
    compose,
    llm,
    dockerDetection,
  };
  const results: BenchResults = { ...partial, targets: targets(partial), finishedAt: new Date().toISOString() };
  await writeReport(ROOT, results);
  console.log('monitoring cycle vs floor');
  table(monitor);
  console.log('detection latency vs bound');
  table(detection);
  console.log('restart vs bare');
  table(heal.restart);
  console.log('requeue vs bare');
  table(heal.requeue);
  console.log('stale locks vs bare');
  table(heal.locks);
  console.log('healing throughput');
  table(system.throughput);
  console.log('peak memory');
  table(system.memory);
  console.log('CLI start time');
  table(cli.rows);
  console.log('targets');
  table(results.targets.map((t) => ({ ...t })));
  console.log('written: bench/results.json, docs/BENCHMARKS.md');
}

/**
 * One part's new figures into bench/results.json and docs/BENCHMARKS.md (targets re-evaluated). Only this part is
 * new: the other sections of bench/results.json stay as their run left them.
 */
async function writePart(part: (saved: BenchResults) => Partial<BenchResults>): Promise<void> {
  const saved = readResults(ROOT);
  const merged = { ...saved, ...part(saved) };
  await writeReport(ROOT, { ...merged, targets: targets(merged) });
  console.log('written: bench/results.json, docs/BENCHMARKS.md');
}

/** `--env K=V` (repeated) as an environment. */
function parseEnv(pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new Error(`--env: expected NAME=VALUE, got "${pair}"`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return env;
}

/** The "before" of the system figures: kept once set, else the figures about to be replaced. */
function systemBeforeOf(saved: BenchResults): NonNullable<BenchResults['systemBefore']> {
  return saved.systemBefore ?? { measuredAt: saved.startedAt, ...saved.system };
}

const DB_FILE = 'dev server with --db-filename (selfheal up)';
const IN_MEMORY = 'in-memory dev server';

/**
 * `system --write`: a run with selfheal's defaults replaces the throughput rows of its server (and, with the database
 * file, the memory); a run with `--env` is a tuning and goes to its own table. The figures the first such write
 * replaces are kept as the "before" (`systemBefore`).
 */
function systemPart(
  saved: BenchResults,
  s: SystemResult,
  server: 'db-file' | 'in-memory',
  extraEnv: Record<string, string>,
  measuredAt: string,
): Partial<BenchResults> {
  const label = server === 'db-file' ? DB_FILE : IN_MEMORY;
  const rows: Row[] = s.throughput.map((r) => ({ ...r, server: label, measured_at: measuredAt }));
  const env = Object.entries(extraEnv)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  if (env) {
    const peak = (name: string) => s.memory.find((m) => m.process === name)?.peak_rss_mb;
    const tuned = rows.map((r) => ({
      env,
      ...r,
      healing_peak_mb: peak('selfheal-healing'),
      monitor_peak_mb: peak('selfheal-monitor'),
    }));
    const keep = (saved.systemTuned ?? []).filter((r) => !(r.env === env && r.server === label));
    return { systemTuned: [...keep, ...tuned] };
  }
  const systemBefore = systemBeforeOf(saved);
  // This run's rows replace every row of its server (a row left from another run would read as this one's).
  const kept = saved.system.throughput.filter((r) => (r.server ?? DB_FILE) !== label);
  return {
    systemBefore,
    system: {
      startupSeconds: server === 'db-file' ? s.startupSeconds : saved.system.startupSeconds,
      throughput: [...kept, ...rows],
      memory: server === 'db-file' ? s.memory.map((m) => ({ ...m, measured_at: measuredAt })) : saved.system.memory,
    },
  };
}

const PARTS = [
  'all',
  'report',
  'monitor',
  'heal',
  'system',
  'detection',
  'up',
  'pipeline',
  'cli',
  'compose',
  'llm',
  'soak',
];

async function main(): Promise<void> {
  const [what = 'all', ...rest] = process.argv.slice(2);
  switch (what) {
    case 'all':
      return benchAll();
    case 'report': {
      // docs/BENCHMARKS.md again from bench/results.json (targets re-evaluated), without measuring anything.
      const saved = readResults(ROOT);
      await writeReport(ROOT, { ...saved, targets: targets(saved) });
      return;
    }
    case 'monitor':
      return table(await benchMonitor(rest));
    case 'heal': {
      const h = await benchHeal(rest);
      for (const rows of [h.restart, h.requeue, h.locks]) table(rows);
      return;
    }
    case 'system': {
      const { values } = parseArgs({
        args: rest,
        options: {
          bursts: { type: 'string' },
          starts: { type: 'string' },
          cache: { type: 'string' },
          open: { type: 'string' },
          server: { type: 'string', default: 'db-file' },
          env: { type: 'string', multiple: true, default: [] },
          write: { type: 'boolean', default: false },
        },
      });
      if (values.server !== 'db-file' && values.server !== 'in-memory') {
        throw new Error(`--server: db-file or in-memory, not ${values.server}`);
      }
      if (values.starts) return table(await benchCycleStarts(list(values.starts, [])));
      if (values.cache) {
        const caches = values.cache.split(',').map((c) => (c.trim() === 'default' ? undefined : Number(c)));
        return table(await benchHealingCache(Number(values.open ?? '500'), caches));
      }
      const extraEnv = parseEnv(values.env);
      const measuredAt = new Date().toISOString();
      const s = await benchSystem(list(values.bursts, [10, 100, 500]), values.server, extraEnv);
      console.log(`up in ${s.startupSeconds} s`);
      table(s.throughput);
      table(s.memory);
      if (values.write)
        await writePart((saved) =>
          systemPart(saved, s, values.server as 'db-file' | 'in-memory', extraEnv, measuredAt),
        );
      return;
    }
    case 'detection': {
      const { values } = parseArgs({
        args: rest,
        options: {
          trials: { type: 'string', default: '20' },
          interval: { type: 'string', default: '5' },
          write: { type: 'boolean', default: false },
          'no-demo': { type: 'boolean', default: false },
        },
      });
      const m = machine();
      const measuredAt = new Date().toISOString();
      const rows = await benchDockerDetection({ trials: Number(values.trials), interval: Number(values.interval) });
      console.log('Docker-native detection: event → restart issued');
      table(rows);
      if (values.write) await writePart(() => ({ dockerDetection: { measuredAt, machine: m, rows } }));
      if (!values['no-demo']) table(await benchDetection());
      return;
    }
    case 'up':
      return benchUp();
    case 'pipeline':
      return benchPipeline(rest);
    case 'cli': {
      const { values } = parseArgs({
        args: rest,
        options: { runs: { type: 'string', default: '30' }, write: { type: 'boolean', default: false } },
      });
      const startedAt = new Date().toISOString();
      const m = machine();
      const rows = await benchCli(Number(values.runs));
      table(rows);
      table(cliTargets(rows).map((t) => ({ ...t })));
      if (values.write) await writePart(() => ({ cli: { measuredAt: startedAt, machine: m, rows } }));
      return;
    }
    case 'compose': {
      const { values } = parseArgs({
        args: rest,
        options: { cold: { type: 'boolean', default: false }, write: { type: 'boolean', default: false } },
      });
      const m = machine();
      const measuredAt = new Date().toISOString();
      const rows = await benchCompose({ cold: values.cold });
      table(rows);
      if (values.write) {
        await writePart((saved) => {
          // A run without --cold keeps the cold figure of an earlier one.
          const cold = values.cold ? [] : (saved.compose?.rows.filter((r) => String(r.start).startsWith('cold')) ?? []);
          return { compose: { measuredAt, machine: m, rows: [...cold, ...rows] } };
        });
      }
      return;
    }
    case 'llm': {
      const { values } = parseArgs({
        args: rest,
        options: { only: { type: 'string' }, write: { type: 'boolean', default: false } },
      });
      const m = machine();
      const measuredAt = new Date().toISOString();
      const b = await benchLlm({ only: values.only });
      console.log(`model ${b.model} at ${b.host}, LLM_TIMEOUT_MS ${b.timeoutMs}`);
      table(b.rows);
      table(b.summary);
      table(llmTargets(b).map((t) => ({ ...t })));
      if (values.write) await writePart(() => ({ llm: { measuredAt, machine: m, ...b } }));
      return;
    }
    case 'soak':
      // Exit 1 when a document was lost or processed twice, or a healthy target was remediated.
      if (!(await benchSoak(rest))) process.exit(1);
      return;
    default:
      console.error(`unknown benchmark "${what}": expected one of ${PARTS.join(', ')}`);
      process.exit(2);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
