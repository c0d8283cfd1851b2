import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import { Redis } from 'ioredis';
import { selfhealDatabaseUrl, type Config } from '../core/config';
import { createPools } from '../db/pool';
import { defaultLoopbackListen, LOCAL_MODEL } from '../core/local-model';
import { findOllamaBin } from './ollama-local';
import { ollamaState } from '../workers/ollama-probe';
import { findTemporalCli, INSTALL_HINT } from './temporal-local';
import { temporalAnswers } from '../workers/temporal-connection';
import { redactSecrets } from '../core/redact';
import { errorFirstLine } from '../core/errors';
import { DEFAULT_RUNBOOKS_FILE, readRunbooksFile } from '../activities/runbook-source';

export const CheckStatus = { ok: 'ok', degraded: 'degraded', missing: 'missing' } as const;
export type CheckStatus = (typeof CheckStatus)[keyof typeof CheckStatus];

export interface DoctorRow {
  dependency: string;
  status: CheckStatus;
  detail: string;
  /** What to do about it; empty when ok. */
  hint: string;
  /** Without it selfheal cannot run at all. */
  required: boolean;
}

const TIMEOUT_MS = 3_000;

function withTimeout<T>(p: Promise<T>, ms = TIMEOUT_MS): Promise<T> {
  return Promise.race([
    p,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms).unref()),
  ]);
}

const message = errorFirstLine;

async function checkTemporal(config: Config): Promise<DoctorRow> {
  const ok = await temporalAnswers(config.TEMPORAL_ADDRESS, TIMEOUT_MS);
  return ok
    ? {
        dependency: 'Temporal',
        status: 'ok',
        detail: `answers at ${config.TEMPORAL_ADDRESS}`,
        hint: '',
        required: true,
      }
    : {
        dependency: 'Temporal',
        status: 'missing',
        detail: `nothing answers at ${config.TEMPORAL_ADDRESS}`,
        hint: '`selfheal up` starts a local dev server, or set TEMPORAL_ADDRESS',
        required: true,
      };
}

/** The partial index the stuck-document query relies on at scale (db/README.md). */
const PROCESSING_INDEX_SQL = "CREATE INDEX ON documents (updated_at) WHERE status = 'processing'";

/**
 * Postgres: the watched pipeline's database (DATABASE_URL: its `documents` table, and whether outcomes come from
 * `document_events` or from `documents` alone) and selfheal's own tables (SELFHEAL_DATABASE_URL, default the same).
 */
async function checkPostgres(config: Config): Promise<DoctorRow> {
  const separate = selfhealDatabaseUrl(config) !== config.DATABASE_URL;
  const ownName = separate ? 'SELFHEAL_DATABASE_URL' : 'DATABASE_URL';
  const pools = createPools(config, { max: 1, application: 'selfheal-doctor' });
  const named = <T>(name: string, p: Promise<T>) =>
    p.catch((err: unknown) => {
      throw new Error(`${name}: ${message(err)}`);
    });
  try {
    const [pipeline, own] = await withTimeout(
      Promise.all([
        named(
          'DATABASE_URL',
          pools.pipeline.query<{
            version: string;
            documents: string | null;
            events: string | null;
            processing_index: boolean;
          }>(
            `SELECT current_setting('server_version') AS version,
                    to_regclass('documents')::text AS documents, to_regclass('document_events')::text AS events,
                    EXISTS (SELECT 1 FROM pg_index i
                             WHERE i.indrelid = to_regclass('documents') AND i.indpred IS NOT NULL
                               AND pg_get_indexdef(i.indexrelid) LIKE '%(updated_at) WHERE (status = ''processing''%')
                      AS processing_index`,
          ),
        ),
        named(
          ownName,
          pools.selfheal.query<{ healing_log: string | null; action_permits: string | null }>(
            `SELECT to_regclass('healing_log')::text AS healing_log, to_regclass('action_permits')::text AS action_permits`,
          ),
        ),
      ]),
    );
    const p = pipeline.rows[0]!;
    const o = own.rows[0]!;
    const where = separate ? "selfheal's tables in SELFHEAL_DATABASE_URL" : "selfheal's tables beside it";
    if (!o.healing_log || !o.action_permits) {
      return {
        dependency: 'Postgres',
        status: 'degraded',
        detail: `PostgreSQL ${p.version}, selfheal's schema not applied at ${ownName}`,
        hint: 'run `selfheal migrate`',
        required: true,
      };
    }
    if (!p.documents) {
      return {
        dependency: 'Postgres',
        status: 'degraded',
        detail: `PostgreSQL ${p.version}, no documents table at DATABASE_URL (${where})`,
        hint: "point DATABASE_URL at the pipeline's database (a view of the documents shape will do); `selfheal up` creates the reference pipeline's",
        required: true,
      };
    }
    const outcomes = p.events ? 'outcomes from document_events' : 'outcomes from documents (no document_events)';
    if (!p.processing_index) {
      return {
        dependency: 'Postgres',
        status: 'degraded',
        detail: `PostgreSQL ${p.version}, documents without a partial index on processing rows: the stuck-document query scans the table (${outcomes}; ${where})`,
        hint: `${PROCESSING_INDEX_SQL} (in the pipeline's database; selfheal never changes it)`,
        required: true,
      };
    }
    return {
      dependency: 'Postgres',
      status: 'ok',
      detail: `PostgreSQL ${p.version}, documents ready (${outcomes}); ${where}, schema applied`,
      hint: '',
      required: true,
    };
  } catch (err) {
    return {
      dependency: 'Postgres',
      status: 'missing',
      detail: message(err),
      hint: `start it with \`scripts/dev.sh services\`, or check DATABASE_URL${separate ? ' and SELFHEAL_DATABASE_URL' : ''}`,
      required: true,
    };
  } finally {
    await pools.end().catch(() => undefined);
  }
}

async function checkRedis(config: Config): Promise<DoctorRow> {
  const redis = new Redis(config.REDIS_URL, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    connectTimeout: TIMEOUT_MS,
    retryStrategy: () => null,
  });
  redis.on('error', () => undefined);
  try {
    await withTimeout(redis.connect());
    const info = await withTimeout(redis.info('server'));
    const version = /redis_version:(\S+)/.exec(info)?.[1] ?? '?';
    return { dependency: 'Redis', status: 'ok', detail: `Redis ${version}`, hint: '', required: true };
  } catch (err) {
    return {
      dependency: 'Redis',
      status: 'missing',
      detail: message(err),
      hint: 'start it with `scripts/dev.sh services`, or check REDIS_URL',
      required: true,
    };
  } finally {
    redis.disconnect();
  }
}

async function checkDocker(): Promise<DoctorRow> {
  try {
    const docker = new Docker();
    const version = await withTimeout(docker.version());
    return {
      dependency: 'Docker',
      status: 'ok',
      detail: `Docker Engine ${version.Version}`,
      hint: '',
      required: false,
    };
  } catch (err) {
    return {
      dependency: 'Docker',
      status: 'degraded',
      detail: message(err),
      hint: 'container restarts are unavailable; start dockerd (`scripts/dev.sh services`)',
      required: false,
    };
  }
}

/**
 * The model server and the configured model (`/api/tags` lists it). Never required: without either, analysis falls
 * back to the rule-based runbook.
 */
async function checkOllama(config: Config): Promise<DoctorRow> {
  const wanted = config.OLLAMA_MODEL;
  const state = await ollamaState(config.OLLAMA_HOST, wanted, TIMEOUT_MS);
  if (!state.answers) {
    const local = defaultLoopbackListen(config.OLLAMA_HOST) !== undefined;
    const installed = findOllamaBin() !== undefined;
    return {
      dependency: 'Ollama',
      status: 'degraded',
      detail: `no model server answers at ${redactSecrets(config.OLLAMA_HOST)}: ${state.error ?? 'no answer'}`,
      hint: `diagnosis falls back to the rule-based runbook; ${
        local
          ? installed
            ? '`selfheal up` starts the local one'
            : '`scripts/dev.sh llm` installs a local one, which `selfheal up` then starts'
          : 'start Ollama or set OLLAMA_HOST'
      }`,
      required: false,
    };
  }
  return state.modelPresent
    ? {
        dependency: 'Ollama',
        status: 'ok',
        detail: `answers at ${redactSecrets(config.OLLAMA_HOST)}, model ${wanted} present`,
        hint: '',
        required: false,
      }
    : {
        dependency: 'Ollama',
        status: 'degraded',
        detail: `answers at ${redactSecrets(config.OLLAMA_HOST)}, but model ${wanted} is not listed`,
        hint: `${
          wanted === LOCAL_MODEL ? '`scripts/dev.sh llm` registers it' : `ollama pull ${wanted}`
        }; meanwhile diagnosis uses the rule-based runbook`,
        required: false,
      };
}

async function checkTemporalCli(config: Config): Promise<DoctorRow> {
  const cli = findTemporalCli(config.TEMPORAL_CLI_PATH);
  if (!cli) {
    return {
      dependency: 'temporal CLI',
      status: 'missing',
      detail: config.TEMPORAL_CLI_PATH ? `not executable: ${config.TEMPORAL_CLI_PATH}` : 'not on PATH',
      hint: INSTALL_HINT,
      required: false,
    };
  }
  try {
    const { stdout } = await promisify(execFile)(cli, ['--version'], { timeout: TIMEOUT_MS });
    return { dependency: 'temporal CLI', status: 'ok', detail: `${stdout.trim()} (${cli})`, hint: '', required: false };
  } catch (err) {
    return {
      dependency: 'temporal CLI',
      status: 'degraded',
      detail: message(err),
      hint: INSTALL_HINT,
      required: false,
    };
  }
}

/**
 * The runbooks file (RUNBOOKS_FILE, else the built-in one): valid, with its entry count, or every problem with its
 * line. Required: the workers refuse to start without a valid one.
 */
export function checkRunbooks(config: Pick<Config, 'RUNBOOKS_FILE'>): DoctorRow {
  const name = config.RUNBOOKS_FILE ?? `${DEFAULT_RUNBOOKS_FILE} (built-in)`;
  const read = readRunbooksFile(config.RUNBOOKS_FILE);
  if (!read.ok) {
    return {
      dependency: 'Runbooks',
      status: 'missing',
      detail: read.error.split('\n').join('; '),
      hint: 'fix the file (README, Runbooks as files) or unset RUNBOOKS_FILE for the built-in runbook',
      required: true,
    };
  }
  const n = read.value.runbooks.length;
  return {
    dependency: 'Runbooks',
    status: 'ok',
    detail: `${name}: ${n} ${n === 1 ? 'entry' : 'entries'}`,
    hint: '',
    required: true,
  };
}

/** One row per dependency, checked in parallel, each bounded by a short timeout. */
export async function runDoctor(config: Config): Promise<DoctorRow[]> {
  return Promise.all([
    checkTemporal(config),
    checkPostgres(config),
    checkRedis(config),
    checkDocker(),
    checkOllama(config),
    checkTemporalCli(config),
    Promise.resolve(checkRunbooks(config)),
  ]);
}

/** Non-zero when a required dependency is missing. */
export function doctorExitCode(rows: DoctorRow[]): number {
  return rows.some((r) => r.required && r.status === 'missing') ? 1 : 0;
}
