#!/usr/bin/env bash
# The GPU benchmark (benchmarks/gpu.py) in one command on a bare GPU machine that has Python and torch but no
# network: installs what its image lacks from wheels/ (git-ignored, carried with the checkout), smoke-tests the
# script at test size on the GPU (falling back to the image's own transformers if the carried one fails), then runs
# the real shapes within a time limit and leaves gpu.json, gpu.md and gpu.log in $OUT.
#
#   benchmarks/gpu_run.sh wheels          # here, where pip reaches a registry: fill wheels/ (about 15 MB)
#   benchmarks/gpu_run.sh [gpu.py args]   # there: install, smoke test, run (README "GPU benchmark")
#
# Environment: OUT (results folder; default ./gpu-bench-out), GPU_BENCH_LIMIT (seconds for everything, default
# 330: two runs and a machine start fit in a 15-minute lease), GPU_BENCH_PYTHON (default python3),
# GPU_BENCH_WHEELS (default wheels).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${GPU_BENCH_PYTHON:-python3}
WHEELS=${GPU_BENCH_WHEELS:-wheels}
# What `import personamine.shards.run` needs beyond torch is numpy, fsspec, h5py, tqdm, transformers, tokenizers,
# safetensors and huggingface_hub, all in the GPU image (KINDS.md). Carried: dictionary-learning (the SAE builder;
# no image has it), and the transformers the CPU suite runs (5.24; the image has 5.17) with the regex it requires.
PINS=(dictionary-learning==0.1.0 transformers==5.24.0 regex==2026.5.9)

if [ "${1:-}" = wheels ]; then
    mkdir -p "$WHEELS"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" "${PINS[@]}" || exit 1
    du -sh "$WHEELS"
    exit 0
fi

started=$SECONDS
LIMIT=${GPU_BENCH_LIMIT:-330}
OUT=${OUT:-$PWD/gpu-bench-out}
mkdir -p "$OUT"
SITE=$(mktemp -d "${TMPDIR:-/tmp}/personamine-gpu-site.XXXXXX")
trap 'rm -rf "$SITE"' EXIT

carried=()
image=()  # the carried wheels minus transformers and its regex: the fallback onto the image's transformers
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    for wheel in "$WHEELS"/*.whl; do
        carried+=("$wheel")
        case $(basename "$wheel") in transformers-*|regex-*) ;; *) image+=("$wheel") ;; esac
    done
else
    echo "no wheels in $WHEELS/: using the installed packages as they are"
fi

install() {
    rm -rf "$SITE" && mkdir -p "$SITE" || return 1
    [ $# -eq 0 ] && return 0
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$@"
}

smoke() {
    PYTHONPATH="$SITE:$PWD" timeout 150 "$PY" benchmarks/gpu.py --tiny --out "$OUT" >"$OUT/smoke.log" 2>&1
}

install "${carried[@]}" || exit 1
case " $* " in
    *" --tiny "*) ;;  # the run is itself the smoke test
    *)
        if ! smoke; then
            echo "smoke test failed with the carried wheels; the end of $OUT/smoke.log:"
            tail -n 5 "$OUT/smoke.log"
            echo "retrying with the image's transformers"
            install "${image[@]}" || exit 1
            if ! smoke; then
                echo "smoke test failed again; the end of $OUT/smoke.log:"
                tail -n 40 "$OUT/smoke.log"
                exit 1
            fi
        fi
        echo "smoke test passed ($((SECONDS - started)) s)"
        grep -- "- ERROR" "$OUT/gpu-tiny.md" && echo "(the smoke test's steps above failed; the full run will say the same)"
        ;;
esac

left=$((LIMIT - (SECONDS - started)))
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw,memory.used --format=csv
# Measurements stop starting 45 s before the limit: the one in flight, the report and the cleanup fit in that.
PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1 timeout --kill-after=10 "$left" \
    "$PY" benchmarks/gpu.py --out "$OUT" --budget-s $((left - 45)) "$@" 2>&1 | tee "$OUT/gpu.log"
rc=${PIPESTATUS[0]}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=clocks.sm,temperature.gpu,power.draw,memory.used --format=csv
echo "gpu_run.sh: exit $rc after $((SECONDS - started)) s"
exit "$rc"
