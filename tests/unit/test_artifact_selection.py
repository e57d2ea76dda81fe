"""What the compile host gates vs what the device resolves, and which artifact the device opens.

- ``intel-nuc-12`` compiles one OpenVINO INT8 IR, gated on the CPU plugin (no HETERO attempt at
  compile time); the manifest says HETERO:GPU,CPU is resolved on the device; on this machine (no
  Intel GPU) the engine falls back to the CPU entry and says why, whole and on one line.
- The engine the device build writes for a TensorRT recipe is the one the runtime resolves (the
  path logic, with fixed device facts: no GPU needed).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeds.bundle import load_bundle
from edgeds.compile import compile_model
from edgeds.compile.toolchains import tensorrt
from edgeds.errors import BackendError, ToolchainError
from edgeds.runtime.engine import Engine
from edgeds.runtime.selection import RequiredArtifactFailed, choices_from_bundle, tensorrt_resolver
from tests.unit._compile_fixtures import BUDGET, cache_env, profile, tiny

__all__ = ["cache_env", "tiny"]  # fixtures used by this module

FACTS = tensorrt.DeviceFacts("10.3.0", "8.7", "36.4.0", "Orin (simulated facts)")


@pytest.fixture(scope="module")
def nuc_bundle(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nuc")
    nuc = profile(root, "nuc", "intel-nuc-12", BUDGET)
    return compile_model(tiny, nuc, out=root / "b").bundle


def test_nuc_ships_one_int8_ir_gated_on_cpu_with_hetero_resolved_on_the_device(tiny: Path, tmp_path: Path) -> None:
    nuc = profile(tmp_path, "nuc", "intel-nuc-12", BUDGET)
    result = compile_model(tiny, nuc, out=tmp_path / "b", use_cache=False)
    report = result.report
    # no attempt ran on HETERO: both entries were gated on the CPU plugin, the second reusing the first
    assert {a.device for a in report.attempts} == {"OpenVINO CPU"}
    built = [a for a in report.attempts if not a.cached]
    assert [(a.backend, a.variant, a.outcome) for a in built] == [("openvino", "int8", "passed")]
    with load_bundle(result.bundle) as bundle:
        hetero, cpu = bundle.manifest.artifacts
        assert (hetero.device, cpu.device) == ("HETERO:GPU,CPU", "CPU")
        assert hetero.path == cpu.path and hetero.precision == cpu.precision == "int8"
        assert [f.path for f in bundle.manifest.files if f.path.endswith(".xml")] == [hetero.path]
        assert hetero.resolved_on_device == "OpenVINO device HETERO:GPU,CPU" and cpu.resolved_on_device is None
        for entry in (hetero, cpu):
            assert entry.gated is not None and (entry.gated.where, entry.gated.device) == (
                "compile-host",
                "OpenVINO CPU",
            )
    assert report.shipped_lines() == [
        "1. openvino int8: gated here on OpenVINO CPU; OpenVINO device HETERO:GPU,CPU resolved on the device",
        "2. openvino int8: gated here on OpenVINO CPU",
    ]
    assert report.first_choice is None


def test_without_an_intel_gpu_the_device_falls_back_to_cpu_and_says_so(nuc_bundle: Path) -> None:
    from edgeds import backends

    if any(d.startswith("GPU") for d in backends.probe("openvino").devices):
        pytest.skip("this machine has an OpenVINO GPU device: HETERO:GPU,CPU opens here")
    with load_bundle(nuc_bundle) as bundle, Engine.from_bundle(bundle) as engine:
        selection = engine.selection
        assert selection is not None
        assert (selection.index, selection.runtime, selection.opened.device) == (1, "openvino", "CPU")
        reason = selection.fallback or ""
        assert reason.startswith("openvino HETERO:GPU,CPU failed: "), reason
        assert "\n" not in reason and "Exception from src" not in reason  # whole, one line, no bare locations
        assert len(reason) > len("openvino HETERO:GPU,CPU failed: ") + 10
        inputs, golden = bundle.golden(selection.index)
        outputs = engine.infer({bundle.manifest.io.inputs[0].name: inputs})
        assert outputs.keys() == golden.keys()


def test_a_required_entry_that_does_not_open_fails_the_load(tiny: Path, tmp_path: Path) -> None:
    from edgeds import backends

    if any(d.startswith("GPU") for d in backends.probe("openvino").devices):
        pytest.skip("this machine has an OpenVINO GPU device: HETERO:GPU,CPU opens here")
    body = BUDGET + (
        "backends:\n  - name: openvino\n    require: true\n    options: {device: 'HETERO:GPU,CPU'}\n"
        "  - name: openvino\n    options: {device: CPU}\n"
    )
    result = compile_model(tiny, profile(tmp_path, "nuc-required", "intel-nuc-12", body), out=tmp_path / "b")
    with load_bundle(result.bundle) as bundle:
        assert bundle.manifest.artifacts[0].require
        engine = Engine.from_bundle(bundle)
        with pytest.raises(RequiredArtifactFailed, match=r"openvino HETERO:GPU,CPU failed: .*require: true"):
            engine.start()


def test_the_engine_the_device_builds_is_the_engine_the_runtime_opens(tiny: Path, tmp_path: Path) -> None:
    import shutil

    from edgeds.deploy.device.build import build_engine
    from edgeds.deploy.device.store import Store
    from edgeds.runtime.selection import BUILD_FAILED

    result = compile_model(tiny, profile(tmp_path, "jetson", "jetson-orin-nx", BUDGET), out=tmp_path / "b")
    store = Store(tmp_path / "device")
    store.ensure()
    shutil.copytree(result.bundle, store.releases / "r1")
    built: list[Path] = []

    def plan_bytes(recipe: tensorrt.Recipe, recipe_dir: Path, card: object, paths: tensorrt.EnginePaths) -> bytes:
        # stands in for TensorRT's builder, which needs a GPU: the path logic is what is tested
        built.append(paths.engine)
        return b"serialized engine for " + recipe.onnx_sha256.encode()

    # the device's deploy step, with this device's facts
    step = build_engine(store, "r1", facts=FACTS, builder=plan_bytes)
    (done,) = step["engines"]
    engine = Path(done["engine"])
    assert done["built"] and built == [engine] and engine.is_relative_to(store.engines)
    with load_bundle(store.releases / "r1", verify=False) as bundle:
        # the agent's resolver (never builds): the bundle's TensorRT choice finds that engine
        resolver = tensorrt_resolver(bundle.card, cache_root=store.engines, facts=FACTS, build=False)
        choice = choices_from_bundle(bundle, engine_resolver=resolver)[0]
        assert choice.runtime == "tensorrt" and choice.engine_resolver is not None
        opened, fingerprint = choice.engine_resolver(choice.path)
        assert opened == engine and built == [engine]
        assert fingerprint == tensorrt.device_fingerprint(tensorrt.load_recipe(choice.path), FACTS)
        # another GPU (compute capability) has no engine yet: the agent says so and does not build
        other = tensorrt.DeviceFacts("10.3.0", "8.6", None, "another GPU")
        elsewhere = tensorrt_resolver(bundle.card, cache_root=store.engines, facts=other, build=False)
        with pytest.raises(BackendError, match="no engine built for this device"):
            elsewhere(choice.path)

    # a build that fails leaves its reason where the agent looks, instead of a build at every load
    def broken(*_: object) -> bytes:
        raise ToolchainError("TensorRT failed to build the engine (out of memory)")

    failing = tensorrt.DeviceFacts("10.3.0", "7.2", "35.4.1", "Xavier (simulated facts)")
    step = build_engine(store, "r1", facts=failing, builder=broken)
    assert step["engines"][0]["skipped"].startswith("building the TensorRT engine failed: TensorRT failed")
    marker = tensorrt.recipe_engine_paths(choice.path, store.engines, failing).engine.parent / BUILD_FAILED
    assert marker.is_file()
    with load_bundle(store.releases / "r1", verify=False) as bundle:
        resolver = tensorrt_resolver(bundle.card, cache_root=store.engines, facts=failing, build=False)
        with pytest.raises(BackendError, match=r"the engine build failed on this device: .*out of memory"):
            resolver(choice.path)


def _chain_of_two(out: Path, tmp: Path, first_golden_off_by: float) -> Path:
    """A bundle of the sim model twice: artifact 0 gated on the device (its own golden outputs,
    shifted by ``first_golden_off_by``), artifact 1 gated on the compile host."""
    import io
    import json

    import numpy as np

    from edgeds.bundle import build_bundle
    from edgeds.sim.bundles import make_bundle

    base = make_bundle(tmp / "base", 1, None)
    manifest = json.loads((base / "manifest.json").read_text())
    inputs = np.load(base / "golden" / "inputs.npy")
    with np.load(base / "golden" / "outputs.npz") as saved:
        logits = saved["logits"]

    def npy(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    def npz(**arrays: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        return buffer.getvalue()

    device_gated = {
        "runtime": "onnxruntime",
        "precision": "fp32",
        "path": "first/model.onnx",
        "gated": {"where": "device", "figures": {}},
        "golden": {
            "inputs": "golden/first/inputs.npy",
            "outputs": "golden/first/outputs.npz",
            "atol": 1e-4,
            "rtol": 1e-3,
            "min_cosine": 0.999,
        },
    }
    host_gated = {"runtime": "onnxruntime", "precision": "fp32", "path": "second/model.onnx"}
    for key in ("files", "created_at", "schema_version"):
        manifest.pop(key, None)
    manifest["artifacts"] = [device_gated, host_gated]
    return build_bundle(
        out,
        manifest=manifest,
        artifacts={
            "first/model.onnx": base / "artifacts" / "model.onnx",
            "second/model.onnx": base / "artifacts" / "model.onnx",
        },
        card_file=base / "model-card.yaml",
        golden_inputs=inputs,
        golden_outputs={"logits": logits},
        files={
            "golden/first/inputs.npy": npy(inputs),
            "golden/first/outputs.npz": npz(logits=logits + first_golden_off_by),
        },
    )


def test_an_artifact_gated_on_the_device_serves_only_if_it_reproduces_its_golden(tmp_path: Path) -> None:
    good = _chain_of_two(tmp_path / "good", tmp_path / "g", 0.0)
    with load_bundle(good) as bundle, Engine.from_bundle(bundle) as engine:
        assert engine.selection is not None and (engine.selection.index, engine.selection.fallback) == (0, None)
    # an engine that does not reproduce its golden outputs (as an INT8 TensorRT engine gone wrong
    # would) is passed over for the next artifact, with the figures
    off = _chain_of_two(tmp_path / "off", tmp_path / "o", 5.0)
    with load_bundle(off) as bundle, Engine.from_bundle(bundle) as engine:
        selection = engine.selection
        assert selection is not None and selection.index == 1
        assert (selection.fallback or "").startswith(
            "onnxruntime fp32 failed the on-device golden check: logits differs"
        )


def test_a_vendor_message_is_kept_whole_on_one_line() -> None:
    from edgeds.errors import one_line

    text = (
        "openvino cannot compile m.xml for HETERO:GPU,CPU: Exception from src/inference/src/cpp/core.cpp:117:\n"
        "Exception from src/inference/src/dev/plugin.cpp:54:\n"
        'Cannot load library "libopenvino_intel_gpu_plugin.so": libOpenCL.so.1: cannot open shared object file\n\n'
    )
    assert one_line(text) == (
        'openvino cannot compile m.xml for HETERO:GPU,CPU: Cannot load library "libopenvino_intel_gpu_plugin.so": '
        "libOpenCL.so.1: cannot open shared object file"
    )
    assert one_line("first\nsecond") == "first | second"
