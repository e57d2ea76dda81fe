"""Shared fixtures for the compile tests: a tiny model with a card, profiles, a hermetic cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeds.compile.tiny import write_tiny_model

VALIDATION = 200
CALIBRATION = 32


def profile(directory: Path, name: str, base: str, body: str) -> Path:
    """Write ``<name>.yaml`` extending ``base`` with ``body`` (YAML) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(f"schema: 1\nname: {name}\nextends: {base}\ndescription: test profile {name}\n{body}")
    return path


# The tiny model is random (not trained): its logit margins are small, so INT8 keeps ~0.96
# agreement with good calibration. This budget passes that and fails a useless calibration.
BUDGET = """accuracy:
  max_top1_drop: 3.0
  min_top1_agreement: 0.93
  min_cosine: 0.999
"""


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A module-wide EDGEDS_CACHE_DIR (data splits generated once per module)."""
    from edgeds.compile.toolchains import litert

    toolchains = litert.toolchain_dir().parent  # the installed toolchains stay visible
    root = tmp_path_factory.mktemp("edgeds-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEDS_TOOLCHAINS", str(toolchains))
        mp.setenv("EDGEDS_CACHE_DIR", str(root))
        yield root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, cache_env: Path) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny"), VALIDATION, CALIBRATION)


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("profiles")
    profile(root, "tiny-ort", "x86-cpu", "backends:\n  - name: onnxruntime\n" + BUDGET)
    profile(root, "tiny-ov", "x86-cpu", "backends:\n  - name: openvino\n    options: {device: CPU}\n" + BUDGET)
    profile(root, "tiny-chain", "x86-cpu", "backends:\n  - name: litert\n  - name: onnxruntime\n" + BUDGET)
    return root
