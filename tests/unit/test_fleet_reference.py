"""Registry URLs and OCI references: parsing, naming rules, plain HTTP only to loopback."""

from __future__ import annotations

import pytest

from edgeds.errors import FleetError
from edgeds.fleet.reference import parse_reference, parse_registry, repository_for

DIGEST = "sha256:" + "ab" * 32


def test_registry_urls() -> None:
    assert parse_registry("http://127.0.0.1:5000").url == "http://127.0.0.1:5000"
    assert parse_registry("http://localhost:5000/").plain_http
    assert parse_registry("https://registry.example.com").host == "registry.example.com"
    for bad, why in [
        ("http://registry.example.com:5000", "plain HTTP is allowed only to a loopback address"),
        ("http://10.0.0.1", "plain HTTP"),
        ("ftp://127.0.0.1", "expected http"),
        ("https://registry.example.com/v2/x", "nothing after the host"),
        ("https://user:pw@registry.example.com", "credentials"),
        ("https://registry.example.com:port", "registry"),
    ]:
        with pytest.raises(FleetError, match=why):
            parse_registry(bad)


def test_references() -> None:
    ref = parse_reference(f"127.0.0.1:5000/plant/tiny@{DIGEST}")
    assert (ref.registry.url, ref.repository, ref.tag, ref.digest) == (
        "http://127.0.0.1:5000",
        "plant/tiny",
        None,
        DIGEST,
    )
    assert str(ref) == f"127.0.0.1:5000/plant/tiny@{DIGEST}"
    tagged = parse_reference("registry.example.com/tiny:v3")
    assert (tagged.registry.scheme, tagged.tag, tagged.manifest_reference) == ("https", "v3", "v3")
    assert str(tagged.by_digest(DIGEST)) == f"registry.example.com/tiny@{DIGEST}"
    assert parse_reference("https://[::1]:5000/tiny").registry.host == "[::1]:5000"
    for bad in ("tiny", "127.0.0.1:5000/Tiny", "127.0.0.1:5000/tiny@sha256:xyz", "127.0.0.1:5000/tiny:.bad"):
        with pytest.raises(FleetError):
            parse_reference(bad)
    with pytest.raises(FleetError, match="plain HTTP"):
        parse_reference("http://registry.example.com/tiny:v1")


def test_default_repository_from_model_name() -> None:
    assert repository_for("Surface Defect") == "surface-defect"
    assert repository_for("plant/Line_2") == "plant/line_2"
    assert repository_for("__") == "bundle"
