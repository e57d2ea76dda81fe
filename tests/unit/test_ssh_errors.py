"""Every exception paramiko and the socket layer can raise to ``edgeds.deploy.ssh`` is mapped to a
:class:`DeployError` subclass with a one-line message naming the device (no network).

The exception classes are enumerated from paramiko itself: a class a new paramiko release adds
fails :func:`test_every_paramiko_exception_class_has_a_decided_mapping` until its mapping is
decided here.
"""

from __future__ import annotations

import binascii
import importlib
import inspect
import logging
import pkgutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest

from edgeds.deploy.ssh import Endpoint, _mapped, _quietly, pinned_keys, vendor_errors
from edgeds.errors import ConnectionFailed, DeployError, HostKeyError

ENDPOINT = Endpoint("cam-3", "127.0.10.7", 2207, "edge", None, Path("/nonexistent/known_hosts"), 1.0)
HOST_ID = ENDPOINT.host_id

# modules that import only on Windows
_WINDOWS_ONLY = {"paramiko._winapi", "paramiko.win_pageant"}
# raised and caught inside paramiko's Transport; never reaches a caller
_INTERNAL = {"paramiko.packet.NeedRekeyException"}


def _paramiko_exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in the paramiko package, by ``module.Class``."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(paramiko.__path__, "paramiko."):
        if info.name in _WINDOWS_ONLY and sys.platform != "win32":
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__.startswith("paramiko"):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def _key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


def _rejected_unknown_host() -> BaseException:
    """What ``RejectPolicy`` raises for a host missing from the pinned known_hosts."""
    client = SimpleNamespace(_log=lambda level, msg: None)  # all the policy uses of its SSHClient
    try:
        paramiko.RejectPolicy().missing_host_key(client, HOST_ID, _key())
    except paramiko.SSHException as exc:
        caught: BaseException = exc
        return caught
    raise AssertionError("RejectPolicy accepted an unknown host")


def _auth_failure() -> BaseException:
    from paramiko.auth_strategy import AuthFailure, AuthResult, SourceResult

    result = AuthResult(None, [SourceResult("key /keys/edge", paramiko.AuthenticationException("denied"))])
    failure: BaseException = AuthFailure(result)
    return failure  # its str() spans lines


def _ssh(name: str) -> Callable[..., BaseException]:
    cls: Callable[..., BaseException] = getattr(paramiko.ssh_exception, name)
    return cls


# paramiko class -> (a real instance as paramiko raises it, the DeployError it must become)
CASES: dict[str, tuple[Callable[[], BaseException], type[DeployError]]] = {
    "paramiko.ssh_exception.SSHException": (
        lambda: paramiko.SSHException("Error reading SSH protocol banner"),
        ConnectionFailed,
    ),
    "paramiko.ssh_exception.AuthenticationException": (
        lambda: paramiko.AuthenticationException("Authentication failed."),
        ConnectionFailed,
    ),
    "paramiko.ssh_exception.PasswordRequiredException": (
        lambda: _ssh("PasswordRequiredException")("private key file is encrypted"),
        ConnectionFailed,
    ),
    "paramiko.ssh_exception.BadAuthenticationType": (
        lambda: _ssh("BadAuthenticationType")("Bad authentication type", ["password"]),
        ConnectionFailed,
    ),
    "paramiko.ssh_exception.PartialAuthentication": (
        lambda: _ssh("PartialAuthentication")(["publickey", "password"]),
        ConnectionFailed,
    ),
    "paramiko.ssh_exception.UnableToAuthenticate": (
        lambda: _ssh("UnableToAuthenticate")("no authentication method left"),
        ConnectionFailed,
    ),
    "paramiko.auth_strategy.AuthFailure": (_auth_failure, ConnectionFailed),
    "paramiko.ssh_exception.ChannelException": (
        lambda: _ssh("ChannelException")(2, "Connect failed"),
        ConnectionFailed,
    ),
    "paramiko.ssh_exception.BadHostKeyException": (
        lambda: paramiko.BadHostKeyException(HOST_ID, _key(), _key()),
        HostKeyError,
    ),
    "paramiko.ssh_exception.ProxyCommandFailure": (
        lambda: _ssh("ProxyCommandFailure")("nc 127.0.10.7 2207", "Broken pipe"),
        ConnectionFailed,
    ),
    "paramiko.ssh_exception.NoValidConnectionsError": (
        lambda: _ssh("NoValidConnectionsError")(
            {("127.0.10.7", 2207): ConnectionRefusedError(111, "Connection refused")}
        ),
        ConnectionFailed,
    ),
    "paramiko.ssh_exception.CouldNotCanonicalize": (
        lambda: _ssh("CouldNotCanonicalize")("cam-3"),
        ConnectionFailed,
    ),
    "paramiko.ssh_exception.ConfigParseError": (
        lambda: _ssh("ConfigParseError")("Unparsable line"),
        ConnectionFailed,
    ),
    "paramiko.ssh_exception.IncompatiblePeer": (
        lambda: _ssh("IncompatiblePeer")("Incompatible ssh peer (no acceptable kex algorithm)"),
        ConnectionFailed,
    ),
    "paramiko.ssh_exception.MessageOrderError": (
        lambda: _ssh("MessageOrderError")("Expected packet NEWKEYS, got SERVICE_ACCEPT"),
        ConnectionFailed,
    ),
    "paramiko.sftp.SFTPError": (lambda: paramiko.SFTPError("Garbage packet received"), ConnectionFailed),
    "paramiko.pkey.UnknownKeyType": (lambda: paramiko.UnknownKeyType("ssh-foo", b"\x00" * 8), ConnectionFailed),
    "paramiko.ber.BERException": (
        lambda: importlib.import_module("paramiko.ber").BERException("Unknown ber encoding type 5"),
        ConnectionFailed,
    ),
    "paramiko.hostkeys.InvalidHostKey": (
        lambda: importlib.import_module("paramiko.hostkeys").InvalidHostKey(
            f"{HOST_ID} ssh-ed25519 AAAA!", binascii.Error("Incorrect padding")
        ),
        HostKeyError,
    ),
    "paramiko.buffered_pipe.PipeTimeout": (
        lambda: importlib.import_module("paramiko.buffered_pipe").PipeTimeout(),
        ConnectionFailed,
    ),
}

# what the socket layer and the SFTP client raise besides paramiko's own classes
OTHER_CASES: dict[str, tuple[Callable[[], BaseException], type[DeployError]]] = {
    "unknown host (RejectPolicy)": (_rejected_unknown_host, HostKeyError),
    "TimeoutError (socket.timeout)": (lambda: TimeoutError("timed out"), ConnectionFailed),
    "socket.gaierror": (lambda: socket.gaierror(-2, "Name or service not known"), ConnectionFailed),
    "ConnectionRefusedError": (lambda: ConnectionRefusedError(111, "Connection refused"), ConnectionFailed),
    "ConnectionResetError": (lambda: ConnectionResetError(104, "Connection reset by peer"), ConnectionFailed),
    "EOFError": (EOFError, ConnectionFailed),
    "OSError (SFTP status)": (lambda: OSError(2, "No such file"), ConnectionFailed),
}

PARAMIKO_CLASSES = _paramiko_exception_classes()


def test_every_paramiko_exception_class_has_a_decided_mapping() -> None:
    undecided = sorted(set(PARAMIKO_CLASSES) - _INTERNAL - set(CASES))
    assert not undecided, f"paramiko raises new exception classes {undecided}: decide their DeployError in CASES"
    missing = [
        name
        for name in PARAMIKO_CLASSES
        if name not in _INTERNAL and not issubclass(PARAMIKO_CLASSES[name], vendor_errors())
    ]
    assert not missing, f"vendor_errors() does not cover {missing}"


def _check(exc: BaseException, expected: type[DeployError]) -> DeployError:
    with pytest.raises(DeployError) as caught, _mapped(ENDPOINT):
        raise exc
    err = caught.value
    assert type(err) is expected, f"{type(exc).__name__} became {type(err).__name__}: {err}"
    assert err.__cause__ is exc
    message = str(err)
    assert "\n" not in message and message.strip() == message
    assert message.startswith("cam-3 (edge@[127.0.10.7]:2207): "), message
    assert type(exc).__name__ in message or expected is HostKeyError
    return err


@pytest.mark.parametrize("name", sorted(n for n in CASES if n in PARAMIKO_CLASSES))
def test_paramiko_exception_is_mapped(name: str) -> None:
    make, expected = CASES[name]
    exc = make()
    assert isinstance(exc, PARAMIKO_CLASSES[name])
    _check(exc, expected)


@pytest.mark.parametrize("name", sorted(OTHER_CASES))
def test_socket_and_sftp_errors_are_mapped(name: str) -> None:
    make, expected = OTHER_CASES[name]
    _check(make(), expected)


def test_host_key_messages_say_what_to_do() -> None:
    changed = _check(paramiko.BadHostKeyException(HOST_ID, _key(), _key()), HostKeyError)
    assert "HOST KEY CHANGED" in str(changed) and "SHA256:" in str(changed)
    unknown = _check(_rejected_unknown_host(), HostKeyError)
    assert "not pinned" in str(unknown) and "edgeds enroll" in str(unknown)
    assert "timed out" in str(_check(TimeoutError("timed out"), ConnectionFailed))
    assert "key authentication failed" in str(_check(_auth_failure(), ConnectionFailed))


def test_deploy_errors_and_callback_errors_pass_through() -> None:
    own = ConnectionFailed("cam-3: no answer in 5s")
    with pytest.raises(ConnectionFailed) as caught, _mapped(ENDPOINT):
        raise own
    assert caught.value is own
    with pytest.raises(ZeroDivisionError), _mapped(ENDPOINT):  # e.g. a progress callback's bug
        raise ZeroDivisionError("progress callback")


def test_cleanup_logs_vendor_errors_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="edgeds.deploy.ssh"), _quietly(ENDPOINT, "closing SFTP"):
        raise EOFError
    record = caplog.records[-1]
    assert "cam-3: closing SFTP failed" in record.getMessage() and record.exc_info is not None
    with pytest.raises(ZeroDivisionError), _quietly(ENDPOINT, "closing SFTP"):
        raise ZeroDivisionError


def test_an_unparsable_pinned_key_is_a_host_key_error(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"{HOST_ID} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI!\n")
    with pytest.raises(HostKeyError, match="cannot read pinned host keys") as caught:
        pinned_keys(known, HOST_ID)
    assert "\n" not in str(caught.value)
