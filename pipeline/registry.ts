/**
 * The registry of running pipeline workers: the Redis hash `pipeline:workers` (worker id -> JSON registration),
 * written by each worker, read by the runner, chaos and selfheal's metrics collection.
 */
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { STAGES, type Keys } from '../core/keys';

/** Worker ids are also container names and appear in `<worker>:<token>` lock values: no ':' allowed. */
export const workerIdSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, { error: 'expected a worker id of letters, digits, _ . - (no ":")' });

export const WorkerKind = { process: 'process', container: 'container' } as const;
export type WorkerKind = (typeof WorkerKind)[keyof typeof WorkerKind];

export const registrationSchema = z.object({
  /** Worker id (also the lease owner in `lock:document:<id>` values). */
  worker: workerIdSchema,
  stage: z.enum(STAGES),
  kind: z.enum(['process', 'container']),
  /** Process id in the worker's own pid namespace (inside a container, not a host pid). */
  pid: z.number().int(),
  /** Docker container name, for `kind: 'container'`. */
  container: z.string().optional(),
  /** `GET` URL answering 200 when healthy, 503 otherwise. */
  healthUrl: z.string(),
  /** Epoch ms the worker started. */
  startedAt: z.number(),
  /**
   * How to start a process worker again (chaos `clear()` respawns killed ones): `argv[0]` is the executable.
   * `env` holds only non-secret variables; connection strings come from the respawner's environment.
   */
  command: z
    .object({ argv: z.array(z.string()).min(1), cwd: z.string(), env: z.record(z.string(), z.string()) })
    .optional(),
});
export type WorkerRegistration = z.output<typeof registrationSchema>;

function parseRegistration(raw: string | null | undefined): WorkerRegistration | undefined {
  if (!raw) return undefined;
  try {
    const parsed = registrationSchema.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Every worker registration; fields that are not worker registrations (e.g. `llm`) are skipped. */
export async function readRegistrations(redis: Redis, keys: Keys): Promise<WorkerRegistration[]> {
  const all = await redis.hgetall(keys.pipelineWorkers());
  const out: WorkerRegistration[] = [];
  for (const raw of Object.values(all)) {
    const reg = parseRegistration(raw);
    if (reg) out.push(reg);
  }
  return out.sort((a, b) => a.worker.localeCompare(b.worker));
}

export async function readRegistration(
  redis: Redis,
  keys: Keys,
  worker: string,
): Promise<WorkerRegistration | undefined> {
  return parseRegistration(await redis.hget(keys.pipelineWorkers(), worker));
}

/** True when a process with this pid exists (it may be a zombie). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True when the process exists and is not a zombie (dead, waiting to be reaped by its parent). */
export function isProcessRunning(pid: number): boolean {
  if (!isProcessAlive(pid)) return false;
  try {
    // /proc/<pid>/stat: "pid (comm) S ..."; comm may contain spaces and parentheses, the state follows the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return isProcessAlive(pid);
  }
}

/** The command line of a live process (Linux /proc), or undefined when it is gone, a zombie or unreadable. */
export function processCommandLine(pid: number): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (raw.length === 0) return undefined;
    return raw.split('\0').filter((s, i, all) => !(i === all.length - 1 && s === ''));
  } catch {
    return undefined;
  }
}

/**
 * True when `pid` still runs the recorded command line, so a pid reused by an unrelated process is never signalled.
 * Without /proc, existence is all we can check.
 */
export function processRunsCommand(pid: number, argv: string[] | undefined): boolean {
  if (!isProcessAlive(pid)) return false;
  if (!argv) return true;
  let procReadable = true;
  try {
    readFileSync('/proc/self/cmdline');
  } catch {
    procReadable = false;
  }
  if (!procReadable) return true;
  const actual = processCommandLine(pid);
  return actual !== undefined && actual.length === argv.length && actual.every((a, i) => a === argv[i]);
}
