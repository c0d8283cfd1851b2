/**
 * `npm run bench -- compose [--cold]`: the compose deployment's start times through `scripts/dev.sh compose up`, and
 * the time from a killed pipeline worker to its healing's end through the deployed stack.
 *
 *   cold         (--cold only) the locally built images removed first, so `up` builds them again from the cached Go
 *                binaries and Debian root filesystem (the first build of all, with the Go compiles, is far longer:
 *                docs/deployment.md)
 *   first start  images here, no containers and no volumes: Postgres initialized, Temporal's schemas created
 *   warm         after `down` (volumes kept): containers created again on the existing data
 *   no-op        `up` again while everything runs
 *   fault        `docker kill pipeline-extract-1` → the healing `heal-unhealthy_container-pipeline-extract-1` healed
 */
import { execFileSync } from 'node:child_process';
import { Client, Connection } from '@temporalio/client';
import { compose } from '../tests/helpers/compose';
import { healingWorkflowId, statusQuery } from '../workflows/definitions';
import { type Row, progress, round1 } from './common';

function timed(args: string[]): number {
  const t0 = performance.now();
  compose(args, {}, 3_600_000);
  return round1((performance.now() - t0) / 1000);
}

function removeLocalImages(): void {
  const ids = execFileSync('docker', ['images', '-q', '--filter', 'reference=selfheal-offline/*'], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean);
  const selfheal = execFileSync('docker', ['images', '-q', 'selfheal'], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean);
  if (ids.length + selfheal.length > 0) {
    execFileSync('docker', ['rmi', '-f', ...new Set([...selfheal, ...ids])], { stdio: 'ignore' });
  }
}

async function faultToHealed(): Promise<number> {
  const connection = await Connection.connect({ address: '127.0.0.1:7233' });
  try {
    const client = new Client({ connection, namespace: 'default' });
    const target = 'pipeline-extract-1';
    const handle = client.workflow.getHandle(healingWorkflowId('unhealthy_container', target));
    const t0 = performance.now();
    execFileSync('docker', ['kill', target], { stdio: 'ignore' });
    for (;;) {
      const desc = await handle.describe().catch(() => undefined);
      if (desc?.status.name === 'COMPLETED' && desc.startTime.getTime() > Date.now() - 300_000) {
        const status = (await handle.query(statusQuery)) as { phase: string };
        if (status.phase !== 'healed') throw new Error(`healing ended ${status.phase}`);
        return round1((performance.now() - t0) / 1000);
      }
      if (performance.now() - t0 > 300_000) throw new Error('no healing within 5 minutes');
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    await connection.close();
  }
}

export async function benchCompose(opts: { cold: boolean }): Promise<Row[]> {
  const rows: Row[] = [];
  progress('compose: down --volumes (a clean slate)');
  timed(['down', '--volumes']);
  if (opts.cold) {
    progress('compose: removing the locally built images');
    removeLocalImages();
    const s = timed(['up']);
    rows.push({ start: 'cold (images built locally, then first start)', seconds: s });
    progress(`compose: cold ${s} s`);
    compose(['down', '--volumes']);
  }
  const first = timed(['up']);
  rows.push({ start: 'first start (images here, fresh volumes)', seconds: first });
  progress(`compose: first start ${first} s`);
  const fault = await faultToHealed();
  rows.push({ start: 'fault: docker kill of a pipeline worker → healed', seconds: fault });
  progress(`compose: fault → healed ${fault} s`);
  compose(['down']);
  const warm = timed(['up']);
  rows.push({ start: 'warm (after down, volumes kept)', seconds: warm });
  progress(`compose: warm ${warm} s`);
  const noop = timed(['up']);
  rows.push({ start: 'no-op (up while running)', seconds: noop });
  progress(`compose: no-op ${noop} s`);
  compose(['down', '--volumes']);
  return rows;
}
