"""Who may call the inference server: API keys (bearer tokens) and the TLS context of its sockets.

:class:`ApiKeys` holds the accepted keys and checks a request's ``Authorization`` header against
them in constant time (:func:`hmac.compare_digest`, every key compared, no early exit). A key is
visible ASCII without spaces (what an ``Authorization: Bearer <key>`` header can carry); several
keys may be accepted at once, so a new one can be handed out before the old one is withdrawn.
Keys are never logged nor put in an error message.

Key sources (:func:`load_api_keys`): repeated ``--api-key`` values, a key file (one key a line;
blank lines and ``#`` comments ignored) and the environment variable ``EDGEDS_API_KEY`` (one key,
or several separated by commas).

:func:`server_tls_context` builds the server side of TLS from a PEM certificate (chain) and its
private key; :func:`client_tls_context` the client side that trusts exactly a given certificate
(or the CA that issued it).
"""

from __future__ import annotations

import hmac
import os
import ssl
from collections.abc import Iterable
from pathlib import Path

from ..errors import EdgedsError

API_KEY_ENV = "EDGEDS_API_KEY"


# Health routes: answered without a key, so a load balancer or supervisor can probe them.
HEALTH_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})


class ApiKeys:
    """The accepted API keys (immutable). Empty means no key is asked for."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[str] = ()) -> None:
        checked: list[bytes] = []
        for key in keys:
            if not key or not key.isascii() or not key.isprintable() or " " in key:
                raise EdgedsError("an API key must be visible ASCII characters without spaces (not shown here)")
            checked.append(key.encode("ascii"))
        self._keys = tuple(dict.fromkeys(checked))

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:  # never the keys themselves
        return f"ApiKeys({len(self._keys)} key(s))"

    def accepts(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries one of the keys (``Bearer <key>``;
        the scheme's case does not matter). Compares with every key, in constant time per key."""
        if authorization is None:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        presented = token.strip().encode("latin-1")
        found = False
        for key in self._keys:
            found |= hmac.compare_digest(presented, key)
        return found


def read_key_file(path: str | Path) -> list[str]:
    """The keys of a key file: one a line, blank lines and ``#`` comments ignored. EdgedsError when
    the file cannot be read or holds no key."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgedsError(f"cannot read the API key file {path}: {exc}") from exc
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise EdgedsError(f"the API key file {path} holds no key")
    return keys


def load_api_keys(keys: Iterable[str] = (), key_file: str | Path | None = None, *, environ: bool = True) -> ApiKeys:
    """The keys given, those of ``key_file`` and (with ``environ``) those of ``$EDGEDS_API_KEY``."""
    found = list(keys)
    if key_file is not None:
        found += read_key_file(key_file)
    if environ:
        found += [part.strip() for part in os.environ.get(API_KEY_ENV, "").split(",") if part.strip()]
    return ApiKeys(found)


def server_tls_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or later) from a PEM certificate chain and its private key;
    EdgedsError when they cannot be loaded or do not match."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(Path(cert).expanduser(), Path(key).expanduser())
    except (OSError, ssl.SSLError) as exc:
        raise EdgedsError(f"cannot load the TLS certificate {cert} with its key {key}: {exc}") from exc
    return context


def client_tls_context(trusted: str | Path) -> ssl.SSLContext:
    """A client TLS context that trusts ``trusted`` (PEM): a CA, or the server's own certificate
    (pinned: accepted as a trust anchor even when a CA issued it). The host name is not checked:
    the trust anchor already names which server is meant (a device's certificate seldom lists the
    loopback address a health check dials)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(Path(trusted).expanduser()))
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


__all__ = ["API_KEY_ENV", "ApiKeys", "client_tls_context", "load_api_keys", "read_key_file", "server_tls_context"]
