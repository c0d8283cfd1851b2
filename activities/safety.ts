/**
 * Safety state in Postgres, around the pure policy of core/safety.ts: the global budget of action permits
 * (reserved atomically, so concurrent healing workflows cannot overspend it), and the restart history that gives
 * cooldowns, the circuit breaker and restarts in flight. Times are the caller's (workflow) clock, epoch ms.
 */
import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { Keys } from '../core/keys';
import type { Plan } from '../core/plan';
import { resolveRunbook } from '../core/runbook-file';
import { evaluateSafety, type SafetyContext, type SafetyPolicy, type Verdict } from '../core/safety';
import { containerWorking, type ContainerState } from '../core/snapshot';
import { policyRestartsSince } from './docker';
import { latestCycleRecord } from './metrics-stream';
import type { RunbookSource } from './runbook-source';

/** The target of a restart as the latest cycle saw it (`containerView`). */
interface ContainerView {
  known: boolean;
  /** Key of its group: the stage, or `service:<project>/<service>`. */
  group?: string;
  groupName?: string;
  healthy?: boolean;
  healthyInGroup?: number;
  scopeLabel?: string;
}

/** How long a reserved restart counts as in flight at most (the actions' retry policy ends well before). */
const IN_FLIGHT_MAX_MS = 15 * 60_000;

/** Serializes permit reservations (any constant unique to selfheal). */
const PERMIT_LOCK = 0x5e1f4ea2;

export type { SafetyPolicy } from '../core/safety';

/**
 * The healing policy of the worker's configuration, which a healing reads when it decides and again after it waited
 * (workflows/healing/run.ts): a policy changed by restarting the healing worker applies to healings still waiting.
 */
export function createPolicyActivities<P>(policy: () => P) {
  return {
    currentPolicy(): Promise<P> {
      return Promise.resolve(policy());
    },
  };
}

export interface CheckSafetyInput {
  plan: Plan;
  policy: SafetyPolicy;
  workflowId: string;
  /** Workflow time, epoch ms. */
  now: number;
  /** The permit this check follows (a re-check before acting): it is not a past restart of the target. */
  ownPermitKey?: string;
}

export interface ReserveInput {
  idempotencyKey: string;
  workflowId: string;
  plan: Plan;
  /** Stage of the target, for restarts (at most one in flight per stage). */
  stage?: string;
  now: number;
  maxPerWindow: number;
  windowMs: number;
}

export type ReserveResult = { granted: true; permitId: number } | { granted: false; nextFreeAt: number; used: number };

export function createSafetyActivities({
  pool,
  redis,
  keys,
  runbooks,
}: {
  pool: pg.Pool;
  redis: Redis;
  keys: Keys;
  /** The runbooks file (RUNBOOKS_FILE): cooldown, breaker and approval per anomaly. Default: the configured policy. */
  runbooks?: RunbookSource;
}) {
  /**
   * The policy under the anomaly's runbook, resolved at each check (not frozen in the workflow's input), so an edited
   * runbooks file applies to healings still waiting: its cooldown and breaker replace the configured ones.
   */
  function runbookPolicy(plan: Plan, policy: SafetyPolicy): { policy: SafetyPolicy; approvalAlwaysBy?: string } {
    const runbook = runbooks
      ? runbooks.resolve(plan.anomalyType, plan.target)
      : resolveRunbook(undefined, plan.anomalyType, plan.target);
    return {
      policy: {
        ...policy,
        ...(runbook.cooldownSeconds !== undefined ? { cooldownSeconds: runbook.cooldownSeconds } : {}),
        ...(runbook.breaker
          ? { breakerRestarts: runbook.breaker.restarts, breakerWindowSeconds: runbook.breaker.windowSeconds }
          : {}),
      },
      ...(runbook.approval === 'always' ? { approvalAlwaysBy: runbook.source } : {}),
    };
  }

  /**
   * The target container as the latest cycle saw it: its health (running, not Docker-unhealthy, its HEALTH_TARGETS
   * URL answering), its scope label, and its group, the replicas the last-healthy and in-flight rules count among:
   * its pipeline stage, else its compose service, else none. `known` is false when no cycle saw it.
   */
  async function containerView(container: string): Promise<ContainerView> {
    const record = await latestCycleRecord(redis, keys).catch(() => undefined);
    const s = record?.snapshot;
    const target = s?.containers.find((c) => c.name === container);
    if (!s || !target) return { known: false };
    const healthOf = (c: ContainerState) =>
      containerWorking(c) && (s.health.find((x) => x.container === c.name)?.ok ?? true);
    const group = target.stage
      ? { key: target.stage, name: 'stage', peers: s.containers.filter((c) => c.stage === target.stage) }
      : target.service
        ? {
            key: `service:${target.service}`,
            name: 'compose service',
            peers: s.containers.filter((c) => !c.stage && c.service === target.service),
          }
        : undefined;
    return {
      known: true,
      group: group?.key,
      groupName: group?.name,
      healthy: healthOf(target),
      healthyInGroup: group ? group.peers.filter(healthOf).length : undefined,
      scopeLabel: target.scopeLabel,
    };
  }

  return {
    /** Reads the state the policy needs and evaluates it. */
    async checkSafety(input: CheckSafetyInput): Promise<{ verdict: Verdict; context: SafetyContext; stage?: string }> {
      const { plan, now } = input;
      const { policy, approvalAlwaysBy } = runbookPolicy(plan, input.policy);
      let recentRestartsOfTarget: number[] = [];
      let noopRestartsOfTarget: number[] = [];
      let dockerRestartsOfTarget: number[] = [];
      let restartsInFlightInStage = 0;
      let view: ContainerView = { known: false };
      if (plan.action === 'restart_worker' && plan.params.container) {
        view = await containerView(plan.params.container);
        // Far enough back for the breaker and the backoff: a restart that imposes a doubled backoff is in the breaker
        // window (it is counted there); one before it imposes RESTART_COOLDOWN alone.
        const windowStart = now - Math.max(policy.breakerWindowSeconds, policy.cooldownSeconds) * 1000;
        const { rows } = await pool.query<{ reserved_at_ms: string; outcome: string | null }>(
          `SELECT reserved_at_ms, outcome FROM action_permits
            WHERE action = 'restart_worker' AND target = $1 AND reserved_at_ms > $2
              AND coalesce(outcome, '') <> 'refused' AND idempotency_key <> $3
            ORDER BY reserved_at_ms`,
          [plan.params.container, windowStart, input.ownPermitKey ?? ''],
        );
        recentRestartsOfTarget = rows.map((r) => Number(r.reserved_at_ms));
        noopRestartsOfTarget = rows.filter((r) => r.outcome === 'nothing_to_do').map((r) => Number(r.reserved_at_ms));
        // And Docker's own (its restart policy), as the actions worker's inspections recorded them.
        dockerRestartsOfTarget = await policyRestartsSince(redis, keys, plan.params.container, windowStart).catch(
          () => [],
        );
        if (view.group) {
          // A permit never finished (its workflow was terminated) stops counting after the longest action time.
          // Holding a permit of its own, a workflow counts only the permits reserved before it: of two restarts of
          // one stage that both got a permit, the later waits for the earlier, never both for each other. "Before"
          // is the order of reservation (the id, given under the reservation lock), not `reserved_at_ms`: that is
          // each workflow's own clock, and a healing that reserved later can carry an earlier time, so that each
          // would have counted only the other's as later and both restarted at once.
          const inflight = await pool.query<{ n: number }>(
            `WITH own AS (SELECT id FROM action_permits WHERE idempotency_key = $4)
             SELECT count(*)::int AS n FROM action_permits p
              WHERE p.action = 'restart_worker' AND p.stage = $1 AND p.finished_at_ms IS NULL
                AND p.workflow_id <> $2 AND p.reserved_at_ms > $3
                AND (NOT EXISTS (SELECT 1 FROM own) OR p.id < (SELECT id FROM own))`,
            [view.group, input.workflowId, now - IN_FLIGHT_MAX_MS, input.ownPermitKey ?? ''],
          );
          restartsInFlightInStage = inflight.rows[0]!.n;
        }
      }
      const context: SafetyContext = {
        now,
        autoFix: policy.autoFix,
        minConfidence: policy.minConfidence,
        ...(approvalAlwaysBy ? { approvalAlwaysBy } : {}),
        allowlist: policy.allowlist,
        denylist: policy.denylist,
        cooldownSeconds: policy.cooldownSeconds,
        restartBackoffMaxSeconds: policy.restartBackoffMaxSeconds,
        breakerRestarts: policy.breakerRestarts,
        breakerWindowSeconds: policy.breakerWindowSeconds,
        requeueCap: policy.requeueCap,
        // State read above.
        recentRestartsOfTarget,
        ...(noopRestartsOfTarget.length > 0 ? { noopRestartsOfTarget } : {}),
        ...(dockerRestartsOfTarget.length > 0 ? { dockerRestartsOfTarget } : {}),
        restartsInFlightInStage,
        targetScopeLabel: view.scopeLabel,
        // A hung worker answers its health check: it is not the healthy worker the last-healthy rule protects.
        targetHealthy: plan.params.hung ? false : view.healthy,
        healthyWorkersInStage: view.healthyInGroup,
        targetGroup: view.groupName,
      };
      const verdict = evaluateSafety(plan, context);
      // Fail closed: a restart of a container no cycle has seen (no cycle record, Redis down, not watched) cannot be
      // checked against its scope label and the in-flight and last-healthy rules.
      if (plan.action === 'restart_worker' && verdict.decision !== 'escalate' && !view.known) {
        return {
          verdict: {
            decision: 'escalate',
            reasons: [
              ...verdict.reasons,
              `no monitoring cycle has seen ${plan.params.container ?? '?'}: its scope and health are unknown`,
            ],
            needsPermit: false,
          },
          context,
        };
      }
      return { verdict, context, stage: view.group };
    },

    /**
     * Reserves one permit of the rolling-window budget, atomically (an advisory transaction lock serializes every
     * reservation). Idempotent by key: a retried reservation returns the permit it already got.
     */
    async reservePermit(input: ReserveInput): Promise<ReserveResult> {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await client.query('SELECT pg_advisory_xact_lock($1)', [PERMIT_LOCK]);
        const existing = await client.query<{ id: number }>(
          'SELECT id FROM action_permits WHERE idempotency_key = $1',
          [input.idempotencyKey],
        );
        if (existing.rows[0]) {
          await client.query('COMMIT');
          return { granted: true, permitId: existing.rows[0].id };
        }
        const windowStart = input.now - input.windowMs;
        const { rows } = await client.query<{ reserved_at_ms: string }>(
          `SELECT reserved_at_ms FROM action_permits WHERE reserved_at_ms > $1 ORDER BY reserved_at_ms`,
          [windowStart],
        );
        if (input.maxPerWindow <= 0) {
          await client.query('COMMIT');
          // A budget of zero: no permit ever frees (the workflow escalates).
          return { granted: false, nextFreeAt: input.now + 100 * input.windowMs, used: rows.length };
        }
        if (rows.length >= input.maxPerWindow) {
          await client.query('COMMIT');
          // The permit that frees first is the oldest one still in the window (the one that makes room for us).
          const oldest = Number(rows[rows.length - input.maxPerWindow]!.reserved_at_ms);
          return { granted: false, nextFreeAt: oldest + input.windowMs + 1, used: rows.length };
        }
        const inserted = await client.query<{ id: number }>(
          `INSERT INTO action_permits (idempotency_key, workflow_id, action, target, stage, reserved_at_ms)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
          [
            input.idempotencyKey,
            input.workflowId,
            input.plan.action,
            input.plan.params.container ?? input.plan.target,
            input.stage ?? null,
            input.now,
          ],
        );
        await client.query('COMMIT');
        return { granted: true, permitId: inserted.rows[0]!.id };
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      } finally {
        client.release();
      }
    },

    async finishPermit(input: { idempotencyKey: string; now: number; outcome: string }): Promise<void> {
      await pool.query(
        `UPDATE action_permits SET finished_at_ms = $2, outcome = $3 WHERE idempotency_key = $1 AND finished_at_ms IS NULL`,
        [input.idempotencyKey, input.now, input.outcome],
      );
    },
  };
}
