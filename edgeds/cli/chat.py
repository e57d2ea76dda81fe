"""``edgeds chat BUNDLE|URL``: a small interactive chat with a language model, token by token."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ._output import console_err


def chat(
    target: Annotated[
        str, typer.Argument(help="A language-model bundle (or model dir), or a server URL (http://...).")
    ],
    model: Annotated[str | None, typer.Option(help="Model to ask at URL (default: the first it serves).")] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="EDGEDS_API_KEY", help="Bearer key for the server at URL.")
    ] = None,
    tls_ca: Annotated[
        Path | None, typer.Option("--tls-ca", help="PEM certificate (or CA) the HTTPS server at URL must have.")
    ] = None,
    system: Annotated[str | None, typer.Option(help="System message that opens the conversation.")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="Longest answer in tokens (default: the model's).")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(min=0.0, max=2.0, help="0 = greedy (default: the model's).")
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(help="A bundle: only this LM runtime's artifact (default: its first that opens here)."),
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", "-k", help="ed25519 public key: verify the bundle first.")
    ] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads of the runtime (in process).")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each answer whole, as one JSON line {role, content}.")
    ] = False,
) -> None:
    """Chat with TARGET: type a line, read the answer as it is generated; the history is kept.

    '/reset' forgets the turns, '/exit' or end of input (Ctrl-D) quits. A turn that fails (too
    long for the context, refused, the server busy) prints one line and the session goes on. A URL is asked through the
    OpenAI API (any server that speaks it); a bundle is opened in this process.
    """
    from ..errors import InferenceError, RequestError, ServiceUnavailable
    from ..runtime.auth import client_tls_context
    from ..runtime.lm.client import ChatSession, LocalReplier, RemoteReplier, Replier
    from ..runtime.lm.sampling import Sampling

    engine = None
    replier: Replier
    if target.startswith(("http://", "https://")):
        tls = client_tls_context(tls_ca) if tls_ca is not None else None
        replier = RemoteReplier(target, model=model, api_key=api_key, tls=tls)
    else:
        from ..runtime.lm.loading import open_engine

        with console_err.status("opening the model..."):
            engine = open_engine(Path(target), public_key=key, runtime=runtime, threads=threads)
        replier = LocalReplier(engine)
    session = ChatSession(replier, system, Sampling(max_tokens=max_tokens, temperature=temperature))
    interactive = sys.stdin.isatty() and not as_json
    try:
        while True:
            if interactive:
                console_err.print("[bold]>[/] ", end="")
            line = sys.stdin.readline()
            if not line or line.strip() == "/exit":
                break
            text = line.strip()
            if not text:
                continue
            if text == "/reset":
                session.reset()
                continue
            try:
                if as_json:
                    answer = "".join(session.ask(text))
                    sys.stdout.write(json.dumps({"role": "assistant", "content": answer}) + "\n")
                else:
                    for piece in session.ask(text):
                        sys.stdout.write(piece)
                        sys.stdout.flush()
                    sys.stdout.write("\n")
            except (RequestError, InferenceError, ServiceUnavailable) as exc:
                if engine is not None and engine.closed:
                    raise  # the engine in this process is gone: nothing more can be answered
                # one turn failed (too long for the context, refused, server busy): the session goes on
                console_err.print(f"[red]{exc}[/] (the turn is dropped; /reset forgets the history)")
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        if engine is not None:
            engine.close()


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
