"""``edgeds deploy [MODEL | BUNDLE] --target T``: compile if needed, then a verified, atomic fleet rollout."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ._output import JSON_OPTION, CardOption, console, console_err, emit, table

STATUS_STYLE = {
    "SUCCEEDED": "green",
    "REJECTED": "red",
    "FAILED_NO_STATE_CHANGE": "yellow",
    "FAILED_ROLLBACK_COMPLETE": "yellow",
    "FAILED_UNABLE_TO_ROLLBACK": "bold red",
}


@contextmanager
def host_progress(hosts: list[str], enabled: bool) -> Iterator[Any]:
    """One rich bar per host (stderr): phase text, upload bytes as the bar."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    if not enabled:
        yield lambda host, event, data: None
        return
    bars = Progress(
        TextColumn("{task.fields[host]:<16}"),
        TextColumn("{task.description:<22}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=console_err,
    )
    tasks = {h: bars.add_task("waiting", total=None, host=h) for h in hosts}
    lock = threading.Lock()

    def update(host: str, event: str, data: dict[str, Any]) -> None:
        with lock:
            task = tasks[host]
            if event == "upload_bytes":
                bars.update(task, completed=data["done"], total=data["total"] or None)
            elif event == "done":
                bars.update(task, description=str(data.get("status")))
            else:
                bars.update(task, description=event)

    with bars:
        yield update


def _bundle_source(source: Path, target: str, key: Path | None, version: int | None, card: Path | None) -> Path:
    """``source`` itself for a bundle; for an ONNX model, the bundle compiled for the target's profile
    (with ``card`` as its model card when given)."""
    if source.is_dir() or source.suffix == ".tar":
        if card is not None:
            raise typer.BadParameter(
                "a bundle carries its model card: --card goes with an ONNX model", param_hint="--card"
            )
        return source
    if source.suffix == ".onnx":
        from ..compile import compile_model
        from ..config import load_target, resolve_target_profile

        profile = resolve_target_profile(load_target(target))
        console_err.print(f"compiling {source} for profile {profile.name} ...")
        return Path(compile_model(source, profile, key=key, version=version, card=card).bundle)
    raise typer.BadParameter(f"{source} is neither a bundle (directory or .tar) nor an ONNX model")


def deploy(
    source: Annotated[Path, typer.Argument(help="A bundle (directory or .tar), or an ONNX model to compile first.")],
    target: str = typer.Option(..., "--target", "-t", help="Target name or YAML path."),
    hosts: Annotated[list[str] | None, typer.Option("--host", help="Only these hosts (repeatable).")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="Signing key when compiling a model.")] = None,
    card: CardOption = None,
    version: int | None = typer.Option(None, "--version", help="Bundle version when compiling a model."),
    requests: int = typer.Option(50, "--requests", min=1, help="Health check: requests for the p99 bound."),
    allow_downgrade: bool = typer.Option(False, "--allow-downgrade", help="Accept a version not newer."),
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="Local target: trust this publisher key (.pub) on this machine first "
            "(default when compiling with --key: that key's public half).",
        ),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Upload what each device lacks, verify there, flip `current`, reload the agent, health-check, commit.

    Canary first, then batches (the target's rollout policy). Each host ends SUCCEEDED,
    FAILED_NO_STATE_CHANGE, FAILED_ROLLBACK_COMPLETE, FAILED_UNABLE_TO_ROLLBACK or REJECTED.
    Exit code 1 unless every host SUCCEEDED. The local target (this machine, no SSH) installs
    under its install_dir and starts the agent as a background process of this user when it
    does not run.
    """
    from ..deploy.api import deploy_bundle
    from ..deploy.local_agent import public_pem
    from ..deploy.options import DeployOptions
    from ..deploy.targets import host_plans, resolve_target

    loaded, path = resolve_target(target)
    names = [p.host.name for p in host_plans(loaded, path, hosts or None)]
    if public_key is not None and not loaded.local:
        raise typer.BadParameter(
            "a remote device trusts keys through `edgeds device setup --public-key`", param_hint="--public-key"
        )
    trusted: bytes | None = None
    if public_key is not None:
        try:
            trusted = public_key.read_bytes()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {public_key}: {exc.strerror}", param_hint="--public-key") from exc
    elif loaded.local and key is not None and source.suffix == ".onnx":
        trusted = public_pem(key)  # a bundle signed here with --key: this machine trusts that key
    bundle_path = _bundle_source(source, target, key, version, card)
    options = DeployOptions(allow_downgrade=allow_downgrade, health_requests=requests)
    with host_progress(names, console_err.is_terminal) as progress:
        result = deploy_bundle(bundle_path, target, hosts=hosts, options=options, progress=progress, public_key=trusted)
    model, bundle_version = result.model, result.version

    data = {
        "bundle": str(bundle_path),
        "model": model,
        "version": bundle_version,
        "aborted": result.aborted,
        "abort_reason": result.abort_reason,
        "waves": result.waves,
        "seconds": result.seconds,
        "counts": result.counts(),
        "hosts": result.hosts,
    }

    def human() -> None:
        rows = [
            [
                h.host,
                f"[{STATUS_STYLE.get(h.status, '')}]{h.status}[/]",
                h.release or "",
                "yes" if h.already_installed else "",
                h.uploaded_bytes,
                f"{h.seconds:.1f}",
                escape(_message(h)),
            ]
            for h in result.hosts
        ]
        console.print(
            table(
                f"Deploy {model} v{bundle_version} to {loaded.name}",
                ["host", "status", "release", "already", "uploaded B", "time s", "message"],
                rows,
            )
        )
        if result.aborted:
            console.print(f"[bold red]rollout aborted:[/] {escape(result.abort_reason)}")

    emit(data, as_json, human)
    if not result.succeeded:
        raise typer.Exit(1)


def _message(host: Any) -> str:
    """The host's message, and for a release that serves by falling back, what it runs and why."""
    opened = host.details.get("opened") or {}
    if not opened.get("fallback"):
        return str(host.message)
    runs = f"runs {opened.get('runtime')} {opened.get('precision') or ''}".strip()
    return "; ".join(x for x in (host.message, f"{runs} (fallback: {opened['fallback']})") if x)


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
