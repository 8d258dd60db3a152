#!/usr/bin/env bash
# The bench tables of docs/RESULTS.md: every router, every metric, 3 seeds, on each published dataset.
#   benchmarks/bench_all.sh [OUT=runs]
set -euo pipefail
OUT=${1:-runs}
for d in zeroeval-gsm8k llmrouter-dcrouter routellm-gsm8k routellm-mmlu; do
  echo "=== $d ($(date -u +%FT%TZ))"
  /usr/bin/time -f "wall %e s" routecraft bench --data "$d" --out "$OUT/bench-$d"
done
