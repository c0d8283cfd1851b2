import { describe, expect, it } from 'vitest';
import { parseRetryAfter } from '../../activities/notify';
import {
  buildEscalationBody,
  buildEscalationJson,
  buildEscalationSlack,
  ESCALATION_SCHEMA,
  slackEscape,
  type EscalationInput,
  type SlackBlock,
} from '../../core/notify';
import type { Plan } from '../../core/plan';

const AT = 1_750_000_000_000;

function plan(over: Partial<Plan> = {}, params: Plan['params'] = {}): Plan {
  return {
    id: 'plan-3f9c2a7d',
    anomalyType: 'stuck_documents',
    action: 'escalate_to_human',
    target: 'extract',
    params: { reason: 'requeue did not help', ...params },
    reasoning: 'the documents stay stuck after a requeue',
    confidence: 0.82,
    source: 'runbook',
    rung: 2,
    ...over,
  };
}

function input(over: Partial<EscalationInput> = {}): EscalationInput {
  return {
    workflowId: 'heal-stuck_documents-extract',
    runId: '0195-run',
    namespace: 'default',
    plan: plan(),
    anomaly: { severity: 'critical', summary: '12 documents processing for over 900 s', evidence: { count: 12 } },
    webUiUrl: 'http://127.0.0.1:8233',
    at: AT,
    ...over,
  };
}

/** All the text of a Slack body, as a channel would show it (fallback, header, sections, fields, context). */
function slackText(blocks: SlackBlock[]): string {
  return blocks
    .map((b) => {
      if ('text' in b) return b.text.text;
      if ('fields' in b) return b.fields.map((f) => f.text).join('\n');
      if ('elements' in b) return b.elements.map((e) => e.text).join('\n');
      return '';
    })
    .join('\n');
}

const SECRETS = [
  'hunter2',
  's3cr3tpw',
  'abcdefghijklmnopqrstuvwxyz012345',
  'AKIAABCDEFGHIJKLMNOP',
  'xoxb-1234567890-abcdefghij',
  'tok-7f3a9c',
  'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig',
];

/** Nasty inputs: each must come out with no secret, valid JSON, and (for Slack) no live markup. */
const NASTY: {
  name: string;
  input: EscalationInput;
  /** Neither body may contain these (secrets, control characters, unbounded text). */
  mustNotContain: string[];
  /** The Slack body may not contain these (live markup); the JSON body keeps them as plain text. */
  slackMustNotContain?: string[];
  /** Text the JSON body keeps (the fact, with only the secret part redacted). */
  jsonKeeps?: string[];
}[] = [
  {
    name: 'secrets in the reason and the reasoning',
    input: input({
      plan: plan(
        {
          reasoning:
            'connect with postgres://selfheal:s3cr3tpw@db:5432/x, Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345',
        },
        { reason: 'password=hunter2 and AKIAABCDEFGHIJKLMNOP leaked in the error' },
      ),
    }),
    mustNotContain: ['hunter2', 's3cr3tpw', 'abcdefghijklmnopqrstuvwxyz012345', 'AKIAABCDEFGHIJKLMNOP'],
    jsonKeeps: ['password=[REDACTED]', 'postgres://selfheal:[REDACTED]@db:5432/x'],
  },
  {
    name: 'secrets in the evidence, under secret-named keys and in text',
    input: input({
      anomaly: {
        severity: 'warning',
        summary: 'slack token xoxb-1234567890-abcdefghij in a document error',
        evidence: {
          locks: [{ documentId: '7', owner: 'worker-1', token: 'tok-7f3a9c' }],
          api_key: 'whatever',
          error: 'jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig expired',
        },
      },
      plan: plan({}, { locks: [{ documentId: '7', owner: 'worker-1', token: 'tok-7f3a9c' }] }),
    }),
    mustNotContain: SECRETS,
    jsonKeeps: ['worker-1'],
  },
  {
    name: 'Slack markup and mentions',
    input: input({
      plan: plan(
        {},
        { reason: '<!channel> *bold* _it_ ~strike~ <https://evil.example|click here> & <@U123> ```code``` `tick`' },
      ),
    }),
    mustNotContain: ['```'],
    slackMustNotContain: ['<!channel>', '<https://evil.example|click here>', '<@U123>'],
    jsonKeeps: ['<!channel> *bold*', '<@U123>'],
  },
  {
    name: 'HTML and control characters',
    input: input({
      plan: plan(
        { target: 'extract<script>' },
        { reason: '<script>alert(1)</script><img src=x onerror=alert(2)>\u0000\u001b[31m\u2028end' },
      ),
    }),
    mustNotContain: ['\u0000', '\u001b', '\u2028'],
    slackMustNotContain: ['<script>', '<img'],
    jsonKeeps: ['<script>alert(1)</script>'],
  },
  {
    name: 'a huge reason is bounded',
    input: input({ plan: plan({}, { reason: `${'x'.repeat(100_000)} password=hunter2` }) }),
    mustNotContain: ['hunter2', 'x'.repeat(5_000)],
  },
  {
    name: 'no severity, evidence, namespace or Web UI known',
    input: input({ anomaly: undefined, webUiUrl: undefined, namespace: undefined }),
    mustNotContain: ['undefined', 'http://127.0.0.1:8233'],
  },
];

describe('escalation payloads', () => {
  it('json: a stable documented object with every fact', () => {
    const body = buildEscalationJson(input());
    expect(body).toEqual({
      schema: ESCALATION_SCHEMA,
      event: 'escalation',
      text: expect.stringContaining(
        'selfheal needs a human: stuck_documents on extract (critical): requeue did not help',
      ),
      workflowId: 'heal-stuck_documents-extract',
      runId: '0195-run',
      namespace: 'default',
      anomalyType: 'stuck_documents',
      target: 'extract',
      severity: 'critical',
      summary: '12 documents processing for over 900 s',
      reason: 'requeue did not help',
      plan: {
        id: 'plan-3f9c2a7d',
        anomalyType: 'stuck_documents',
        action: 'escalate_to_human',
        target: 'extract',
        params: { reason: 'requeue did not help' },
        reasoning: 'the documents stay stuck after a requeue',
        confidence: 0.82,
        source: 'runbook',
        rung: 2,
      },
      evidence: { count: 12 },
      // The healing ended escalated: nothing waits for a decision, so no approve or reject command is offered.
      commands: { approve: null, reject: null, show: 'selfheal show heal-stuck_documents-extract' },
      webUiUrl: 'http://127.0.0.1:8233/namespaces/default/workflows/heal-stuck_documents-extract/0195-run/history',
      at: AT,
    });
    expect(body.text).toContain('ended escalated: nothing waits for approval');
    expect(body.text).not.toContain('selfheal approve');
    expect(body.text).toContain('Web UI: http://127.0.0.1:8233/namespaces/default/workflows/');
  });

  it('slack: text plus header, fields, reason, plan, evidence, commands and the Web UI link', () => {
    const body = buildEscalationSlack(input());
    expect(Object.keys(body).sort()).toEqual(['blocks', 'text']);
    expect(body.text).toBe('selfheal needs a human: stuck_documents on extract (critical): requeue did not help');
    expect(body.blocks.map((b) => b.type)).toEqual([
      'header',
      'section',
      'section',
      'section',
      'section',
      'section',
      'divider',
      'section',
      'context',
    ]);
    expect(body.blocks[0]).toEqual({
      type: 'header',
      text: { type: 'plain_text', text: 'selfheal needs a human: stuck_documents', emoji: false },
    });
    expect(body.blocks[1]).toEqual({
      type: 'section',
      fields: [
        { type: 'mrkdwn', text: '*Anomaly*\nstuck_documents' },
        { type: 'mrkdwn', text: '*Target*\nextract' },
        { type: 'mrkdwn', text: '*Severity*\ncritical' },
        { type: 'mrkdwn', text: '*Workflow*\nheal-stuck_documents-extract' },
      ],
    });
    const all = slackText(body.blocks);
    expect(all).toContain('*Reason*\nrequeue did not help');
    expect(all).toContain('*Summary*\n12 documents processing for over 900 s');
    expect(all).toContain('*escalate_to_human* proposed by runbook, confidence 0.82, rung 2, plan `plan-3f9c2a7d`');
    expect(all).toContain('*Evidence*\n• count: 12');
    expect(all).toContain('The healing ended escalated: nothing waits for approval.');
    expect(all).not.toContain('*Approve:*');
    expect(body.blocks.at(-1)).toEqual({
      type: 'context',
      elements: [
        {
          type: 'mrkdwn',
          text: '<http://127.0.0.1:8233/namespaces/default/workflows/heal-stuck_documents-extract/0195-run/history|Open in Temporal Web UI>',
        },
      ],
    });
  });

  it('the format picks the shape', () => {
    expect(buildEscalationBody('json', input())).toHaveProperty('schema', ESCALATION_SCHEMA);
    expect(buildEscalationBody('slack', input())).toHaveProperty('blocks');
  });

  it('a healing awaiting approval: event approval_requested, commands bound to the plan shown', () => {
    const i = input({ awaitingApproval: true, plan: plan({ action: 'requeue_documents' }, { documentIds: [1, 2] }) });
    const json = buildEscalationJson(i);
    expect(json.event).toBe('approval_requested');
    expect(json.commands).toEqual({
      approve: 'selfheal approve heal-stuck_documents-extract --by NAME --plan plan-3f9c2a7d',
      reject: 'selfheal reject heal-stuck_documents-extract --by NAME --reason TEXT --plan plan-3f9c2a7d',
      show: 'selfheal show heal-stuck_documents-extract',
    });
    expect(json.text).toMatch(/^selfheal asks for approval: stuck_documents on extract/);
    const slack = buildEscalationSlack(i);
    expect(slack.blocks[0]).toMatchObject({ text: { text: 'selfheal asks for approval: stuck_documents' } });
    expect(slackText(slack.blocks)).toContain(
      '*Approve:* `selfheal approve heal-stuck_documents-extract --by NAME --plan plan-3f9c2a7d`',
    );
  });

  it('a workflow id that is not ours is quoted in the commands', () => {
    const body = buildEscalationJson(input({ workflowId: "x'; rm -rf / #", awaitingApproval: true }));
    expect(body.commands.approve).toBe(`selfheal approve 'x'\\''; rm -rf / #' --by NAME --plan plan-3f9c2a7d`);
    expect(buildEscalationJson(input({ workflowId: "x'; rm -rf / #" })).commands.show).toBe(
      `selfheal show 'x'\\''; rm -rf / #'`,
    );
  });

  it.each(NASTY)('$name', ({ input: i, mustNotContain, slackMustNotContain, jsonKeeps }) => {
    const json = buildEscalationJson(i);
    const slack = buildEscalationSlack(i);
    const jsonText = JSON.stringify(json);
    const slackAll = `${slack.text}\n${slackText(slack.blocks)}`;
    // Both are valid JSON documents that survive a round trip.
    expect(JSON.parse(jsonText)).toEqual(json);
    expect(JSON.parse(JSON.stringify(slack))).toEqual(slack);
    for (const s of mustNotContain) {
      expect(jsonText).not.toContain(JSON.stringify(s).slice(1, -1));
      expect(slackAll).not.toContain(s);
    }
    for (const s of slackMustNotContain ?? []) expect(slackAll).not.toContain(s);
    // JSON strings are plain text: a receiver that renders HTML escapes them; nothing but secrets is taken out.
    for (const s of jsonKeeps ?? []) expect(jsonText).toContain(s);
    // Slack: no live markup from untrusted text. Every `<` is an escape, except in our own Web UI link.
    const withoutLink = slackAll.replace(/<http:\/\/127\.0\.0\.1:8233\/[^|>]*\|Open in Temporal Web UI>/, '');
    expect(withoutLink).not.toMatch(/[<>]/);
    expect(withoutLink.replace(/&(amp|lt|gt);/g, '')).not.toContain('&');
    // Slack's limits: header 150, section text 3000, field 2000 characters; 50 blocks.
    expect(slack.blocks.length).toBeLessThanOrEqual(50);
    for (const b of slack.blocks) {
      if (b.type === 'header') expect(b.text.text.length).toBeLessThanOrEqual(150);
      if ('text' in b && b.type === 'section') expect(b.text.text.length).toBeLessThanOrEqual(3000);
      if ('fields' in b) for (const f of b.fields) expect(f.text.length).toBeLessThanOrEqual(2000);
    }
    expect(jsonText.length).toBeLessThan(20_000);
  });

  it.each([
    ['a & b', 'a &amp; b'],
    ['<!here>', '&lt;!here&gt;'],
    ['&lt;', '&amp;lt;'],
    ['plain', 'plain'],
  ])('slackEscape(%j) = %j', (raw, escaped) => {
    expect(slackEscape(raw)).toBe(escaped);
  });
});

describe('restart notices (event restarted, as autoheal tells each restart)', () => {
  const restarted = {
    outcome: 'done',
    details: { container: 'web-1', stopTimeoutSeconds: 2, healthy: true, token: 'tok-secret-1' },
  };

  it('json: event restarted, the restart result bounded, no approve or reject command', () => {
    const body = buildEscalationJson(input({ restarted, plan: plan({ action: 'restart_worker' }) }));
    expect(body.event).toBe('restarted');
    expect(body.commands.approve).toBeNull();
    expect(body.commands.reject).toBeNull();
    expect(body.result).toEqual({
      outcome: 'done',
      details: { container: 'web-1', stopTimeoutSeconds: 2, healthy: true, token: '[REDACTED]' },
    });
    expect(body.text).toMatch(/^selfheal restarted a container: /);
    expect(body.text).toMatch(/restarted it \(done\) and verifies next/);
    expect(JSON.stringify(body)).not.toContain('tok-secret-1');
    // An escalation has no result.
    expect(buildEscalationJson(input()).result).toBeUndefined();
  });

  it('slack: the same headline, and says the healing verifies next', () => {
    const body = buildEscalationSlack(input({ restarted }));
    expect(body.blocks[0]).toMatchObject({
      type: 'header',
      text: { text: expect.stringMatching(/^selfheal restarted a container/) },
    });
    expect(slackText(body.blocks)).toContain('_Restarted (done); the healing verifies next._');
    expect(slackText(body.blocks)).not.toContain('Approve');
  });
});

describe('Retry-After', () => {
  const now = Date.parse('2025-06-01T12:00:00Z');
  it.each([
    [null, undefined],
    ['3', 3_000],
    [' 0 ', 0],
    ['Sun, 01 Jun 2025 12:00:05 GMT', 5_000],
    ['Sun, 01 Jun 2025 11:00:00 GMT', 0],
    ['soon', undefined],
    ['-1', undefined],
  ])('%j -> %j ms', (header, ms) => {
    expect(parseRetryAfter(header, now)).toBe(ms);
  });
});
