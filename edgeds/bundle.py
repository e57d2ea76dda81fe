"""Bundles: what is shipped to a device, built, signed, verified and loaded here.

A bundle is a directory (or a ``.tar`` of one)::

    manifest.json        the :class:`~edgeds.manifest.Manifest` (UTF-8 JSON, schema 2; schema 1 is read too)
    manifest.sig         ed25519 signature over the exact bytes of manifest.json (hex text or 64 raw bytes)
    model-card.yaml      copy of the model card
    artifacts/...        one file or directory per runtime, in ``manifest.artifacts`` order
    golden/inputs.npy    image models: a preprocessed input batch (in the artifact's layout)
    golden/outputs.npz   image models: the outputs the primary artifact gives for it, keyed by output name
    golden/extra_inputs.npz  image models with tensor inputs besides the image: their golden rows, by name
    golden/prompts.json  language models: the golden prompts with their greedy token ids
    tokenizer/ ...       language models: the checkpoint's tokenizer files and chat template

Every file except ``manifest.json`` and ``manifest.sig`` is listed in ``manifest.files`` with
its sha256 and size; :attr:`Bundle.digest` (sha256 of the manifest bytes) names the whole
content. :func:`verify_bundle` raises :class:`~edgeds.errors.BundleVerificationError`
whose ``reason`` is one of :data:`REASONS`. Verification order: archive safety, signature
(over the raw bytes, before the JSON is trusted), manifest schema, then every listed file,
then files nobody listed. Bundles hold regular files and directories only: links are refused.

A ``.tar`` is read with the semantics of :mod:`tarfile`'s ``data`` filter: members with
absolute paths, ``..`` components or links are rejected (``unsafe_archive``) before anything is
written.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from .errors import BundleError, BundleVerificationError, ConfigError
from .hashing import sha256_file
from .manifest import (
    GOLDEN_EXTRA_INPUTS,
    GOLDEN_INPUTS,
    GOLDEN_OUTPUTS,
    MANIFEST,
    ArtifactEntry,
    FileEntry,
    Manifest,
    manifest_digest,
    parse_manifest,
)
from .modelcard import AnyCard, LMCard, ModelCard, load_card
from .paths import is_safe_relative

SIGNATURE = "manifest.sig"
CARD = "model-card.yaml"
REASONS = (
    "checksum_mismatch",
    "unlisted_file",
    "missing_file",
    "bad_signature",
    "unsigned",
    "unsafe_archive",
    "malformed_manifest",
    "unsupported_schema",
)

PrivateKeyLike = Ed25519PrivateKey | str | Path
PublicKeyLike = Ed25519PublicKey | str | Path | bytes


# --------------------------------------------------------------------------- keys


def generate_keypair(directory: str | Path, name: str = "edgeds") -> tuple[Path, Path]:
    """Write a new ed25519 key pair: ``<name>.key`` (PKCS#8 PEM, mode 0600) and ``<name>.pub`` (PEM).

    Refuses to overwrite an existing private key.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    if private_path.exists():
        raise BundleError(f"{private_path} already exists; refusing to overwrite a private key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private_path, public_path


def load_private_key(key: PrivateKeyLike) -> Ed25519PrivateKey:
    """An ed25519 private key from a key object or a file (PKCS#8 PEM, or 32 raw bytes)."""
    if isinstance(key, Ed25519PrivateKey):
        return key
    path = Path(key)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read private key {path}: {exc}") from exc
    try:
        if len(data) == 32:
            return Ed25519PrivateKey.from_private_bytes(data)
        loaded = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path} is not an unencrypted ed25519 private key: {exc}") from exc
    if not isinstance(loaded, Ed25519PrivateKey):
        raise BundleError(f"{path} holds a {type(loaded).__name__}, not an ed25519 private key")
    return loaded


def load_public_key(key: PublicKeyLike) -> Ed25519PublicKey:
    """An ed25519 public key from a key object, raw 32 bytes, or a file (PEM, 32 raw bytes or 64 hex chars)."""
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, bytes):
        data, where = key, "<bytes>"
    else:
        path = Path(key)
        try:
            data, where = path.read_bytes(), str(path)
        except OSError as exc:
            raise BundleError(f"cannot read public key {path}: {exc}") from exc
    try:
        if len(data) == 32:
            return Ed25519PublicKey.from_public_bytes(data)
        stripped = data.strip()
        if len(stripped) == 64 and all(c in b"0123456789abcdefABCDEF" for c in stripped):
            return Ed25519PublicKey.from_public_bytes(bytes.fromhex(stripped.decode()))
        loaded = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        reason = str(exc).split(". ")[0]  # cryptography's messages go on with a FAQ link
        raise BundleError(f"{where} is not an ed25519 public key ({reason})") from exc
    if not isinstance(loaded, Ed25519PublicKey):
        raise BundleError(f"{where} holds a {type(loaded).__name__}, not an ed25519 public key")
    return loaded


# --------------------------------------------------------------------------- helpers


def _walk_files(root: Path) -> Iterator[Path]:
    """Every non-directory entry under ``root`` (links included, not followed), sorted."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(filenames):
            yield base / name
        for name in dirnames:
            if (base / name).is_symlink():
                yield base / name


def _file_entries(root: Path) -> list[FileEntry]:
    entries = []
    for file in _walk_files(root):
        rel = file.relative_to(root).as_posix()
        if rel in (MANIFEST, SIGNATURE):
            continue
        if file.is_symlink() or not file.is_file():
            raise BundleError(f"{file}: bundles hold regular files only")
        entries.append(FileEntry(path=rel, sha256=sha256_file(file), size=file.stat().st_size))
    return entries


def utc_now() -> str:
    """ISO 8601 UTC timestamp with seconds precision, as written to ``created_at``."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- build / sign


def build_bundle(
    out: str | Path,
    *,
    manifest: Mapping[str, Any],
    artifacts: Mapping[str, Path],
    card_file: Path,
    golden_inputs: np.ndarray | None = None,
    golden_outputs: Mapping[str, np.ndarray] | None = None,
    files: Mapping[str, Path | bytes] | None = None,
    private_key: PrivateKeyLike | None = None,
) -> Path:
    """Write a bundle directory at ``out`` (must not exist or be empty) and return it.

    ``manifest`` holds every :class:`~edgeds.manifest.Manifest` field except ``files`` (computed
    here) and the golden file paths (fixed); a schema-1 mapping (one ``backend``/``artifact``)
    is written as schema 2 with one artifact. ``artifacts`` maps a path relative to
    ``artifacts/`` to the source file or directory to copy; each artifact's ``path`` may be
    given relative to ``artifacts/`` or to the bundle root. ``golden_inputs``/``golden_outputs``
    are the tensor golden of an image model; ``files`` are further bundle files by
    bundle-relative path (source file or bytes: an LM's golden prompts, tokenizer files).
    Signed when ``private_key`` is given.
    """
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        raise BundleError(f"{root} exists and is not empty")
    root.mkdir(parents=True, exist_ok=True)
    for rel, source in artifacts.items():
        if not is_safe_relative(rel):
            raise BundleError(f"artifact path {rel!r} must be relative without '..'")
        dest = root / "artifacts" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if Path(source).is_dir():
            shutil.copytree(source, dest)
        else:
            shutil.copyfile(source, dest)
    for rel, content in (files or {}).items():
        if not is_safe_relative(rel) or rel in (MANIFEST, SIGNATURE, CARD):
            raise BundleError(f"bundle file path {rel!r} must be relative without '..' and not a reserved name")
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            dest.write_bytes(content)
        else:
            shutil.copyfile(content, dest)
    shutil.copyfile(card_file, root / CARD)
    data = dict(manifest)
    if golden_inputs is not None and golden_outputs is not None:
        (root / "golden").mkdir(exist_ok=True)
        np.save(root / GOLDEN_INPUTS, np.ascontiguousarray(golden_inputs), allow_pickle=False)
        outputs: dict[str, Any] = {k: np.ascontiguousarray(v) for k, v in golden_outputs.items()}
        np.savez(root / GOLDEN_OUTPUTS, **outputs)
        golden = dict(data.get("golden") or {})
        golden.update(inputs=GOLDEN_INPUTS, outputs=GOLDEN_OUTPUTS)
        data["golden"] = golden
    data.setdefault("created_at", utc_now())
    try:
        parsed = Manifest.model_validate(data)
    except ValidationError as exc:
        raise BundleError(f"invalid manifest: {exc}") from exc
    entries = []
    for entry in parsed.artifacts:
        path = entry.path if entry.path.startswith("artifacts/") else f"artifacts/{entry.path}"
        if not is_safe_relative(path) or not (root / path).exists():
            raise BundleError(f"manifest artifact {path!r} is not among the bundle's files")
        entries.append(entry.model_copy(update={"path": path}))
    parsed = parsed.model_copy(update={"artifacts": tuple(entries), "files": tuple(_file_entries(root))})
    parsed = parsed.model_copy(update={"schema_version": parsed.needed_schema()})
    (root / MANIFEST).write_bytes(Manifest.model_validate(parsed.model_dump()).to_json_bytes())
    if private_key is not None:
        sign_bundle(root, private_key)
    return root


def sign_bundle(path: str | Path, private_key: PrivateKeyLike) -> Path:
    """Write ``manifest.sig`` (hex of the raw 64-byte ed25519 signature) for a bundle directory."""
    root = Path(path)
    key = load_private_key(private_key)
    signature = key.sign((root / MANIFEST).read_bytes())
    (root / SIGNATURE).write_text(signature.hex() + "\n")
    return root / SIGNATURE


def pack_bundle(path: str | Path, tar_path: str | Path) -> Path:
    """Pack a bundle directory into a reproducible ``.tar`` (sorted, mtime 0, root-owned)."""
    root, tar_path = Path(path), Path(tar_path)
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for file in sorted(_walk_files(root), key=lambda p: p.relative_to(root).as_posix()):
            if file.is_symlink() or not file.is_file():
                raise BundleError(f"{file}: bundles hold regular files only")
            info = tarfile.TarInfo(file.relative_to(root).as_posix())
            info.size = file.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            with file.open("rb") as handle:
                tar.addfile(info, handle)
    return tar_path


# --------------------------------------------------------------------------- archives


def _check_member(member: tarfile.TarInfo, dest: Path) -> None:
    name = member.name
    if PurePosixPath(name).parts not in ((), (".",)) and not is_safe_relative(name):
        raise BundleVerificationError(
            "unsafe_archive", f"member {name!r} is not a safe relative path (absolute, '..' or a backslash)"
        )
    if member.issym() or member.islnk():
        target = member.linkname
        escapes = target.startswith("/") or not (dest / Path(name).parent / target).resolve().is_relative_to(
            dest.resolve()
        )
        kind = "escaping link" if escapes else "link"
        raise BundleVerificationError("unsafe_archive", f"member {name!r} is a {kind} to {target!r}")
    if not (member.isfile() or member.isdir()):
        raise BundleVerificationError("unsafe_archive", f"member {name!r} is not a regular file or directory")
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is not None:
        try:
            data_filter(member, str(dest))
        except tarfile.FilterError as exc:
            raise BundleVerificationError("unsafe_archive", f"member {name!r}: {exc}") from exc


def extract_bundle(tar_path: str | Path, dest: str | Path) -> Path:
    """Safely extract a bundle ``.tar`` into ``dest``; returns the bundle root inside it.

    Every member is checked before anything is written (``unsafe_archive`` on absolute paths,
    ``..``, links or special files); extraction then runs with the ``data`` filter. A tar
    whose files sit under one top-level directory is accepted too.
    """
    tar_path, dest = Path(tar_path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, dest)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python without PEP 706; members were checked above
                tar.extractall(dest, members=members)
    except tarfile.TarError as exc:
        reason = str(exc).splitlines()[0].rstrip(":")  # tarfile lists every method it tried below
        raise BundleVerificationError("unsafe_archive", f"{tar_path} is not a readable tar ({reason})") from exc
    if (dest / MANIFEST).is_file():
        return dest
    children = [c for c in dest.iterdir()]
    if len(children) == 1 and (children[0] / MANIFEST).is_file():
        return children[0]
    return dest


# --------------------------------------------------------------------------- verify / load


def _parse_signature(raw: bytes) -> bytes:
    if len(raw) == 64:
        return raw
    try:
        sig = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleVerificationError("bad_signature", f"{SIGNATURE} is neither 64 raw bytes nor hex") from exc
    if len(sig) != 64:
        raise BundleVerificationError("bad_signature", f"{SIGNATURE} holds {len(sig)} bytes, expected 64")
    return sig


def verify_signature(manifest_raw: bytes, signature_raw: bytes, public_key: PublicKeyLike) -> None:
    """Check ``manifest.sig``'s bytes against ``manifest.json``'s bytes under ``public_key``
    (``bad_signature`` when they do not match); the files themselves are not checked."""
    try:
        load_public_key(public_key).verify(_parse_signature(signature_raw), manifest_raw)
    except InvalidSignature as exc:
        raise BundleVerificationError(
            "bad_signature", f"{SIGNATURE} does not match {MANIFEST} under the given public key"
        ) from exc


def read_manifest(root: Path) -> Manifest:
    """Parse ``root/manifest.json`` of any known schema (no signature or file checks):
    ``malformed_manifest`` on failure, ``unsupported_schema`` for a newer schema."""
    path = root / MANIFEST
    if not path.is_file():
        raise BundleVerificationError("malformed_manifest", f"{root} has no {MANIFEST}")
    return parse_manifest(path.read_bytes())


def _verify_dir(root: Path, public_key: PublicKeyLike | None) -> Manifest:
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleVerificationError("malformed_manifest", f"{root} has no {MANIFEST}")
    if public_key is not None:
        key = load_public_key(public_key)
        sig_path = root / SIGNATURE
        if not sig_path.is_file():
            raise BundleVerificationError("unsigned", f"{root} has no {SIGNATURE}")
        verify_signature(manifest_path.read_bytes(), sig_path.read_bytes(), key)
    manifest = read_manifest(root)
    listed: set[str] = set()
    for entry in manifest.files:
        if not is_safe_relative(entry.path) or entry.path in (MANIFEST, SIGNATURE):
            raise BundleVerificationError("unsafe_archive", f"manifest lists an unsafe path {entry.path!r}")
        file = root / entry.path
        listed.add(entry.path)
        if file.is_symlink():
            raise BundleVerificationError("unsafe_archive", f"{entry.path} is a link")
        if not file.is_file():
            raise BundleVerificationError("missing_file", f"{entry.path} is listed in the manifest but missing")
        size = file.stat().st_size
        if size != entry.size:
            raise BundleVerificationError(
                "checksum_mismatch", f"{entry.path}: size {size} bytes, manifest says {entry.size}"
            )
        actual = sha256_file(file)
        if actual != entry.sha256:
            raise BundleVerificationError(
                "checksum_mismatch", f"{entry.path}: sha256 {actual[:16]}..., manifest says {entry.sha256[:16]}..."
            )
    for file in _walk_files(root):
        rel = file.relative_to(root).as_posix()
        if rel in (MANIFEST, SIGNATURE) and not file.is_symlink():
            continue
        if file.is_symlink():
            raise BundleVerificationError("unsafe_archive", f"{rel} is a link; bundles hold regular files only")
        if rel not in listed:
            raise BundleVerificationError("unlisted_file", f"{rel} is in the bundle but not in the manifest")
        if not stat.S_ISREG(file.stat().st_mode):
            raise BundleVerificationError("unsafe_archive", f"{rel} is not a regular file")
    unlisted = manifest.unlisted_artifacts(listed)
    if unlisted:
        raise BundleVerificationError("missing_file", f"artifact {unlisted[0]!r} is not listed")
    return manifest


def verify_bundle(path: str | Path, public_key: PublicKeyLike | None) -> Manifest:
    """Verify a bundle directory or ``.tar`` and return its manifest.

    With ``public_key`` the signature is required (``unsigned`` / ``bad_signature``); with
    ``None`` only integrity is checked (checksums, listing, archive safety), not authenticity.
    """
    path = Path(path)
    if path.is_dir():
        return _verify_dir(path, public_key)
    if not path.is_file():
        raise BundleError(f"no bundle at {path}")
    with tempfile.TemporaryDirectory(prefix="edgeds-verify-") as tmp:
        return _verify_dir(extract_bundle(path, tmp), public_key)


@dataclass
class Bundle:
    """An opened bundle: its root directory, parsed manifest and model card (of the bundle's task).

    Open one with :meth:`Bundle.open`. For a ``.tar`` the files live in a temporary extraction
    that :meth:`close` (or the context manager) removes; a directory bundle is used in place and
    never modified. One opened bundle is what every layer takes (compile output, deploy, runtime):
    nothing below the caller reopens the path.
    """

    root: Path
    manifest: Manifest
    model_card: AnyCard
    manifest_bytes: bytes = field(default=b"", repr=False)
    """``manifest.json`` exactly as read (and signed) when the bundle was opened."""
    signature: bytes | None = field(default=None, repr=False)
    """``manifest.sig`` as stored (64 raw bytes or hex text) when opened; None when unsigned."""
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: str | Path, public_key: PublicKeyLike | None = None, *, verify: bool = True) -> Bundle:
        """Open a bundle directory or ``.tar`` (extracted safely: unsafe members are refused first).

        With ``verify`` (the default) its integrity is checked and, given ``public_key``, its
        signature (see :func:`verify_bundle`); without, only the manifest and card are parsed.
        Raises :class:`BundleError` / :class:`BundleVerificationError` (with ``.reason``; a
        missing or invalid model card is ``missing_file`` / ``malformed_manifest``).
        """
        path = Path(path)
        tmp: tempfile.TemporaryDirectory[str] | None = None
        if path.is_dir():
            root = path
        elif path.is_file():
            tmp = tempfile.TemporaryDirectory(prefix="edgeds-bundle-")
            try:
                root = extract_bundle(path, tmp.name)
            except BaseException:
                tmp.cleanup()
                raise
        else:
            raise BundleError(f"no bundle at {path}")
        try:
            manifest = _verify_dir(root, public_key) if verify else read_manifest(root)
            card = _read_card(root / CARD, manifest)
            manifest_bytes = (root / MANIFEST).read_bytes()
            sig_path = root / SIGNATURE
            signature = sig_path.read_bytes() if sig_path.is_file() else None
        except BaseException:
            if tmp is not None:
                tmp.cleanup()
            raise
        return cls(root, manifest, card, manifest_bytes, signature, _tmp=tmp)

    @property
    def name(self) -> str:
        return self.manifest.model.name

    @property
    def version(self) -> int:
        """The bundle's monotonic version (devices refuse one not newer than what they run)."""
        return self.manifest.version

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def card(self) -> ModelCard:
        """The image model's card; a causal-lm bundle raises :class:`BundleError` (see :attr:`lm_card`)."""
        if not isinstance(self.model_card, ModelCard):
            raise BundleError(f"{self.root} is a bundle of task {self.manifest.task}: it has no image model card")
        return self.model_card

    @property
    def lm_card(self) -> LMCard:
        """The language model's card; any other task raises :class:`BundleError`."""
        if not isinstance(self.model_card, LMCard):
            raise BundleError(f"{self.root} is a bundle of task {self.manifest.task}, not causal-lm")
        return self.model_card

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of the manifest bytes as opened: names the whole bundle (the manifest
        lists every file's sha256), usable as an OCI reference."""
        return manifest_digest(self.manifest_bytes)

    def artifact_dir(self, index: int = 0) -> Path:
        """Artifact ``index`` of ``manifest.artifacts`` (a file or a directory) in this bundle."""
        return self.root / self.manifest.artifacts[index].path

    @property
    def artifact_path(self) -> Path:
        """The file the backend opens."""
        return self.root / self.manifest.artifact

    def verify(self, public_key: PublicKeyLike | None) -> Manifest:
        """Check integrity (and the signature under ``public_key``) now; see :func:`verify_bundle`."""
        return _verify_dir(self.root, public_key)

    def objects(self) -> dict[str, Path]:
        """Every listed file by its sha256 (what a device stores content-addressed).

        Raises :class:`BundleVerificationError` ``missing_file`` when a listed file is absent.
        """
        files = {entry.sha256: self.root / entry.path for entry in self.manifest.files}
        for sha, local in files.items():
            if not local.is_file():
                raise BundleVerificationError("missing_file", f"{local} (sha256 {sha[:12]}) is missing")
        return files

    def golden(self, artifact: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(inputs, {output name: reference outputs})`` for the conformance check of a tensor
        model's artifact ``artifact`` (the index the device opened: its own golden, in its layout,
        when it has one); a causal-lm bundle raises :class:`BundleError` (its golden is ``llm.golden``)."""
        if self.manifest.golden is None:
            raise BundleError(f"{self.root} is a bundle of task {self.manifest.task}: it has no tensor golden")
        golden = self.manifest.golden_for(artifact)
        inputs = np.load(self.root / golden.inputs, allow_pickle=False)
        with np.load(self.root / golden.outputs, allow_pickle=False) as npz:
            outputs = {name: npz[name] for name in npz.files}
        return inputs, outputs

    def golden_extra_inputs(self) -> dict[str, np.ndarray]:
        """The golden rows of the model's tensor inputs besides the image (card ``extra_inputs``),
        by input name; empty for a single-input model."""
        path = self.root / GOLDEN_EXTRA_INPUTS
        if not path.is_file():
            return {}
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}

    def close(self) -> None:
        """Remove the temporary extraction of a ``.tar`` (nothing for a directory). Idempotent."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_card(path: Path, manifest: Manifest) -> AnyCard:
    if not path.is_file():
        raise BundleVerificationError("missing_file", f"the bundle has no {CARD}")
    try:
        card = load_card(path, check_checkpoint=False)
    except ConfigError as exc:
        raise BundleVerificationError("malformed_manifest", f"{CARD}: {exc}") from exc
    if card.task != manifest.task:
        raise BundleVerificationError(
            "malformed_manifest", f"{CARD} is a {card.task} card, the manifest says {manifest.task}"
        )
    return card


def load_bundle(path: str | Path, public_key: PublicKeyLike | None = None, verify: bool = True) -> Bundle:
    """:meth:`Bundle.open` as a function."""
    return Bundle.open(path, public_key, verify=verify)


def artifact_line(entry: ArtifactEntry) -> str:
    """One artifact in words: runtime, precision, path, where it was gated and what the device
    resolves (``openvino int8 artifacts/model.xml: gated on the compile host (OpenVINO CPU);
    OpenVINO device HETERO:GPU,CPU resolved on the device``)."""
    text = f"{entry.runtime} {entry.precision} {entry.path}"
    if entry.gated is not None:
        if entry.gated.where == "device":
            text += ": gated on the device"
        else:
            text += ": gated on the compile host" + (f" ({entry.gated.device})" if entry.gated.device else "")
    if entry.resolved_on_device:
        text += f"; {entry.resolved_on_device} resolved on the device"
    if entry.require:
        text += "; required"
    return text


def describe(manifest: Manifest) -> dict[str, Any]:
    """A short summary of a manifest for ``edgeds bundle show``."""
    total = sum(f.size for f in manifest.files)
    return {
        "model": f"{manifest.model.name} {manifest.model.version}",
        "version": manifest.version,
        "created_at": manifest.created_at,
        "schema_version": manifest.schema_version,
        "task": manifest.task,
        "backend": manifest.backend,
        "precision": manifest.precision,
        "artifacts": [artifact_line(a) for a in manifest.artifacts],
        "device": manifest.device,
        "layout": manifest.layout,
        "artifact": manifest.artifact,
        "files": len(manifest.files),
        "bytes": total,
        "tools": dict(manifest.tools),
        "accuracy": manifest.accuracy.model_dump(),
        "requirements": manifest.requirements.model_dump(),
    }


__all__ = [
    "REASONS",
    "Bundle",
    "build_bundle",
    "describe",
    "extract_bundle",
    "generate_keypair",
    "load_bundle",
    "load_private_key",
    "load_public_key",
    "pack_bundle",
    "read_manifest",
    "sha256_file",
    "sign_bundle",
    "verify_bundle",
    "verify_signature",
]
