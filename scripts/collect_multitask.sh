#!/usr/bin/env bash
# Collect routecraft's multi-task dataset on the local pool, in chunks of questions so that every task, model and
# strategy grows together. Resumable: rerun the same command after a stop; finished cells are skipped.
#
#   scripts/collect_multitask.sh [PER_TASK=50] [CHUNK=5] [OUT=data/routecraft-multitask] [SPLIT=train] [FROM=0]
#
# Questions: LLMRouter's query file of SPLIT (14 tasks), PER_TASK per task drawn with seed 0 and interleaved across
# tasks (the first k*14 questions cover every task k times), so each chunk adds CHUNK questions per task.
# Cells: the 4 local models x the strategies that apply to each task (`--strategies auto`: direct and cot
# everywhere, cod where answers are reasoned, pal for numeric and math, the plain call `default` where the answer has
# no fixed form: open questions and commongen), at the default budget.
# Held-out questions: SPLIT=test into another folder (scripts/collect_multitask.sh 10 5 data/routecraft-multitask-test test).
# FROM: skip the first FROM questions per task (they are in another folder) and collect questions FROM+1..PER_TASK of
# each task: a fresh held-out gate after the first 10 per task
# (scripts/collect_multitask.sh 20 5 data/routecraft-multitask-gate test 10).
set -euo pipefail
PER_TASK=${1:-50}
CHUNK=${2:-5}
OUT=${3:-data/routecraft-multitask}
SPLIT=${4:-train}
FROM=${5:-0}
export ROUTECRAFT_THREADS=${ROUTECRAFT_THREADS:-$(nproc)}
# requests each backend runs at once (its llama.cpp slots; each slot keeps the full context). 4 measured on the 2-core
# VM (docs/RESULTS.md §10.1): smollm2 and gemma3 ~2x the cells/min of 2 slots, qwen-0.5b 1.5x, qwen-1.5b the same;
# 8 no better than 4. Servers already up (`routecraft pool up`, 1 slot by default) are reused as they are: stop them
# first (`routecraft pool down`) for the script to start its own with CONCURRENCY slots
CONCURRENCY=${CONCURRENCY:-4}
MODELS=smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b
k=$FROM
while ((k < PER_TASK)); do
  k=$((k + CHUNK < PER_TASK ? k + CHUNK : PER_TASK))  # the last chunk may be short: 22 5 ends at 22, not 20
  echo "=== questions $((FROM + 1))-$k per task ($(date -u +%FT%TZ))"
  until routecraft collect --data "llmrouter-$SPLIT:$PER_TASK" --offset $((FROM * 14)) --limit $(((k - FROM) * 14)) \
    --models "$MODELS" \
    --strategies auto --out "$OUT" --concurrency "$CONCURRENCY" --parallel "$CONCURRENCY"; do sleep 10; done
done
