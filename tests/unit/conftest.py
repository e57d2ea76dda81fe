"""LM model fixtures for the LM backend and engine tests.

``lm_openvino_dir(precision)`` and ``lm_onnxruntime_dir(precision)`` give exported model
directories. The shared, exporting versions (session-scoped, cached by fingerprint under
``cache_dir()``) come with the ``llm`` toolchain; until they are merged these read ready exports
from ``$EDGEDS_TEST_LM_DIR/<runtime>-<precision>/`` and skip when it is unset.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


def _exports(runtime: str) -> Callable[[str], Path]:
    def get(precision: str) -> Path:
        root = os.environ.get("EDGEDS_TEST_LM_DIR")
        if not root:
            pytest.skip("no LM export: the llm toolchain fixtures are not available (EDGEDS_TEST_LM_DIR unset)")
        path = Path(root) / f"{runtime}-{precision}"
        if not path.is_dir():
            pytest.skip(f"no LM export at {path}")
        return path

    return get


@pytest.fixture(scope="session")
def lm_openvino_dir() -> Callable[[str], Path]:
    """An OpenVINO GenAI export of the test LM at a precision (``int4``, ``int8``, ``fp16``, ``fp32``)."""
    return _exports("openvino")


@pytest.fixture(scope="session")
def lm_onnxruntime_dir() -> Callable[[str], Path]:
    """An ONNX Runtime GenAI export of the test LM at a precision (``int4``, ``fp32``)."""
    return _exports("onnxruntime")
