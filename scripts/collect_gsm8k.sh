#!/usr/bin/env bash
# Collect routecraft's own GSM8K dataset on the local pool, in chunks of queries so that every model, strategy and
# budget grows together. Resumable: rerun the same command after a stop; finished cells are skipped.
#
#   scripts/collect_gsm8k.sh [N_QUESTIONS=400] [CHUNK=25] [OUT=data/routecraft-gsm8k]
#
# Block A: 4 models x {direct, cot, cod, pal} at the default budget.
# Block B: the 3 instruct models x cot under budgets {32, 64, 128, 256}.
set -euo pipefail
N=${1:-400}
CHUNK=${2:-25}
OUT=${3:-data/routecraft-gsm8k}
export ROUTECRAFT_THREADS=${ROUTECRAFT_THREADS:-$(nproc)}   # measured: 2 threads beat 1 on an idle 2-core box
ALL=smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b
INSTRUCT=smollm2-135m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b
for ((end = CHUNK; end <= N; end += CHUNK)); do
  echo "=== questions 0..$end ($(date -u +%FT%TZ))"
  until routecraft collect --data gsm8k-test --limit "$end" --models "$ALL" --strategies direct,cot,cod,pal \
    --budgets default --out "$OUT" --concurrency 2 --parallel 2; do sleep 10; done
  until routecraft collect --data gsm8k-test --limit "$end" --models "$INSTRUCT" --strategies cot \
    --budgets 32,64,128,256 --out "$OUT" --concurrency 2 --parallel 2; do sleep 10; done
done
# A cell whose backend failed after retries is left missing and retried by the next (cumulative) chunk.
