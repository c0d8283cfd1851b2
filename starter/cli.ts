/**
 * The `selfheal` CLI. Every command parses the configuration once (bad configuration: one message, exit 2),
 * prints one clear line on failure and exits non-zero; read commands take `--json`.
 */
import { Command, Option } from 'commander';
import { Redis } from 'ioredis';
import { createKeys } from '../core/keys';
import { generateDocuments } from '../pipeline/generator';
import { runChaosCommand } from './chaos-command';
import { startReferencePipeline } from './pipeline-up';
import { selfhealDatabaseUrl, type Config } from '../core/config';
import { createPool } from '../db/pool';
import { migrate } from '../db/migrate';
import { loadConfigOrExit } from '../workers/env';
import { doctorExitCode, runDoctor } from './doctor';
import { decideHealing, listHealings, parseDuration, readAudit, showHealing, withClient } from './healings';
import { printTable } from './output';
import { registerDemoCommand } from './demo';
import { registerScheduleCommand } from './schedule-command';
import { registerStatusCommand } from './status';
import { up } from './up';

function fail(err: unknown): never {
  const msg = err instanceof Error ? err.message : String(err);
  process.stderr.write(`selfheal: ${msg.split('\n')[0]}\n`);
  process.exit(1);
}

/** Runs a command body with the parsed config; errors become one line and exit 1. */
function withConfig<A extends unknown[]>(body: (config: Config, ...args: A) => Promise<void>) {
  return async (...args: A) => {
    const config = loadConfigOrExit();
    try {
      await body(config, ...args);
    } catch (err) {
      fail(err);
    }
  };
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
      withConfig(async (config, opts: { pipeline: boolean; uiPort: number }) => {
        const handle = await up({
          config,
          env: process.env,
          pipeline: opts.pipeline,
          uiPort: opts.uiPort,
          say: (line) => process.stdout.write(`${line}\n`),
          startPipeline: startReferencePipeline,
        });
        process.stdout.write(
          `selfheal is up in ${handle.startupSeconds.toFixed(1)} s.${handle.webUi ? ` Temporal Web UI: ${handle.webUi}.` : ''} Ctrl-C stops everything.\n`,
        );
        await new Promise<void>((resolve) => {
          process.once('SIGINT', resolve);
          process.once('SIGTERM', resolve);
        });
        process.stdout.write('stopping...\n');
        await handle.stop();
        process.stdout.write('stopped.\n');
      }),
    );

  program
    .command('migrate')
    .description("apply selfheal's own schema, db/init.sql, to SELFHEAL_DATABASE_URL (idempotent)")
    .action(
      withConfig(async (config) => {
        const pool = createPool(selfhealDatabaseUrl(config), { max: 1, application: 'selfheal-migrate' });
        try {
          await migrate(pool);
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
      withConfig(async (config, opts: { json?: boolean }) => {
        const rows = await runDoctor(config);
        if (opts.json) process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
        else
          printTable(
            ['dependency', 'status', 'detail', 'hint'],
            rows.map((r) => [r.dependency, r.status, r.detail, r.hint]),
          );
        process.exitCode = doctorExitCode(rows);
      }),
    );

  program
    .command('healings')
    .description('list healing workflows (newest first)')
    .option('--open', 'only the ones still running')
    .option('--json', 'print JSON')
    .action(
      withConfig(async (config, opts: { open?: boolean; json?: boolean }) => {
        const rows = await withClient(config, (client) => listHealings(client, { open: opts.open }));
        if (opts.json) return void process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
        printTable(
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
        const { status, healing } = await withClient(config, (client) => showHealing(client, workflowId));
        if (opts.json)
          return void process.stdout.write(JSON.stringify({ workflowId, status, ...healing }, null, 2) + '\n');
        const p = healing.plan;
        const lines = [
          `${workflowId}  ${status.toLowerCase()}  phase ${healing.phase}`,
          `anomaly   ${healing.anomaly.type} on ${healing.anomaly.target} (${healing.anomaly.severity}): ${healing.anomaly.summary}`,
          p
            ? `plan      ${p.id}: ${p.action} (${p.source}, confidence ${p.confidence.toFixed(2)}) ${p.reasoning}`
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
        const rows = await readAudit(config, { sinceMs: parseDuration(opts.since), workflowId: opts.workflow });
        if (opts.json) return void process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
        printTable(
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
        const pool = createPool(config.DATABASE_URL, { max: 2, application: 'selfheal-generate' });
        const redis = new Redis(config.REDIS_URL, { maxRetriesPerRequest: 2 });
        try {
          const ids = await generateDocuments({ pool, redis, keys: createKeys(config.REDIS_KEY_PREFIX), count: n });
          process.stdout.write(`queued ${ids.length} documents (ids ${ids[0]}..${ids[ids.length - 1]})\n`);
        } finally {
          redis.disconnect();
          await pool.end();
        }
      }),
    );

  program
    .command('chaos')
    .description(
      'inject a real fault into the reference pipeline: kill-worker <worker> | hang-worker <worker> | ' +
        'error-rate <stage> <fraction> | slow <stage> <factor> | stale-lock <n> | stuck-documents <n> | llm-down | clear',
    )
    .argument('<fault>', 'the fault, or clear to undo every fault')
    .argument('[args...]', 'arguments of the fault')
    .option('--json', 'print what was done as JSON')
    .action(
      withConfig(async (config, fault: string, args: string[], opts: { json?: boolean }) => {
        const result = await runChaosCommand(config, fault, args);
        process.stdout.write(
          opts.json ? JSON.stringify(result, null, 2) + '\n' : `${fault}: ${JSON.stringify(result)}\n`,
        );
      }),
    );

  registerStatusCommand(program, withConfig);
  registerScheduleCommand(program, withConfig);
  registerDemoCommand(program);

  return program;
}

export function main(argv = process.argv): void {
  buildCli()
    .parseAsync(argv)
    .catch((err: unknown) => fail(err));
}

if (require.main === module) main();
