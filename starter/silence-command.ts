/**
 * `selfheal silence add|list|remove`: maintenance windows in Postgres (table `silences`, audit `silence_log`). While
 * one matches, anomalies are still detected and shown but no action runs; healings wait and go on when it ends.
 */
import { addSilence, listSilences, removeSilence } from '../activities/silences';
import { selfhealDatabaseUrl, type Config } from '../core/config';
import { parseSilenceAdd, silenceState, type Silence, type SilenceAddOptions } from '../core/silence';
import { createPool } from '../db/pool';
import { CliError } from './healings';
import { formatTable } from './output';
import { operatorName } from './schedule-command';

async function withPool<T>(config: Config, body: (pool: ReturnType<typeof createPool>) => Promise<T>): Promise<T> {
  const pool = createPool(selfhealDatabaseUrl(config), { max: 1, application: 'selfheal-silence' });
  try {
    return await body(pool);
  } finally {
    await pool.end();
  }
}

/** A silence as `list --json` prints it (ISO times, and its state now). */
export function silenceJson(s: Silence, now: number) {
  const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
  return {
    id: s.id,
    state: silenceState(s, now),
    anomalyType: s.anomalyType,
    target: s.targetGlob,
    startsAt: iso(s.startsAt),
    endsAt: iso(s.endsAt),
    reason: s.reason,
    createdBy: s.createdBy,
    createdAt: iso(s.createdAt),
    removedAt: iso(s.removedAt),
    removedBy: s.removedBy,
  };
}

export function formatSilences(silences: Silence[], now: number): string {
  const t = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
  return formatTable(
    ['id', 'type', 'target', 'from', 'until', 'by', 'state', 'reason'],
    silences.map((s) => [
      `#${s.id}`,
      s.anomalyType ?? '*',
      s.targetGlob ?? '*',
      t(s.startsAt),
      t(s.endsAt),
      s.createdBy,
      silenceState(s, now) === 'removed' ? `removed by ${s.removedBy ?? '?'}` : silenceState(s, now),
      s.reason,
    ]),
  );
}

export type SilenceAddArgs = SilenceAddOptions & { json?: boolean };

export async function silenceAddCommand(config: Config, opts: SilenceAddArgs): Promise<void> {
  const { json, ...raw } = opts;
  let input;
  try {
    input = parseSilenceAdd(raw, Date.now(), operatorName());
  } catch (err) {
    throw new CliError((err as Error).message, 'invalid_input');
  }
  const s = await withPool(config, (pool) => addSilence(pool, input));
  process.stdout.write(
    json
      ? JSON.stringify(silenceJson(s, Date.now())) + '\n'
      : `silence #${s.id} added: ${s.anomalyType ?? 'any anomaly'} on ${s.targetGlob ?? 'any target'} until ` +
          `${new Date(s.endsAt).toISOString()} (by ${s.createdBy}: ${s.reason})\n`,
  );
}

export async function silenceListCommand(config: Config, opts: { json?: boolean; all?: boolean }): Promise<void> {
  const now = Date.now();
  const silences = await withPool(config, (pool) =>
    listSilences(pool, opts.all ? {} : { recentSince: now - 86_400_000 }),
  );
  if (opts.json) return void process.stdout.write(JSON.stringify(silences.map((s) => silenceJson(s, now))) + '\n');
  if (silences.length === 0) return void process.stdout.write('no silences\n');
  process.stdout.write(formatSilences(silences, now));
}

export async function silenceRemoveCommand(
  config: Config,
  idText: string,
  opts: { by?: string; reason?: string; json?: boolean },
): Promise<void> {
  const id = Number(idText.replace(/^#/, ''));
  if (!Number.isSafeInteger(id) || id <= 0)
    throw new CliError(`silence id: expected a number such as 12, got "${idText}"`, 'invalid_input');
  const by = (opts.by ?? operatorName()).trim();
  if (!by) throw new CliError('--by: must name who removes the silence', 'invalid_input');
  const r = await withPool(config, (pool) => removeSilence(pool, id, by, opts.reason?.trim() || undefined));
  if (r.outcome === 'not_found') throw new CliError(`no silence #${id}`, 'not_found');
  const now = Date.now();
  if (opts.json) {
    return void process.stdout.write(
      JSON.stringify({ outcome: r.outcome, silence: silenceJson(r.silence, now) }) + '\n',
    );
  }
  process.stdout.write(
    r.outcome === 'removed'
      ? `silence #${id} removed by ${by}: held healings go on within SILENCE_RECHECK_INTERVAL (${config.SILENCE_RECHECK_INTERVAL} s)\n`
      : `silence #${id} already removed by ${r.silence.removedBy ?? '?'} at ${new Date(r.silence.removedAt!).toISOString()}\n`,
  );
}
