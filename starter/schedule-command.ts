/**
 * `selfheal schedule pause|resume|trigger`: an operator's hands on the monitor Schedule, through its ScheduleHandle.
 * A pause note says who paused, when and why, so the next operator (and the Web UI) sees it.
 */
import os from 'node:os';
import { ScheduleNotFoundError, type Client, type ScheduleDescription } from '@temporalio/client';
import type { Config } from '../core/config';
import { MONITOR_SCHEDULE_ID } from '../workflows/definitions';
import { CliError, withClient } from './healings';

export const ScheduleSubcommand = { pause: 'pause', resume: 'resume', trigger: 'trigger' } as const;
export type ScheduleSubcommand = (typeof ScheduleSubcommand)[keyof typeof ScheduleSubcommand];

export interface ScheduleCommandResult {
  scheduleId: string;
  subcommand: ScheduleSubcommand;
  /** Paused state and note after the command. */
  paused: boolean;
  note: string;
  /** Paused state before the command. */
  wasPaused: boolean;
  /** trigger: the overlap policy the triggered cycle is subject to (the Schedule's own). */
  overlap?: string;
  /** trigger: cycles running when it was asked (with overlap SKIP, a trigger then starts nothing). */
  runningCycles?: number;
}

export function parseScheduleSubcommand(text: string): ScheduleSubcommand {
  if (Object.hasOwn(ScheduleSubcommand, text)) return text as ScheduleSubcommand;
  throw new CliError(
    `unknown schedule command "${text}": expected ${Object.keys(ScheduleSubcommand).join(', ')}`,
    'invalid_input',
  );
}

/** Who runs the command: the OS user (never a secret), for the Schedule's note. */
export function operatorName(): string {
  try {
    return os.userInfo().username || 'unknown';
  } catch {
    return process.env.USER ?? 'unknown';
  }
}

/** `paused by alice at 2026-01-01T10:00:00.000Z: investigating INC-42`. */
export function scheduleNote(verb: 'paused' | 'resumed', who: string, now: number, note?: string): string {
  const why = note?.trim();
  return `${verb} by ${who} at ${new Date(now).toISOString()}${why ? `: ${why}` : ' (no note given)'}`;
}

async function describeMonitor(client: Client): Promise<ScheduleDescription> {
  try {
    return await client.schedule.getHandle(MONITOR_SCHEDULE_ID).describe();
  } catch (err) {
    if (err instanceof ScheduleNotFoundError)
      throw new CliError(
        `no Schedule ${MONITOR_SCHEDULE_ID} in namespace ${client.options.namespace}: \`selfheal up\` creates it`,
        'not_found',
      );
    throw err;
  }
}

export async function runScheduleCommand(
  client: Client,
  subcommand: ScheduleSubcommand,
  opts: { note?: string; who?: string; now?: number } = {},
): Promise<ScheduleCommandResult> {
  const handle = client.schedule.getHandle(MONITOR_SCHEDULE_ID);
  const before = await describeMonitor(client);
  const who = opts.who ?? operatorName();
  const now = opts.now ?? Date.now();
  const base = { scheduleId: MONITOR_SCHEDULE_ID, subcommand, wasPaused: before.state.paused };
  switch (subcommand) {
    case 'pause': {
      const note = scheduleNote('paused', who, now, opts.note);
      await handle.pause(note);
      return { ...base, paused: true, note };
    }
    case 'resume': {
      const note = scheduleNote('resumed', who, now, opts.note);
      await handle.unpause(note);
      return { ...base, paused: false, note };
    }
    case 'trigger': {
      // The SDK's trigger defaults to ALLOW_ALL; pass the Schedule's own policy so a manual cycle never overlaps one
      // that is running when the policy says SKIP.
      const overlap = before.policies.overlap;
      await handle.trigger(overlap);
      return {
        ...base,
        paused: before.state.paused,
        note: before.state.note ?? '',
        overlap,
        runningCycles: before.info.runningActions.length,
      };
    }
  }
}

/** One line for a person. */
export function formatScheduleResult(r: ScheduleCommandResult): string {
  switch (r.subcommand) {
    case 'pause':
      return `${r.scheduleId} paused${r.wasPaused ? ' (it was already paused; note replaced)' : ''}: ${r.note}`;
    case 'resume':
      return `${r.scheduleId} resumed${r.wasPaused ? '' : ' (it was not paused)'}: ${r.note}`;
    case 'trigger': {
      const skipped = r.overlap === 'SKIP' && (r.runningCycles ?? 0) > 0;
      return (
        `${r.scheduleId} triggered a monitoring cycle (overlap ${r.overlap})` +
        (skipped ? `: a cycle is running, so this one is skipped` : '') +
        (r.paused ? '; the Schedule stays paused' : '')
      );
    }
  }
}

/** `selfheal schedule pause|resume|trigger [--note TEXT] [--json]` (cli.ts defines the command). */
export async function scheduleCommand(
  config: Config,
  command: string,
  opts: { note?: string; json?: boolean },
): Promise<void> {
  const subcommand = parseScheduleSubcommand(command);
  const r = await withClient(config, (client) => runScheduleCommand(client, subcommand, { note: opts.note }));
  process.stdout.write(opts.json ? JSON.stringify(r) + '\n' : formatScheduleResult(r) + '\n');
}
