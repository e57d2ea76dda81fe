"""One content-addressed blob fetched into a file: resumed from the bytes already there, checked
against its descriptor's size and sha256 before anyone reads it.

The transport is the caller's (:mod:`.oci` speaks HTTP to the registry): a :data:`RangeGet` opens
the blob from a byte offset and answers the HTTP status (206 when the server honoured the range,
200 when it sends the whole blob), the ``Content-Range`` header and the body's chunks. A file
left by an interrupted fetch is resumed; a file that fails the check is removed, so the next
fetch starts clean.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BundleVerificationError, FleetError

RangeGet = Callable[[int], tuple[int, "str | None", Iterable[bytes]]]
"""``get(offset) -> (status, content_range, chunks)``: the blob from byte ``offset`` on."""


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: media type, ``sha256:<hex>`` digest, size in bytes, title."""

    media_type: str
    digest: str
    size: int
    title: str = ""

    @property
    def name(self) -> str:
        """The title when the descriptor has one, else the digest: how errors name the blob."""
        return self.title or self.digest


@dataclass(frozen=True)
class Fetched:
    """What a fetch moved: ``resumed`` bytes were already on disk, ``fetched`` came over the wire."""

    path: Path
    resumed: int
    fetched: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _mismatch(path: Path, descriptor: Descriptor, why: str) -> BundleVerificationError:
    path.unlink(missing_ok=True)
    return BundleVerificationError("digest_mismatch", f"blob {descriptor.name}: {why} (tampered or corrupt): refused")


def fetch_blob(get: RangeGet, descriptor: Descriptor, path: Path) -> Fetched:
    """Bring ``path`` to the blob ``descriptor`` names and check it.

    Bytes already in ``path`` (a fetch that was cut) are kept and the rest is asked for with a
    range; a server that answers 200 instead sends the whole blob again. Raises
    :class:`BundleVerificationError` (``digest_mismatch``, ``path`` removed) when the bytes do not
    match the descriptor, :class:`FleetError` on any other answer than 200/206 (``path`` kept for
    the next try).
    """
    if not descriptor.digest.startswith("sha256:"):
        raise FleetError(f"blob {descriptor.name}: digest {descriptor.digest!r} is not sha256")
    have = path.stat().st_size if path.is_file() else 0
    if have > descriptor.size:
        path.unlink()
        have = 0
    fetched = 0
    if have < descriptor.size:
        status, content_range, chunks = get(have)
        if status == 206 and have and not (content_range or "").startswith(f"bytes {have}-"):
            raise FleetError(f"blob {descriptor.name}: asked for bytes {have}- and got {content_range!r}")
        if status not in (200, 206):
            raise FleetError(f"blob {descriptor.name}: the registry answered HTTP {status}")
        if status == 200:
            have = 0
        with path.open("r+b" if have else "wb") as handle:
            handle.seek(have)
            handle.truncate()
            for chunk in chunks:
                fetched += len(chunk)
                if have + fetched > descriptor.size:
                    handle.close()
                    raise _mismatch(path, descriptor, f"more than the {descriptor.size} bytes its descriptor says")
                handle.write(chunk)
    size = path.stat().st_size
    if size != descriptor.size:
        if size < descriptor.size:
            raise FleetError(f"blob {descriptor.name}: the transfer ended at {size} of {descriptor.size} bytes")
        raise _mismatch(path, descriptor, f"{size} bytes, its descriptor says {descriptor.size}")
    actual = _sha256(path)
    if actual != descriptor.digest:
        raise _mismatch(path, descriptor, f"sha256 {actual[7:23]}..., its descriptor says {descriptor.digest[7:23]}...")
    return Fetched(path, have, fetched)
