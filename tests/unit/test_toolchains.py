"""The toolchains edgeds installs itself, by name."""

from __future__ import annotations

import pytest

from edgeds.compile import toolchains
from edgeds.errors import ToolchainError


def test_installable_toolchains_by_name() -> None:
    assert toolchains.INSTALLABLE == ("litert", "llm")
    litert = toolchains.installable("litert")
    assert litert is toolchains.module("litert")
    assert callable(litert.install) and isinstance(litert.installed(), bool) and litert.LOCK
    lm = toolchains.installable("llm")
    assert callable(lm.install) and isinstance(lm.installed(), bool) and lm.LOCK


def test_an_unknown_toolchain_is_refused() -> None:
    with pytest.raises(ToolchainError, match=r"unknown toolchain 'caffe' \(known: litert, llm\)"):
        toolchains.installable("caffe")
    with pytest.raises(ToolchainError):
        toolchains.installable("tensorrt")  # compiles, but is not installed by edgeds
