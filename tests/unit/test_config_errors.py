"""Configuration mistakes: each is one ``file:line: field: message`` line in the file that holds it.

A profile that ``extends:`` another is blamed for what it inherits or fails to set; every
duplicate key is reported; addresses, ports, broker URLs and rollout percentages are checked at
load; one broken file does not stop ``profiles list`` / ``targets list``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeds import config
from edgeds.errors import ConfigError
from edgeds.hil.rig import load_rig


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory with ``profiles/`` and ``targets/``, no search-path variables."""
    monkeypatch.delenv("EDGEDS_PROFILES", raising=False)
    monkeypatch.delenv("EDGEDS_TARGETS", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "targets").mkdir()
    return tmp_path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _problem_lines(exc: ConfigError) -> list[str]:
    lines = str(exc).splitlines()
    assert len(lines) == len(exc.problems)
    return lines


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(text))


# --------------------------------------------------------------------------- YAML: every problem at once


def test_every_duplicate_key_is_reported(workdir: Path) -> None:
    # The reproduction: only the first duplicate was reported.
    _write(
        workdir / "profiles" / "dups.yaml",
        "name: dups\ndescription: a\nprecision: int8\nprecision: fp32\nbatching:\n"
        "  max_batch_size: 4\n  max_batch_size: 2\ndescription: b\n",
    )
    with pytest.raises(ConfigError) as info:
        config.load_profile("dups")
    assert _problem_lines(info.value) == [
        "profiles/dups.yaml:4: precision: duplicate key (first at line 3): remove one",
        "profiles/dups.yaml:7: batching.max_batch_size: duplicate key (first at line 6): remove one",
        "profiles/dups.yaml:8: description: duplicate key (first at line 2): remove one",
    ]


def test_duplicate_keys_of_a_rig_are_all_reported(tmp_path: Path) -> None:
    path = _write(tmp_path / "rig.yaml", "name: r\nsim: {devices: 2, devices: 3}\nname: s\n")
    with pytest.raises(ConfigError) as info:
        load_rig(path)
    assert [line.split(": ", 1)[0].rsplit(":", 1)[1] for line in _problem_lines(info.value)] == ["2", "3"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: !!python/object:os.system x\n", ":1: name: invalid value: could not determine a constructor"),
        ("name: x\nprecision: !!int abc\n", ":2: precision: invalid value: invalid literal for int()"),
        ("name: x\nhardware: &h {cpu: *h}\n", ":2: hardware.cpu: an alias refers to its own enclosing value"),
        ("name: x\n<<: {precision: int8}\n", ":2: YAML merge keys (<<) are not supported"),
    ],
    ids=["python-tag", "bad-int", "recursive-alias", "merge-key"],
)
def test_yaml_that_cannot_be_read_is_one_line_not_a_traceback(workdir: Path, text: str, expected: str) -> None:
    path = _write(workdir / "profiles" / "odd.yaml", text)
    with pytest.raises(ConfigError) as info:
        config.load_profile(path)
    assert _problem_lines(info.value)[0].startswith(f"profiles/odd.yaml{expected}")
