#!/usr/bin/env bash
# The GPU checks in one command: on one CUDA GPU (an H100 is what it is sized for) with no network, in at most
# 8 minutes (GPU_CHECK_BUDGET_S, default 480), everything it measures written under $OUT
# (/tmp/medr1-gpu-check-out when $OUT is not set).
#
#   bash benchmarks/gpu_check.sh --prepare-wheels   # beforehand, where PyPI is reachable: the wheels into .whl/
#   bash benchmarks/gpu_check.sh                    # on the GPU machine, .whl/ beside the repository
#   bash benchmarks/gpu_check.sh --cpu-check        # without a GPU: what can be checked there (CI runs it)
#
# Wheels. The GPU machine reaches no package index, and a device call carries 64 MiB in all. Its image has
# python3.12 with a CUDA build of torch (2.11.0+cu130 when last seen) and numpy, pandas, pyarrow, pillow, scipy,
# matplotlib, pytest and more; torch is used as it is (a CUDA wheel of torch is about 900 MB): `report` prints its
# version beside constraints.txt's 2.14.1 and refuses one older than 2.6. The rest comes as the wheels that
# benchmarks/gpu-wheels.txt lists (49, about 30 MiB: transformers, trl, accelerate, peft, datasets, tokenizers,
# huggingface_hub at the pinned versions; pydantic, ruamel.yaml, math-verify, DVCLive with what it imports;
# deepspeed 0.19.8), each at the version constraints.txt pins (`gpu_environment.py check` fails otherwise).
# `--prepare-wheels` fetches each with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl NAME==VERSION
# and builds the two PyPI has only as source, pure Python, with
#   DS_BUILD_OPS=0 python -m pip wheel --no-deps --no-build-isolation -w .whl deepspeed==0.19.8
#   python -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
# (run it with the project's .venv python: DeepSpeed's setup imports torch). Keep .whl/ out of git
# (`echo /.whl/ >> .git/info/exclude`) and name it in the device call's carry. On the GPU machine the script
# makes a venv (GPU_CHECK_VENV, default /tmp/medr1-gpu-check-venv) whose own site-packages hold the carried
# wheels and which sees the image's packages after them (a .pth file), so the pinned versions win and torch is
# the image's. flash-attn is not carried (it compiles against torch for tens of minutes): where it is installed
# on the image, the flash_attention_2 tests run, and gpu_recipe.py says which attention it used either way.
#
# What it runs, each part with a time limit of its own inside the budget:
#  1. environment: nvidia-smi, then `gpu_environment.py report`: python, torch, CUDA, the GPU, each carried
#     package's version against its pin, and an import of everything the checks import (stops here if any fails)
#  2. cuda-tests: tests/test_grpo_trainer.py -k cuda: our trainer against TRL's GRPOTrainer on CUDA, in float32
#     with TF32 off and in bf16, under sdpa (and flash-attention 2 where it imports), with LoRA and with gradient
#     checkpointing (completions, per-token log-probabilities, loss, gradients, to each setting's stated
#     tolerance); then three training steps with LoRA, with gradient checkpointing and under DeepSpeed ZeRO-3
#     (accelerate launch, one process). Each exactness run's measured errors go to $OUT/exactness.jsonl.
#  3. gpu-recipe: benchmarks/gpu_recipe.py on a random Qwen2-VL-2B-sized folder, 4 steps of the med-r1 recipe's
#     16 completions (64 tokens each, not the recipe's 256: what fits) through the stages and with TRL's bare
#     GRPOTrainer: steps/s, peak GPU memory, evaluation speed, and whether both decoders grade alike.
# Results: summary.md (the GPU, each part's status and time, the tables), environment.log, cuda-tests.log,
# exactness.jsonl, gpu-recipe.log, gpu-recipe-stages.log, gpu_recipe.json (7 files: a device call returns 8).
# The exit status is 0 only when every part passed.

set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
WHEEL_DIR=${GPU_CHECK_WHEELS:-$REPO/.whl}
VENV=${GPU_CHECK_VENV:-/tmp/medr1-gpu-check-venv}
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}
CUDA_TESTS=(tests/test_grpo_trainer.py -k cuda)
RECIPE_ARGS=(--preset qwen2-vl-2b --steps 4 --images 2 --max-completion-length 64 --eval-questions 16
             --max-new-tokens 64)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DO_NOT_TRACK=1 DVC_NO_ANALYTICS=1
export GX_ANALYTICS_ENABLED=False PYTHONUNBUFFERED=1

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# Without a GPU: the script parses, the wheel list matches the pins, the CUDA tests exist (and skip here), and
# gpu_recipe.py takes the arguments this script gives it (its plan, nothing run). A few seconds.
cpu_check() {
    local python=${PYTHON:-python3} output
    bash -n "${BASH_SOURCE[0]}" || { echo "gpu_check.sh: syntax error"; return 1; }
    "$python" benchmarks/gpu_environment.py check || return 1
    output=$("$python" -m pytest -p no:cacheprovider -p no:xdist -v -rs "${CUDA_TESTS[@]}" 2>&1)
    local status=$? summary
    summary=$(tail -n 1 <<<"$output")
    if [[ $status != 0 ]] || ! grep -Eq '^=+ [0-9]+ skipped, [0-9]+ deselected in [^=]* =+$' <<<"$summary"; then
        echo "the CUDA tests did not all skip here:"; echo "$output"; return 1
    fi
    grep -E '^tests/.* SKIPPED' <<<"$output" | sed 's/ SKIPPED.*//'
    grep '^SKIPPED' <<<"$output"
    echo "CUDA tests (${CUDA_TESTS[*]}): $summary"
    "$python" benchmarks/gpu_recipe.py --dry-run "${RECIPE_ARGS[@]}" || return 1
}

prepare_wheels() {
    "${PYTHON:-python3}" benchmarks/gpu_environment.py prepare "$WHEEL_DIR" || return 1
    echo "carry $(realpath --relative-to="$REPO" "$WHEEL_DIR") in the device call (keep it out of git:" \
         "echo /.whl/ >> .git/info/exclude), and run: bash benchmarks/gpu_check.sh"
}

# A venv whose own site-packages hold the carried wheels, with the image's packages (torch and its CUDA
# libraries, numpy, ...) after them on its path: the pinned versions win, torch is the image's.
make_env() {
    local base=${GPU_CHECK_BASE_PYTHON:-python3} image_sites venv_site
    if ! compgen -G "$WHEEL_DIR/*.whl" >/dev/null; then
        echo "no wheels in $WHEEL_DIR: run bash benchmarks/gpu_check.sh --prepare-wheels where PyPI is reachable"
        return 1
    fi
    image_sites=$("$base" -c 'import site, sysconfig
paths = sysconfig.get_paths()
print("\n".join(dict.fromkeys([paths["purelib"], paths["platlib"], *site.getsitepackages()])))') || return 1
    rm -rf "$VENV"
    if "$base" -m venv --without-pip "$VENV"; then
        PY=$VENV/bin/python
        venv_site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || return 1
        while read -r site_dir; do
            echo "import site; site.addsitedir('$site_dir')"
        done <<<"$image_sites" >"$venv_site/zz_image_packages.pth"
    else  # no venv module: the wheels in a folder ahead of the image's packages on PYTHONPATH
        echo "$base -m venv failed: installing into $VENV/site, ahead on PYTHONPATH"
        PY=$base
        venv_site=$VENV/site
        CARRIED_PATH=$venv_site
    fi
    "$base" -m pip install --quiet --no-index --no-deps --no-compile --disable-pip-version-check \
        --target "$venv_site" "$WHEEL_DIR"/*.whl || return 1
    echo "$PY: $(ls "$WHEEL_DIR"/*.whl | wc -l) carried wheels in $venv_site, then the packages of $base" \
         "($image_sites)"
}

# phase NAME LIMIT_S COMMAND...: run it for at most LIMIT_S (and never past the budget), output in $OUT/NAME.log,
# a row in summary.md.
phase() {
    local name=$1 limit=$2 left started status rc
    shift 2
    left=$((DEADLINE - SECONDS))
    ((limit > left)) && limit=$left
    if ((limit < 30)); then
        echo "| $name | not run: the ${BUDGET_S} s budget is spent | - |" >>"$SUMMARY"
        return 1
    fi
    echo "== $name (at most $limit s): $*"
    started=$SECONDS
    timeout --kill-after=15 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=passed ;;
        124 | 137) status="stopped at its $limit s limit" ;;
        *) status="failed (exit $rc)" ;;
    esac
    echo "| $name | $status | $((SECONDS - started)) s |" >>"$SUMMARY"
    tail -n 15 "$OUT/$name.log"
    return $rc
}

gpu_run() {
    OUT=${OUT:-/tmp/medr1-gpu-check-out}
    mkdir -p "$OUT"
    DEADLINE=$((SECONDS + BUDGET_S))
    SUMMARY=$OUT/summary.md
    local failed=0 started=$SECONDS
    {
        echo "# benchmarks/gpu_check.sh, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '(no git here)')"
        echo
        echo "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)"
        echo
    } >"$SUMMARY"
    PY="" CARRIED_PATH=""
    nvidia-smi >"$OUT/environment.log" 2>&1
    make_env >>"$OUT/environment.log" 2>&1
    local made=$?
    echo "| part | status | time |" >>"$SUMMARY"
    echo "|---|---|---|" >>"$SUMMARY"
    echo "| venv | $([[ $made == 0 ]] && echo made || echo 'failed: see environment.log') | $((SECONDS - started)) s |" >>"$SUMMARY"
    if [[ $made != 0 ]]; then
        cat "$OUT/environment.log" "$SUMMARY"
        return 1
    fi
    local python=$PY
    export PYTHONPATH=${CARRIED_PATH:+$CARRIED_PATH:}$REPO DS_ACCELERATOR=cuda
    export MEDR1_EXACTNESS_RECORD=$OUT/exactness.jsonl
    rm -f "$MEDR1_EXACTNESS_RECORD"
    phase environment-report 60 "$python" benchmarks/gpu_environment.py report || {
        cat "$OUT/environment-report.log" >>"$OUT/environment.log"
        rm -f "$OUT/environment-report.log"
        echo "the environment is not what the checks need (environment.log): stopping" | tee -a "$SUMMARY"
        return 1
    }
    cat "$OUT/environment-report.log" >>"$OUT/environment.log" && rm -f "$OUT/environment-report.log"
    local timeout_flag=()
    "$python" -c 'import pytest_timeout' 2>/dev/null && timeout_flag=(--timeout 150)  # one hung test, not all
    phase cuda-tests 270 "$python" -m pytest -p no:cacheprovider -p no:xdist -rA "${timeout_flag[@]}" \
        "${CUDA_TESTS[@]}" || failed=1
    phase gpu-recipe 240 "$python" benchmarks/gpu_recipe.py "${RECIPE_ARGS[@]}" --json "$OUT/gpu_recipe.json" \
        --work /tmp/medr1-gpu-recipe || failed=1
    tail -c 2000000 /tmp/medr1-gpu-recipe/stages.log >"$OUT/gpu-recipe-stages.log" 2>/dev/null  # the stages' own logs
    {
        echo
        echo "## Exactness on CUDA (ours against TRL's GRPOTrainer; tests/test_grpo_trainer.py)"
        echo
        "$python" - "$MEDR1_EXACTNESS_RECORD" <<'EOF'
import json, sys
from pathlib import Path
path = Path(sys.argv[1])
rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
print("| run | log-probs max abs error | loss abs error | gradient max rel. error (worst) | same completions |")
print("|---|---|---|---|---|")
for row in rows:
    if row["setting"].startswith("few-steps"):
        print(f"| {row['setting']} {row['family']} | - | loss rel. {row['loss_max_relative_error']:.2e} | "
              f"grad norm rel. {row['grad_norm_max_relative_error']:.2e} | reward abs. {row['reward_max_abs_error']:.1e} |")
    else:
        print(f"| {row['setting']} | {row['logps_max_abs_error']:.2e} | {row['loss_abs_error']:.2e} | "
              f"{row['gradient_max_relative_error']:.2e} ({row['worst_gradient']}) | {row['same_completion_rows']:.2f} "
              f"of {row['rows']} |")
EOF
        echo
        grep -E '^(PASSED|FAILED|ERROR|SKIPPED)|^=+ .*(passed|failed).* =+$' "$OUT/cuda-tests.log" || true
        echo
        echo "## benchmarks/gpu_recipe.py ${RECIPE_ARGS[*]}"
        sed -n '/^\[gpu_recipe\] attention/p; /^med-r1\//,$p' "$OUT/gpu-recipe.log" 2>/dev/null || true
        echo
        echo "total: $((SECONDS - started)) s of the ${BUDGET_S} s budget"
    } >>"$SUMMARY" 2>&1
    cat "$SUMMARY"
    return $failed
}

case "${1:-}" in
    --cpu-check) cpu_check ;;
    --prepare-wheels) prepare_wheels ;;
    "") gpu_run ;;
    -h | --help) usage ;;
    *) usage; exit 2 ;;
esac
