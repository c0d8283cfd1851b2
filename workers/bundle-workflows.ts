/**
 * `node dist/workers/bundle-workflows.js <out.js>` (from sources: `node -r tsx/cjs workers/bundle-workflows.ts`):
 * builds the workflow bundle once, in a process of its own that exits, for the workers to load
 * (SELFHEAL_WORKFLOW_BUNDLE). Bundling with webpack inside each worker cost every worker its peak memory for good
 * (the monitor and healing workers peaked at 347 and 429 MB that way) and the bundling time twice over.
 */
import { writeFileSync } from 'node:fs';
import { bundleWorkflowCode } from '@temporalio/worker';
import { projectScript } from './project';
import { errorMessage } from '../core/errors';

async function main(): Promise<void> {
  const out = process.argv[2];
  if (!out) throw new Error('usage: bundle-workflows <out.js>');
  const { code } = await bundleWorkflowCode({
    workflowsPath: projectScript('workflows/index'),
    logger: { trace() {}, debug() {}, info() {}, warn() {}, error() {}, log() {} },
  });
  writeFileSync(out, code);
}

main().catch((err: unknown) => {
  process.stderr.write(`bundle-workflows: ${errorMessage(err)}\n`);
  process.exit(1);
});
