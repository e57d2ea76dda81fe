"""The LM toolchain's worker: runs inside the ``llm`` toolchain venv, never in edgeds' own.

Run as a file by that venv's python: ``python llm_worker.py COMMAND REQUEST.json RESULT.json``.
It imports no edgeds module (torch, transformers, optimum-intel, nncf, openvino-tokenizers and
onnxruntime-genai's model builder live only in that venv). It reads the request (JSON), does the one
job, and writes the result (JSON). On failure it prints the traceback, then one last line
``edgeds-llm-worker: error: <what failed>`` on stderr and exits 2; edgeds' side reports that line.

Commands:
    export-openvino     optimum-intel's exporter (text-generation-with-past, stateful) with NNCF
                        weight compression, plus the OpenVINO tokenizer/detokenizer
    export-onnxruntime  onnxruntime-genai's model builder (execution provider cpu)
    reference           transformers FP32: greedy token ids and per-example NLL over answer tokens
    random-checkpoint   a random-init Qwen2 of a given shape with a given tokenizer's files
    train-tokenizer     a small byte-level BPE tokenizer trained on the given lines
    versions            the versions of the toolchain's packages
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# This file sits beside edgeds' own openvino.py / onnxruntime.py: its folder must not shadow the
# real packages (a plain ``python llm_worker.py`` puts it first on sys.path; edgeds runs ``-P``).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != _HERE]

ERROR_MARK = "edgeds-llm-worker: error: "
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "optimum",
    "optimum-intel",
    "nncf",
    "openvino",
    "openvino-tokenizers",
    "onnxruntime-genai",
    "onnx",
)


class WorkerError(Exception):
    """A failure with a message meant for the user (no traceback needed)."""


def versions(_req: dict[str, Any]) -> dict[str, Any]:
    from importlib.metadata import version

    return {name: version(name) for name in PACKAGES}


def export_openvino(req: dict[str, Any]) -> dict[str, Any]:
    """optimum-cli export openvino, in-process; then make sure the tokenizer models exist."""
    from optimum.commands.optimum_cli import main

    checkpoint, out = Path(req["checkpoint"]), Path(req["out"])
    argv = ["optimum-cli", "export", "openvino", "-m", str(checkpoint), "--task", "text-generation-with-past"]
    argv += ["--weight-format", str(req["precision"])]
    if req["precision"] == "int4":
        argv += ["--group-size", str(req["group_size"]), "--ratio", str(req["ratio"])]
    if req["precision"] in ("int4", "int8") and req["sym"]:
        argv.append("--sym")
    argv.append(str(out))
    print("running:", " ".join(argv), file=sys.stderr, flush=True)
    saved = sys.argv
    sys.argv = argv
    try:
        main()
    finally:
        sys.argv = saved
    if not (out / "openvino_model.xml").is_file():
        raise WorkerError(f"optimum-intel wrote no openvino_model.xml into {out}")
    if not (out / "openvino_tokenizer.xml").is_file() or not (out / "openvino_detokenizer.xml").is_file():
        # optimum-intel only warns when the tokenizer conversion fails: convert it here, so a
        # failure raises with openvino-tokenizers' own message
        import openvino as ov
        from openvino_tokenizers import convert_tokenizer
        from transformers import AutoTokenizer

        hf_tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        tokenizer, detokenizer = convert_tokenizer(hf_tokenizer, with_detokenizer=True)
        ov.save_model(tokenizer, out / "openvino_tokenizer.xml")
        ov.save_model(detokenizer, out / "openvino_detokenizer.xml")
    return {"files": sorted(p.name for p in out.iterdir())}


def export_onnxruntime(req: dict[str, Any]) -> dict[str, Any]:
    """``python -m onnxruntime_genai.models.builder -i CKPT -o OUT -p P -e cpu``, in-process."""
    out = Path(req["out"])
    extra = ["hf_token=false"]
    if req.get("block_size"):
        extra.append(f"int4_block_size={int(req['block_size'])}")
    argv = ["builder", "-i", str(req["checkpoint"]), "-o", str(out), "-p", str(req["precision"])]
    argv += ["-e", "cpu", "-c", str(req["cache_dir"]), "--extra_options", *extra]
    print("running:", " ".join(argv), file=sys.stderr, flush=True)
    saved = sys.argv
    sys.argv = argv
    try:
        runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved
    for name in ("model.onnx", "genai_config.json"):
        if not (out / name).is_file():
            raise WorkerError(f"the onnxruntime-genai model builder wrote no {name} into {out}")
    return {"files": sorted(p.name for p in out.iterdir())}


def reference(req: dict[str, Any]) -> dict[str, Any]:
    """Greedy continuations (stopping at the model's EOS ids) and mean NLL over answer tokens."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(req["checkpoint"], dtype=torch.float32)
    model.eval()
    eos = model.generation_config.eos_token_id
    eos_ids = {eos} if isinstance(eos, int) else set(eos or ())
    pad = model.generation_config.pad_token_id
    if pad is None:
        pad = next(iter(eos_ids), 0)
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=int(req["max_new_tokens"]),
        eos_token_id=sorted(eos_ids) or None,
        pad_token_id=pad,
    )
    tokens: list[list[int]] = []
    finish: list[str] = []
    with torch.inference_mode():
        for prompt in req["prompts"]:
            ids = torch.tensor([prompt], dtype=torch.long)
            mask = torch.ones_like(ids)
            generated = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
            new = [int(t) for t in generated[0, len(prompt) :].tolist()]
            stopped = bool(new) and new[-1] in eos_ids
            tokens.append(new[:-1] if stopped else new)
            finish.append("stop" if stopped else "length")
        nll: list[float] = []
        for prompt, answer in req["texts_for_ppl"]:
            if not answer:
                raise WorkerError("an example for perplexity has no answer tokens")
            ids = torch.tensor([list(prompt) + list(answer)], dtype=torch.long)
            logits = model(input_ids=ids).logits[0].float()
            logprobs = torch.log_softmax(logits[:-1], dim=-1)
            targets = ids[0, 1:]
            picked = logprobs.gather(1, targets[:, None])[:, 0]
            nll.append(float(-picked[len(prompt) - 1 :].mean()))
    return {"tokens": tokens, "finish": finish, "nll": nll, "eos_token_ids": sorted(eos_ids)}


def random_checkpoint(req: dict[str, Any]) -> dict[str, Any]:
    """A random-init Qwen2ForCausalLM of ``req["config"]`` (seeded) beside the tokenizer's files."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    source, out = Path(req["tokenizer_from"]), Path(req["out"])
    tokenizer = AutoTokenizer.from_pretrained(source)
    shape = dict(req["config"])
    shape["vocab_size"] = max(int(shape.get("vocab_size", 0)), len(tokenizer))
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    config = Qwen2Config(**shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=pad)
    torch.manual_seed(int(req["seed"]))
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    params = sum(p.numel() for p in model.parameters())
    return {
        "parameters": int(params),
        "vocab_size": shape["vocab_size"],
        "files": sorted(p.name for p in out.iterdir()),
    }


def train_tokenizer(req: dict[str, Any]) -> dict[str, Any]:
    """Byte-level BPE (Qwen2-style pre-tokenization, digits split) with ChatML special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    split = Regex(
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
        r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(split, behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=int(req["vocab_size"]),
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(list(req["texts"]), trainer)
    chat = (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=chat
    )
    out = Path(req["out"])
    fast.save_pretrained(out)
    return {"vocab_size": tokenizer.get_vocab_size(), "files": sorted(p.name for p in out.iterdir())}


COMMANDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "export-openvino": export_openvino,
    "export-onnxruntime": export_onnxruntime,
    "reference": reference,
    "random-checkpoint": random_checkpoint,
    "train-tokenizer": train_tokenizer,
    "versions": versions,
}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in COMMANDS:
        print(f"{ERROR_MARK}usage: llm_worker.py {{{','.join(COMMANDS)}}} REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    command, request, result = argv
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        answer = COMMANDS[command](json.loads(Path(request).read_text()))
    except WorkerError as exc:
        print(f"{ERROR_MARK}{exc}", file=sys.stderr, flush=True)
        return 2
    except BaseException as exc:  # noqa: BLE001 - the worker's top level: report every failure as one line
        traceback.print_exc()
        print(f"{ERROR_MARK}{command}: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr, flush=True)
        return 2
    Path(result).write_text(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
