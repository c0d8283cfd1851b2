#!/usr/bin/env bash
# The whole CI (.ci/run) on fresh clones of this checkout's HEAD, several times in a row, while stress-ng keeps the
# machine busy: the evidence that the suite passes on a loaded machine, not only on a quiet one.
#
#   scripts/ci-under-load.sh [--runs N] [--cpu N] [--vm-bytes SIZE]
#
# --runs      CI runs, one after the other (default 3)
# --cpu       stress-ng CPU workers, each spinning on a core (default 1; 0 for none)
# --vm-bytes  memory one stress-ng VM worker keeps writing (default 1G; 0 for none). It spins on a core too: the
#             defaults keep two workers busy, as many as a 2-core machine has cores.
#
# stress-ng runs at the default priority, beside CI, for the whole of each run, and is stopped after it (at the
# latest after 6 hours, should this script be killed with SIGKILL). Each run's log is kept in
# .data/ci-under-load/run-COMMIT-N.log; a table of results (last line, wall time, load average) is printed at the end,
# and the script exits non-zero if any run failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG_TAG=ci-under-load
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

RUNS=3
CPU=1
VM_BYTES=1G
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
    --cpu) CPU=${2:?--cpu needs a number}; shift 2 ;;
    --vm-bytes) VM_BYTES=${2:?--vm-bytes needs a size}; shift 2 ;;
    *) echo "usage: scripts/ci-under-load.sh [--runs N] [--cpu N] [--vm-bytes SIZE]" >&2; exit 64 ;;
  esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs: expected a positive number, got $RUNS"
[[ $CPU =~ ^[0-9]+$ ]] || die "--cpu: expected a number, got $CPU"
[[ $VM_BYTES =~ ^[0-9]+[KMGkmg]?$ ]] || die "--vm-bytes: expected a size such as 512M or 1G, got $VM_BYTES"
[ "$CPU" = 0 ] && [ "$VM_BYTES" = 0 ] && die "--cpu 0 --vm-bytes 0 is no load at all"

apt_install stress-ng

OUT="$ROOT/.data/ci-under-load"
mkdir -p "$OUT"
head=$(git -C "$ROOT" rev-parse --short HEAD)
# (stress-ng reads --cpu 0 as one worker per core, not none.)
stress_args=(--timeout 6h --quiet)
[ "$CPU" != 0 ] && stress_args+=(--cpu "$CPU")
[ "$VM_BYTES" != 0 ] && stress_args+=(--vm 1 --vm-bytes "$VM_BYTES")
log "$RUNS CI run(s) of $head, each on a fresh clone, beside stress-ng ${stress_args[*]}"

stress_pid=
clone=
stop_stress() {
  [ -n "$stress_pid" ] || return 0
  kill -- "-$stress_pid" 2>/dev/null || kill "$stress_pid" 2>/dev/null
  wait "$stress_pid" 2>/dev/null
  stress_pid=
}
cleanup() {
  stop_stress
  [ -n "$clone" ] && rm -rf "$clone"
  clone=
}
trap 'cleanup' EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

results=()
failed_runs=0
for i in $(seq 1 "$RUNS"); do
  clone=$(mktemp -d "${TMPDIR:-/tmp}/selfheal-ci-XXXXXX")
  { git clone -q "$ROOT" "$clone" && git -C "$clone" checkout -q "$head"; } || die "could not clone $ROOT at $head"
  setsid stress-ng "${stress_args[@]}" &
  stress_pid=$!
  sleep 1
  kill -0 "$stress_pid" 2>/dev/null || die "stress-ng ${stress_args[*]} did not start"
  run_log="$OUT/run-$head-$i.log"
  log "run $i/$RUNS: .ci/run in $clone (log: $run_log)"
  t0=$(now)
  (cd "$clone" && CI=true bash .ci/run </dev/null >"$run_log" 2>&1)
  rc=$?
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  stress_note=""
  kill -0 "$stress_pid" 2>/dev/null || stress_note=" (stress-ng had exited before the run ended)"
  cleanup
  last=$(tail -n 1 "$run_log")
  wall=$(grep -o 'CI wall time: [0-9]* s' "$run_log" | tail -n 1)
  results+=("run $i: exit $rc, \"$last\", ${wall:-no wall time} ($(($(now) - t0)) s here), load average at the end $load$stress_note")
  [ "$rc" -ne 0 ] && failed_runs=$((failed_runs + 1))
  log "${results[-1]}"
done

echo
echo "CI under load: $head, stress-ng ${stress_args[*]}, $(nproc) cores"
printf '  %s\n' "${results[@]}"
echo "$((RUNS - failed_runs)) of $RUNS runs passed"
[ "$failed_runs" -eq 0 ]
