"""Configuration mistakes: each is one ``file:line: field: message`` line in the file that holds it.

A profile that ``extends:`` another is blamed for what it inherits or fails to set; every
duplicate key is reported; addresses, ports, broker URLs and rollout percentages are checked at
load; one broken file does not stop ``profiles list`` / ``targets list``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeds import config, fieldtypes
from edgeds.cli import app
from edgeds.errors import ConfigError
from edgeds.hil.rig import load_rig

SHIPPED_X86 = config.SHIPPED_DATA / "profiles" / "x86-cpu.yaml"
runner = CliRunner()


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


# --------------------------------------------------------------------------- extends: blame the child


def test_a_child_lacking_a_field_is_blamed_not_its_shipped_parent(workdir: Path) -> None:
    # The reproduction: a profile extending a shipped one without its own description.
    _write(workdir / "profiles" / "mine.yaml", "name: mine\nextends: x86-cpu\nprecision: fp32\n")
    with pytest.raises(ConfigError) as info:
        config.load_profile("mine")
    assert _problem_lines(info.value) == ["profiles/mine.yaml:1: description: required field is missing"]


def test_an_inherited_value_the_child_breaks_is_blamed_on_the_childs_key(workdir: Path) -> None:
    path = _write(
        workdir / "profiles" / "small.yaml",
        "name: small\ndescription: smaller batches\nextends: x86-cpu\nbatching:\n  max_batch_size: 2\n",
    )
    with pytest.raises(ConfigError) as info:
        config.load_profile(path)
    (line,) = _problem_lines(info.value)
    parent_line = _line_of(SHIPPED_X86, "  preferred_batch_sizes")
    assert line.startswith("profiles/small.yaml:4: batching.preferred_batch_sizes: 4 is outside 1..max_batch_size (2)")
    assert line.endswith(f"(inherited from {SHIPPED_X86}:{parent_line})")


def test_a_field_neither_child_nor_parent_sets_is_blamed_on_extends(workdir: Path) -> None:
    _write(
        workdir / "profiles" / "base.yaml",
        "name: base\ndescription: a partial base\nhardware:\n  description: box\n  arch: x86_64\n"
        "  cpu: any\n  cpu_cores: 2\nbackends:\n  - name: onnxruntime\nmemory: {budget_mb: 256}\n",
    )
    _write(workdir / "profiles" / "kid.yaml", "name: kid\ndescription: kid\n\nextends: base\n")
    with pytest.raises(ConfigError) as info:
        config.load_profile("kid")
    assert _problem_lines(info.value) == [
        "profiles/kid.yaml:4: hardware.memory_mb: required field is missing: set it here or at profiles/base.yaml:3",
        "profiles/kid.yaml:4: latency: required field is missing: set it here or in the profile this one extends",
    ]


def test_a_list_the_child_replaces_keeps_no_line_of_the_parents(workdir: Path) -> None:
    _write(workdir / "profiles" / "lists.yaml", "name: lists\ndescription: x\nextends: x86-cpu\nbackends:\n  - {}\n")
    with pytest.raises(ConfigError) as info:
        config.load_profile("lists")
    assert _problem_lines(info.value) == ["profiles/lists.yaml:5: backends[0].name: required field is missing"]


def test_a_bad_value_of_a_middle_parent_names_where_it_is_written(workdir: Path) -> None:
    mid = _write(
        workdir / "profiles" / "mid.yaml",
        "name: mid\ndescription: mid\nextends: x86-cpu\nlatency:\n  p99_ms: -5\n",
    )
    _write(workdir / "profiles" / "leaf.yaml", "name: leaf\ndescription: leaf\nextends: mid\n")
    with pytest.raises(ConfigError) as info:
        config.load_profile("leaf")
    assert _problem_lines(info.value) == [
        "profiles/leaf.yaml:3: latency.p99_ms: must be > 0.0, got -5 (inherited from profiles/mid.yaml:5)"
    ]
    with pytest.raises(ConfigError) as info:
        config.load_profile(mid)
    assert _problem_lines(info.value) == ["profiles/mid.yaml:5: latency.p99_ms: must be > 0.0, got -5"]


def test_a_childs_own_bad_value_keeps_its_own_line(workdir: Path) -> None:
    _write(
        workdir / "profiles" / "own.yaml",
        "name: own\ndescription: own\nextends: x86-cpu\nbackends:\n  - name: onnxruntime\n"
        "    options: {intra_op_num_threads: 0}\n",
    )
    with pytest.raises(ConfigError) as info:
        config.load_profile("own")
    (line,) = _problem_lines(info.value)
    assert line.startswith("profiles/own.yaml:6: backends[0].options.intra_op_num_threads: ")
    assert "inherited" not in line


def test_extends_of_an_unknown_profile_names_the_line(workdir: Path) -> None:
    _write(workdir / "profiles" / "orphan.yaml", "name: orphan\ndescription: x\nextends: nope\n")
    with pytest.raises(ConfigError) as info:
        config.load_profile("orphan")
    (line,) = _problem_lines(info.value)
    assert line.startswith("profiles/orphan.yaml:3: extends: no profile named 'nope' (known: ")


def test_a_target_naming_an_unknown_profile_is_blamed_on_its_profile_line(workdir: Path) -> None:
    _write(workdir / "targets" / "t.yaml", "name: t\ndescription: x\nprofile: x86-gpu\nlocal: true\n")
    target = config.load_target("t")
    with pytest.raises(ConfigError) as info:
        config.resolve_target_profile(target)
    (line,) = _problem_lines(info.value)
    assert line.startswith("targets/t.yaml:3: profile: no profile named 'x86-gpu' (known: ")


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


# --------------------------------------------------------------------------- addresses, ports, percentages


def test_a_target_with_a_bad_address_and_batch_is_refused_at_load(workdir: Path) -> None:
    # The reproduction.
    _write(
        workdir / "targets" / "line.yaml",
        "name: line\nprofile: x86-cpu\nhosts:\n  - name: dev-1\n    address: 192.0.2.300\nrollout:\n  batch: 150%\n",
    )
    with pytest.raises(ConfigError) as info:
        config.load_target("line")
    assert _problem_lines(info.value) == [
        "targets/line.yaml:5: hosts[0].address: not a valid IP address (IPv4 is four numbers 0..255), "
        "got '192.0.2.300'",
        "targets/line.yaml:7: rollout.batch: a percentage of the fleet must be 1..100 %, got '150%'",
    ]


def test_every_address_port_and_url_field_of_a_target_is_checked(workdir: Path) -> None:
    path = _write(
        workdir / "targets" / "all.yaml",
        "name: all\nprofile: x86-cpu\nhosts:\n"
        "  - {name: a, address: 'bad host', agent_host: 10.0.0.256}\n"
        "  - {name: b, address: box.example, port: 0}\n"
        "mqtt:\n  url: mqtt://broker.example:99999\n"
        "rollout:\n  max_failures: 101%\n"
        "agent:\n  http_host: '[::]'\n  http_port: 65536\n",
    )
    with pytest.raises(ConfigError) as info:
        config.load_target(path)
    fields = [line.split(": ")[1] for line in _problem_lines(info.value)]
    assert fields == [
        "hosts[0].address",
        "hosts[0].agent_host",
        "hosts[1].port",
        "mqtt.url",
        "rollout.max_failures",
        "agent.http_host",
        "agent.http_port",
    ]


def test_counts_may_be_written_as_numbers(workdir: Path) -> None:
    _write(
        workdir / "targets" / "ok.yaml",
        "name: ok\nprofile: x86-cpu\nhosts:\n  - {name: a, address: 'fe80::1'}\n  - {name: b, address: box-2.lan}\n"
        "mqtt: {url: 'mqtts://[::1]:8883'}\nrollout: {batch: 2, max_failures: 0}\nagent: {http_host: 0.0.0.0}\n",
    )
    target = config.load_target("ok")
    assert (target.rollout.batch, target.rollout.max_failures) == ("2", "0")


@pytest.mark.parametrize("value", ["192.0.2.1", "::1", "fe80::1%eth0", "localhost", "dev-1", "a.b-c.example."])
def test_good_hosts(value: str) -> None:
    assert fieldtypes.check_host(value) == value


@pytest.mark.parametrize(
    "value", ["192.0.2.300", "1.2.3", "", "bad host", "-dev", "dev-", "host.123", "[::1]", "a" * 64, "x/y"]
)
def test_bad_hosts(value: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        fieldtypes.check_host(value)


@pytest.mark.parametrize("value", ["mqtt://broker", "mqtt://broker:1883", "mqtts://10.0.0.2:8883/", "mqtt://[::1]:1"])
def test_good_mqtt_urls(value: str) -> None:
    assert fieldtypes.check_mqtt_url(value) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("http://broker:1883", "must look like mqtt://host:port"),
        ("mqtt://broker:1883/topic", "must look like mqtt://host:port"),
        ("mqtt://:1883", "must look like mqtt://host:port"),
        ("mqtt://broker:0", "1..65535"),
        ("mqtt://broker:65536", "1..65535"),
        ("mqtt://broker:port", "1..65535"),
        ("mqtt://user:secret@broker:1883", "credentials do not belong in the URL"),
        ("mqtt://192.0.2.300:1883", "not a valid IP address"),
    ],
)
def test_bad_mqtt_urls(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        fieldtypes.check_mqtt_url(value)


@pytest.mark.parametrize(
    ("value", "batch_ok", "failures_ok"),
    [
        ("1", True, True),
        ("0", False, True),
        ("1%", True, True),
        ("0%", False, True),
        ("100%", True, True),
        ("101%", False, False),
        ("150%", False, False),
        ("half", False, False),
        ("5 %", False, False),
    ],
)
def test_rollout_amounts(value: str, batch_ok: bool, failures_ok: bool) -> None:
    for check, ok in ((fieldtypes.check_batch, batch_ok), (fieldtypes.check_failures, failures_ok)):
        if ok:
            assert check(value) == value
        else:
            with pytest.raises(ValueError, match=re.escape(repr(value))):
                check(value)


# --------------------------------------------------------------------------- listing with a broken file


def _broken_profile(workdir: Path) -> None:
    _write(workdir / "profiles" / "good.yaml", "name: good\ndescription: mine\nextends: x86-cpu\n")
    _write(workdir / "profiles" / "broken.yaml", "name: broken\ndescription: x\nextends: x86-cpu\nprecision: int3\n")


def test_scan_profiles_loads_the_good_and_reports_the_broken(workdir: Path) -> None:
    _broken_profile(workdir)
    profiles, broken = config.scan_profiles()
    assert "good" in profiles and "x86-cpu" in profiles and "broken" not in profiles
    assert [(b.name, b.path.name) for b in broken] == [("broken", "broken.yaml")]
    assert str(broken[0].error).startswith("profiles/broken.yaml:4: precision: must be one of")


def test_profiles_list_shows_the_rest_and_reports_the_broken_one(workdir: Path) -> None:
    _broken_profile(workdir)
    result = runner.invoke(app, ["profiles", "list", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"good", "x86-cpu"} <= {row["name"] for row in data["profiles"]}
    assert "broken" not in {row["name"] for row in data["profiles"]}
    (error,) = data["errors"]
    assert error["name"] == "broken" and error["path"].endswith("broken.yaml")
    assert len(error["problems"]) == 1 and error["problems"][0].startswith("profiles/broken.yaml:4: precision: ")

    result = runner.invoke(app, ["profiles", "list"])
    assert result.exit_code == 0, result.output
    assert "good" in result.stdout and "broken" not in result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: profile 'broken' not listed: profiles/broken.yaml:4: precision: must be one of")


def test_targets_list_shows_the_rest_and_reports_the_broken_one(workdir: Path) -> None:
    _write(workdir / "targets" / "bad.yaml", "name: bad\nprofile: x86-cpu\nhosts:\n  - {name: a, address: 1.2.3}\n")
    _write(workdir / "targets" / "good.yaml", "name: good\nprofile: x86-cpu\nhosts:\n  - {name: a, address: box}\n")
    targets, broken = config.scan_targets()
    assert {"local", "good", "jetson-orin"} <= {t.name for t in targets}
    assert [b.name for b in broken] == ["bad"]
    with pytest.raises(ConfigError, match=re.escape("targets/bad.yaml:4: hosts")):
        config.load_targets()

    result = runner.invoke(app, ["targets", "list", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert "good" in {row["name"] for row in data["targets"]}
    assert [e["name"] for e in data["errors"]] == ["bad"]
    result = runner.invoke(app, ["targets", "list"])
    assert result.exit_code == 0, result.output
    assert "targets/bad.yaml:4: hosts[0].address" in result.stderr


def test_a_file_with_several_problems_is_one_listing_line(workdir: Path) -> None:
    _write(workdir / "profiles" / "many.yaml", "name: many\ndescription: x\nextends: x86-cpu\na: 1\nb: 2\n")
    result = runner.invoke(app, ["profiles", "list"])
    assert result.exit_code == 0, result.output
    (line,) = result.stderr.splitlines()
    assert line.endswith("(and 1 more: edgeds profiles show many)")


def test_profiles_show_of_the_broken_one_exits_2_with_its_line(workdir: Path) -> None:
    _broken_profile(workdir)
    proc = subprocess.run(
        [sys.executable, "-m", "edgeds", "profiles", "show", "broken"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "profiles/broken.yaml:4: precision: must be one of" in proc.stderr
