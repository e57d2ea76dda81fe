#!/usr/bin/env bash
# hil/gpu-check.sh: the TensorRT path of edgeds on real hardware, end to end.
#
# For a Jetson (JetPack 6.1+, TensorRT 10.3 from JetPack's apt packages) or any machine with TensorRT
# 10.x/11.x, cuda-python and an NVIDIA GPU ALREADY INSTALLED. It installs nothing and needs no network.
#
# NOT RUN IN THE WORKPLACE THIS WAS WRITTEN IN: that machine has no TensorRT and no GPU, so only its
# prerequisite check ran there (it ends with "FAIL: ... tensorrt ..."). Nothing below the prerequisite
# check has been verified on hardware; a first run on a device is the verification.
#
# What it does, from the repository root, with the Python of $EDGEDS_PYTHON, else .venv/bin/python,
# else python3 (edgeds importable with its dev extra for pytest):
#   1. prerequisites, fast: edgeds, tensorrt (and which builder API it speaks), cuda-python, a CUDA
#      device, the shipped model, pytest;
#   2. compiles the shipped model (models/surface-defect/model.onnx) for the jetson-orin-nx profile at
#      FP16 and at INT8 (`edgeds compile`);
#   3. builds each engine through the device path (`edgeds engine build`, the command the deploy
#      step runs on the device; engines cached under $EDGEDS_CACHE_DIR/tensorrt, a temporary dir);
#   4. runs the backend conformance suite and the builder tests (`pytest -m tensorrt`), which must
#      run, not skip;
#   5. opens each bundle as the device runtime does (Engine.from_bundle), checks it opened TensorRT
#      and that the bundle's golden outputs match within the manifest's tolerances;
#   6. prints TensorRT FP16 / INT8 throughput beside ONNX Runtime (FP32, its default providers) on
#      this machine, same model, same batch.
# The last line is exactly one of `PASS` or `FAIL: <why>`; the exit status is 0 or 1.
#
# Usage: hil/gpu-check.sh [--seconds N]   (N: seconds per throughput run, default 5)
set -uo pipefail

cd "$(dirname "$0")/.." || { echo "FAIL: cannot cd to the repository root"; exit 1; }

SECONDS_PER_RUN=5
if [[ "${1:-}" == "--seconds" && -n "${2:-}" ]]; then
    SECONDS_PER_RUN="$2"
fi
PROFILE=jetson-orin-nx
MODEL=models/surface-defect/model.onnx

fail() {
    echo "FAIL: $*"
    exit 1
}

if [[ -n "${EDGEDS_PYTHON:-}" ]]; then
    PY="$EDGEDS_PYTHON"
elif [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
else
    PY=python3
fi
command -v "$PY" >/dev/null 2>&1 || fail "no Python at $PY (set EDGEDS_PYTHON)"

# --------------------------------------------------------------- 1. prerequisites (seconds)
echo "== prerequisites ($PY)"
"$PY" -c "import edgeds" 2>/dev/null || fail "edgeds is not importable with $PY (set EDGEDS_PYTHON or PYTHONPATH)"
trt_version=$("$PY" -c "import tensorrt; print(tensorrt.__version__)" 2>&1 | tail -n 1) \
    || fail "tensorrt is not importable: ${trt_version} (JetPack: apt install python3-libnvinfer; elsewhere: pip install 'edgeds[tensorrt]')"
api=$("$PY" -c "
from edgeds.compile.toolchains.tensorrt_api import builder_api
print(builder_api('$trt_version'))" 2>&1 | tail -n 1) || fail "tensorrt ${trt_version}: ${api}"
gpus=$("$PY" -c "
from cuda.bindings import runtime as cudart
err, count = cudart.cudaGetDeviceCount()
print(count if int(err) == 0 else 0)" 2>&1 | tail -n 1) || fail "cuda-python (cuda.bindings) is not usable: ${gpus}"
[[ "$gpus" =~ ^[0-9]+$ && "$gpus" -gt 0 ]] || fail "no CUDA device visible (cudaGetDeviceCount: ${gpus})"
[[ -f "$MODEL" ]] || fail "the shipped model $MODEL is missing"
"$PY" -c "import pytest" 2>/dev/null || fail "pytest is not importable with $PY (pip install 'edgeds[dev]')"
echo "tensorrt ${trt_version} (builder API ${api}), ${gpus} CUDA device(s)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/edgeds-gpu-check.XXXXXX") || fail "cannot create a work directory"
trap 'rm -rf "$WORK"' EXIT
export EDGEDS_CACHE_DIR="$WORK/cache"

# --------------------------------------------------------------- 2-3. compile, build on the device path
for precision in fp16 int8; do
    echo "== compile $MODEL for $PROFILE at $precision"
    "$PY" -m edgeds compile "$MODEL" --profile "$PROFILE" --precision "$precision" \
        --out "$WORK/bundle-$precision" --no-cache || fail "edgeds compile --precision $precision failed"
    echo "== edgeds engine build ($precision)"
    "$PY" -m edgeds engine build "$WORK/bundle-$precision" || fail "edgeds engine build ($precision) failed"
done

# --------------------------------------------------------------- 4. conformance + builder tests
echo "== pytest -m tensorrt"
log="$WORK/pytest.log"
"$PY" -m pytest -q -rs -m tensorrt tests/backends tests/unit/test_compile_tensorrt.py 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
[[ "$status" -eq 0 ]] || fail "the TensorRT conformance suite failed (pytest exit $status)"
grep -Eq "[0-9]+ skipped" "$log" && fail "the TensorRT conformance suite skipped tests: $(grep -m1 SKIPPED "$log")"
grep -Eq "[0-9]+ passed" "$log" || fail "the TensorRT conformance suite ran no test"

# --------------------------------------------------------------- 5-6. golden outputs, throughput
echo "== golden outputs and throughput"
"$PY" - "$WORK" "$MODEL" "$SECONDS_PER_RUN" <<'PYEOF' || fail "golden outputs or throughput: see above"
import sys
import time
from pathlib import Path

import numpy as np

from edgeds.bundle import load_bundle
from edgeds.runtime import Engine

work, model, seconds = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])


def throughput(engine: Engine, name: str, rows: np.ndarray) -> float:
    engine.infer({name: rows})  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        engine.infer({name: rows})
        done += len(rows)
    return done / (time.perf_counter() - start)


results = []
batch_rows = np.empty(0, np.float32)
name = "input"
for precision in ("fp16", "int8"):
    with load_bundle(work / f"bundle-{precision}") as bundle:
        inputs, golden = bundle.golden()
        spec = bundle.manifest.golden
        name = bundle.manifest.io.inputs[0].name
        engine = Engine.from_bundle(bundle)
        engine.start()
        try:
            opened = engine.backend.name
            if opened != "tensorrt":
                sys.exit(f"{precision}: the device runtime opened {opened}, not TensorRT ({engine.backend.opened()})")
            outputs = engine.infer({name: inputs})
            for out_name, ref in golden.items():
                got = np.asarray(outputs[out_name], dtype=np.float32).ravel()
                ref = np.asarray(ref, dtype=np.float32).ravel()
                cosine = float(got @ ref / (np.linalg.norm(got) * np.linalg.norm(ref) + 1e-12))
                worst = float(np.max(np.abs(got - ref)))
                print(f"{precision} golden {out_name}: max |diff| {worst:.4g}, cosine {cosine:.5f}")
                # the deploy health check's rule: within atol/rtol and at least min_cosine
                if not np.allclose(got, ref, atol=spec.atol, rtol=spec.rtol):
                    sys.exit(f"{precision}: golden {out_name} differs by up to {worst:.4g} (atol {spec.atol}, rtol {spec.rtol})")
                if cosine < spec.min_cosine:
                    sys.exit(f"{precision}: golden {out_name} cosine {cosine:.5f} < {spec.min_cosine}")
            batch_rows = np.ascontiguousarray(np.resize(inputs, (8, *inputs.shape[1:])))
            results.append((f"TensorRT {precision}", throughput(engine, name, batch_rows)))
        finally:
            engine.close()

ort = Engine("onnxruntime", model, name="ort")
ort.start()
try:
    results.append(("ONNX Runtime fp32", throughput(ort, name, batch_rows)))
finally:
    ort.close()
print(f"throughput, batch 8, {seconds:g} s each, this machine:")
for label, rate in results:
    print(f"  {label:<20} {rate:10.1f} images/s")
PYEOF

echo "PASS"
