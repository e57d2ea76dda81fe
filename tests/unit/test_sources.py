"""Frame sources over real files with OpenCV / Pillow: corrupt frames, truncated files, a lost camera."""

from __future__ import annotations

import socket
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeds.datasets.surface import generate
from edgeds.errors import ConfigError
from edgeds.inspection.prep import FramePreprocessor
from edgeds.inspection.sources import (
    DirectorySource,
    LiveSource,
    SourceEvent,
    StreamSource,
    VideoFileSource,
    open_source,
    source_kind,
)
from edgeds.inspection.video import write_video
from edgeds.modelcard import InputSpec
from edgeds.preprocess import Preprocessor

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return generate(5, 24, 64)[0]


def read_all(source: object) -> list[tuple[int, np.ndarray]]:
    stop = threading.Event()
    out = []
    for frame in source.frames(stop):  # type: ignore[attr-defined]
        out.append((frame.frame_id, np.array(frame.image)))
        frame.release()
    return out


def corrupt_avi_frames(path: Path, which: list[int]) -> None:
    """Overwrite the payload of the given ``00dc`` video chunks (frame indices) with noise."""
    data = bytearray(path.read_bytes())
    movi = data.index(b"movi")
    chunks, at = [], movi
    while (at := data.find(b"00dc", at + 1)) != -1:
        chunks.append(at)
    rng = np.random.default_rng(0)
    for index in which:
        start = chunks[index]
        size = int.from_bytes(data[start + 4 : start + 8], "little")
        data[start + 8 : start + 8 + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def test_lossless_video_round_trips_bit_exactly(tmp_path: Path, images: np.ndarray) -> None:
    path = tmp_path / "v.avi"
    assert write_video(images, path, fps=30) == len(images)
    source = VideoFileSource(str(path))
    assert source.frame_count == len(images)
    frames = read_all(source)
    assert [i for i, _ in frames] == list(range(len(images)))
    assert all(np.array_equal(image, images[i]) for i, image in frames)
    assert source.pool.allocated <= 2  # decoded into pooled buffers, not one array per frame


def test_corrupt_video_frames_are_counted_and_skipped(tmp_path: Path, images: np.ndarray) -> None:
    path = tmp_path / "mjpg.avi"
    write_video(images, path, lossless=False)
    corrupt_avi_frames(path, [5, 11])
    events: list[SourceEvent] = []
    source = VideoFileSource(str(path), on_event=events.append)
    frames = read_all(source)
    ids = [i for i, _ in frames]
    assert source.stats.corrupt == 2
    assert ids == [i for i in range(len(images)) if i not in (5, 11)]  # ids still match positions
    for i, image in frames:  # MJPG is lossy: each frame is close to its own image only
        assert np.abs(image.astype(int) - images[i].astype(int)).mean() < 8
    assert sorted(e.frame_id for e in events if e.kind == "corrupt") == [5, 11]  # type: ignore[type-var]
    assert events[-1].kind == "end"


def test_truncated_video_counts_the_missing_tail(tmp_path: Path, images: np.ndarray) -> None:
    path = tmp_path / "t.avi"
    write_video(images, path, lossless=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    source = VideoFileSource(str(path))
    frames = read_all(source)
    assert 0 < len(frames) < len(images)
    assert len(frames) + source.stats.corrupt == len(images)


def test_directory_with_corrupt_and_truncated_images(tmp_path: Path, images: np.ndarray) -> None:
    for i, image in enumerate(images[:6]):
        Image.fromarray(image).save(tmp_path / f"{'ok' if i % 2 else 'pit'}_{i:03d}.png")
    (tmp_path / "pit_002.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # not an image
    good = (tmp_path / "ok_003.png").read_bytes()
    (tmp_path / "ok_003.png").write_bytes(good[: len(good) // 2])  # truncated
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    source = DirectorySource(str(tmp_path))
    stop = threading.Event()
    frames = list(source.frames(stop))
    # name order: ok_001 ok_003(truncated) ok_005 pit_000 pit_002(garbage) pit_004
    assert [f.frame_id for f in frames] == [0, 2, 3, 5]
    assert [f.label for f in frames] == ["ok", "ok", "pit", "pit"]
    assert source.stats.corrupt == 2 and source.stats.frames == 4
    assert np.array_equal(frames[2].image, images[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_unreachable_stream_retries_with_backoff_then_gives_up() -> None:
    events: list[SourceEvent] = []
    source = StreamSource(
        f"rtsp://127.0.0.1:{_free_port()}/line3",
        backoff_s=0.01,
        max_backoff_s=0.03,
        max_retries=3,
        on_event=events.append,
        open_timeout_s=2,
    )
    assert read_all(source) == []
    retries = [e.retry_in_s for e in events if e.kind == "retry"]
    assert retries == [0.01, 0.02, 0.03]  # doubling, capped
    assert source.stats.gave_up and source.stats.failed_opens == 4
    assert events[-1].kind == "gave_up"


def test_a_camera_that_disappears_is_reopened_and_reported(tmp_path: Path, images: np.ndarray) -> None:
    """A video file stands in for the device node: it vanishes, the source retries, it comes back."""
    path = tmp_path / "cam.avi"
    hidden = tmp_path / "gone.avi"
    write_video(images[:5], path)
    stop = threading.Event()
    events: list[SourceEvent] = []

    def on_event(event: SourceEvent) -> None:
        events.append(event)
        if event.kind == "disconnected" and not hidden.exists():
            path.rename(hidden)  # unplugged
        if event.kind == "retry" and sum(e.kind == "retry" for e in events) == 2:
            hidden.rename(path)  # plugged back in
        if event.kind == "reconnected":
            stop.set()

    source = LiveSource(str(path), backoff_s=0.01, max_read_failures=2, on_event=on_event)
    frames = []
    for frame in source.frames(stop):
        frames.append(frame.frame_id)
        frame.release()
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["opened", "disconnected"]
    assert kinds.count("retry") == 2 and "reconnected" in kinds
    assert source.stats.disconnects == 1 and source.stats.reconnects == 1
    assert len(frames) == 5


def test_source_kind_from_spec(tmp_path: Path) -> None:
    (tmp_path / "v.avi").write_bytes(b"")
    assert source_kind("0") == "camera"
    assert source_kind("/dev/video2") == "camera"
    assert source_kind("rtsp://127.0.0.1:8554/cam") == "stream"
    assert source_kind(str(tmp_path)) == "directory"
    assert source_kind(str(tmp_path / "v.avi")) == "video"
    with pytest.raises(ConfigError):
        open_source(str(tmp_path / "missing.avi"))


def _spec(resize: str = "stretch", layout: str = "NCHW", color_order: str = "RGB") -> InputSpec:
    return InputSpec.model_validate(
        {
            "name": "input",
            "layout": layout,
            "height": 32,
            "width": 32,
            "color_order": color_order,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "resize": resize,
        }
    )


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("color_order", ["RGB", "BGR"])
@pytest.mark.parametrize("bgr_view", [True, False])
def test_frames_at_model_size_match_offline_preprocessing_exactly(
    layout: str, color_order: str, bgr_view: bool
) -> None:
    spec = _spec(layout=layout, color_order=color_order)
    rgb = generate(9, 1, 32)[0][0]
    frame = np.ascontiguousarray(rgb[..., ::-1])[..., ::-1] if bgr_view else rgb  # what OpenCV sources yield
    out = np.full((2, *Preprocessor(spec).sample_shape), np.nan, np.float32)
    FramePreprocessor(spec).into(frame, out[1])
    assert np.array_equal(out[1], Preprocessor(spec).batch([rgb])[0])  # bit-identical to offline
    assert np.isnan(out[0]).all()  # wrote its own row only


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_resizing_frames_allocates_nothing_in_steady_state(resize: str) -> None:
    spec = _spec(resize, "NHWC")
    pre = FramePreprocessor(spec)
    bgr = np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    out = pre.buffer(1)
    pre.into(bgr[..., ::-1], out[0])
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(50):
            pre.into(bgr[..., ::-1], out[0])
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename") if stat.size_diff > 0)
    assert grown < 16_000  # one 32x32 float frame alone is 12 KB; 50 frames would be 600 KB
    expected = cv2.resize(np.ascontiguousarray(bgr[..., ::-1]), (32, 32), interpolation=cv2.INTER_AREA)
    if resize == "stretch":
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        assert np.allclose(out[0], (expected / 255 - mean) / std, atol=1e-5)
    else:  # 200x120 -> 32x19 centred, grey bars above and below
        grey = (114 / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
        assert np.allclose(out[0, 0], grey, atol=1e-5) and np.allclose(out[0, -1], grey, atol=1e-5)
        assert not np.allclose(out[0, 16], grey, atol=1e-2)  # the picture is in the middle
