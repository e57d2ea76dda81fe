"""Finding a model's card: <stem>.yaml, else the one card whose model: names it; never a guess.

Each case starts from a folder a user might have: the tiny model with its card ``tiny.yaml``
(``model: model.onnx``), stray YAML files (parameters, a profile, a broken file), a second
ONNX file, and cards that claim a model or describe another one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeds.card_lookup import card_path
from edgeds.cli import app
from edgeds.compile import compile_model
from edgeds.compile.tiny import write_tiny_model
from edgeds.errors import ConfigError
from edgeds.inspection.runner import open_engine
from edgeds.manifest import Manifest
from edgeds.modelcard import load_card, load_model_card, model_card_for

from . import _compile_fixtures as fx

cache_env, profiles = fx.cache_env, fx.profiles
STRAY = "learning_rate: 0.001\nepochs: 30\nmodel: resnet\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, cache_env: Path) -> Path:
    """model.onnx with its card tiny.yaml, built once; each test copies the folder."""
    return write_tiny_model(tmp_path_factory.mktemp("built"), 16, 8).parent


@pytest.fixture
def folder(built: Path, tmp_path: Path) -> Path:
    """A copy of the built folder with a stray params file sorted before the card."""
    root = tmp_path / "m"
    shutil.copytree(built, root)
    (root / "a-params.yaml").write_text(STRAY)
    return root


def _one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def _card_naming(path: Path, model: str, name: str = "other") -> Path:
    """A copy of tiny.yaml at ``path`` named ``name`` whose ``model:`` is ``model``."""
    text = (path.parent / "tiny.yaml").read_text()
    path.write_text(text.replace("name: tiny", f"name: {name}").replace("model: model.onnx", f"model: {model}"))
    return path


def test_a_stray_yaml_sorted_first_is_not_taken_for_the_card(folder: Path) -> None:
    (folder / "0-broken.yaml").write_text("key: [unclosed\n")  # not a card either, and not reported
    assert card_path(folder / "model.onnx") == folder / "tiny.yaml"
    assert load_model_card(folder / "model.onnx").name == "tiny"


def test_the_card_named_after_the_model_comes_first(folder: Path) -> None:
    shutil.copy(folder / "model.onnx", folder / "other.onnx")
    _card_naming(folder / "other.yaml", "other.onnx")
    assert card_path(folder / "other.onnx") == folder / "other.yaml"
    assert card_path(folder / "model.onnx") == folder / "tiny.yaml"  # the one naming model.onnx


def test_no_card_names_the_files_looked_at(folder: Path) -> None:
    (folder / "tiny.yaml").unlink()
    with pytest.raises(ConfigError) as exc:
        load_card(folder / "model.onnx")
    line = _one_line(exc)
    assert "no model card" in line and "model.yaml" in line and "a-params.yaml" in line
    assert line.endswith("pass --card")


def test_a_model_no_card_names_is_not_given_another_models_card(folder: Path) -> None:
    shutil.copy(folder / "model.onnx", folder / "other.onnx")
    with pytest.raises(ConfigError) as exc:
        load_model_card(folder / "other.onnx")
    line = _one_line(exc)
    assert "other.yaml" in line and "a-params.yaml, tiny.yaml" in line and "pass --card" in line


def test_two_cards_claiming_the_model_are_refused(folder: Path) -> None:
    _card_naming(folder / "copy.yaml", "model.onnx", name="copy")
    with pytest.raises(ConfigError) as exc:
        card_path(folder / "model.onnx")
    line = _one_line(exc)
    assert "2 cards name model.onnx" in line and "copy.yaml, tiny.yaml" in line and "pass --card" in line


def test_a_card_describing_another_model_is_refused(folder: Path) -> None:
    shutil.copy(folder / "model.onnx", folder / "other.onnx")
    (folder / "other.yaml").write_text((folder / "tiny.yaml").read_text())  # model: model.onnx
    with pytest.raises(ConfigError) as exc:
        load_card(folder / "other.onnx")
    line = _one_line(exc)
    assert line.startswith("card ")
    assert line.endswith("other.yaml describes model.onnx, not other.onnx: pass the matching --card")


def test_an_explicit_card_wins_over_its_model_field(folder: Path) -> None:
    shutil.copy(folder / "model.onnx", folder / "other.onnx")
    card, file = model_card_for(folder / "other.onnx", folder / "tiny.yaml")
    assert file == folder / "tiny.yaml" and card.name == "tiny"
    assert model_card_for(folder / "other.onnx", folder)[1] == folder / "tiny.yaml"  # or its directory
    with pytest.raises(ConfigError) as exc:
        model_card_for(folder / "other.onnx", folder / "model.onnx")
    assert _one_line(exc).endswith("model.onnx is a model: --card takes a model card YAML")


def test_a_directory_takes_its_one_card_and_ignores_other_yaml(folder: Path) -> None:
    fx.profile(folder, "edge", "x86-cpu", "")  # schema: but no task: a profile, not a card
    (folder / "z-broken.yml").write_text("::: not yaml [\n")
    assert card_path(folder) == folder / "tiny.yaml"
    assert load_card(folder).name == "tiny"


def test_a_directory_without_one_card_says_which_files(folder: Path) -> None:
    (folder / "tiny.yaml").rename(folder / "params.txt")
    with pytest.raises(ConfigError) as exc:
        card_path(folder)
    line = _one_line(exc)
    assert "no model card" in line and "a-params.yaml" in line and line.endswith("pass --card")
    (folder / "params.txt").rename(folder / "tiny.yaml")
    _card_naming(folder / "copy.yaml", "model.onnx", name="copy")
    with pytest.raises(ConfigError) as exc:
        card_path(folder)
    assert "2 model cards (copy.yaml, tiny.yaml)" in _one_line(exc)


def test_compile_with_an_explicit_card_records_both_files(folder: Path, profiles: Path, tmp_path: Path) -> None:
    shutil.copy(folder / "model.onnx", folder / "other.onnx")
    profile = profiles / "tiny-ort.yaml"
    with pytest.raises(ConfigError, match="no model card"):
        compile_model(folder / "other.onnx", profile, precision="fp32", out=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    result = compile_model(
        folder / "other.onnx", profile, precision="fp32", out=tmp_path / "b", card=folder / "tiny.yaml"
    )
    assert result.report.card == str(folder / "tiny.yaml")
    assert any("tiny.yaml describes model.onnx; compiled other.onnx" in note for note in result.report.notes)
    manifest = Manifest.model_validate_json((tmp_path / "b" / "manifest.json").read_text())
    assert manifest.model.source is not None
    assert manifest.model.source.model_dump() == {"onnx": "other.onnx", "card": "tiny.yaml", "card_model": "model.onnx"}
    plain = compile_model(folder / "model.onnx", profile, precision="fp32", out=tmp_path / "c")
    assert plain.report.card == str(folder / "tiny.yaml")
    assert "source" not in json.loads((tmp_path / "c" / "manifest.json").read_text())["model"]


def test_a_card_given_twice_is_refused(folder: Path, profiles: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        compile_model(folder / "tiny.yaml", profiles / "tiny-ort.yaml", card=folder / "tiny.yaml")
    assert "pass the ONNX file with --card, or drop --card" in _one_line(exc)


def test_inspect_opens_the_given_onnx_with_an_explicit_card(folder: Path) -> None:
    shutil.copy(folder / "model.onnx", folder / "other.onnx")
    with open_engine(model=folder / "other.onnx", card=folder / "tiny.yaml") as loaded:
        assert loaded.card.name == "tiny" and loaded.layout == "NCHW"
    with pytest.raises(ConfigError, match="pass --card"):
        open_engine(model=folder / "other.onnx")


def test_the_cli_takes_card_and_refuses_a_wrong_one_in_one_line(folder: Path, profiles: Path, tmp_path: Path) -> None:
    shutil.copy(folder / "model.onnx", folder / "other.onnx")
    (folder / "other.yaml").write_text((folder / "tiny.yaml").read_text())  # describes model.onnx
    profile = str(profiles / "tiny-ort.yaml")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-m", "edgeds", "compile", str(folder / "other.onnx"), "-p", profile],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().endswith("describes model.onnx, not other.onnx: pass the matching --card")
    assert len(proc.stderr.strip().splitlines()) == 1
    out = tmp_path / "bundle"
    args = ["compile", str(folder / "other.onnx"), "--card", str(folder / "other.yaml"), "-p", profile]
    result = CliRunner().invoke(app, [*args, "--precision", "fp32", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["report"]["card"] == str(folder / "other.yaml")


def test_deploy_refuses_card_with_a_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    result = CliRunner().invoke(app, ["deploy", str(bundle), "--target", "local", "--card", "x.yaml"])
    assert result.exit_code == 2 and "--card" in result.output and "Traceback" not in result.output
