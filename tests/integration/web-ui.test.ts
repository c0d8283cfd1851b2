/**
 * The Temporal Web UI as an operator sees it, in a real headless Chromium (Debian's, driven by playwright-core)
 * against the run's dev server. `selfheal up --no-pipeline` runs with auto-fix off and the LLM failing (runbook
 * plans); two real stale-lock faults (`selfheal chaos stale-lock 2`) start two healings that wait for approval,
 * `selfheal approve` heals one. The test then reads, in the UI: the list filtered by search attributes, the
 * HealPhase column, and each healing's static summary, current details (the markdown timeline) and search
 * attributes. Screenshots go to docs/images/ (the README shows them). Only 127.0.0.1 is reached: every other
 * request of the page (the UI's news feed) is aborted.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { healingWorkflowId } from '../../workflows/definitions';
import type { HealingStatus } from '../../workflows/healing';
import { type TestEnv, waitFor } from '../helpers/env';
import { ROOT, type RunningSelfheal } from '../helpers/selfheal';
import { startStack, type Stack } from '../helpers/stack';
import { healingStatus } from '../helpers/temporal';
import { planSourceLabel } from '../../core/fallback-cause';

const CHROMIUM = '/usr/bin/chromium';
const IMAGES = path.join(ROOT, 'docs/images');
// Restricted to the type the test produces: a slow Ollama probe on a busy machine may start an llm_unavailable one.
const ALL_QUERY = 'WorkflowType="healingWorkflow" AND AnomalyType="stale_locks"';
const AWAITING_QUERY = `${ALL_QUERY} AND HealPhase="awaiting_approval"`;

describe('the Temporal Web UI shows the healings', () => {
  let stack: Stack;
  let t: TestEnv;
  let ns: string;
  let selfheal: RunningSelfheal;
  let client: Client;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  /** The healing approved (and healed) and the one left waiting, as their final/current status. */
  let healed: { id: string; status: HealingStatus };
  let waiting: { id: string; status: HealingStatus };

  const ui = () => `http://127.0.0.1:${inject('temporalUiPort')}`;
  const listUrl = (query: string) => `${ui()}/namespaces/${ns}/workflows?query=${encodeURIComponent(query)}`;

  const status = (id: string) => healingStatus(client, id);

  /** Workflow ids the server's visibility lists for `query` (what the UI's list is built from). */
  async function listed(query: string): Promise<string[]> {
    const ids: string[] = [];
    for await (const wf of client.workflow.list({ query })) ids.push(wf.workflowId);
    return ids.sort();
  }

  /** A tab of a workflow's page. */
  const tab = (name: string) =>
    page
      .getByRole('tab', { name, exact: true })
      .or(page.getByRole('link', { name, exact: true }))
      .first();

  /** The text of a markdown frame of the User Metadata tab (rendered by the UI in an iframe). */
  async function frameText(frameId: string, having: string): Promise<string> {
    const frame = page.frameLocator(`iframe[id="${frameId}"], iframe[name="${frameId}"]`).first();
    await frame.getByText(having).first().waitFor();
    return frame.locator('body').innerText();
  }

  beforeAll(async () => {
    stack = await startStack({
      ollama: { replies: [{ kind: 'status', status: 500 }] },
      env: ({ ollama }) => ({
        OLLAMA_HOST: ollama.url,
        AUTO_FIX_ENABLED: 'false',
        MAX_ACTIONS_PER_HOUR: '100',
        VERIFY_DELAY: '2',
      }),
    });
    ({ t, ns, selfheal, client } = stack);
    // Stale locks are put on finished documents; without the pipeline, some finished a day ago.
    await t.pool.query(
      `INSERT INTO documents (stage, status, completed_at, updated_at)
       SELECT 'evaluate', 'completed', now() - interval '1 day', now() - interval '1 day' FROM generate_series(1, 10)`,
    );
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const r = selfheal.cli(['chaos', 'stale-lock', '2', '--json']);
      expect(r.status, r.stderr).toBe(0);
      ids.push(healingWorkflowId('stale_locks', (JSON.parse(r.stdout) as { owner: string }).owner));
    }
    const [approveId, waitId] = ids as [string, string];
    for (const id of ids)
      await waitFor(async () => (await status(id))?.phase === 'awaiting_approval', {
        timeoutMs: 60_000,
        what: `${id} awaiting approval`,
      });
    const r = selfheal.cli(['approve', approveId, '--by', 'alice', '--reason', 'the owner is gone']);
    expect(r.status, r.stderr).toBe(0);
    healed = { id: approveId, status: (await client.workflow.getHandle(approveId).result()) as HealingStatus };
    expect(healed.status.phase).toBe('healed');
    waiting = { id: waitId, status: (await status(waitId))! };
    expect(waiting.status.phase).toBe('awaiting_approval');
    // Visibility follows the search attributes a moment after the workflows set them.
    await waitFor(async () => (await listed(AWAITING_QUERY)).join() === waitId, {
      what: `only ${waitId} listed as awaiting_approval`,
    });
    await waitFor(async () => (await listed(`${ALL_QUERY} AND HealPhase="healed"`)).join() === approveId, {
      what: `${approveId} listed as healed`,
    });

    mkdirSync(IMAGES, { recursive: true });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox'] });
    context = await browser.newContext({ viewport: { width: 1600, height: 900 } });
    await context.route('**/*', (route) => {
      const host = new URL(route.request().url()).hostname;
      return host === '127.0.0.1' || host === 'localhost' ? route.continue() : route.abort();
    });
    page = await context.newPage();
    page.setDefaultTimeout(30_000);
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
  });

  it('lists the healings awaiting approval for a search-attribute query in the URL', async () => {
    await page.goto(listUrl(AWAITING_QUERY));
    await page.getByRole('link', { name: waiting.id, exact: true }).waitFor();
    // The query became the list's filters.
    await page.getByText('HealPhase = "awaiting_approval"').first().waitFor();
    expect(await page.getByRole('link', { name: healed.id, exact: true }).count()).toBe(0);
    expect(await page.getByRole('link', { name: /^heal-/ }).allInnerTexts()).toEqual([waiting.id]);
  });

  it('shows each healing with its HealPhase and HealAction once the columns are added', async () => {
    await page.goto(listUrl(ALL_QUERY));
    await page.getByRole('link', { name: healed.id, exact: true }).waitFor();
    // The table's own column settings (kept by the UI per namespace in the browser), as an operator sets them.
    await page.getByRole('button', { name: /configure columns/i }).click();
    for (const column of ['HealPhase', 'HealAction'])
      await page.getByRole('button', { name: `Add ${column} column` }).click();
    for (const column of ['Run ID', 'Type', 'End'])
      await page.getByRole('button', { name: `Remove ${column} column` }).click();
    await page.getByRole('button', { name: /^Close .*configuration$/ }).click();
    await page.getByText('Configure Workflows Table').waitFor({ state: 'hidden' });

    const row = (id: string) =>
      page.getByRole('row').filter({ has: page.getByRole('link', { name: id, exact: true }) });
    await row(healed.id).getByText('healed', { exact: true }).waitFor();
    await row(waiting.id).getByText('awaiting_approval', { exact: true }).waitFor();
    expect(await row(healed.id).innerText()).toMatch(/COMPLETED[\s\S]*healed[\s\S]*clear_stale_locks/);
    expect(await row(waiting.id).innerText()).toMatch(/RUNNING[\s\S]*awaiting_approval[\s\S]*clear_stale_locks/);
    expect((await page.getByRole('link', { name: /^heal-/ }).allInnerTexts()).sort()).toEqual(
      [healed.id, waiting.id].sort(),
    );
    await page.screenshot({ path: path.join(IMAGES, 'web-ui-healings-list.png') });
  });

  for (const which of ['awaiting_approval', 'healed'] as const) {
    it(`shows the ${which} healing's summary, current details and HealPhase`, async () => {
      const { id, status: st } = which === 'healed' ? healed : waiting;
      const { anomaly, plan } = st;
      await page.goto(listUrl(ALL_QUERY));
      await page.getByRole('link', { name: id, exact: true }).click();
      await page.getByRole('heading', { name: id }).waitFor();
      // The execution status badge (upper-cased by CSS).
      await page
        .getByText(which === 'healed' ? /^completed$/i : /^running$/i)
        .filter({ visible: true })
        .first()
        .waitFor();

      await tab('User Metadata').click();
      // The static summary the monitor set when it started the child workflow.
      expect(await frameText('user-metadata-summary', anomaly.summary)).toContain(anomaly.summary);
      // The current details the workflow keeps with setCurrentDetails (served by a query to the healing worker).
      const details = await frameText('user-metadata-current-details', `stale_locks on ${anomaly.target}`);
      expect(details).toContain(`stale_locks on ${anomaly.target} (warning): ${anomaly.summary}`);
      // Who decided, and why the runbook when it was (here the model server is unreachable).
      expect(details).toContain(
        `Plan ${plan!.id}: clear_stale_locks (decided by ${planSourceLabel(plan!)}, confidence 0.90)`,
      );
      expect(planSourceLabel(plan!)).toMatch(/^runbook \(\w+\)$/);
      const phases = [...details.matchAll(/^\s*(?:• )?\d\d:\d\d:\d\d (\w+) /gm)].map((m) => m[1]);
      expect(phases).toEqual(st.history.map((h) => h.phase));
      expect(phases.at(-1)).toBe(which);
      if (which === 'healed') expect(details).toContain(`healed stale_locks no longer detected on ${anomaly.target}`);
      await page.screenshot({ path: path.join(IMAGES, `web-ui-healing-${which.replace('_', '-')}.png`) });

      await tab('Search Attributes').click();
      await page.getByText(`"HealPhase": "${which}"`).waitFor();
      const attributes = await page.locator('body').innerText();
      expect(attributes).toContain(`"AnomalyType": "stale_locks"`);
      expect(attributes).toContain(`"HealTarget": "${anomaly.target}"`);
      expect(attributes).toContain(`"HealAction": "clear_stale_locks"`);
    });
  }
});
