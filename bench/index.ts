/**
 * `npm run bench -- <what>`: measurements, printed as numbers (never asserted in tests).
 *
 *   up        time for `selfheal up` to have everything up (it starts its own Temporal dev server), and the
 *             resident memory of every process it started
 *   pipeline  documents/s through both stages of the reference pipeline, and worker memory
 *             options: --workers N (per stage, default 2), --docs N (default 1000), --kind process|container
 *
 * Runs against the local Postgres, Redis and Docker (scripts/dev.sh services), in a schema and Redis prefix of
 * its own that it removes afterwards.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Docker from 'dockerode';
import { generateDocuments } from '../pipeline/generator';
import { ensurePipelineImage } from '../pipeline/image';
import { freePort } from '../starter/temporal-local';
import { createTestEnv, waitFor } from '../tests/helpers/env';
import { createTestRunner, stopTestPipeline, waitForDocuments } from '../tests/helpers/pipeline';

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

function table(rows: Record<string, string | number | undefined>[]): void {
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
    PIPELINE_BASE_PORT: String(await freePort()),
    PIPELINE_CONTAINER_PREFIX: `pipeline-${t.id}`,
    OLLAMA_HOST: `http://127.0.0.1:${await freePort()}`,
    LOG_LEVEL: 'warn',
  };
  const t0 = Date.now();
  const child = spawn(
    process.execPath,
    [path.join(ROOT, 'bin/selfheal.cjs'), 'up', '--ui-port', String(await freePort())],
    {
      env,
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
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

async function main(): Promise<void> {
  const [what = 'all', ...rest] = process.argv.slice(2);
  if (what === 'up' || what === 'all') await benchUp();
  if (what === 'pipeline' || what === 'all') await benchPipeline(rest);
  if (!['up', 'pipeline', 'all'].includes(what)) {
    console.error(`unknown benchmark "${what}": expected up, pipeline or all`);
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
