"""deploy_bundle's contract before any host is contacted, DeployOptions' wire form, Bundle.open's snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edgeds
from edgeds.bundle import CARD, generate_keypair
from edgeds.cli import app
from edgeds.errors import BundleVerificationError
from edgeds.manifest import MANIFEST
from edgeds.sim.bundles import make_bundle


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """Two hosts on a closed loopback port: a rejected bundle must never reach them."""
    path = tmp_path / "two.yaml"
    path.write_text(
        "schema: 1\nname: two\nprofile: x86-cpu\n"
        "hosts:\n  - {name: a, address: 127.0.0.1, port: 9}\n  - {name: b, address: 127.0.0.1, port: 9}\n"
        "ssh: {user: edgeds, known_hosts: known_hosts}\n"
    )
    return path


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    private, _ = generate_keypair(tmp_path / "keys")
    return make_bundle(tmp_path / "bundle", 3, private)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [("no card", "missing_file"), ("broken card", "malformed_manifest"), ("no artifact", "missing_file")],
)
def test_a_bundle_that_cannot_be_opened_is_rejected_for_every_host(
    target: Path, bundle: Path, damage: str, reason: str
) -> None:
    if damage == "no card":
        (bundle / CARD).unlink()
    elif damage == "broken card":
        (bundle / CARD).write_text("name: [unclosed\n")
    else:
        manifest = json.loads((bundle / MANIFEST).read_text())
        (bundle / manifest["artifacts"][0]["path"]).unlink()
    seen: list[tuple[str, str]] = []
    result = edgeds.deploy_bundle(bundle, target, progress=lambda host, event, data: seen.append((host, event)))
    assert [(h.host, h.status, h.reason) for h in result.hosts] == [
        ("a", "REJECTED", reason),
        ("b", "REJECTED", reason),
    ]
    assert result.aborted and not result.succeeded
    assert seen == [("a", "done"), ("b", "done")], "no host may be contacted"


def test_the_cli_refuses_a_health_check_of_no_requests(target: Path, bundle: Path) -> None:
    result = CliRunner().invoke(app, ["deploy", str(bundle), "--target", str(target), "--requests", "0"])
    assert result.exit_code == 2
    assert "--requests" in result.output and "Traceback" not in result.output


def test_deploy_options_wire_form() -> None:
    options = edgeds.DeployOptions(allow_downgrade=True, health_requests=7, health_p99_ms=12.5)
    assert options.plan_fields() == {"allow_downgrade": True}
    assert options.apply_fields() == {
        "allow_downgrade": True,
        "options": {"health": {"requests": 7, "p99_ms": 12.5}, "reload_timeout_s": 120.0, "skip_health": False},
    }
    hooked = edgeds.DeployOptions(device_hooks={"crash_after_flip": True}).apply_fields()
    assert hooked["options"]["crash_after_flip"] is True
    with pytest.raises(ValueError, match="skip_health"):
        edgeds.DeployOptions(device_hooks={"skip_health": True})
    with pytest.raises(ValueError, match="health_requests"):
        edgeds.DeployOptions(health_requests=0)


def test_an_opened_bundle_offers_the_manifest_it_read(bundle: Path) -> None:
    with edgeds.Bundle.open(bundle, verify=False) as opened:
        before = opened.manifest_bytes
        (bundle / MANIFEST).write_bytes(before.replace(b'"version": 3', b'"version": 4'))
        assert (bundle / MANIFEST).read_bytes() != before
        assert opened.manifest_bytes == before and opened.version == 3


def test_a_card_missing_from_a_bundle_is_a_bundle_error(bundle: Path) -> None:
    (bundle / CARD).unlink()
    with pytest.raises(BundleVerificationError) as info:
        edgeds.Bundle.open(bundle, verify=False)
    assert info.value.reason == "missing_file"


def test_import_edgeds_lists_only_the_public_api() -> None:
    names = set(dir(edgeds))
    assert set(edgeds.__all__) <= names
    assert not names & {"Any", "TYPE_CHECKING", "importlib", "annotations"}
    for name in edgeds.__all__:
        assert getattr(edgeds, name) is not None
