/**
 * The compose deployment as the deploy tier and `npm run bench -- compose` start it: `scripts/dev.sh compose ...`
 * with short cycles and waits, everything else the compose file's defaults.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';

export const ROOT = path.resolve(__dirname, '../..');
const DEV = path.join(ROOT, 'scripts/dev.sh');

/** Short cycles and waits, auto-fix on; a few shards so that Temporal's first start is quick. */
export const STACK_ENV: Record<string, string> = {
  AUTO_FIX_ENABLED: 'true',
  MONITOR_INTERVAL: '5',
  VERIFY_DELAY: '5',
  RESTART_COOLDOWN: '0',
  MAX_ACTIONS_PER_HOUR: '50',
  LOG_LEVEL: 'warn',
  TEMPORAL_NUM_HISTORY_SHARDS: '4',
  // Its own key prefix, and so the label `selfheal.prefix` on its pipeline containers, by which it then watches only
  // them. Without one it watched every container of the host labelled `selfheal.enable=true`, those of the integration
  // files running beside it too: it restarted an unhealthy container of silences.test.ts that waited for an approval.
  REDIS_KEY_PREFIX: 'deploy:',
};

/** `scripts/dev.sh compose <args>` with STACK_ENV (and `env` over it); its stdout, or an error with its output. */
export function compose(args: string[], env: Record<string, string> = {}, timeoutMs = 1_800_000): string {
  const r = spawnSync('bash', [DEV, 'compose', ...args], {
    cwd: ROOT,
    env: { ...process.env, ...STACK_ENV, ...env },
    encoding: 'utf8',
    timeout: timeoutMs,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) {
    const out = `${r.stdout}\n${r.stderr}`.slice(-8000);
    throw new Error(`scripts/dev.sh compose ${args.join(' ')} exited ${r.status ?? r.signal}\n${out}`);
  }
  return r.stdout;
}
