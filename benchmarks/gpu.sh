#!/usr/bin/env bash
# GPU throughput of spft at RAD-DINO size (ViT-B/14, 518 px, random weights): bf16 stage-2 step eager and compiled,
# then stage 1 alone, then prediction (bf16 eager and compiled, and the ONNX export in onnxruntime). Run from anywhere on a machine with one CUDA GPU; installs nothing, needs no network.
#
#   benchmarks/gpu.sh [all|eager|compile|stage1|predict]   (default: all; each run is capped at 280 s)
#
# Python: $PYTHON, else .venv/bin/python, else python3; src/ goes on PYTHONPATH so an uninstalled checkout works.
# Everything goes to stdout; the exit status is 1 when any run failed or timed out (the others still run).
set -euo pipefail

cd "$(dirname "$0")/.."
what="${1:-all}"
case "$what" in all|eager|compile|stage1|predict) ;; *) echo "usage: $0 [all|eager|compile|stage1|predict]" >&2; exit 2 ;; esac

if [[ -n "${PYTHON:-}" ]]; then
    py="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
    py=.venv/bin/python
else
    py=python3
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1

nvidia-smi --query-gpu=name,memory.total --format=csv
"$py" -c 'import sys, torch, transformers, lightning
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"transformers {transformers.__version__}, lightning {lightning.__version__}")'

failed=0
run() {
    echo "== $*"
    local rc=0 script=benchmarks/bench.py
    if [[ "$1" == predict ]]; then script=benchmarks/predict_bench.py; shift; fi
    timeout 280 "$py" "$script" "$@" || rc=$?
    if [[ $rc -ne 0 ]]; then
        [[ $rc -eq 124 ]] && echo "== timed out after 280 s" || echo "== exit status $rc"
        failed=1
    fi
}

common=(--size raddino --device cuda --precision bf16-mixed)
if [[ "$what" == all || "$what" == eager ]]; then
    run "${common[@]}" --batch 64 --steps 30 --skip-stage1 --pipeline off
fi
if [[ "$what" == all || "$what" == compile ]]; then
    run "${common[@]}" --batch 64 --steps 30 --compile --skip-stage1 --pipeline off --rounds 1
fi
if [[ "$what" == all || "$what" == stage1 ]]; then
    run "${common[@]}" --batch 64 --stage1-only --stage1-images 3000 --pipeline full --pipeline-workers 8,15
fi
if [[ "$what" == all || "$what" == predict ]]; then
    run predict --size raddino --device cuda --images 1024 --batch 64 --repeats 2 --compile --onnx
fi
exit "$failed"
