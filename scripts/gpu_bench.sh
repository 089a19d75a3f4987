#!/usr/bin/env bash
# The GPU figures in one run (issue 23): generator, inversion with the full loss, reenactment and a smoke run of
# invert_dataset.py, at 1024 px with the SG3-R layer plan (random weights, w_dim 512), each log headed by the
# device, the torch/CUDA versions and the exact command, and ending with its exit status.
#
#   bash scripts/gpu_bench.sh                          # on the GPU machine: logs in docs/bench/gpu_*.log
#   SMOKE=1 DEVICE=cpu LOGS=/tmp/logs bash scripts/gpu_bench.sh   # every command at a tiny size on the CPU
#   SKIP="generator_bf16_compile" ...                 # leave out steps by name; WORK=DIR: scratch (out/gpu_bench)
#
# Made for a 15-minute loan of one H100/H200 with only this repository on it (no ../shared, no internet): it
# checks its Python imports first and names the wheels to carry; it reads nothing outside the checkout (the
# reenactment bench makes its clip and landmarks on the fly: no dlib model); it writes under LOGS and out/gpu_bench
# (and copies the logs to $OUT/bench when OUT is set, as on the device machine). The most important figures come
# first. Each step has its own time limit, sized from the image-steps it runs (see LIMITS below), and the limits add
# up to 590 s, under the device's 600 s per command; a step that overruns costs its own row, not the others. For a
# second try within a 15-minute loan, SKIP the steps whose logs came back.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then DEVICE=${DEVICE:-cpu}; else DEVICE=${DEVICE:-cuda}; fi
LOGS=${LOGS:-docs/bench}
WORK=${WORK:-out/gpu_bench}
mkdir -p "$LOGS" "$WORK"
STAMP=$(date -u +%Y%m%dT%H%MZ)
FAILED=0

# Imports first: a missing package costs seconds here, not a failed step later.
if ! "$PYTHON" - <<'EOF'
import importlib
missing = []
for module, wheel in [("torch", "torch"), ("numpy", "numpy"), ("scipy", "scipy"), ("yaml", "pyyaml"),
                      ("safetensors", "safetensors"), ("tqdm", "tqdm"), ("PIL", "pillow"), ("av", "av"),
                      ("lpips", "lpips"), ("torchvision", "torchvision")]:
    try:
        importlib.import_module(module)
    except ImportError:
        missing.append(wheel)
if not missing:
    for script in ("bench_generator", "bench_inversion", "bench_reenact", "invert_dataset", "latent_clips"):
        try:
            importlib.import_module(f"scripts.{script}")
        except ImportError as err:
            missing.append(f"{err.name} (imported by scripts/{script}.py)")
if missing:
    print("error: missing Python packages: " + ", ".join(missing))
    print("carry their wheels (pip download NAME --no-deps -d wheels/, each under the carry limit) and")
    print("pip install --no-deps wheels/*.whl before this script; dlib and the landmark model are not needed")
    raise SystemExit(1)
EOF
then
    exit 1
fi

# The device and versions, read once (each Python start with torch costs seconds).
MACHINE=$("$PYTHON" -c 'import torch
print("# device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA (CPU)")
print("# torch:", torch.__version__, "cuda", torch.version.cuda)')

header() {  # header LOG COMMAND...: when, device, versions, the command
    local log=$1
    shift
    {
        echo "# $(date -u +%FT%TZ) run $STAMP$([ "$SMOKE" = 1 ] && echo " (SMOKE=1: tiny sizes, not figures)")"
        echo "$MACHINE"
        echo "# command: $*"
    } >"$log"
}

run() {  # run NAME SECONDS COMMAND...: one step, its log in $LOGS/gpu_NAME.log ending with its exit status
    local name=$1 limit=$2
    shift 2
    case " ${SKIP:-} " in *" $name "*) echo "# skipped $name (SKIP)"; return ;; esac
    local log="$LOGS/gpu_$name.log"
    header "$log" "$@"
    timeout "$limit" "$@" >>"$log" 2>&1
    local status=$?
    echo "# exit status: $status (124: stopped at the ${limit} s limit)" >>"$log"
    [ "$status" = 0 ] || FAILED=1
    tail -n 25 "$log"
    if [ -n "${OUT:-}" ]; then mkdir -p "$OUT/bench" && cp "$log" "$OUT/bench/"; fi
}

if [ "$SMOKE" = 1 ]; then  # every command, at a size the CPU finishes in seconds
    WDIM=64 PLAN_SIZE=(--resolution 32 --w-dim 64 --channel-max 16) STEPS=(--steps 1 --warmup 1) FRAMES=4 MAPPER=128
    DSTEPS=2 LPIPS_AT=0 CH=16 BATCHES=1,2 BATCH32=2  # LPIPS at full resolution: AlexNet needs 32 px or more
    L_INV=300 L_INV32=300 L_GEN=300 L_TRI=300 L_REEN=300 L_EST=300 L_DATA=300 L_RERUN=300 L_MAP=300 L_COMP=600
    # The Triton kernels run on the CPU under Triton's interpreter (slow: forward+backward only, batch 2).
    TRITON=(env TRITON_INTERPRET=1) TRI_ARGS=(--batch 2 --passes fwdbwd)
else
    WDIM=512 PLAN_SIZE=(--resolution 1024 --w-dim 512) STEPS=(--steps 5 --warmup 2) FRAMES=75 MAPPER=580
    DSTEPS=20 LPIPS_AT=256 CH=None BATCHES=1,8 BATCH32=4
    # LIMITS, from the README's H100 figure (SG3-R 1024 forward+backward 0.555 s per image at batch 1, fp32, fast
    # path), ~20 s per fresh process (CUDA start, building the plan), and for the Triton kernels (impl=auto on CUDA,
    # every step but generator_fp32) the counts of scripts/triton_macs.py: R 1024 at batch 8, bf16 forward 7.5 T and
    # backward 5.5 T tensor multiply-adds, fp32 17.3 T and 16.4 T (the backward was 21 T and 82 T before issue 32), so
    # a Triton pass is assumed no slower than the fast path's; not measured on a GPU yet:
    #  inversion bf16: the first Triton step: impl=auto's trial compiles its 49 kernel configurations and the R plan's
    #    own (~15; Triton's disk cache serves every later process and step): ~40 s; 7 steps x (1 + 8) images = 63
    #    image-steps x ~0.6 s (LPIPS at 256, ArcFace) = 38 s + 2 processes: 130 s; fp32 batch 4: 7 x 4 = 28
    #    image-steps = 17 s + 1 process: 45 s
    #  generator fp32: 4 passes x (1/3 + 1) image-steps per impl, reference ~1.35x slower, 4 processes: 100 s
    #  generator triton vs fast, bf16 batch 8 (issue 22's goal): 4 x 8 x 1.33 image-steps each, at most the fast
    #    path's ~0.3 s (bf16; Triton's forward+backward 13 T multiply-adds, 1.7x its forward, was 3.8x), 4 processes,
    #    the kernels compiled by the first step: 60 s
    #  reenact bf16: 75 frames x 2 generator passes (stage + end to end) at batch 8 + mapper at 580 px: 60 s
    #  invert_dataset at 256 px: estimate (2 timed calls) 40 s, 2 videos x 3 frames x 20/10 steps 45 s, rerun 25 s
    #  compiled generator (fast path): the compile of forward and backward at 1024 (~1 min on the CPU at 16 px) +
    #    passes: 55 s (last: its overrun costs only its own row)
    #  train_mapper.py under torchrun, one process, one epoch of the smoke network on those 6 frames: 30 s
    #  sum: 130 + 45 + 100 + 60 + 60 + 40 + 45 + 25 + 30 + 55 = 590 s
    L_INV=130 L_INV32=45 L_GEN=100 L_TRI=60 L_REEN=60 L_EST=40 L_DATA=45 L_RERUN=25 L_MAP=30 L_COMP=55
    TRITON=() TRI_ARGS=(--batch 8)
fi
PLAN=(--config r "${PLAN_SIZE[@]}" --device "$DEVICE")

# 1. Inversion, the figure that sets the dataset's cost: full loss, one pass per batch, bf16, then fp32.
run inversion_bf16 "$L_INV" "$PYTHON" -m scripts.bench_inversion "${PLAN[@]}" --batches "$BATCHES" --loss-resolutions "$LPIPS_AT" \
    "${STEPS[@]}" --precision bf16 --joint-pass true
run inversion_fp32 "$L_INV32" "$PYTHON" -m scripts.bench_inversion "${PLAN[@]}" --batches "$BATCH32" \
    --loss-resolutions "$LPIPS_AT" "${STEPS[@]}" --precision fp32 --joint-pass true
# 2. The generator: fast vs reference ops, forward and forward+backward, fp32; fast vs Triton, bf16; then bf16
#    compiled (last).
run generator_fp32 "$L_GEN" "$PYTHON" -m scripts.bench_generator "${PLAN[@]}" --warmup 1 --repeats 3
run generator_triton "$L_TRI" "${TRITON[@]}" "$PYTHON" -m scripts.bench_generator "${PLAN[@]}" --warmup 1 --repeats 3 \
    --impls fast,triton --precision bf16 "${TRI_ARGS[@]}"
run reenact_bf16 "$L_REEN" "$PYTHON" -m scripts.bench_reenact "${PLAN[@]}" --mapper-size "$MAPPER" --thesis-mapper \
    --precision bf16 driving=synthetic landmarks=synthetic frames="$FRAMES"
# 3. A smoke run of the real commands: a random-weights generator folder, two synthetic clips, invert_dataset.py
#    with bf16, one pass per batch and the batched warm start, then a rerun that must find everything done, then
#    train_mapper.py under torchrun on its latents.
DRES=$([ "$SMOKE" = 1 ] && echo 16 || echo 256)
"$PYTHON" -c "import stylegan3; from stylegan3.bench import build_plan; stylegan3.save(build_plan('r', $DRES, $WDIM, $CH), '$WORK/G')" \
    && "$PYTHON" -m scripts.latent_clips --network "$WORK/G" --out "$WORK/clips" videos=2 frames=3 landmarks=true >/dev/null
DATASET=("$PYTHON" -m scripts.invert_dataset --input "$WORK/clips/manifest.jsonl" --network "$WORK/G" --device "$DEVICE"
    loss.lpips=0 loss.id=0 precision=bf16 joint_pass=true batch_size=2 warm_start=sequential steps="$DSTEPS"
    warm_steps="$((DSTEPS / 2))")
run invert_dataset_estimate "$L_EST" "${DATASET[@]}" --out "$WORK/latents" estimate=true estimate_steps=2
run invert_dataset "$L_DATA" "${DATASET[@]}" --out "$WORK/latents" fresh=true
run invert_dataset_rerun "$L_RERUN" "${DATASET[@]}" --out "$WORK/latents"
# The mapper's trainer under torchrun (NCCL on CUDA) on those latents and the clips' synthetic landmarks.
run train_mapper_torchrun "$L_MAP" "$PYTHON" -m torch.distributed.run --nproc_per_node=1 --standalone \
    -m scripts.train_mapper --config configs/train_mapper_smoke.yaml manifest="$WORK/clips/manifest.jsonl" \
    latents="$WORK/latents" out="$WORK/mapper" epochs=1 device="$DEVICE" frame_size="$DRES"
# 4. Last: the compiled generator (its compile time is the least predictable).
run generator_bf16_compile "$L_COMP" "$PYTHON" -m scripts.bench_generator "${PLAN[@]}" --warmup 1 \
    --repeats 3 --impls fast --precision bf16 --compile
exit "$FAILED"
