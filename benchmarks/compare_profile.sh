#!/usr/bin/env bash
# Compare two commits with one of the profiles, runs alternating (old, new, old, new, ...), printing what
# each run measured: `e2e` (python -m streamml.bench.profile_e2e: throughput, and CPU per request of the
# gateway and the worker) or `drain` (python -m streamml.bench.profile_drain: three unprofiled drains of
# one worker, records/s and CPU per record). Both use this checkout's .venv for their dependencies.
#
#   benchmarks/compare_profile.sh OLD_COMMIT NEW_COMMIT RUNS e2e RECORDS_PER_REQUEST SECONDS [native|v2]
#   benchmarks/compare_profile.sh OLD_COMMIT NEW_COMMIT RUNS drain RECORDS_PER_ENTRY RECORDS
#   e.g. benchmarks/compare_profile.sh 4c7d5cb 61ca1cb 2 e2e 1 15
set -euo pipefail
old=$1 new=$2 runs=$3 kind=$4 size=$5 amount=$6 protocol=${7:-native}
repo=$(git rev-parse --show-toplevel)
venv=$repo/.venv
site=$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
work=$(mktemp -d /tmp/streamml-compare-profile-XXXXXX)
cleanup() {
  for side in old new; do git -C "$repo" worktree remove --force "$work/$side" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
for side in old new; do
  commit=$([ "$side" = old ] && echo "$old" || echo "$new")
  git -C "$repo" worktree add -q --detach "$work/$side" "$commit"
  python3 -m venv "$work/$side-venv"
  printf '%s\n%s\n' "$work/$side/src" "$site" \
    > "$("$work/$side-venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')/paths.pth"
done
for ((i = 1; i <= runs; i++)); do
  for side in old new; do
    echo "=== $side ($([ "$side" = old ] && echo "$old" || echo "$new")) run $i, $(date -u +%H:%M:%S)"
    if [ "$kind" = e2e ]; then
      args=(streamml.bench.profile_e2e "$size" "$amount" "$work/profile-$side-$i" "$protocol")
    else
      args=(streamml.bench.profile_drain "$size" "$amount")
    fi
    (cd "$work/$side" && PATH="$work/$side-venv/bin:$venv/bin:$PATH" \
      "$work/$side-venv/bin/python" -m "${args[@]}" 2>&1 | grep -E "requests of|CPU/request|µs CPU per record$")
  done
done
