"""A loose single-backend profile for tests that compile the tiny model (any gate result ships),
and a module-scoped private compile cache, shared by the fixed-batch and multi-input tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

OPTIONS = {"onnxruntime": "{intra_op_num_threads: 1}", "openvino": "{device: CPU, performance_hint: LATENCY}"}
_PROFILE = """schema: 1
name: {name}
description: {description}
extends: x86-cpu
backends:
  - name: {backend}
    options: {options}
batching: {{max_batch_size: 8, preferred_batch_sizes: [4, 8], max_queue_delay_us: 20000, max_queue_size: 64}}
accuracy: {{max_top1_drop: 100.0, min_top1_agreement: 0.0, min_cosine: 0.95}}
"""


def write_profile(path: Path, name: str, description: str, backend: str, options: str | None = None) -> Path:
    """Write the profile (``backend`` with ``options``, else its entry in :data:`OPTIONS`) to ``path``."""
    opts = options if options is not None else OPTIONS[backend]
    path.write_text(_PROFILE.format(name=name, description=description, backend=backend, options=opts))
    return path


@pytest.fixture(scope="module", name="cache_env")
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private ``EDGEDS_CACHE_DIR`` for the module: nothing stale from other runs."""
    root = tmp_path_factory.mktemp("edgeds-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEDS_CACHE_DIR", str(root))
        yield root
