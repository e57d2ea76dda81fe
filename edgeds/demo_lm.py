"""``make demo``'s language-model trip: the shipped shift assistant from checkpoint to answers.

1. compile ``models/shift-assistant`` for the ``local`` target's profile: its ``llm:`` chain (INT4
   first) behind the quality gate, on the first :data:`GATE_PROMPTS` prompts of the card's
   evaluation split (the whole split is the benchmark's job), into a signed bundle;
2. open the bundle, verified with the key, and serve it with the OpenAI API on loopback;
3. ask it about shifts it has never seen (examples of :data:`DEMO_SEED`, a seed no other split
   uses) with the real ``openai`` client, the first answer streamed as it comes, and score each
   answer with the card's metric (every fact stated exactly, no other number);
4. the engine's own figures: tokens, time to first token, KV cache.

The compile caches its exports and evaluations by fingerprint, so a second demo starts serving
within seconds. Everything started here is stopped before :func:`lm_trip` returns.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from . import config
from .cli._output import table
from .datasets import shift_reports

SHIPPED_LM = config.REPO_ROOT / "models" / "shift-assistant"
GATE_PROMPTS = 32
DEMO_SEED = 20261207
QUESTIONS = 6
PASS_SHARE = 0.8  # the shipped LM states every fact in 99.6 % of held-out answers at INT4


def lm_trip(work: Path, private_key: Path, public_key: Path, console: Console) -> bool:
    """Compile, serve and question the shipped LM (stages above); True when at least
    :data:`PASS_SHARE` of the answers state their facts exactly."""
    import openai

    from .cli._progress import progress_callback
    from .compile import compile_model
    from .runtime.lm.loading import open_engine
    from .runtime.lm.server import LMServer

    profile = config.resolve_target_profile(config.load_target("local"))
    console.rule(f"language model: compile {SHIPPED_LM.name} for {profile.name}")
    with progress_callback() as on_progress:
        result = compile_model(
            SHIPPED_LM,
            profile,
            out=work / "lm-bundle",
            key=private_key,
            progress=on_progress,
            validation_limit=GATE_PROMPTS,
        )
    rows = [[escape(c) for c in row] for row in result.report.rows()]
    console.print(table(f"Compile report ({result.report.seconds:.1f} s)", result.report.columns(), rows))
    console.print(
        f"bundle: [bold]{result.bundle}[/] ({result.backend} {result.precision}, signed: {result.signed}); "
        f"quality gate on the first {GATE_PROMPTS} evaluation prompts"
    )

    console.rule("language model: serve with the OpenAI API")
    examples = shift_reports.generate("demo", DEMO_SEED, QUESTIONS)
    engine = open_engine(result.bundle, public_key=public_key)
    try:
        server = LMServer(engine, port=0).start()
        try:
            console.print(f"edgeds serve on {server.url}: {engine.name} on {engine.runtime}, {engine.plan.describe()}")
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=60)
            answers = []
            for i, example in enumerate(examples):
                messages = [dict(m) for m in example.messages]
                if i == 0:
                    console.print(f"[dim]{messages[-1]['content']}[/]")
                    answer = _streamed(client, engine.name, messages, console)
                else:
                    reply = client.chat.completions.create(
                        model=engine.name,
                        messages=messages,  # type: ignore[arg-type]
                        temperature=0,
                    )
                    answer = reply.choices[0].message.content or ""
                ok = shift_reports.score(answer, example)
                request = messages[-1]["content"].splitlines()[-1]
                answers.append([example.kind, escape(request), escape(answer), "✓" if ok else "✗"])
            correct = sum(row[-1] == "✓" for row in answers)
            console.print(
                table(
                    f"Shifts it has not seen ({correct}/{len(answers)} state every fact exactly)",
                    ["kind", "request", "answer", ""],
                    answers,
                )
            )
            stats = engine.stats()
            ttft = stats.ttft.mean
            console.print(
                f"engine: {stats.generation_tokens} tokens generated for {stats.prompt_tokens} prompt tokens; "
                f"mean TTFT {ttft * 1000 if ttft is not None else 0:.0f} ms; "
                f"KV cache {stats.kv_bytes / 2**20:.1f} MiB"
            )
        finally:
            server.stop()
    finally:
        engine.close()
    return correct >= PASS_SHARE * len(answers)


def _streamed(client: object, model: str, messages: list[dict[str, str]], console: Console) -> str:
    """One chat completion streamed with ``client`` (an ``openai.OpenAI``), printed as it comes."""
    start = time.perf_counter()
    stream = client.chat.completions.create(  # type: ignore[attr-defined]
        model=model, messages=messages, temperature=0, stream=True
    )
    parts: list[str] = []
    first: float | None = None
    for chunk in stream:
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta:
            first = first if first is not None else time.perf_counter() - start
            parts.append(delta)
            console.print(delta, end="", highlight=False, soft_wrap=True)
    console.print()
    answer = "".join(parts)
    took = time.perf_counter() - start
    console.print(f"[dim]streamed: first token after {(first or took) * 1000:.0f} ms, {took * 1000:.0f} ms in all[/]")
    return answer
