#!/usr/bin/env bash
# Issue 17's GPU runs, one command, from the repo root on a host with 2 GPUs of one kind:
#   bash scripts/gpu_scale.sh OUT [parts]        parts (default "sweep split long"):
#   sweep  SmolLM2 needle 1K-8K, 4 methods, on 1 GPU and on 2 ranks (--gpus 2): same cells and scores? wall times
#   split  scripts/check_split.py: every method split over 2 GPUs = 1 GPU; Llama-3.1-8B (random) at 128K TTFT
#   long   scripts/bench_long.py on GPU 0: 256K / 512K / 1M, LONG_LAYERS (default 2) layers of Llama-3.1-8B
# Source scripts/gpu_env.sh first (stashed SmolLM2, SAMPLEATTN_GIT_COMMIT). Each part keeps going on failure.
set -uo pipefail
OUT=${1:?usage: gpu_scale.sh OUT [parts]}
PARTS=${2:-"sweep split long"}
mkdir -p "$OUT/runs" "$OUT/scale"
NEEDLE=(--models smollm2-135m --task needle --methods dense,sample,bigbird,streaming --lengths 1k,2k,4k,8k
        --samples ${NEEDLE_SAMPLES:-3} --device cuda --no-progress --out "$OUT/runs")
timed() {  # timed SECONDS_FILE command...: wall seconds of the command into SECONDS_FILE
  local file=$1; shift
  local begin; begin=$(date +%s.%N)
  "$@"; local status=$?
  python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$begin" "$(date +%s.%N)" > "$file"
  return $status
}
for part in $PARTS; do
  echo "== $part ($(date -u +%T))"
  case $part in
    sweep)
      CUDA_VISIBLE_DEVICES=0 timed "$OUT/scale/wall_1gpu" python3 -m harness.cli sweep "${NEEDLE[@]}" --name needle-1gpu \
        || echo "== 1-GPU sweep status $?"
      timed "$OUT/scale/wall_2gpu" python3 -m harness.cli sweep "${NEEDLE[@]}" --gpus 2 --name needle-2gpu \
        || echo "== 2-rank sweep status $?"
      python3 scripts/compare_runs.py "$OUT"/runs/*-needle-1gpu "$OUT"/runs/*-needle-2gpu \
        --wall-a "$(cat "$OUT/scale/wall_1gpu")" --wall-b "$(cat "$OUT/scale/wall_2gpu")" --out "$OUT/scale/needle_1v2.md" \
        || echo "== the two sweeps differ (see needle_1v2.md)" ;;
    split)
      python3 scripts/check_split.py --out "$OUT/scale" || echo "== check_split status $?"
      python3 scripts/check_split.py --unguarded --out "$OUT/scale" || echo "== unguarded check status $?" ;;
    long)
      CUDA_VISIBLE_DEVICES=0 python3 scripts/bench_long.py --lengths 256k,512k,1m --layers "${LONG_LAYERS:-2}" --out "$OUT/scale" \
        || echo "== bench_long status $?" ;;
    *) echo "unknown part $part (sweep split long)"; exit 2 ;;
  esac
done
