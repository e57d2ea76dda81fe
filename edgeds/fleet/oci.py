"""A signed bundle as an OCI artifact: publish it to a registry, pull it back by digest, verified.

One OCI image manifest holds three layers with edgeds' own media types: the bundle packed as one
tar (:func:`edgeds.bundle.pack_bundle`), and its ``manifest.json`` and ``manifest.sig`` alone, so
a puller checks the signature (and that it knows the schema) before it fetches the large layer.
The config blob is a small JSON document of the same facts as the manifest annotations: model
name and version, bundle version, profile, schema and the bundle digest
(:func:`edgeds.manifest.manifest_digest`). A registry without the OCI 1.1 referrers API (CNCF
distribution 2.8) serves it as it is.

Pulling (:func:`pull_bundle`) fetches by digest into a hidden staging directory beside the
destination (``.<name>.pull-<digest12>``), checks every blob's size and sha256, the manifest
layer against the tar's, the signature under the caller's key and the whole bundle
(:func:`edgeds.bundle.verify_bundle`), then renames the bundle into place. A check that fails
removes the staging directory (:class:`~edgeds.errors.BundleVerificationError`); a transfer cut
short (:class:`~edgeds.errors.FleetError`) keeps the blobs fetched so far, and the next pull of
the same digest resumes them with HTTP ``Range`` requests. The destination is written only whole.

``oras`` (PyPI ``oras``, the ``fleet`` extra) is imported here only, and only when used.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..bundle import PublicKeyLike, extract_bundle, pack_bundle, verify_bundle, verify_signature
from ..errors import BundleVerificationError, FleetError
from ..manifest import MANIFEST, Manifest, manifest_digest, parse_manifest
from .blobs import Descriptor, Fetched, RangeGet, fetch_blob
from .reference import ArtifactRef, RegistryAddress, artifact_ref, parse_reference, parse_registry, repository_for

if TYPE_CHECKING:
    import requests
    from oras.provider import Registry

SIGNATURE = "manifest.sig"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.edgeds.bundle.config.v1+json"
MEDIA_BUNDLE = "application/vnd.edgeds.bundle.v1.tar"
MEDIA_MANIFEST = "application/vnd.edgeds.manifest.v1+json"
MEDIA_SIGNATURE = "application/vnd.edgeds.signature.v1"
ANNOTATION_PREFIX = "io.edgeds."
INSTALL_HINT = "pip install 'edgeds[fleet]'"
TIMEOUT_S = 10.0


def bundle_annotations(manifest: Manifest, digest: str) -> dict[str, str]:
    """The OCI manifest annotations of a bundle (all strings, as the spec asks)."""
    profile = manifest.profile.get("name")
    return {
        ANNOTATION_PREFIX + "model.name": manifest.model.name,
        ANNOTATION_PREFIX + "model.version": manifest.model.version,
        ANNOTATION_PREFIX + "bundle.version": str(manifest.version),
        ANNOTATION_PREFIX + "bundle.digest": digest,
        ANNOTATION_PREFIX + "bundle.schema": str(manifest.schema_version),
        ANNOTATION_PREFIX + "profile": str(profile) if profile is not None else "",
        ANNOTATION_PREFIX + "task": manifest.task,
    }


@dataclass(frozen=True)
class Published:
    """A pushed bundle: ``reference`` names it by OCI manifest digest; ``tagged`` by its tag."""

    reference: ArtifactRef
    tagged: ArtifactRef
    bundle_digest: str
    manifest: Manifest
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": str(self.reference),
            "tagged": str(self.tagged),
            "digest": self.reference.digest,
            "bundle_digest": self.bundle_digest,
            "model": self.manifest.model.name,
            "model_version": self.manifest.model.version,
            "version": self.manifest.version,
            "size_bytes": self.size,
        }


@dataclass(frozen=True)
class Pulled:
    """A pulled, verified bundle at ``path``; ``resumed`` bytes came from an earlier cut pull."""

    reference: ArtifactRef
    path: Path
    manifest: Manifest
    fetched: int
    resumed: int


def _client(registry: RegistryAddress) -> Registry:
    try:
        from oras.provider import Registry
    except ImportError as exc:
        raise FleetError(f"publishing to an OCI registry needs oras ({exc}): {INSTALL_HINT}") from exc
    return Registry(hostname=registry.host, insecure=registry.plain_http)


def _ping(client: Registry, registry: RegistryAddress) -> None:
    """Fail fast and in one line when the registry does not answer (oras itself retries for minutes)."""
    import requests

    try:
        response = client.session.get(f"{registry.url}/v2/", timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        raise FleetError(f"registry {registry.url} cannot be reached: {type(exc).__name__}") from exc
    if response.status_code not in (200, 401):
        raise FleetError(f"{registry.url} is not an OCI registry: GET /v2/ answered HTTP {response.status_code}")


# --------------------------------------------------------------------------- publish


def publish_bundle(
    bundle: str | Path,
    registry: str,
    *,
    repository: str | None = None,
    tag: str | None = None,
    public_key: PublicKeyLike | None = None,
) -> Published:
    """Push a signed bundle (directory or ``.tar``) to ``registry`` (``https://HOST[:PORT]``, or
    ``http://`` on loopback) as ``repository`` (default: the model name) tagged ``tag`` (default
    ``v<bundle version>``). The bundle is verified first: checksums and listing always, the
    signature under ``public_key`` when given; an unsigned bundle is refused (``unsigned``)."""
    address = parse_registry(registry)
    source = Path(bundle)
    with tempfile.TemporaryDirectory(prefix="edgeds-publish-") as tmp_name:
        tmp = Path(tmp_name)
        if not source.is_dir() and not source.is_file():
            raise FleetError(f"no bundle at {source}")
        root = source if source.is_dir() else extract_bundle(source, tmp / "bundle")
        manifest = verify_bundle(root, public_key)
        if not (root / SIGNATURE).is_file():
            raise BundleVerificationError("unsigned", f"{source} has no {SIGNATURE}: sign it before publishing")
        target = artifact_ref(
            address,
            repository if repository is not None else repository_for(manifest.model.name),
            tag=tag if tag is not None else f"v{manifest.version}",
        )
        layers = tmp / "layers"
        layers.mkdir()
        tar = pack_bundle(root, layers / "bundle.tar")
        shutil.copyfile(root / MANIFEST, layers / MANIFEST)
        shutil.copyfile(root / SIGNATURE, layers / SIGNATURE)
        digest = manifest_digest((root / MANIFEST).read_bytes())
        notes = bundle_annotations(manifest, digest)
        config = tmp / "config.json"
        config.write_text(json.dumps(notes, sort_keys=True))
        client = _client(address)
        _ping(client, address)
        response = _push(client, target, layers, config, notes)
        oci_digest = response.headers.get("Docker-Content-Digest", "")
        if not oci_digest.startswith("sha256:"):
            raise FleetError(f"{address.url} accepted the manifest but named no digest (Docker-Content-Digest)")
        return Published(target.by_digest(oci_digest), target, digest, manifest, tar.stat().st_size)


def _push(
    client: Registry, target: ArtifactRef, layers: Path, config: Path, notes: dict[str, str]
) -> requests.Response:
    import requests

    files = [
        f"{layers / MANIFEST}:{MEDIA_MANIFEST}",
        f"{layers / SIGNATURE}:{MEDIA_SIGNATURE}",
        f"{layers / 'bundle.tar'}:{MEDIA_BUNDLE}",
    ]
    try:
        response: requests.Response = client.push(
            target=f"{target.registry.host}/{target.repository}:{target.tag}",
            files=files,
            manifest_config=f"{config}:{MEDIA_CONFIG}",
            manifest_annotations=notes,
            disable_path_validation=True,
            quiet=True,
        )
    except (requests.RequestException, ValueError, OSError) as exc:  # oras: ValueError for a non-2xx answer
        raise FleetError(f"pushing to {target} failed: {exc}") from exc
    return response


# --------------------------------------------------------------------------- pull


def _get(client: Registry, url: str, headers: dict[str, str], *, stream: bool = False) -> requests.Response:
    import requests

    try:
        response: requests.Response = client.do_request(
            url, "GET", headers={**client.headers, **headers}, stream=stream
        )
    except (requests.RequestException, ValueError) as exc:
        raise FleetError(f"GET {url} failed: {exc}") from exc
    return response


def _range_get(client: Registry, url: str) -> RangeGet:
    import requests

    def get(offset: int) -> tuple[int, str | None, Iterable[bytes]]:
        response = _get(client, url, {"Range": f"bytes={offset}-"} if offset else {}, stream=True)

        def chunks() -> Iterator[bytes]:
            try:
                yield from response.iter_content(chunk_size=1 << 20)
            except requests.RequestException as exc:
                raise FleetError(f"GET {url} was cut: {exc}") from exc
            finally:
                response.close()

        return response.status_code, response.headers.get("Content-Range"), chunks()

    return get


def _descriptors(raw: dict[str, Any], ref: ArtifactRef) -> dict[str, Descriptor]:
    """The three layers by media type; FleetError when the manifest is not an edgeds bundle's."""
    config = raw.get("config") or {}
    if raw.get("mediaType", OCI_MANIFEST) != OCI_MANIFEST or config.get("mediaType") != MEDIA_CONFIG:
        raise FleetError(f"{ref} is not an edgeds bundle (config media type {config.get('mediaType')!r})")
    found: dict[str, Descriptor] = {}
    for layer in raw.get("layers") or ():
        media = layer.get("mediaType")
        if media in (MEDIA_BUNDLE, MEDIA_MANIFEST, MEDIA_SIGNATURE):
            if media in found:
                raise FleetError(f"{ref} holds two layers of media type {media}")
            title = (layer.get("annotations") or {}).get("org.opencontainers.image.title", "")
            try:
                found[media] = Descriptor(media, str(layer["digest"]), int(layer["size"]), str(title))
            except (KeyError, TypeError, ValueError) as exc:
                raise FleetError(f"{ref}: a layer without a valid digest and size ({exc})") from exc
    missing = [m for m in (MEDIA_MANIFEST, MEDIA_SIGNATURE, MEDIA_BUNDLE) if m not in found]
    if missing:
        raise FleetError(f"{ref} is not an edgeds bundle: no layer of media type {missing[0]}")
    return found


def _fetch_manifest(client: Registry, ref: ArtifactRef) -> dict[str, Any]:
    url = f"{ref.registry.url}/v2/{ref.repository}/manifests/{ref.manifest_reference}"
    response = _get(client, url, {"Accept": OCI_MANIFEST})
    if response.status_code == 404:
        raise FleetError(f"{ref} does not exist in the registry")
    if response.status_code != 200:
        raise FleetError(f"GET {url} answered HTTP {response.status_code}")
    body = response.content
    if ref.digest and manifest_digest(body) != ref.digest:
        raise BundleVerificationError("digest_mismatch", f"the OCI manifest of {ref} does not hash to its digest")
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise FleetError(f"{ref}: the OCI manifest is not JSON ({exc})") from exc
    if not isinstance(parsed, dict):
        raise FleetError(f"{ref}: the OCI manifest is not a JSON object")
    return parsed


def resolve(reference: str | ArtifactRef) -> ArtifactRef:
    """The reference named by its OCI manifest digest (a tag is looked up; a digest is kept)."""
    ref = parse_reference(reference) if isinstance(reference, str) else reference
    if ref.digest:
        return ref
    client = _client(ref.registry)
    _ping(client, ref.registry)
    url = f"{ref.registry.url}/v2/{ref.repository}/manifests/{ref.manifest_reference}"
    response = _get(client, url, {"Accept": OCI_MANIFEST})
    if response.status_code != 200:
        raise FleetError(f"{ref} does not exist in the registry (HTTP {response.status_code})")
    return ref.by_digest(manifest_digest(response.content))


def pull_bundle(reference: str | ArtifactRef, dest: str | Path, public_key: PublicKeyLike) -> Pulled:
    """Fetch the bundle ``reference`` names (by digest; a tag is resolved first) into ``dest`` (which
    must not exist), verified under ``public_key``: see the module docstring for the order and what
    is left behind on failure."""
    ref = resolve(reference)
    digest = ref.digest or ""
    dest = Path(dest)
    if dest.exists():
        raise FleetError(f"{dest} exists already: pull into a new directory")
    client = _client(ref.registry)
    staging = dest.parent / f".{dest.name}.pull-{digest[7:19]}"
    blobs = staging / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    try:
        pulled = _pull_into(client, ref, staging, dest, public_key)
    except BundleVerificationError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except BaseException:
        shutil.rmtree(staging / "bundle", ignore_errors=True)  # the blobs stay for the next pull to resume
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return pulled


def _pull_into(client: Registry, ref: ArtifactRef, staging: Path, dest: Path, key: PublicKeyLike) -> Pulled:
    layers = _descriptors(_fetch_manifest(client, ref), ref)
    moved: list[Fetched] = []

    def fetch(media: str) -> Path:
        descriptor = layers[media]
        url = f"{ref.registry.url}/v2/{ref.repository}/blobs/{descriptor.digest}"
        moved.append(fetch_blob(_range_get(client, url), descriptor, staging / "blobs" / descriptor.digest[7:]))
        return moved[-1].path

    manifest_raw = fetch(MEDIA_MANIFEST).read_bytes()
    verify_signature(manifest_raw, fetch(MEDIA_SIGNATURE).read_bytes(), key)
    parse_manifest(manifest_raw)  # a schema this edgeds does not know is refused before the large fetch
    tar = fetch(MEDIA_BUNDLE)
    shutil.rmtree(staging / "bundle", ignore_errors=True)
    root = extract_bundle(tar, staging / "bundle")
    if (root / MANIFEST).read_bytes() != manifest_raw:
        raise BundleVerificationError("layer_mismatch", f"{ref}: the bundle's {MANIFEST} differs from its layer")
    manifest = verify_bundle(root, key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(root, dest)
    return Pulled(ref, dest, manifest, sum(f.fetched for f in moved), sum(f.resumed for f in moved))
