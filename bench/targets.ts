/** The issue's targets, evaluated from the measured rows (also again by `npm run bench -- report`). */
import type { TargetResult } from './common';
import { cliTargets } from './cli';
import { llmTargets } from './llm';
import type { BenchResults } from './report';

const num = (v: unknown): number => (typeof v === 'number' ? v : Number.NaN);

/** The issue's targets, from the measured rows. */
export function targets(r: Omit<BenchResults, 'targets' | 'finishedAt'>): TargetResult[] {
  const out: TargetResult[] = [];
  const at1M = r.monitor.find((m) => m.documents === 1_000_000);
  if (at1M) {
    out.push({
      target: 'monitoring cycle at most 3x its floor at 1M documents',
      measured: `${at1M.reconciled_p50_ms} ms p50 = ${at1M.reconciled_over_floor}x the floor (${at1M.floor_p50_ms} ms)`,
      met: num(at1M.reconciled_over_floor) <= 3,
      note: 'the cycle with reconciliation, as it runs in production; the floor includes the same SQL',
    });
    out.push({
      target: 'monitoring cycle under 25 ms p50 at 1M documents',
      measured: `${at1M.reconciled_p50_ms} ms p50 (${at1M.snapshot_p50_ms} ms without reconciliation)`,
      met: num(at1M.reconciled_p50_ms) < 25,
    });
  }
  if (r.detection.length > 0) {
    const worst = r.detection.reduce((w, d) => (num(d.over_bound_s) > num(w.over_bound_s) ? d : w));
    const missed = r.detection.filter((d) => d.within_target !== true);
    out.push({
      target: 'detection within one interval plus one second of its bound, per fault class',
      measured: `worst: ${String(worst.fault)} ${worst.over_bound_s} s over its bound`,
      met: missed.length === 0,
      ...(missed.length ? { note: `missed: ${missed.map((d) => String(d.fault)).join(', ')}` } : {}),
    });
  }
  if (r.heal.restart.length > 0) {
    const diffs = r.heal.restart.map((x) => num(x.restartWorker_ms) - num(x.bare_restart_plus_health_ms));
    out.push({
      target: 'restart heal within 1.5 s of a bare restart',
      measured: `restartWorker minus bare, per round: ${diffs.map((d) => `${d} ms`).join(', ')}`,
      met: Math.max(...diffs) <= 1500,
    });
  }
  const requeue = r.heal.requeue.find((x) => String(x.what).startsWith('requeueDocuments'));
  if (requeue)
    out.push({
      target: 'requeue at least 10,000 documents/s',
      measured: `${requeue.documents_per_s} documents/s (bare SQL + LPUSH: ${r.heal.requeue.find((x) => x !== requeue)?.documents_per_s} documents/s)`,
      met: num(requeue.documents_per_s) >= 10_000,
    });
  const b500 = r.system.throughput.find((x) => x.anomalies === 500 && x.server !== 'in-memory dev server');
  const m500 = r.system.throughput.find((x) => x.anomalies === 500 && x.server === 'in-memory dev server');
  if (b500)
    out.push({
      target: '500 simultaneous anomalies terminal within 60 s on the dev server',
      measured:
        `${b500.seconds_to_all_terminal} s (${b500.workflows_per_s} workflows/s; ${b500.phases})` +
        (m500 ? `; in-memory dev server ${m500.seconds_to_all_terminal} s (${m500.workflows_per_s}/s)` : ''),
      met: b500.all_terminal === true && num(b500.seconds_to_all_terminal) <= 60,
      note:
        'CPU-bound on 2 cores shared by the dev server, Postgres, Redis and the three workers: one healing is about ' +
        '100 history events, 13 activities and 14 workflow tasks (the audit and safety steps are each a remote ' +
        'activity) plus a verification snapshot, and every step waited 0.3-1 s for a busy process during a burst; ' +
        "the dev server's SQLite file costs about half the rate (150 simultaneous healings, measured separately here: " +
        '102.6 s with the file, 43.3 s in memory; a full run adds an in-memory row for 500). Not fixed here: making the audit and ' +
        'safety steps local activities would cut the round trips per healing by about half.',
    });
  if (r.system.memory.length > 0) {
    // The Temporal dev server is listed but is Temporal's process, not selfheal's.
    const over = r.system.memory.filter((m) => m.process !== 'temporal' && num(m.peak_rss_mb) >= 250);
    out.push({
      target: 'each selfheal process under 250 MB',
      measured: r.system.memory
        .filter((m) => m.process !== 'temporal')
        .map((m) => `${String(m.process)} ${m.peak_rss_mb} MB`)
        .join(', '),
      met: over.length === 0,
      ...(over.length
        ? {
            note:
              `over: ${over.map((m) => String(m.process)).join(', ')}. The healing worker's peak follows the workflows ` +
              "it keeps cached (the SDK's default cache, sized from the heap): read after 500 open healings; at rest " +
              'it is about 270 MB, of which about 100 MB is the Temporal SDK with its workflow sandbox and tsx. ' +
              'Not fixed here: a smaller maxCachedWorkflows bounds it at the cost of replays.',
          }
        : {}),
    });
  }
  if (r.cli) out.push(...cliTargets(r.cli.rows));
  if (r.llm) out.push(...llmTargets(r.llm));
  return out;
}
