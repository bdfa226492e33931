#!/usr/bin/env bash
# Compare two commits with `streamml bench --quick`, runs alternating (old, new, old, new, ...), so each
# pair is minutes apart on a machine whose speed drifts. Both use this checkout's .venv for their
# dependencies and one Redis (REDIS_URL, or a private server started here).
#
#   benchmarks/compare.sh OLD_COMMIT NEW_COMMIT [RUNS] [extra `streamml bench` arguments]
#   e.g. benchmarks/compare.sh ba713de HEAD 3 --routes lightgbm
set -euo pipefail
old=$1 new=$2 runs=${3:-3}
shift $(( $# < 3 ? $# : 3 ))
repo=$(git rev-parse --show-toplevel)
venv=$repo/.venv
site=$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
work=$(mktemp -d /tmp/streamml-compare-XXXXXX)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  for side in old new; do git -C "$repo" worktree remove --force "$work/$side" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
for side in old new; do
  commit=$([ "$side" = old ] && echo "$old" || echo "$new")
  git -C "$repo" worktree add -q --detach "$work/$side" "$commit"
  # A venv whose python sees that checkout's code first, then this checkout's dependencies (the
  # gateway and worker processes the benchmark starts run that python too).
  python3 -m venv "$work/$side-venv"
  printf '%s\n%s\n%s\n' "$work/$side/src" "$work/$side" "$site" \
    > "$("$work/$side-venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')/paths.pth"
done
if [ -z "${REDIS_URL:-}" ]; then
  port=$("$venv/bin/python" -c 'from streamml.local.services import free_port; print(free_port())')
  server=$("$venv/bin/python" -c 'from streamml.local.services import find_redis_server; print(find_redis_server())')
  "$server" --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$work" > "$work/redis.log" 2>&1 &
  server_pid=$!
  export REDIS_URL=redis://127.0.0.1:$port/0
  sleep 1
fi
for ((i = 1; i <= runs; i++)); do
  for side in old new; do
    echo "=== $side ($([ "$side" = old ] && echo "$old" || echo "$new")) run $i, $(date -u +%H:%M:%S)"
    (cd "$work/$side" && COLUMNS=${COLUMNS:-180} PATH="$work/$side-venv/bin:$venv/bin:$PATH" \
      "$work/$side-venv/bin/python" -m streamml bench --quick --no-record "$@")
  done
done
