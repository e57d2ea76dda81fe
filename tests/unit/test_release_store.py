"""The on-device release store without SSH: verify, stage, flip, commit, recover, rollback, prune."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from edgeds.bundle import Bundle, generate_keypair
from edgeds.deploy.device import admission, steps
from edgeds.deploy.device.protocol import FAILED_NO_STATE_CHANGE, FAILED_ROLLBACK_COMPLETE, REJECTED, SUCCEEDED
from edgeds.deploy.device.store import Store, recover
from edgeds.deploy.host import offer
from edgeds.sim.bundles import make_bundle


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def store(tmp_path: Path, keypair: tuple[Path, Path]) -> Store:
    store = Store(tmp_path / "device")
    store.add_trusted_key("publisher", keypair[1].read_bytes())
    return store


def _bundle(tmp_path: Path, keypair: tuple[Path, Path], version: int, **kwargs: Any) -> Bundle:
    return Bundle.open(make_bundle(tmp_path / f"b{version}", version, kwargs.pop("key", keypair[0]), **kwargs))


def _upload(store: Store, bundle: Bundle, planned: dict[str, Any]) -> None:
    for obj in planned["missing"]:
        (store.incoming / obj["sha256"]).write_bytes(bundle.objects()[obj["sha256"]].read_bytes())


def _install(store: Store, bundle: Bundle, **options: Any) -> dict[str, Any]:
    planned = admission.plan(store, offer(bundle))
    if planned["status"] != "ready":
        return planned
    _upload(store, bundle, planned)
    return steps.apply(store, offer(bundle, options=options))


def test_install_commit_already_installed_and_downgrade(store: Store, tmp_path: Path, keypair: Any) -> None:
    first = _bundle(tmp_path, keypair, 1)
    result = _install(store, first)
    assert result["status"] == SUCCEEDED, result
    assert result["health"]["mode"] == "in_process"  # no agent: the release was opened and checked here
    assert store.current_id() == result["release"] == store.load_state().committed
    assert os.readlink(store.current) == f"releases/{result['release']}"
    assert admission.plan(store, offer(first))["status"] == "already_installed"
    assert steps.apply(store, offer(first))["already_installed"] is True
    older = _bundle(tmp_path, keypair, 0)
    planned = admission.plan(store, offer(older))
    assert (planned["status"], planned["reason"]) == (REJECTED, "downgrade")


def test_second_version_uploads_only_missing_objects(store: Store, tmp_path: Path, keypair: Any) -> None:
    assert _install(store, _bundle(tmp_path, keypair, 1, seed=3))["status"] == SUCCEEDED
    second = _bundle(tmp_path, keypair, 2, seed=3)
    planned = admission.plan(store, offer(second))
    assert "artifacts/model.onnx" not in {m["path"] for m in planned["missing"]}
    assert planned["missing"], "the card differs, so something is missing"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        ("flip", "checksum_mismatch"),
        ("unsigned", "unsigned"),
        ("wrong_key", "bad_signature"),
        ("tamper_manifest", "bad_signature"),
        ("unsafe_path", "bad_signature"),
    ],
)
def test_rejections_touch_nothing_live(store: Store, tmp_path: Path, keypair: Any, mutate: str, reason: str) -> None:
    good = _install(store, _bundle(tmp_path, keypair, 1))
    other_key, _ = generate_keypair(tmp_path / "other")
    bad = _bundle(tmp_path, keypair, 2, key=other_key if mutate == "wrong_key" else keypair[0])
    request = offer(bad)
    if mutate == "unsigned":
        request["signature"] = None
    if mutate == "tamper_manifest":
        request["manifest"] = request["manifest"].replace('"version": 2', '"version": 3')
    if mutate == "unsafe_path":
        request["manifest"] = request["manifest"].replace('"path": "artifacts/model.onnx"', '"path": "../x"')
    planned = admission.plan(store, request)
    if mutate == "flip":
        assert planned["status"] == "ready"
        _upload(store, bad, planned)
        victim = next(store.incoming.glob("*"))
        data = bytearray(victim.read_bytes())
        data[0] ^= 0xFF
        victim.write_bytes(bytes(data))
        planned = steps.apply(store, request)
    assert (planned["status"], planned["reason"]) == (REJECTED, reason)
    assert store.current_id() == good["release"] == store.load_state().committed
    assert store.list_releases() == [good["release"]]


def test_load_failure_rolls_back(store: Store, tmp_path: Path, keypair: Any) -> None:
    good = _install(store, _bundle(tmp_path, keypair, 1))
    bad = _install(store, _bundle(tmp_path, keypair, 2, broken_model=True))
    assert bad["status"] == FAILED_ROLLBACK_COMPLETE
    assert store.current_id() == good["release"]
    state = store.load_state()
    assert state.committed == good["release"] and state.pending is None and bad["release"] in state.failed


def test_recover_rolls_back_uncommitted_flip(store: Store, tmp_path: Path, keypair: Any) -> None:
    good = _install(store, _bundle(tmp_path, keypair, 1))
    second = _bundle(tmp_path, keypair, 2)
    planned = admission.plan(store, offer(second))
    _upload(store, second, planned)
    candidate = admission.Candidate.from_request(offer(second))
    manifest = admission.verify_candidate(store, candidate)
    steps.ingest(store, manifest)
    steps.stage(store, candidate, manifest, planned["release"])
    state = store.load_state()
    state.pending = {"id": planned["release"], "from": good["release"]}
    store.save_state(state)
    store.flip(planned["release"])  # a crash here: live but never committed
    assert recover(store) == {"rolled_back": planned["release"], "current": good["release"]}
    assert store.current_id() == good["release"]
    assert recover(store) is None  # idempotent
    # staging is reusable: the retried apply does not rebuild the release
    _upload(store, second, admission.plan(store, offer(second)))
    assert steps.apply(store, offer(second))["status"] == SUCCEEDED


def test_rollback_and_prune(store: Store, tmp_path: Path, keypair: Any) -> None:
    ids = [_install(store, _bundle(tmp_path, keypair, v, seed=v))["release"] for v in (1, 2, 3)]
    rolled = steps.rollback(store, {})
    assert rolled["status"] == SUCCEEDED and store.current_id() == ids[1]
    assert steps.rollback(store, {"to": "nope"})["status"] == FAILED_NO_STATE_CHANGE
    pruned = steps.prune(store, {"keep": 1})
    assert ids[0] in pruned["removed"] and set(pruned["kept"]) == {ids[1], ids[2]}
    referenced = set()
    for release in pruned["kept"]:
        referenced |= {
            f["sha256"] for f in json.loads((store.releases / release / "manifest.json").read_text())["files"]
        }
    assert {p.name for p in store.objects.iterdir()} == referenced
    status = steps.status(store)
    assert status["current"]["id"] == ids[1] and status["consistent"]


def test_no_trusted_key_rejects(tmp_path: Path, keypair: Any) -> None:
    bare = Store(tmp_path / "bare")
    planned = admission.plan(bare, offer(_bundle(tmp_path, keypair, 1)))
    assert (planned["status"], planned["reason"]) == (REJECTED, "no_trusted_key")
