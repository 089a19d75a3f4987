#!/usr/bin/env bash
# Issue 13's GPU figures in one run: the three benchmarks at 1024 px with the SG3-R layer plan (random weights),
# each log under docs/bench/ (and $OUT/bench/ when set, e.g. on the device machine) headed by the device, the
# torch version and the exact command. Sized for about 8 minutes (490 s of limits) on one H100/H200; every step
# has its own timeout, so a slow step costs its row, not the others.
#
#   bash scripts/gpu_bench.sh            # PYTHON=.venv/bin/python bash scripts/gpu_bench.sh
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
LOGS=docs/bench
mkdir -p "$LOGS"
STAMP=$(date -u +%Y%m%dT%H%MZ)

run() {  # run NAME SECONDS ARGS...: one benchmark, its log in docs/bench/gpu_NAME.log
    local name=$1 limit=$2
    shift 2
    local log="$LOGS/gpu_$name.log"
    {
        echo "# $(date -u +%FT%TZ) $STAMP"
        echo "# device: $($PYTHON -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA")')"
        echo "# torch: $($PYTHON -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')"
        echo "# command: $PYTHON $*"
    } >"$log"
    timeout "$limit" "$PYTHON" "$@" >>"$log" 2>&1
    echo "# exit status: $? (124: stopped at the ${limit} s limit)" >>"$log"
    cat "$log"
    if [ -n "${OUT:-}" ]; then mkdir -p "$OUT/bench" && cp "$log" "$OUT/bench/"; fi
}

R1024=(--config r --resolution 1024)
run generator_fp32 90 -m scripts.bench_generator "${R1024[@]}" --device "$DEVICE" --warmup 1 --repeats 3
run generator_bf16_compile 120 -m scripts.bench_generator "${R1024[@]}" --device "$DEVICE" --warmup 1 --repeats 3 \
    --impls fast --precision bf16 --compile
run inversion_bf16 150 -m scripts.bench_inversion "${R1024[@]}" --w-dim 512 --device "$DEVICE" --batches 1,4,8 \
    --steps 10 --warmup 3 --precision bf16
run inversion_fp16 50 -m scripts.bench_inversion "${R1024[@]}" --w-dim 512 --device "$DEVICE" --batches 4 \
    --loss-resolutions 256 --steps 10 --warmup 3 --precision fp16
run reenact_bf16 80 -m scripts.bench_reenact "${R1024[@]}" --w-dim 512 --mapper-size 580 --thesis-mapper \
    --device "$DEVICE" --precision bf16
