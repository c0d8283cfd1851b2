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
import type { Config } from '../core/config';
import { createPool } from '../db/pool';
import { migrate } from '../db/migrate';
import { loadConfigOrExit } from '../workers/env';
import { doctorExitCode, runDoctor } from './doctor';
import { printTable } from './output';
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
    .showHelpAfterError()
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
    .description('apply db/init.sql (idempotent)')
    .action(
      withConfig(async (config) => {
        const pool = createPool(config.DATABASE_URL, { max: 1, application: 'selfheal-migrate' });
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

  return program;
}

export function main(argv = process.argv): void {
  buildCli()
    .parseAsync(argv)
    .catch((err: unknown) => fail(err));
}

if (require.main === module) main();
