#!/usr/bin/env bash
# Redo the GPU evidence on any CUDA machine, one command, from the repo root:
#   bash scripts/gpu_evidence.sh [OUT]          (default OUT=results)
# Parts (EVIDENCE_PARTS, default all): bench ttft accuracy diagnose gemma. Each part may be capped with
# TIMEOUT_<part> seconds (0 = none) so that a time-limited machine still returns the finished parts.
set -uo pipefail
OUT=${1:-results}
PARTS=${EVIDENCE_PARTS:-"bench ttft accuracy diagnose gemma"}
mkdir -p "$OUT/runs" "$OUT/bench"
step() {  # step NAME sampleattn-arguments...: run with its timeout, keep going on failure
  local name=$1; shift
  local cap_var="TIMEOUT_$name"; local cap=${!cap_var:-0}
  echo "== $name ($(date -u +%T), cap ${cap}s)"
  timeout "$cap" python3 -m harness.cli "$@" --out "$OUT/runs" --device cuda --no-progress \
    || echo "== $name ended with status $?"
}
for part in $PARTS; do
  case $part in
    bench) timeout "${TIMEOUT_bench:-0}" python3 scripts/bench_attention.py --out "$OUT/bench" || echo "== bench failed" ;;
    ttft) step ttft sweep scripts/sweeps/smollm2_ttft.yaml --name smollm2-ttft ;;
    accuracy) step accuracy sweep scripts/sweeps/smollm2_accuracy.yaml --name smollm2-accuracy ;;
    diagnose) step diagnose diagnose --model smollm2-135m --task needle:depths=50 \
        --methods "sample:alpha=0.8|0.95,sample:pattern=column_slash,bigbird:density=0.55,streaming:density=0.55,oracle-topk:density=0.1|0.3|0.55" \
        --lengths 2k,8k --name smollm2-diagnose ;;
    gemma) step gemma sweep scripts/sweeps/gemma3_needle.yaml --name gemma3-needle ;;
    *) echo "unknown part $part (bench ttft accuracy diagnose gemma)"; exit 2 ;;
  esac
done
for run in "$OUT"/runs/*/; do  # a report per run folder written by this script
  [ -f "$run/report/report.md" ] || python3 -m harness.cli report "$run" >/dev/null 2>&1 || echo "no report for $run"
done
