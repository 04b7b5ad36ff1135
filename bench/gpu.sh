#!/usr/bin/env bash
# The GPU checks, in one short run on a machine with an NVIDIA GPU and onnxruntime-gpu:
#
#     bash bench/gpu.sh [OUT_DIR]          # default OUT_DIR: $OUT, else bench/results/gpu
#
# 1. what the machine has: the GPU, onnxruntime and the providers it lists;
# 2. the GPU tests (CUDA session against CPU, the TensorRT engine cache), which skip elsewhere;
# 3. bench.latency: the bundled 2D models in-process, CPU beside CUDA (and TensorRT where it
#    loads), batch 1 and 8, interleaved;
# 4. bench.serving: our server against in-process ONNX Runtime on the GPU (auto providers);
# 5. bench.volume: a volume through SegmentVolume on the GPU and its non-inference share.
#
# Each step's output is written to OUT_DIR as it runs; a failing step does not stop the rest.
# PYTHON (default python3) is the interpreter; it needs the project's runtime dependencies.
set -uo pipefail
out=${1:-${OUT:-bench/results/gpu}}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0

step() {
    local name=$1
    shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$out/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc"
    [ "$rc" -eq 0 ] || status=1
}

step machine bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; \
$py -c 'import onnxruntime as o; print(\"onnxruntime\", o.__version__, o.get_available_providers())'"
step tests "$py" -m pytest -q -p no:cacheprovider -rs \
    tests/serving/test_runtime_providers.py tests/vision/test_runtime_optimised.py
models=$(ls models/*/config.yaml 2>/dev/null | xargs -n1 dirname | xargs -n1 basename \
    | grep -v -e int8 -e hippocampus | paste -sd,)
providers=cpu,cuda
# ORT lists TensorRT whenever it was built with it; it loads only beside libnvinfer.
if "$py" -c 'import sys; from vision.tensorrt import unavailable_reason
sys.exit(unavailable_reason() is not None)' 2>/dev/null; then
    providers=cpu,cuda,tensorrt
fi
step latency "$py" -m bench.latency --models "$models" --batches 1,8 --providers "$providers" \
    --shape-cycle 3
step serving "$py" -m bench.serving --duration 4 --rounds 2 --concurrency 1,8
step volume "$py" -m bench.volume --repeats 2 --no-cpu --json "$out/volume.json"
exit $status
