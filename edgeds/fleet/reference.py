"""Registry URLs and OCI artifact references: parsing, the naming rules of the OCI distribution
spec, and the one transport rule: plain HTTP only to a loopback registry.

A reference reads ``[http[s]://]HOST[:PORT]/REPOSITORY[:TAG][@sha256:HEX]``, as ``oras`` and
``docker`` write them. Without a scheme it is HTTPS, except for a loopback host (``127.0.0.0/8``,
``::1``, ``localhost``), which is plain HTTP: the development registry of the tests and of
``edgeds hil sim``. Standard library only.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import FleetError

_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


def is_loopback(hostname: str) -> bool:
    """Whether ``hostname`` (no port) is this machine: ``localhost`` or a loopback address."""
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RegistryAddress:
    """Where a registry answers: ``scheme`` (``http`` only for loopback) and ``host`` (``name[:port]``)."""

    scheme: str
    host: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def plain_http(self) -> bool:
        return self.scheme == "http"


def _address(scheme: str, netloc: str, given: str) -> RegistryAddress:
    parts = urlsplit(f"//{netloc}")
    try:
        hostname, _ = parts.hostname, parts.port  # .port raises on a port that is not a number
    except ValueError as exc:
        raise FleetError(f"registry {given!r}: {exc}") from exc
    if not hostname or parts.username is not None or parts.password is not None:
        raise FleetError(f"registry {given!r}: expected HOST[:PORT] (credentials do not go in the URL)")
    if scheme == "http" and not is_loopback(hostname):
        raise FleetError(f"registry {given!r}: plain HTTP is allowed only to a loopback address; use https://{netloc}")
    return RegistryAddress(scheme, netloc)


def parse_registry(url: str) -> RegistryAddress:
    """``https://HOST[:PORT]`` (or ``http://`` to a loopback address), nothing after the host."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise FleetError(f"registry {url!r}: expected http(s)://HOST[:PORT]")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise FleetError(f"registry {url!r}: expected http(s)://HOST[:PORT] with nothing after the host")
    return _address(parts.scheme, parts.netloc, url)


@dataclass(frozen=True)
class ArtifactRef:
    """One artifact in a registry, named by digest (``sha256:<hex>``) and/or tag."""

    registry: RegistryAddress
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        name = f"{self.registry.host}/{self.repository}"
        if self.digest:
            return f"{name}@{self.digest}"
        return f"{name}:{self.tag}" if self.tag else name

    def by_digest(self, digest: str) -> ArtifactRef:
        """The same artifact named by ``digest`` alone (what a device is told to fetch)."""
        return ArtifactRef(self.registry, self.repository, None, check_digest(digest))

    @property
    def manifest_reference(self) -> str:
        """The digest, else the tag, else ``latest``: the last part of a manifest URL."""
        return self.digest or self.tag or "latest"


def check_repository(name: str) -> str:
    if not _REPOSITORY.fullmatch(name) or len(name) > 255:
        raise FleetError(f"repository {name!r}: lowercase letters, digits and . _ - separators, '/' between parts")
    return name


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise FleetError(f"tag {tag!r}: letters, digits, '_', '.' and '-', at most 128, not starting with '.' or '-'")
    return tag


def check_digest(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise FleetError(f"digest {digest!r}: expected sha256: and 64 lowercase hex digits")
    return digest


def repository_for(model_name: str) -> str:
    """The default repository of a model: its name lowercased, other characters turned into ``-``."""
    name = re.sub(r"[^a-z0-9._/-]+", "-", model_name.lower())
    name = re.sub(r"[._-]*/[._-]*", "/", name).strip("._-/")
    return check_repository(name or "bundle")


def artifact_ref(registry: RegistryAddress, repository: str, *, tag: str | None = None) -> ArtifactRef:
    return ArtifactRef(registry, check_repository(repository), check_tag(tag) if tag is not None else None)


def parse_reference(text: str) -> ArtifactRef:
    """``[http[s]://]HOST[:PORT]/REPOSITORY[:TAG][@sha256:HEX]`` (see the module docstring)."""
    rest = text.strip()
    scheme: str | None = None
    for prefix in ("http://", "https://"):
        if rest.startswith(prefix):
            scheme, rest = prefix[:-3], rest[len(prefix) :]
    host, slash, path = rest.partition("/")
    if not slash or not path:
        raise FleetError(f"reference {text!r}: expected HOST[:PORT]/REPOSITORY[:TAG][@sha256:HEX]")
    if scheme is None:
        hostname = urlsplit(f"//{host}").hostname or ""
        scheme = "http" if is_loopback(hostname) else "https"
    address = _address(scheme, host, text)
    path, at, digest = path.partition("@")
    repository, colon, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "")
    return ArtifactRef(
        address,
        check_repository(repository),
        check_tag(tag) if colon else None,
        check_digest(digest) if at else None,
    )
