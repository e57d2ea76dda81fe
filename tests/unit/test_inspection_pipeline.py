"""The inspection pipeline end to end, in-process: sources -> shared engine -> decisions -> ledger.

Uses the shipped model and its validation split when models/surface-defect/ is present, else a
tiny ONNX classifier with the same interface on generated images (same checks, fewer frames).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeds import backends
from edgeds.cli import app
from edgeds.config import REPO_ROOT, Batching, InspectionStation
from edgeds.datasets.surface import generate
from edgeds.evaluate import predict, top1_accuracy
from edgeds.inspection import (
    Frame,
    FrameQueue,
    FrameSource,
    InspectionPipeline,
    inspect_source,
    read_ledger,
    run_inspection,
    write_video,
)
from edgeds.modelcard import ModelCard, load_model_card
from edgeds.runtime import Engine
from edgeds.runtime.testing import tiny_classifier, write_tiny_card

pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

SHIPPED = REPO_ROOT / "models" / "surface-defect"


def shipped_card() -> ModelCard | None:
    """The shipped model's card when the model is there and its validation split loads."""
    if not ((SHIPPED / "model.onnx").is_file() and list(SHIPPED.glob("*.yaml"))):
        return None
    from edgeds.datasets import load_split
    from edgeds.errors import DatasetError

    shipped = load_model_card(SHIPPED / "model.onnx")
    try:
        load_split(shipped, "validation")
    except DatasetError:  # the generator and the card disagree: test_shipped_model reports that
        return None
    return shipped


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> ModelCard:
    shipped = shipped_card()
    if shipped is not None:
        return shipped
    directory = tmp_path_factory.mktemp("tiny")
    tiny_classifier(directory / "model.onnx")
    write_tiny_card(directory)
    return load_model_card(directory / "tiny.yaml")


@pytest.fixture(scope="module")
def validation(card: ModelCard) -> tuple[np.ndarray, np.ndarray]:
    if card.data is not None:
        from edgeds.datasets import load_split

        return load_split(card, "validation")
    return generate(2024, 300, 160)


@pytest.fixture(scope="module")
def offline(card: ModelCard, validation: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Offline logits of the validation images: ONNX Runtime FP32 on model.onnx, no pipeline."""
    backend = backends.create("onnxruntime", {"intra_op_num_threads": 2})
    backend.open(card.model_path, (8,))
    try:
        return predict(backend, card, validation[0], batch_size=8)
    finally:
        backend.close()


@pytest.fixture
def engine(card: ModelCard) -> Iterator[Engine]:
    batching = Batching(max_batch_size=8, preferred_batch_sizes=(4, 8), max_queue_delay_us=2000)
    with Engine("onnxruntime", card.model_path, options={"intra_op_num_threads": 2}, batching=batching) as eng:
        yield eng


class MemorySource(FrameSource):
    """Frames from an array, as fast as they are taken: a source that outruns any engine."""

    kind: ClassVar[Any] = "camera"
    live = True

    def __init__(self, images: np.ndarray, name: str = "memory") -> None:
        super().__init__(name)
        self.images = images

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        for i, image in enumerate(self.images):
            if stop.is_set():
                return
            self.stats.frames += 1
            yield Frame(i, time.time(), time.monotonic_ns(), image, f"memory {i}")


class FileLikeMemorySource(MemorySource):
    live = False


class Recorder:
    """A telemetry sink that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def publish(self, kind: str, payload: dict[str, Any]) -> int:
        with self._lock:
            self.messages.append((kind, payload))
            return len(self.messages)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [p for k, p in self.messages if k == "inspection" and p["type"] == kind]


@pytest.mark.slow
def test_accuracy_on_a_video_equals_offline_accuracy(
    tmp_path: Path, card: ModelCard, validation: tuple[np.ndarray, np.ndarray], offline: np.ndarray
) -> None:
    images, labels = validation
    video = tmp_path / "validation.avi"
    write_video(images, video, fps=25)
    summary = run_inspection(str(video), model=card.model_path, truth=labels, state_dir=tmp_path / "state")
    expected = top1_accuracy(offline, labels)
    assert summary.processed == len(images) and summary.dropped == 0 and summary.corrupt == 0
    assert summary.accuracy is not None
    assert abs(summary.accuracy - expected) * 100 <= 0.1
    confusion = np.asarray(summary.confusion)
    assert confusion.sum() == len(images)
    assert np.array_equal(confusion.sum(axis=1), np.bincount(labels, minlength=len(card.labels)))
    # frame by frame, the ledger holds the offline prediction of that image
    records = [r for r in read_ledger(tmp_path / "state" / "ledger", "station-1") if r["type"] == "frame"]
    predicted = [card.labels.index(r["class"]) for r in sorted(records, key=lambda r: r["frame_id"])]
    agreement = np.mean(np.asarray(predicted) == offline.argmax(axis=1))
    assert agreement >= 0.999


def test_corrupt_frames_are_counted_skipped_and_the_run_completes(
    tmp_path: Path, card: ModelCard, engine: Engine, validation: tuple[np.ndarray, np.ndarray]
) -> None:
    from tests.unit.test_sources import corrupt_avi_frames

    images = validation[0][:40]
    video = tmp_path / "mjpg.avi"
    write_video(images, video, lossless=False)
    corrupt_avi_frames(video, [3, 17])
    summary = inspect_source(str(video), engine, card, state_dir=tmp_path / "state", fsync="never")
    assert summary.corrupt == 2
    assert summary.processed == 38 and summary.errors == 0
    events = [r for r in read_ledger(tmp_path / "state" / "ledger", "station-1") if r["type"] == "source"]
    assert sorted(r["frame_id"] for r in events if r["event"] == "corrupt") == [3, 17]


def _ids(state: Path, station: str = "station-1") -> list[int]:
    return [r["frame_id"] for r in read_ledger(state / "ledger", station) if r["type"] == "frame"]


def test_back_pressure_drops_oldest_and_counts(
    tmp_path: Path, card: ModelCard, engine: Engine, validation: tuple[np.ndarray, np.ndarray]
) -> None:
    images = validation[0][:8].repeat(40, axis=0)  # 320 frames, delivered instantly
    summary = inspect_source(MemorySource(images), engine, card, state_dir=tmp_path, queue_size=4, fsync="never")
    ids = _ids(tmp_path)
    assert summary.dropped > 0
    assert summary.processed + summary.dropped == len(images)
    assert len(ids) == summary.processed and ids == sorted(ids)
    assert ids[-1] == len(images) - 1  # dropping the oldest never loses the newest frame


def test_drop_newest_and_block_policies(
    tmp_path: Path, card: ModelCard, engine: Engine, validation: tuple[np.ndarray, np.ndarray]
) -> None:
    images = validation[0][:8].repeat(30, axis=0)
    newest = inspect_source(
        MemorySource(images), engine, card, state_dir=tmp_path / "n", queue_size=4, queue_policy="drop_newest"
    )
    assert newest.dropped > 0 and newest.processed + newest.dropped == len(images)
    assert _ids(tmp_path / "n")[:4] == [0, 1, 2, 3]  # the first frames were kept
    blocked = inspect_source(FileLikeMemorySource(images), engine, card, state_dir=tmp_path / "b", queue_size=4)
    assert blocked.dropped == 0 and blocked.processed == len(images)  # a file source waits: nothing lost


def test_stations_share_one_engine_and_are_micro_batched(
    tmp_path: Path, card: ModelCard, engine: Engine, validation: tuple[np.ndarray, np.ndarray], offline: np.ndarray
) -> None:
    images = validation[0][:60]
    stations = [InspectionStation(name=f"cam-{i}", source="memory") for i in range(3)]
    sources: dict[str, FrameSource] = {s.name: FileLikeMemorySource(images, s.name) for s in stations}
    before = engine.stats()
    with InspectionPipeline(stations, engine, card, state_dir=tmp_path, sources=sources, fsync="never") as pipeline:
        assert pipeline.wait(120)
    after = engine.stats()
    executions = after.execution_count - before.execution_count
    samples = after.inference_count - before.inference_count
    assert samples == 3 * len(images)
    assert samples / executions > 1.5  # rows of several stations went through together
    for station in stations:
        records = [r for r in read_ledger(tmp_path / "ledger", station.name) if r["type"] == "frame"]
        assert [r["frame_id"] for r in records] == list(range(len(images)))  # decided in frame order
        predicted = np.array([card.labels.index(r["class"]) for r in records])
        assert np.mean(predicted == offline[: len(images)].argmax(axis=1)) >= 0.98


def test_results_alarms_and_stats_are_published(
    tmp_path: Path, card: ModelCard, engine: Engine, validation: tuple[np.ndarray, np.ndarray]
) -> None:
    images = validation[0][:30]
    recorder = Recorder()
    # every defect class over a 0 threshold: every frame is rejected, the alarm fires once at frame 5
    station = InspectionStation(name="line-3", source="memory", uncertain_below=0.0, alarm_consecutive_rejects=5)
    summary = inspect_source(
        FileLikeMemorySource(images), engine, card, station=station, state_dir=tmp_path, publisher=recorder
    )
    assert summary.decisions["reject"] == len(images) and summary.alarms == 1
    alarms = recorder.of("alarm")
    assert len(alarms) == 1 and alarms[0]["frame_id"] == 4 and alarms[0]["consecutive_rejects"] == 5
    results = [r for message in recorder.of("results") for r in message["results"]]
    assert [r["frame_id"] for r in results] == list(range(len(images)))
    assert all({"frame_id", "ts", "class", "score", "latency_ms", "decision"} <= set(r) for r in results)
    assert all(r["latency_ms"] > 0 and 0 < r["score"] <= 1 for r in results)
    ledger = [r for r in read_ledger(tmp_path / "ledger", "line-3") if r["type"] == "frame"]
    assert [r.get("alarm", False) for r in ledger].index(True) == 4
    saved = sorted((tmp_path / "rejects" / "line-3").iterdir())
    assert len(saved) == summary.rejects_saved > 0
    assert {r["image"] for r in ledger if "image" in r} == {p.name for p in saved}


def test_pipeline_stats_for_telemetry(
    tmp_path: Path, card: ModelCard, engine: Engine, validation: tuple[np.ndarray, np.ndarray]
) -> None:
    recorder = Recorder()
    stations = [InspectionStation(name="cam", source="memory", queue_size=2)]
    images = validation[0][:8].repeat(20, axis=0)
    pipeline = InspectionPipeline(
        stations, engine, card, publisher=recorder, stats_interval_s=0.05, sources={"cam": MemorySource(images)}
    )
    with pipeline:
        assert pipeline.wait(60)
        time.sleep(0.1)
    stats = recorder.of("stats")
    assert stats, "no stats published"
    last = stats[-1]
    assert last["processed"] + last["dropped"] == len(images)
    assert last["fps"] > 0 and last["queue_policy"] == "drop_oldest"


def test_frame_queue_drop_oldest_unit() -> None:
    queue = FrameQueue(3, "drop_oldest")
    frames = [Frame(i, 0.0, 0, np.zeros((1, 1, 3), np.uint8), str(i)) for i in range(5)]
    for frame in frames:
        queue.put(frame)
    assert queue.dropped == 2 and len(queue) == 3
    assert [queue.get(0).frame_id for _ in range(3)] == [2, 3, 4]  # type: ignore[union-attr]
    queue.close()
    assert queue.get(None) is None and queue.finished


def test_cli_inspect_json(tmp_path: Path, card: ModelCard, validation: tuple[np.ndarray, np.ndarray]) -> None:
    from PIL import Image

    images, labels = validation
    for i in range(12):
        Image.fromarray(images[i]).save(tmp_path / f"{card.labels[labels[i]]}_{i:04d}.png")
    (tmp_path / "ok_9999.png").write_bytes(b"not a png")
    result = CliRunner().invoke(
        app,
        [
            "inspect",
            "--source",
            str(tmp_path),
            "--model",
            str(card.model_path),
            "--state-dir",
            str(tmp_path / "state"),
            "--alarm",
            "3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["processed"] == 12 and data["corrupt"] == 1
    assert sum(map(sum, data["confusion"])) == 12  # truth from the file names


def test_labelled_video_and_summary_render(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from edgeds.compile.tiny import write_tiny_model
    from edgeds.datasets import load_split
    from edgeds.inspection import labelled_video

    monkeypatch.setenv("EDGEDS_CACHE_DIR", str(tmp_path / "cache"))  # no stale split from another generator
    model = write_tiny_model(tmp_path / "tiny", validation_count=24)
    tiny = load_model_card(model)
    truth = labelled_video(tiny, tmp_path / "v.avi", limit=20)
    assert np.array_equal(truth, load_split(tiny, "validation")[1][:20])
    summary = run_inspection(str(tmp_path / "v.avi"), model=model, truth=truth, state_dir=tmp_path / "state")
    assert summary.processed == 20 and np.asarray(summary.confusion).sum() == 20
    console = Console(record=True, width=120)
    summary.render(console)
    text = console.export_text()
    assert "Confusion matrix" in text and "20 decided of 20 read" in text and "fps" in text


def test_stations_follow_an_engine_swap_without_losing_frames(
    tmp_path: Path, card: ModelCard, validation: tuple[np.ndarray, np.ndarray]
) -> None:
    """The agent swaps models by starting a new engine and draining the old one."""
    batching = Batching(max_batch_size=4)
    old = Engine("onnxruntime", card.model_path, options={"intra_op_num_threads": 1}, batching=batching).start()
    new = Engine("onnxruntime", card.model_path, options={"intra_op_num_threads": 1}, batching=batching).start()
    current = [old]
    images = validation[0][:8].repeat(25, axis=0)
    stations = [InspectionStation(name="cam", source="memory")]
    pipeline = InspectionPipeline(
        stations, lambda: current[0], card, state_dir=tmp_path, sources={"cam": FileLikeMemorySource(images)}
    )
    try:
        with pipeline:
            deadline = time.monotonic() + 30
            while pipeline.stations[0].stats()["processed"] < 40 and time.monotonic() < deadline:
                time.sleep(0.005)
            current[0] = new
            assert old.drain(10)
            assert pipeline.wait(60)
        stats = pipeline.stations[0].stats()
        assert stats["processed"] == len(images) and stats["errors"] == 0
        assert new.stats().inference_count > 0 and old.stats().inference_count >= 40
    finally:
        old.close()
        new.close()
