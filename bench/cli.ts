/**
 * CLI start time: the compiled `selfheal --help` and `selfheal status` against the stock `temporal --help` (the pinned
 * Go binary), each run as a user runs it (a new process, output discarded), interleaved round by round so that the
 * machine's load falls on all of them alike. `status` needs a Temporal server and Redis: a headless dev server of its
 * own (started as `selfheal up` starts one), with the search attributes and the monitor Schedule, and the local Redis;
 * no worker runs, so it reports no pollers. `temporal schedule describe` against the same server is listed too: the
 * Go CLI doing one round trip, for scale.
 *
 * Where the environment sets NODE_EXTRA_CA_CERTS (this machine does, for the TLS proxy in front of the registries),
 * node parses that certificate bundle at every start, before any of our code runs: about 70 ms here. The node commands
 * are then measured twice, as the environment is and without that variable (what a machine without such a proxy
 * runs), and the targets are judged on the second; the Go CLI reads certificates only when it opens a TLS connection.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { parseConfig } from '../core/config';
import { ensureMonitorSchedule } from '../workers/schedule';
import { findTemporalCli, freePort, INSTALL_HINT, startDevServer, stopProcessGroup } from '../starter/temporal-local';
import { registerSearchAttributes } from '../workers/temporal-connection';
import { MONITOR_SCHEDULE_ID } from '../workflows/definitions';
import { percentile, progress, round1, type Row, type TargetResult } from './common';

const ROOT = path.resolve(__dirname, '..');
/** Target: each selfheal command at most this many times `temporal --help` (medians). */
export const CLI_TARGET_RATIO = 1.5;

interface Command {
  name: string;
  argv: [string, ...string[]];
  /** Variables removed from the environment for this command. */
  without?: string[];
}

/** The variable that makes every node start parse a certificate bundle. */
const EXTRA_CA = 'NODE_EXTRA_CA_CERTS';
/** Suffix of the rows measured without EXTRA_CA. */
export const WITHOUT_EXTRA_CA = ` (without ${EXTRA_CA})`;

/** Wall-clock milliseconds of one run; throws when the command fails (a fast failure is no measurement). */
function timeOnce(c: Command, base: NodeJS.ProcessEnv): number {
  const env = { ...base };
  for (const name of c.without ?? []) delete env[name];
  const t0 = performance.now();
  const r = spawnSync(c.argv[0], c.argv.slice(1), { env, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  const elapsed = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${c.name} exited ${r.status}: ${r.stderr.trim().split('\n')[0]}`);
  return elapsed;
}

export async function benchCli(runs = 30, warmup = 3): Promise<Row[]> {
  progress('cli: npm run build (the compiled CLI is what users run)');
  const build = spawnSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
  if (build.status !== 0) throw new Error('npm run build failed');
  const temporalCli = findTemporalCli(process.env.TEMPORAL_CLI_PATH);
  if (!temporalCli) throw new Error(`temporal CLI not found: ${INSTALL_HINT}`);

  const dir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-bench-cli-'));
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  progress(`cli: a headless Temporal dev server on ${address}`);
  const server = await startDevServer({ cli: temporalCli, port, logFile: path.join(dir, 'temporal.log') });
  try {
    const env: NodeJS.ProcessEnv = { ...process.env, TEMPORAL_ADDRESS: address, LOG_LEVEL: 'warn' };
    const parsed = parseConfig(env);
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
    const connection = await Connection.connect({ address });
    try {
      await registerSearchAttributes(connection, parsed.config.TEMPORAL_NAMESPACE);
      await ensureMonitorSchedule(
        new Client({ connection, namespace: parsed.config.TEMPORAL_NAMESPACE }),
        parsed.config,
      );
    } finally {
      await connection.close();
    }

    const selfheal = path.join(ROOT, 'bin/selfheal.cjs');
    const commands: Command[] = [
      { name: 'temporal --help', argv: [temporalCli, '--help'] },
      { name: 'selfheal --help', argv: [process.execPath, selfheal, '--help'] },
      { name: 'selfheal status', argv: [process.execPath, selfheal, 'status'] },
      {
        name: 'temporal schedule describe',
        argv: [temporalCli, 'schedule', 'describe', '--address', address, '--schedule-id', MONITOR_SCHEDULE_ID],
      },
      { name: 'node -e 0', argv: [process.execPath, '-e', '0'] },
    ];
    if (process.env[EXTRA_CA]) {
      for (const c of commands.filter((c) => c.argv[0] === process.execPath)) {
        commands.push({ ...c, name: c.name + WITHOUT_EXTRA_CA, without: [EXTRA_CA] });
      }
    }
    const samples = new Map<string, number[]>(commands.map((c) => [c.name, []]));
    progress(`cli: ${warmup} warm-up and ${runs} measured runs of each, interleaved`);
    for (let round = 0; round < warmup + runs; round++) {
      for (const c of commands) {
        const ms = timeOnce(c, env);
        if (round >= warmup) samples.get(c.name)!.push(ms);
      }
    }
    const median = (name: string) => percentile(samples.get(name)!, 50);
    const base = median('temporal --help');
    return commands.map((c) => {
      const xs = samples.get(c.name)!;
      return {
        command: c.name,
        runs: xs.length,
        median_ms: round1(percentile(xs, 50)),
        p95_ms: round1(percentile(xs, 95)),
        min_ms: round1(Math.min(...xs)),
        over_temporal_help: Math.round((percentile(xs, 50) / base) * 100) / 100,
      };
    });
  } finally {
    await stopProcessGroup(server);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The target for the CLI, from the measured rows. */
export function cliTargets(rows: Row[]): TargetResult[] {
  const get = (name: string) => rows.find((r) => r.command === name);
  const base = get('temporal --help');
  if (!base) return [];
  const out: TargetResult[] = [];
  // Judged without the machine's NODE_EXTRA_CA_CERTS where it was measured both ways (see the top of this file).
  const clean = (name: string) => (get(name + WITHOUT_EXTRA_CA) ? name + WITHOUT_EXTRA_CA : name);
  for (const plain of ['selfheal --help', 'selfheal status']) {
    const name = clean(plain);
    const r = get(name);
    if (!r) continue;
    const node = get(clean('node -e 0'));
    const ratio = Number(r.over_temporal_help);
    out.push({
      target: `${name} starts within ${CLI_TARGET_RATIO}x temporal --help (medians)`,
      measured: `${r.median_ms} ms median, p95 ${r.p95_ms} ms = ${ratio}x temporal --help (${base.median_ms} ms, p95 ${base.p95_ms} ms)`,
      met: ratio <= CLI_TARGET_RATIO,
      ...(plain === 'selfheal --help' && ratio > CLI_TARGET_RATIO && node
        ? {
            note:
              `node's own start (\`node -e 0\`) took ${node.median_ms} ms = ${node.over_temporal_help}x ` +
              `temporal --help in the same run; --help adds the CLI's own loading (bin, commander, the command tree) ` +
              `(${round1(Number(r.median_ms) - Number(node.median_ms))} ms)`,
          }
        : {}),
      ...(name !== plain && get(plain)
        ? { note: `with the machine's ${EXTRA_CA}: ${get(plain)!.median_ms} ms = ${get(plain)!.over_temporal_help}x` }
        : {}),
      ...(plain === 'selfheal status' && ratio > CLI_TARGET_RATIO
        ? {
            note:
              'status must load what it talks with: the configuration schema (zod), the Temporal client (gRPC and ' +
              "the SDK's protobuf reflection of the whole Temporal API, most of the time) and ioredis, then make its " +
              `round trips; \`temporal schedule describe\`, the Go CLI making one, took ${get('temporal schedule describe')?.median_ms} ms`,
          }
        : {}),
    });
  }
  return out;
}
