/**
 * The `selfheal` CLI. Every command parses the configuration once (bad configuration: one message, exit 2),
 * prints one clear line on failure and exits non-zero; read commands take `--json`.
 */
import { Command, Option } from 'commander';
import type { Config } from '../core/config';
import type * as ConfigModule from '../core/config';
import type * as Generator from '../pipeline/generator';
import { CHAOS_FAULTS } from '../pipeline/faults';
import type * as Audit from './audit';
import type * as ChaosCommand from './chaos-command';
import type * as Demo from './demo';
import { DEMO_APPROVER } from './demo-settings';
import { classifyFallback, planSourceLabel } from '../core/fallback-cause';
import type * as Doctor from './doctor';
import type * as Healings from './healings';
import type * as Keys from '../core/keys';
import type * as Migrate from '../db/migrate';
import type * as Output from './output';
import type * as PipelineUp from './pipeline-up';
import type * as Pool from '../db/pool';
import type * as Redis from 'ioredis';
import type * as ScheduleCommand from './schedule-command';
import type * as SilenceCommand from './silence-command';
import type * as Status from './status';
import type * as Up from './up';
import type * as WorkerEnv from '../workers/env';
import { errorMessage } from '../core/errors';

/**
 * Loads a command's modules when it runs, so that `selfheal --help` and a light command do not pay for the heavy
 * ones (the Temporal client, pg, ioredis, dockerode, zod...). `require`, not `import()`: tsx's CommonJS hook, which
 * runs the sources in development and tests, does not resolve a dynamic import of a `.ts` file.
 */
function load<T>(id: string): T {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(id) as T;
}

function fail(err: unknown): never {
  const msg = errorMessage(err);
  process.stderr.write(`selfheal: ${msg.split('\n')[0]}\n`);
  process.exit(1);
}

/**
 * Runs a command body with the parsed config; errors become one line and exit 1. `runbooks: true` (`up`): an invalid
 * runbooks file stops the command before anything starts. The other commands do not read the file, and must keep
 * working while it is being fixed (silence, approve, status in an incident); `doctor` reports it as a check.
 */
function withConfig<A extends unknown[]>(
  body: (config: Config, ...args: A) => Promise<void>,
  opts: { runbooks?: boolean } = {},
) {
  return async (...args: A) => {
    const config = load<typeof WorkerEnv>('../workers/env').loadConfigOrExit(process.env, {
      runbooks: opts.runbooks ?? false,
    });
    try {
      await body(config, ...args);
    } catch (err) {
      fail(err);
    }
  };
}

/** `selfheal chaos --help`: every fault of CHAOS_FAULTS with its arguments. */
function faultList(): string {
  const rows = Object.entries(CHAOS_FAULTS).map(([fault, args]) => `${fault} ${args}`.trim());
  return `\nFaults:\n${rows.map((r) => `  ${r}`).join('\n')}\n`;
}

export function buildCli(): Command {
  const program = new Command('selfheal')
    .description('Self-healing monitoring for a document-processing pipeline, on Temporal')
    .configureOutput({ outputError: (str, write) => write(str) });

  program
    .command('up')
    .description('start the local system: Temporal, schema, workers, HTTP server and the reference pipeline')
    .option('--no-pipeline', 'do not start the reference pipeline')
    .addOption(
      new Option('--ui-port <port>', 'Web UI port of a dev server that up starts').default('8233').argParser(Number),
    )
    .action(
      withConfig(
        async (config, opts: { pipeline: boolean; uiPort: number }) => {
          const { startReferencePipeline } = load<typeof PipelineUp>('./pipeline-up');
          await load<typeof Up>('./up').upCommand(config, { ...opts, startPipeline: startReferencePipeline });
        },
        { runbooks: true },
      ),
    );

  program
    .command('migrate')
    .description("apply selfheal's own schema, db/init.sql, to SELFHEAL_DATABASE_URL (idempotent)")
    .action(
      withConfig(async (config) => {
        const { selfhealDatabaseUrl } = load<typeof ConfigModule>('../core/config');
        const pool = load<typeof Pool>('../db/pool').createPool(selfhealDatabaseUrl(config), {
          max: 1,
          application: 'selfheal-migrate',
        });
        try {
          await load<typeof Migrate>('../db/migrate').migrate(pool);
        } finally {
          await pool.end();
        }
        process.stdout.write('schema applied\n');
      }),
    );

  program
    .command('doctor')
    .description('check every dependency: ok / degraded / missing, with a fix hint')
    .option('--json', 'print JSON')
    .action(
      withConfig(
        async (config, opts: { json?: boolean }) => {
          const { doctorExitCode, runDoctor } = load<typeof Doctor>('./doctor');
          const rows = await runDoctor(config);
          if (opts.json) process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
          else
            load<typeof Output>('./output').printTable(
              ['dependency', 'status', 'detail', 'hint'],
              rows.map((r) => [r.dependency, r.status, r.detail, r.hint]),
            );
          process.exitCode = doctorExitCode(rows);
        },
        { runbooks: false },
      ),
    );

  program
    .command('healings')
    .description('list healing workflows (newest first)')
    .option('--open', 'only the ones still running')
    .option('--json', 'print JSON')
    .action(
      withConfig(async (config, opts: { open?: boolean; json?: boolean }) => {
        const { listHealings, withClient } = load<typeof Healings>('./healings');
        const rows = await withClient(config, (client) => listHealings(client, { open: opts.open }));
        if (opts.json) return void process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
        load<typeof Output>('./output').printTable(
          ['workflow', 'status', 'phase', 'action', 'severity', 'started'],
          rows.map((r) => [r.workflowId, r.status.toLowerCase(), r.phase, r.action, r.severity, r.startedAt]),
        );
      }),
    );

  program
    .command('show')
    .description('one healing workflow: phase, anomaly, plan, decision, actions, verification, timeline')
    .argument('<workflowId>')
    .option('--json', 'print JSON')
    .action(
      withConfig(async (config, workflowId: string, opts: { json?: boolean }) => {
        const { showHealing, withClient } = load<typeof Healings>('./healings');
        const { status, healing } = await withClient(config, (client) => showHealing(client, workflowId));
        const p = healing.plan;
        // Who planned, and for the runbook why (plans of older runs carry only the detailed reason).
        const source = p
          ? {
              decidedBy: p.source,
              ...(p.source === 'runbook' && p.fallbackReason
                ? { fallbackCause: p.fallbackCause ?? classifyFallback(p.fallbackReason) }
                : {}),
            }
          : {};
        if (opts.json)
          return void process.stdout.write(
            JSON.stringify({ workflowId, status, ...source, ...healing }, null, 2) + '\n',
          );
        const lines = [
          `${workflowId}  ${status.toLowerCase()}  phase ${healing.phase}`,
          `anomaly   ${healing.anomaly.type} on ${healing.anomaly.target} (${healing.anomaly.severity}): ${healing.anomaly.summary}`,
          p
            ? `plan      ${p.id}: ${p.action} (decided by ${planSourceLabel(p)}, confidence ${p.confidence.toFixed(2)}) ${p.reasoning}`
            : 'plan      none yet',
          healing.decision
            ? `decision  ${healing.decision.decision} by ${healing.decision.by} via ${healing.decision.via}${healing.decision.reason ? `: ${healing.decision.reason}` : ''}`
            : '',
          ...healing.actions.map((a) => `action    ${a.action}: ${a.outcome}`),
          healing.verification
            ? `verified  ${healing.verification.healed ? 'healed' : 'not healed'}: ${healing.verification.note}`
            : '',
          '',
          ...healing.history.map((h) => `${new Date(h.at).toISOString()}  ${h.phase.padEnd(17)} ${h.note}`),
        ];
        process.stdout.write(lines.filter((l, i) => l !== '' || i > 5).join('\n') + '\n');
      }),
    );

  for (const decision of ['approve', 'reject'] as const) {
    const cmd = program
      .command(decision)
      .description(`${decision} the plan a healing workflow is waiting on`)
      .argument('<workflowId>')
      .requiredOption('--by <name>', 'who decides (checked against APPROVERS)')
      .option('--plan <planId>', 'the plan you reviewed (default: the current one)')
      .option('--json', 'print JSON');
    if (decision === 'reject') cmd.requiredOption('--reason <text>', 'why');
    else cmd.option('--reason <text>', 'why');
    cmd.action(
      withConfig(
        async (config, workflowId: string, opts: { by: string; reason?: string; plan?: string; json?: boolean }) => {
          if (!opts.by.trim()) throw new Error('--by must name who decides');
          const { decideHealing, withClient } = load<typeof Healings>('./healings');
          const r = await withClient(config, (client) =>
            decideHealing(
              client,
              workflowId,
              { decision, by: opts.by, reason: opts.reason, planId: opts.plan },
              config.APPROVAL_SECRET,
            ),
          );
          process.stdout.write(
            opts.json
              ? JSON.stringify({ workflowId, ...r }) + '\n'
              : `${workflowId}: ${r.decision === 'approve' ? 'approved' : 'rejected'} plan ${r.planId}\n`,
          );
        },
      ),
    );
  }

  program
    .command('audit')
    .description('the healing_log audit trail')
    .option('--since <duration>', 'how far back: 30m, 24h, 7d', '24h')
    .option('--workflow <workflowId>', 'only this workflow')
    .option('--json', 'print JSON')
    .action(
      withConfig(async (config, opts: { since: string; workflow?: string; json?: boolean }) => {
        const { parseDuration, readAudit } = load<typeof Audit>('./audit');
        const rows = await readAudit(config, { sinceMs: parseDuration(opts.since), workflowId: opts.workflow });
        if (opts.json) return void process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
        load<typeof Output>('./output').printTable(
          ['time', 'workflow', 'step', 'action', 'by', 'outcome'],
          rows.map((r) => [
            r.created_at.toISOString(),
            r.workflow_id,
            r.step,
            r.action ?? '',
            r.decided_by ?? '',
            r.outcome ?? r.error ?? '',
          ]),
        );
      }),
    );

  program
    .command('generate')
    .description('add documents to the reference pipeline (queued for the first stage)')
    .argument('<count>', 'how many documents, 1 to 1000000')
    .action(
      withConfig(async (config, count: string) => {
        const n = Number(count);
        if (!/^\d+$/.test(count) || n < 1 || n > 1_000_000)
          throw new Error(`count: expected a whole number from 1 to 1000000, got "${count}"`);
        const pool = load<typeof Pool>('../db/pool').createPool(config.DATABASE_URL, {
          max: 2,
          application: 'selfheal-generate',
        });
        const redis = new (load<typeof Redis>('ioredis').Redis)(config.REDIS_URL, { maxRetriesPerRequest: 2 });
        try {
          const ids = await load<typeof Generator>('../pipeline/generator').generateDocuments({
            pool,
            redis,
            keys: load<typeof Keys>('../core/keys').createKeys(config.REDIS_KEY_PREFIX),
            count: n,
          });
          process.stdout.write(`queued ${ids.length} documents (ids ${ids[0]}..${ids[ids.length - 1]})\n`);
        } finally {
          redis.disconnect();
          await pool.end();
        }
      }),
    );

  program
    .command('chaos')
    .description('inject a real fault into the reference pipeline (the faults are listed below)')
    .argument('<fault>', 'the fault, or clear to undo every fault')
    .argument('[args...]', 'arguments of the fault')
    .option('--json', 'print what was done as JSON')
    .addHelpText('after', faultList())
    .action(
      withConfig(async (config, fault: string, args: string[], opts: { json?: boolean }) => {
        const result = await load<typeof ChaosCommand>('./chaos-command').runChaosCommand(config, fault, args);
        process.stdout.write(
          opts.json ? JSON.stringify(result, null, 2) + '\n' : `${fault}: ${JSON.stringify(result)}\n`,
        );
      }),
    );

  program
    .command('status')
    .description('one screen: Temporal, the monitor Schedule, pollers per task queue, open healings, open anomalies')
    .option('--json', 'print JSON')
    .action(
      withConfig((config, opts: { json?: boolean }) => load<typeof Status>('./status').statusCommand(config, opts)),
    );

  program
    .command('schedule')
    .description('pause, resume or trigger the monitor Schedule (selfheal-monitor)')
    .argument('<command>', 'pause | resume | trigger (a cycle now; the overlap policy applies)')
    .option('--note <text>', 'why (pause, resume); the note records who and when too')
    .option('--json', 'print JSON')
    .action(
      withConfig((config, command: string, opts: { note?: string; json?: boolean }) =>
        load<typeof ScheduleCommand>('./schedule-command').scheduleCommand(config, command, opts),
      ),
    );

  // Silences (maintenance windows): starter/silence-command.ts.
  const silence = program
    .command('silence')
    .description('maintenance windows: while a silence matches, anomalies are shown but no action runs');
  const silenceModule = () => load<typeof SilenceCommand>('./silence-command');
  silence
    .command('add')
    .description('silence an anomaly type and/or a target glob for a while (audited: who, why, when)')
    .option('--type <type>', 'only this anomaly type (default: any)')
    .option('--target <glob>', 'only targets matching this glob, CONTAINER_ALLOWLIST syntax (default: any)')
    .option('--for <duration>', 'how long: 30m, 1h, 2h30m, 1d')
    .option('--until <time>', 'until an ISO time, e.g. 2026-01-01T18:00:00Z')
    .option('--reason <text>', 'why (required)')
    .option('--by <name>', 'who silences (default: the OS user)')
    .option('--json', 'print JSON')
    .action(
      withConfig((config, opts: SilenceCommand.SilenceAddArgs) => silenceModule().silenceAddCommand(config, opts)),
    );
  silence
    .command('list')
    .description('silences open or ended in the last 24 h (--all: every one), with their state')
    .option('--all', 'every silence ever added')
    .option('--json', 'print JSON')
    .action(
      withConfig((config, opts: { all?: boolean; json?: boolean }) => silenceModule().silenceListCommand(config, opts)),
    );
  silence
    .command('remove')
    .description('end a silence now (it is kept, marked removed, and audited); held healings go on')
    .argument('<id>', 'the silence id, e.g. 12')
    .option('--by <name>', 'who removes it (default: the OS user)')
    .option('--reason <text>', 'why')
    .option('--json', 'print JSON')
    .action(
      withConfig((config, id: string, opts: { by?: string; reason?: string; json?: boolean }) =>
        silenceModule().silenceRemoveCommand(config, id, opts),
      ),
    );

  // The demo parses its own configuration: it adds its defaults to the environment first.
  program
    .command('demo')
    .description(
      'start the local system with the reference pipeline, inject one fault per seed class and follow each healing',
    )
    .option('--auto-approve', `approve plans awaiting approval (as "${DEMO_APPROVER}", bound to the plan id)`)
    .option('--json', 'print the summary as JSON (the timeline goes to stderr)')
    .addOption(
      new Option('--ui-port <port>', 'Web UI port of a dev server that demo starts, and of the links')
        .default('8233')
        .argParser(Number),
    )
    .action((opts: { autoApprove?: boolean; json?: boolean; uiPort: number }) =>
      load<typeof Demo>('./demo').demoCommand(opts),
    );

  return program;
}

/**
 * Output to a pipe whose reader is gone (`selfheal up | tee log`, Ctrl-C killed tee first) is dropped instead of
 * crashing the CLI with EPIPE: a command that started things must still get to stop them.
 */
function dropOutputToClosedPipes(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') throw err;
    });
  }
}

export function main(argv = process.argv): void {
  dropOutputToClosedPipes();
  buildCli()
    .parseAsync(argv)
    .catch((err: unknown) => fail(err));
}

if (require.main === module) main();
