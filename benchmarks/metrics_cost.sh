#!/usr/bin/env bash
# What Prometheus metrics cost: `streamml bench` with metrics on, then off, alternating, each report
# recorded under benchmarks/results/metrics-{on,off}-N/.
#
#   benchmarks/metrics_cost.sh [RUNS] [extra `streamml bench` arguments]
#   e.g. benchmarks/metrics_cost.sh 2 --soak 0 --routes lightgbm
set -euo pipefail
runs=${1:-2}
shift $(( $# < 1 ? $# : 1 ))
cd "$(git rev-parse --show-toplevel)"
for ((i = 1; i <= runs; i++)); do
  for mode in on off; do
    flag=--metrics
    [ "$mode" = off ] && flag=--no-metrics
    echo "=== metrics $mode, run $i, $(date -u +%H:%M:%S)"
    .venv/bin/streamml bench "$flag" -o "benchmarks/results/metrics-$mode-$i" "$@"
  done
done
