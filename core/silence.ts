/**
 * Silences (maintenance windows): which silence holds an anomaly at a time, and the checks of `selfheal silence add`.
 * Pure: the store is activities/silences.ts, the CLI starter/silence-command.ts. A silence matches an anomaly when
 * its type is the anomaly's (or it has none: any type), its target glob matches the anomaly's target (CONTAINER_ALLOWLIST
 * syntax; none: any target), it was not removed, and the time is in [startsAt, endsAt). The lowest id wins.
 */
import { z } from 'zod';
import { globMatch } from './safety';
import { AnomalyType } from './types';

/** A silence as stored; times are epoch ms. */
export interface Silence {
  id: number;
  anomalyType: AnomalyType | null;
  targetGlob: string | null;
  startsAt: number;
  endsAt: number;
  reason: string;
  createdBy: string;
  createdAt: number;
  removedAt: number | null;
  removedBy: string | null;
}

export type SilenceState = 'active' | 'pending' | 'expired' | 'removed';

/** removed (whenever), expired (ended), pending (starts later), active. */
export function silenceState(s: Silence, now: number): SilenceState {
  if (s.removedAt !== null) return 'removed';
  if (now >= s.endsAt) return 'expired';
  if (now < s.startsAt) return 'pending';
  return 'active';
}

/** Whether the silence holds this anomaly at `now`. */
export function silenceMatches(s: Silence, anomaly: { type: string; target: string }, now: number): boolean {
  if (silenceState(s, now) !== 'active') return false;
  if (s.anomalyType !== null && s.anomalyType !== anomaly.type) return false;
  return s.targetGlob === null || globMatch(s.targetGlob, anomaly.target);
}

/** The silence that holds the anomaly at `now`, the lowest id among those that match; undefined when none does. */
export function matchingSilence(
  silences: readonly Silence[],
  anomaly: { type: string; target: string },
  now: number,
): Silence | undefined {
  let best: Silence | undefined;
  for (const s of silences) {
    if (silenceMatches(s, anomaly, now) && (best === undefined || s.id < best.id)) best = s;
  }
  return best;
}

/** Characters of a silence's reason: it travels in every re-check of a held healing. */
export const REASON_MAX = 500;

/** `silenced by #12 (alice: deploy of v2) until 2026-…Z`: the line the status and the Web UI show. */
export function silenceNote(s: Pick<Silence, 'id' | 'createdBy' | 'reason' | 'endsAt'>): string {
  return `silenced by #${s.id} (${s.createdBy}: ${s.reason}) until ${new Date(s.endsAt).toISOString()}`;
}

const UNIT_MS = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1_000 } as const;
/**
 * Longest silence: 30 days (a forgotten "forever" is a risk, not a feature; a held healing re-checks at most ~2,000
 * times per silence, so its history stays bounded).
 */
export const MAX_SILENCE_MS = 30 * UNIT_MS.d;

/** `30m`, `1h`, `2h30m`, `1d`, `90s` to ms; throws one line on anything else or zero. */
export function parseSilenceDuration(text: string): number {
  const t = text.trim();
  const re = /(\d+)\s*([dhms])/gy;
  let ms = 0;
  let m: RegExpExecArray | null;
  let end = 0;
  while ((m = re.exec(t)) !== null) {
    ms += Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
    end = re.lastIndex;
  }
  if (t === '' || end !== t.length) {
    throw new Error(`--for: expected a duration such as 30m, 1h, 2h30m or 1d, got "${text}"`);
  }
  if (ms <= 0) throw new Error(`--for: the duration must be longer than 0, got "${text}"`);
  return ms;
}

/** What `silence add` was given (its options, as strings). */
export const SilenceAddOptions = z
  .object({
    type: z.string().optional(),
    target: z.string().optional(),
    for: z.string().optional(),
    until: z.string().optional(),
    reason: z.string().optional(),
    by: z.string().optional(),
  })
  .strict();
export type SilenceAddOptions = z.infer<typeof SilenceAddOptions>;

/** A silence to store: the fields its author gives. */
export type NewSilence = Pick<Silence, 'anomalyType' | 'targetGlob' | 'startsAt' | 'endsAt' | 'reason' | 'createdBy'>;

const anomalyTypes = Object.values(AnomalyType) as [AnomalyType, ...AnomalyType[]];

/** Checks `silence add`'s options; throws an Error with one line on the first problem. */
export function parseSilenceAdd(raw: SilenceAddOptions, now: number, defaultBy: string): NewSilence {
  const opts = SilenceAddOptions.parse(raw);
  let anomalyType: AnomalyType | null = null;
  if (opts.type !== undefined) {
    const r = z.enum(anomalyTypes).safeParse(opts.type.trim());
    if (!r.success) throw new Error(`--type: unknown anomaly type "${opts.type}": expected ${anomalyTypes.join(', ')}`);
    anomalyType = r.data;
  }
  const target = opts.target?.trim();
  if (opts.target !== undefined && !target) throw new Error('--target: an empty glob (leave it out for any target)');
  if ((opts.for === undefined) === (opts.until === undefined)) {
    throw new Error('give exactly one of --for DURATION (e.g. 1h) or --until TIME (ISO, e.g. 2026-01-01T18:00:00Z)');
  }
  let endsAt: number;
  if (opts.for !== undefined) endsAt = now + parseSilenceDuration(opts.for);
  else {
    const until = opts.until!.trim();
    // An ISO date and time; a bare date or a number is refused (it would not mean what one expects).
    // With its zone (Z or an offset): without one, the time would depend on the clock settings of the machine.
    endsAt = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/i.test(until)
      ? Date.parse(until)
      : NaN;
    if (Number.isNaN(endsAt)) {
      throw new Error(`--until: expected an ISO time with its zone, such as 2026-01-01T18:00:00Z, got "${opts.until}"`);
    }
    if (endsAt <= now) throw new Error(`--until: ${new Date(endsAt).toISOString()} is in the past`);
  }
  if (endsAt - now > MAX_SILENCE_MS) throw new Error('a silence lasts at most 30 days');
  const reason = opts.reason?.trim();
  if (!reason) throw new Error('--reason: say why (it is audited)');
  if (reason.length > REASON_MAX) throw new Error(`--reason: at most ${REASON_MAX} characters, got ${reason.length}`);
  const createdBy = (opts.by ?? defaultBy).trim();
  if (!createdBy) throw new Error('--by: must name who silences');
  return { anomalyType, targetGlob: target ?? null, startsAt: now, endsAt, reason, createdBy };
}
