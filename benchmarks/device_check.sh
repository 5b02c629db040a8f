#!/usr/bin/env bash
# One prepared GPU check (issue 14), run from the repository root on a fresh H100/H200 machine:
#   1. the kernel target point (3072x3072, M 16384, N 4; every provider, fwd / bwd / fwd+bwd, memory)
#   2. the kernel tests on CUDA: the bf16 criterion (pytest -m gpu), then the interpreter cases compiled
#   3. the train step of the full-size HunyuanVideo transformer (random init), HydraLoRA N 4 r 32 against
#      PEFT LoRA r 32, bf16, gradient checkpointing, at the most frames predicted to fit in the time left
#   4. with time left: 3072x12288 and 12288x3072 at M 16384, then all three shapes at M 65536
# each under its own time cap, inside a total budget (default 450 s), rows appended to CSVs in the
# output folder, then a table of the targets marked PASS / MISS (benchmarks/device_summary.py).
#
#   bash benchmarks/device_check.sh --prepare             # here, with network: wheels and commit into .whl/
#   bash benchmarks/device_check.sh [--out DIR]           # on the GPU machine (default DIR benchmarks/results)
#   bash benchmarks/device_check.sh --dry-run --out DIR   # CPU, Triton interpreter, tiny shapes (CI runs this)
#
# Options: --budget SECONDS (total), --wheels DIR (default .whl), --log FILE (a copy of the output).
# Environment: PYTHON (default .venv/bin/python if there, else python3), BENCH_COMMIT (the commit the
# rows name; else git, else the file WHEELS/COMMIT that --prepare writes).
# Recipe for the `run` tool and what the files hold: docs/benchmarks.md, "The device check".
set -uo pipefail

# pure-Python wheels that the GPU machine's image lacks (it has torch, triton, peft, transformers)
DEVICE_WHEELS=(diffusers==0.42.1 importlib_metadata==8.7.0)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT" || exit 2
OUT_DIR=benchmarks/results
WHEELS=.whl
DRY_RUN=0
PREPARE=0
BUDGET=
LOG=
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT_DIR=$2; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        --prepare) PREPARE=1; shift ;;
        --budget) BUDGET=$2; shift 2 ;;
        --wheels) WHEELS=$2; shift 2 ;;
        --log) LOG=$2; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python
else PY=python3
fi

if [ "$PREPARE" = 1 ]; then
    # Pure-Python wheels (py3-none-any): no platform to match, no network needed where they are installed.
    mkdir -p "$WHEELS"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        -d "$WHEELS" "${DEVICE_WHEELS[@]}" || exit 1
    PYTHONPATH=benchmarks "$PY" -c 'from results_csv import git_commit; print(git_commit())' > "$WHEELS/COMMIT"
    echo "prepared $WHEELS: $(cd "$WHEELS" && ls ./*.whl | tr '\n' ' ')commit $(cat "$WHEELS/COMMIT")"
    exit 0
fi

if [ -n "$LOG" ]; then
    mkdir -p "$(dirname "$LOG")"
    exec > >(tee -a "$LOG") 2>&1
fi
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd -P)
RESULTS_DIR=$(cd benchmarks/results && pwd -P)
if [ "$DRY_RUN" = 1 ]; then
    case "$OUT_DIR/" in
        "$RESULTS_DIR"/*) echo "a dry run never writes into $RESULTS_DIR: give --out another folder" >&2; exit 2 ;;
    esac
    export BENCH_DRY_RUN=1 TRITON_INTERPRET=1   # results_csv.py refuses benchmarks/results/ too
else
    unset BENCH_DRY_RUN TRITON_INTERPRET
fi
# One commit for every row of the run: BENCH_COMMIT, else git's (with -dirty), else what --prepare wrote.
if [ -z "${BENCH_COMMIT:-}" ]; then
    if git -C "$ROOT" rev-parse HEAD >/dev/null 2>&1; then
        BENCH_COMMIT=$(PYTHONPATH=benchmarks "$PY" -c 'from results_csv import git_commit; print(git_commit())')
    elif [ -s "$WHEELS/COMMIT" ]; then
        BENCH_COMMIT=$(cat "$WHEELS/COMMIT")
    fi
    export BENCH_COMMIT=${BENCH_COMMIT:-unknown}
fi
export PYTHONUNBUFFERED=1
WORK=$(mktemp -d)
ENV_JSON=$WORK/env.json
START=$(date -u +%Y-%m-%dT%H:%M:%S+00:00)   # the rows of this run are those dated from here on
SECONDS=0
FAILED=0

# Per-mode settings: the same steps, tiny shapes on the CPU in a dry run.
if [ "$DRY_RUN" = 1 ]; then
    BUDGET=${BUDGET:-600}   # the caps are backstops here: a shared CI machine can be slow
    CAP_SETUP=120 CAP_KERNEL=120 CAP_TESTS=120 RESERVE_AFTER_TRAIN=120 RESERVE_SUMMARY=10
    TRAIN_BUDGET_MAX=5 TRAIN_SLACK=120   # the smallest size only (tests/test_device_check.py checks the choice)
    # one interpreter block per GEMM (16 x 32 x 32): the interpreter's cost is per program
    LINEAR=(--device cpu --quick --cpu-repeats 1 --rank 8 --heads 4)
    MORE_PROVIDERS=(--providers base triton_hydra)   # the other providers ran the same code in step 1
    TARGET_SHAPE=32x32 TARGET_TOKENS=16
    WIDE_SHAPES=(32x64 64x32) BIG_TOKENS=32
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # tiny tensors; threads only contend on a shared CPU
    PYTEST_WORKERS=0
    COMPILED_SELECTION=(-k "M37 and router_x")   # two cases: the step runs, not the whole suite
    TRAIN=(--tiny --device cpu --steps 1 --warmup 1)
else
    BUDGET=${BUDGET:-450}
    # worst case, the train step starts with 450 - 15 - 120 - 2 x 60 = 195 s left and gets 165 of them
    CAP_SETUP=90 CAP_KERNEL=120 CAP_TESTS=60 RESERVE_AFTER_TRAIN=30 RESERVE_SUMMARY=15
    TRAIN_BUDGET_MAX=300 TRAIN_SLACK=60   # the slack: the bench predicts, this cap enforces
    LINEAR=(--heads 4)
    MORE_PROVIDERS=()   # all
    TARGET_SHAPE=3072x3072 TARGET_TOKENS=16384
    WIDE_SHAPES=(3072x12288 12288x3072) BIG_TOKENS=65536
    PYTEST_WORKERS=8
    COMPILED_SELECTION=()
    TRAIN=(--steps 4 --warmup 2)
fi
echo "device check into $OUT_DIR (budget $BUDGET s$([ "$DRY_RUN" = 1 ] && echo ', DRY RUN'))"

left() { echo $((BUDGET - SECONDS)); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }

record() {  # record NAME RC SECONDS CAP [device_summary step options]
    local name=$1 rc=$2 took=$3 cap=$4
    shift 4
    "$PY" benchmarks/device_summary.py step --out "$OUT_DIR" --env "$ENV_JSON" --name "$name" --rc "$rc" \
        --seconds "$took" --cap "$cap" "$@" || FAILED=1
}

run_step() {  # run_step NAME CAP [--junit XML] -- COMMAND...: COMMAND under `timeout CAP`, then its row
    local name=$1 cap=$2 started=$SECONDS rc extra=()
    shift 2
    while [ "$1" != "--" ]; do extra+=("$1"); shift; done
    shift
    if [ "$cap" -lt 10 ]; then
        echo "== $name: skipped, ${cap} s left"
        record "$name" 0 0 "$cap" --status skipped --detail "no time left in the $BUDGET s budget"
        return
    fi
    echo "== $name (cap $cap s, $(left) s of the budget left): $*"
    # SIGINT first, so pytest writes its report and the benchmarks stop between rows; SIGKILL 20 s later.
    timeout -s INT -k 20 "$cap" "$@"
    rc=$?
    record "$name" "$rc" $((SECONDS - started)) "$cap" "${extra[@]}"
    case "$rc" in 0|124|137) ;; *) FAILED=1 ;; esac
}

pytest_step() {  # pytest_step NAME CAP PYTEST-ARGS...: pytest with SIGINT honoured (see below), junit report
    local name=$1 cap=$2
    shift 2
    # A job started in the background ignores SIGINT; Python would keep ignoring it, so install its handler.
    run_step "$name" "$cap" --junit "$WORK/$name.xml" -- "$PY" -c \
        'import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); sys.exit(pytest.main())' \
        -q -p no:cacheprovider -n "$PYTEST_WORKERS" --junitxml "$WORK/$name.xml" "$@"
}

# ---- setup: wheels, import path, environment ---------------------------------------------------------
export PYTHONPATH="$ROOT/src:$ROOT/examples/ptta:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    timeout -k 10 "$CAP_SETUP" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$WORK/site" "$WHEELS"/*.whl || { echo "installing the wheels of $WHEELS failed" >&2; exit 1; }
    echo "installed $(cd "$WHEELS" && ls ./*.whl | tr '\n' ' ')into $WORK/site"
else
    echo "no wheels in $WHEELS: using the installed packages"
fi
DRY_FLAG=()
[ "$DRY_RUN" = 1 ] && DRY_FLAG=(--dry-run)
timeout -k 10 "$CAP_SETUP" "$PY" benchmarks/device_summary.py env --json "$ENV_JSON" --site "$WORK/site" \
    "${DRY_FLAG[@]}" || exit 1
record setup 0 "$SECONDS" "$CAP_SETUP"

# ---- 1. the kernel target point ----------------------------------------------------------------------
run_step kernel_target "$(min "$CAP_KERNEL" $(($(left) - RESERVE_SUMMARY)))" -- \
    "$PY" benchmarks/bench_hydra_linear.py "${LINEAR[@]}" --shapes "$TARGET_SHAPE" --tokens "$TARGET_TOKENS" \
    --csv "$OUT_DIR/hydra_linear.csv"

# ---- 2. kernel tests on CUDA: the bf16 criterion, then the interpreter cases compiled -------------------
pytest_step kernel_tests_bf16 "$(min "$CAP_TESTS" $(($(left) - RESERVE_SUMMARY)))" -m gpu tests/kernels
pytest_step kernel_tests_compiled "$(min "$CAP_TESTS" $(($(left) - RESERVE_SUMMARY)))" -m "not gpu" \
    tests/kernels/test_hydra_linear.py tests/kernels/test_hydra_linear_dropout.py "${COMPILED_SELECTION[@]}"

# ---- 3. the train step: 9 frames, then the most frames predicted to fit in what step 4 leaves ----------
TRAIN_BUDGET=$(min "$TRAIN_BUDGET_MAX" $(($(left) - RESERVE_AFTER_TRAIN)))
run_step train_step "$(min $((TRAIN_BUDGET + TRAIN_SLACK)) $(($(left) - RESERVE_SUMMARY)))" -- \
    "$PY" benchmarks/bench_train_step.py "${TRAIN[@]}" --time-budget "$TRAIN_BUDGET" --csv "$OUT_DIR/train_step.csv"

# ---- 4. with time left: the MLP shapes, then M 65536 ---------------------------------------------------
run_step kernel_wide_shapes $(($(left) - RESERVE_SUMMARY)) -- \
    "$PY" benchmarks/bench_hydra_linear.py "${LINEAR[@]}" "${MORE_PROVIDERS[@]}" --shapes "${WIDE_SHAPES[@]}" \
    --tokens "$TARGET_TOKENS" --csv "$OUT_DIR/hydra_linear.csv"
run_step kernel_large_m $(($(left) - RESERVE_SUMMARY)) -- \
    "$PY" benchmarks/bench_hydra_linear.py "${LINEAR[@]}" "${MORE_PROVIDERS[@]}" \
    --shapes "$TARGET_SHAPE" "${WIDE_SHAPES[@]}" --tokens "$BIG_TOKENS" --csv "$OUT_DIR/hydra_linear.csv"

# ---- the table of targets ------------------------------------------------------------------------------
echo
timeout -k 5 30 "$PY" benchmarks/device_summary.py summary --out "$OUT_DIR" --env "$ENV_JSON" --since "$START" \
    --shape "$TARGET_SHAPE" --tokens "$TARGET_TOKENS" --heads 4 || FAILED=1
echo "device check took $SECONDS s; rows in $OUT_DIR"
rm -rf "$WORK"
exit "$FAILED"
