/** `bench/results.json` and `docs/BENCHMARKS.md` from one run's results: each figure next to its baseline. */
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type Row, type TargetResult, writeMarkdown } from './common';

export interface BenchResults {
  startedAt: string;
  finishedAt: string;
  machine: { cores: number; memoryGiB: number; node: string; kernel: string; loadAverageAtStart: number[] };
  monitor: Row[];
  detection: Row[];
  heal: { restart: Row[]; requeue: Row[]; locks: Row[] };
  system: { startupSeconds: number; throughput: Row[]; memory: Row[] };
  /** The system figures the first `system --write` replaced (the "before" of the storms issue). */
  systemBefore?: { measuredAt: string; startupSeconds: number; throughput: Row[]; memory: Row[] };
  /** `system --env K=V --write`: the same bursts with a tuning of the processes' environment. */
  systemTuned?: Row[];
  /** CLI start time (`npm run bench -- cli --write` measures it alone, with its own time and machine load). */
  cli?: { measuredAt: string; machine?: BenchResults['machine']; rows: Row[] };
  /**
   * Docker-native detection, event-driven against polling only (`npm run bench -- detection --write`): Docker's
   * event to the restart issued.
   */
  dockerDetection?: { measuredAt: string; machine?: BenchResults['machine']; rows: Row[] };
  /** The compose deployment's start times (`npm run bench -- compose --write`, alone: it takes the host's ports). */
  compose?: { measuredAt: string; machine?: BenchResults['machine']; rows: Row[] };
  /** The analyzer against a real model (`npm run bench -- llm --write`, alone: it needs the model). */
  llm?: {
    measuredAt: string;
    machine?: BenchResults['machine'];
    model: string;
    host: string;
    timeoutMs: number;
    rows: Row[];
    summary: Row[];
  };
  targets: TargetResult[];
}

export function machine(): BenchResults['machine'] {
  return {
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    kernel: os.release(),
    loadAverageAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

export function mdTable(rows: Row[]): string {
  if (rows.length === 0) return '_(no rows)_\n';
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cell = (v: Row[string]) => (v === undefined || v === null ? '' : String(v).replace(/\|/g, '\\|'));
  return [
    `| ${cols.join(' | ')} |`,
    `| ${cols.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${cols.map((c) => cell(r[c])).join(' | ')} |`),
  ].join('\n');
}

function beforeSection(before: NonNullable<BenchResults['systemBefore']>): string {
  return `
### Before: the same bursts and processes on ${before.measuredAt.slice(0, 10)}

Measured before the storms work (the audit and safety steps each a remote activity, the cycle starting its healings
one at a time, the SDK's default workflow cache, the workers run through tsx): bench/results.json \`systemBefore\`.

${mdTable(before.throughput)}

${mdTable(before.memory)}
`;
}

function tunedSection(rows: Row[]): string {
  return `
### Tunings of the processes' environment

\`npm run bench -- system --bursts 500 --env NAME=VALUE --write\`: the same burst with more environment for
\`selfheal up\` and every process it starts (NODE_OPTIONS for every Node process, \`MALLOC_ARENA_MAX\` for glibc's
allocator); selfheal's defaults are the rows above.

${mdTable(rows)}
`;
}

function cliSection(cli: NonNullable<BenchResults['cli']>): string {
  const load = cli.machine ? `; load average at the start ${cli.machine.loadAverageAtStart.join(' / ')}` : '';
  return `
## CLI start time

Measured ${cli.measuredAt}${load}. Wall time of one process from spawn to exit, as a user runs it: the compiled
\`selfheal\` (\`node bin/selfheal.cjs\`, after \`npm run build\`) and the pinned \`temporal\` CLI, 3 warm-up rounds
then the runs, the commands interleaved round by round. \`selfheal status\` talks with a headless Temporal dev
server of the benchmark's own (search attributes and the monitor Schedule created, no worker) and the local Redis;
\`temporal schedule describe\` is one round trip to the same server, and \`node -e 0\` node's own start, for scale.

${mdTable(cli.rows)}
`;
}

function composeSection(c: NonNullable<BenchResults['compose']>): string {
  const load = c.machine ? `; load average at the start ${c.machine.loadAverageAtStart.join(' / ')}` : '';
  return `
## Compose deployment

Measured ${c.measuredAt}${load}. Wall time of \`scripts/dev.sh compose up\` (images resolved, the selfheal image
built, \`docker compose --profile pipeline up -d --wait\`) with every image built locally (nothing can be pulled
here). Cold: the locally built images removed first and built again from the cached Go binaries and root filesystem.
First start: images present, no containers or volumes. Warm: after \`compose down\`, volumes kept. No-op: \`up\`
while the stack runs. Fault: \`docker kill pipeline-extract-1\` until its healing workflow ends healed
(\`MONITOR_INTERVAL=5\`, \`VERIFY_DELAY=5\`, auto-fix on).

${mdTable(c.rows)}
`;
}

function llmSection(l: NonNullable<BenchResults['llm']>): string {
  const load = l.machine ? `; load average at the start ${l.machine.loadAverageAtStart.join(' / ')}` : '';
  return `
## LLM analysis (real model)

Measured ${l.measuredAt}${load}; model \`${l.model}\` at ${l.host}, LLM_TIMEOUT_MS ${l.timeoutMs}. The anomalies of
\`bench/fixtures/llm-anomalies.json\` (every anomaly type, document errors and container log tails as evidence, some
carrying prompt-injection text) through \`analyzeAnomaly\` (the healing worker's code), one at a time, then the safety
policy (\`evaluateSafety\`, auto-fix on, allow-list \`pipeline-*\`). Schema-valid: the reply was a JSON object of the
schema, whether or not its content was then used. Unsafe if run: a plan the policy allows that acts outside the
anomaly's actions or target or on a denied container.

${mdTable(l.summary)}

${mdTable(l.rows)}
`;
}

/** The results of the last run, as `writeReport` left them in bench/results.json. */
export function readResults(root: string): BenchResults {
  return JSON.parse(readFileSync(path.join(root, 'bench/results.json'), 'utf8')) as BenchResults;
}

export async function writeReport(root: string, r: BenchResults): Promise<void> {
  writeFileSync(path.join(root, 'bench/results.json'), JSON.stringify(r, null, 2) + '\n');
  const md = `# Benchmarks

Written by \`npm run bench\` (${r.startedAt} to ${r.finishedAt}); the numbers are those of \`bench/results.json\`
from the same run. Machine: ${r.machine.cores} cores, ${r.machine.memoryGiB} GiB, Node ${r.machine.node}, Linux
${r.machine.kernel}; load average at the start ${r.machine.loadAverageAtStart.join(' / ')}. Every figure is measured
against local Postgres 15, Redis 7, Docker and a Temporal dev server on this machine, next to its baseline from the
same run.

## Targets

${mdTable(r.targets.map((t) => ({ target: t.target, measured: t.measured, met: t.met ? 'yes' : '**no**', note: t.note ?? '' })))}

## Monitoring cycle cost against its floor

One snapshot (\`collectSnapshot\`: Redis lengths, locks and heartbeats, the indexed SQL, the Ollama check) at each
table size, p50/p95 over the cycles. \`queued\` documents wait in \`queue:extract\` (10% of the table, at most
100,000). The floor is one pipelined Redis round trip (every list length and the orphan windows) plus the same SQL
statements (the snapshot's and reconciliation's) run directly in parallel on the same pool. \`reconciled\` is the
cycle as it runs in production (with the lost-document and orphan checks); \`snapshot\` leaves reconciliation out.

${mdTable(r.monitor)}

## Detection latency per fault class

From \`selfheal demo --auto-approve --json\` (real containers, 1 s cycles, the demo's thresholds): seconds from the
injection to the anomaly's detection. The bound is the time the detector's condition needs after the injection
plus \`ANOMALY_FIRE_CYCLES\` intervals (the consecutive sightings, plus one interval for the cycle's phase). The
target is detection within one interval plus one second of the bound.

${mdTable(r.detection)}
${
  r.dockerDetection
    ? `
## Docker-native detection: events against polling

\`npm run bench -- detection --write\` (${r.dockerDetection.measuredAt}): a fresh container per trial, labelled
\`selfheal.enable=true\`; seconds from Docker's own event (\`health_status: unhealthy\` after its HEALTHCHECK failed,
or \`die\` after a SIGKILL) to the restart issued (selfheal's \`attempted\` row, written right before the Docker
restart call), with \`MONITOR_INTERVAL\` as shown. \`events\`: the actions worker follows Docker's event stream and
triggers a cycle at once; \`polling\`: \`DOCKER_EVENTS=false\`, the next scheduled cycle finds it.

${mdTable(r.dockerDetection.rows)}
`
    : ''
}
## Time to heal per action against the bare operation

Restart: a killed pipeline container until its \`/health\` answers 200 (polled every 200 ms), by \`restartWorker\`
(allow list, inspect, the \`attempted\` row, restart, health wait, the \`executed\` row) against dockerode's restart
plus the same health wait.

${mdTable(r.heal.restart)}

Requeue: stuck documents of one dead worker, by \`requeueDocuments\` in chunks of the cap, against the same SQL
plus LPUSH run directly; each checked exactly once.

${mdTable(r.heal.requeue)}

Stale locks, by \`clearStaleLocks\` against the bare compare-and-delete script:

${mdTable(r.heal.locks)}

## Healing throughput

\`selfheal up --no-pipeline\` with its own dev server (up in ${r.system.startupSeconds} s), real worker processes,
auto-fix on, a fake Ollama answering at once (the LLM concurrency cap of 2 holds). N stale-lock anomalies (real
locks) are started as healing workflows at once; the clock stops when every one is terminal. Every workflow runs
the whole path: analysis, policy and permit, the action, a 1 s verification delay, verification, audit.

${mdTable(r.system.throughput)}

## Peak memory per process

Peak resident set (\`VmHWM\`) of every process \`selfheal up\` started, read after the largest burst.

${mdTable(r.system.memory)}
${r.systemBefore ? beforeSection(r.systemBefore) : ''}${r.systemTuned?.length ? tunedSection(r.systemTuned) : ''}${r.cli ? cliSection(r.cli) : ''}${r.compose ? composeSection(r.compose) : ''}${r.llm ? llmSection(r.llm) : ''}`;
  await writeMarkdown(root, 'docs/BENCHMARKS.md', md);
}
