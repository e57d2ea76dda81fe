"""Schemas: every shipped file validates; broken files name file, line and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeds import config, modelcard
from edgeds.errors import ConfigError, NotFoundError

BROKEN = Path(__file__).parent / "data" / "broken"
SHIPPED_PROFILES = [
    "jetson-orin-nx",
    "jetson-agx-orin",
    "intel-nuc-12",
    "snapdragon-8gen3",
    "raspberry-pi-5",
    "x86-cpu",
]
SHIPPED_TARGETS = ["local", "jetson-orin", "intel-nuc", "snapdragon"]


@pytest.mark.parametrize("name", SHIPPED_PROFILES)
def test_shipped_profile_validates(name: str) -> None:
    profile = config.load_profile(name)
    assert profile.name == name
    chain = profile.chain()
    assert chain, "a profile needs a backend chain"
    assert all(precision in profile.hardware.precisions for _, precision, _ in chain)
    assert profile.batching.max_batch_size in profile.batching.bucket_sizes()


def test_every_shipped_profile_is_tested() -> None:
    assert sorted(config.list_profiles()) == sorted(SHIPPED_PROFILES)


@pytest.mark.parametrize("name", SHIPPED_TARGETS)
def test_shipped_target_validates(name: str) -> None:
    target = config.load_target(name)
    assert target.name == name
    profile = config.resolve_target_profile(target)
    assert profile.name in SHIPPED_PROFILES
    for host in target.hosts:
        assert host.address.startswith("192.0.2."), "example targets must use the documentation range"


def test_extends_merges_parent_and_child() -> None:
    agx = config.load_profile("jetson-agx-orin")
    nx = config.load_profile("jetson-orin-nx")
    assert agx.extends == "jetson-orin-nx"
    assert agx.batching.max_batch_size == 32  # child value
    assert agx.batching.max_queue_delay_us == nx.batching.max_queue_delay_us  # inherited
    assert agx.precision == nx.precision
    assert agx.hardware.memory_mb == 65536


def test_options_are_validated_by_the_backend_schema() -> None:
    nuc = config.load_profile("intel-nuc-12")
    name, precision, options = nuc.chain()[0]
    assert (name, precision) == ("openvino", "int8")
    assert options.device == "HETERO:GPU,CPU"  # type: ignore[attr-defined]


def _expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    match = re.match(r"# expect: (.*)$", first)
    assert match, f"{path} lacks an '# expect:' header"
    return match.group(1)


@pytest.mark.parametrize("path", sorted(BROKEN.glob("*.yaml")), ids=lambda p: p.stem)
def test_broken_file_reports_file_line_field(path: Path) -> None:
    expected = _expectation(path)
    loader = {"profile": config.load_profile, "target": config.load_target, "card": modelcard.load_model_card}
    with pytest.raises(ConfigError) as info:
        loader[path.stem.split("_")[0]](path)
    message = str(info.value)
    if re.match(r"\d+: ", expected):
        assert f"{path.name}:{expected}" in message, message
    else:
        assert expected in message, message


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: many\ndescription: x\nextends: x86-cpu\nbatching:\n  max_batch_size: 0\n"
        "backends:\n  - name: onnxruntime\n    options:\n      intra_op_num_threads: 0\n      bogus: 1\n"
    )
    with pytest.raises(ConfigError) as info:
        config.load_profile(path)
    lines = str(info.value).splitlines()
    assert [line.split(": ")[0].rsplit(":", 1)[1] for line in lines] == ["5", "9", "10"]
    assert len(info.value.problems) == 3


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(NotFoundError) as info:
        config.load_profile("nope")
    assert "x86-cpu" in str(info.value)


def test_local_target_is_embedded_when_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config, "SHIPPED_DATA", tmp_path)
    target = config.load_target("local")
    assert target.local and target.profile == "auto"


def test_load_targets_puts_the_embedded_local_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEDS_TARGETS", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config, "SHIPPED_DATA", tmp_path)
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "line.yaml").write_text("schema: 1\nname: line\nprofile: x86-cpu\nlocal: true\n")
    assert [t.name for t in config.load_targets()] == ["local", "line"]
    assert config.load_targets()[0] is config.LOCAL_TARGET
    (tmp_path / "targets" / "local.yaml").write_text("schema: 1\nname: local\nprofile: x86-cpu\nlocal: true\n")
    targets = {t.name: t for t in config.load_targets()}
    assert set(targets) == {"local", "line"} and targets["local"].profile == "x86-cpu"


def test_profile_search_path_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mine.yaml").write_text("name: mine\ndescription: own\nextends: x86-cpu\n")
    monkeypatch.setenv("EDGEDS_PROFILES", str(tmp_path))
    assert "mine" in config.list_profiles()
    assert config.load_profile("mine").batching == config.load_profile("x86-cpu").batching


def test_detect_profile_name() -> None:
    assert config.detect_profile_name("x86_64", lambda: False) == "x86-cpu"
    assert config.detect_profile_name("aarch64", lambda: False) == "raspberry-pi-5"
    assert config.detect_profile_name("aarch64", lambda: True) == "jetson-orin-nx"


def test_schemas_are_frozen() -> None:
    profile = config.load_profile("x86-cpu")
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on assignment
        profile.precision = "fp32"  # type: ignore[misc]


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    card = tmp_path / "card.yaml"
    card.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        modelcard.load_model_card(card)


def test_batching_from_a_manifest_drops_unknown_keys_and_validates_the_rest() -> None:
    recorded = {"max_batch_size": 4, "buckets": [1, 4], "from_a_newer_edgeds": True}
    batching = config.Batching.from_manifest(recorded)
    assert batching.max_batch_size == 4 and batching.bucket_sizes() == (1, 4)
    assert config.Batching.from_manifest(None) == config.Batching()
    with pytest.raises(ValueError, match="max_batch_size"):
        config.Batching.from_manifest({"max_batch_size": 2, "buckets": [8]})


def test_server_limits_json_follows_a_smaller_body_limit() -> None:
    limits = config.ServerLimits.from_profile(None, max_body_mb=4)
    assert limits.max_json_mb == 4 and limits.max_body_mb == 4
    assert config.ServerLimits.from_profile({"server": {"max_body_mb": 2}}).max_json_bytes == 2 * 2**20
    with pytest.raises(ConfigError, match="max_json_mb"):
        config.ServerLimits.from_profile(None, max_body_mb=4, max_json_mb=6)
