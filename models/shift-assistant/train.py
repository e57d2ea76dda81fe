#!/usr/bin/env python3
"""Regenerates the shipped shift-assistant language model and its model card.

    /work/scratch/lmtc/bin/python models/shift-assistant/train.py      # any venv with
    # torch (CPU), transformers, tokenizers, safetensors, numpy

Steps: generate the training split (seed 1) with edgeds.datasets.shift_reports, train a
byte-level BPE tokenizer with Qwen2's structure on the training text only, train a small
Qwen2ForCausalLM from scratch on the CPU in float32 (loss on the answer tokens and the closing
<|im_end|>), save checkpoint/ in the Hugging Face layout, reload it with AutoTokenizer and
AutoModelForCausalLM, evaluate greedy decoding and perplexity over the answer tokens on the
evaluation split, write shift-assistant.yaml (with the split fingerprints and the reference
figures) and print every value that goes into the card / README as JSON.

Seeds: training 1, development (monitoring during training only) 2, evaluation 20261201,
calibration 20261202. They are disjoint, and every example depends only on (seed, index).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

TRAIN_SEED = 1
DEV_SEED = 2
EVAL_SEED = 20261201
EVAL_COUNT = 1000
CALIB_SEED = 20261202
CALIB_COUNT = 64
CONTEXT = 512
MAX_NEW_TOKENS = 160

PAD, BOS_NONE, EOS, START = "<|endoftext|>", None, "<|im_end|>", "<|im_start|>"
SPECIALS = [PAD, START, EOS]
# The pre-tokenizer split: Qwen2's (contractions, letter runs, punctuation, whitespace) except
# that a number with its leading space is one piece (GPT-2's ` ?\p{N}+`) instead of one piece per
# digit. BPE then learns every number of the task as one token, and stating a fact becomes copying
# the token after its field name: a 4-layer model learns that within ~1,000 steps, while with one
# token per digit it had not learned to copy after 1,900 steps (4 % of facts exact).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2's ChatML template (the default system line replaced by the dataset's).
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nSYSTEM_LINE<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def load_shift_reports() -> Any:
    """Import edgeds/datasets/shift_reports.py by path (no edgeds package side effects)."""
    path = ROOT / "edgeds" / "datasets" / "shift_reports.py"
    spec = importlib.util.spec_from_file_location("edgeds_datasets_shift_reports", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


sr = load_shift_reports()


def render_prompt(messages: tuple[dict[str, str], ...]) -> str:
    """The ChatML prompt exactly as CHAT_TEMPLATE renders it with add_generation_prompt."""
    out = "".join(f"{START}{m['role']}\n{m['content']}{EOS}\n" for m in messages)
    return out + f"{START}assistant\n"


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer(examples: list[Any], vocab_size: int) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def texts():
        for ex in examples:
            for m in ex.messages:
                yield m["role"] + "\n" + m["content"]
            yield "assistant\n" + ex.answer

    tok.train_from_iterator(texts(), trainer=trainer)
    return tok


def save_tokenizer(tok: Any, out: Path) -> None:
    tok.save(str(out / "tokenizer.json"))
    added = {
        str(tok.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in SPECIALS
    }
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [START, EOS],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE.replace("SYSTEM_LINE", sr.SYSTEM),
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS,
        "errors": "replace",
        "model_max_length": CONTEXT,
        "pad_token": PAD,
        "split_special_tokens": False,
        # The generic fast tokenizer reads tokenizer.json as written. "Qwen2Tokenizer" would make
        # transformers rebuild the pre-tokenizer with Qwen2's own split (one token per digit),
        # which is not the split this tokenizer was trained with.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {"additional_special_tokens": [START, EOS], "eos_token": EOS, "pad_token": PAD}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


# --------------------------------------------------------------------------- data


def encode_examples(tok: Any, examples: list[Any]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids + <|im_end|>) per example."""
    eos = tok.token_to_id(EOS)
    prompts = tok.encode_batch([render_prompt(ex.messages) for ex in examples])
    answers = tok.encode_batch([ex.answer for ex in examples])
    return [(p.ids, [*a.ids, eos]) for p, a in zip(prompts, answers, strict=True)]


def make_batch(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[Any, Any, Any]:
    import torch

    n = max(len(p) + len(a) for p, a in pairs)
    ids = torch.full((len(pairs), n), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), n), -100, dtype=torch.long)
    mask = torch.zeros((len(pairs), n), dtype=torch.long)
    for i, (p, a) in enumerate(pairs):
        seq = p + a
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, len(p) : len(seq)] = torch.tensor(a)
        mask[i, : len(seq)] = 1
    return ids, labels, mask


# --------------------------------------------------------------------------- model


def build_model(vocab: int, args: argparse.Namespace, pad_id: int, eos_id: int) -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=CONTEXT,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        use_sliding_window=False,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        torch_dtype="float32",
        attention_dropout=0.0,
    )
    # Eager attention trains faster than SDPA at this size on the CPU; the saved config.json
    # names no attention implementation, so loaders pick their own.
    config._attn_implementation = "eager"
    return Qwen2ForCausalLM(config)


def train(
    model: Any, data: list[tuple[list[int], list[int]]], dev: list[Any], args: argparse.Namespace, pad_id: int
) -> dict[str, Any]:
    import torch

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-8,
    )
    rng = np.random.default_rng(args.torch_seed)
    order = rng.permutation(len(data))
    # Batches of similar length (buckets of 50 batches) keep padding small.
    chunks = [order[i : i + args.batch * 50] for i in range(0, len(order), args.batch * 50)]
    batches: list[list[int]] = []
    for ch in chunks:
        ch = sorted(ch, key=lambda k: len(data[k][0]) + len(data[k][1]))
        batches += [list(ch[i : i + args.batch]) for i in range(0, len(ch), args.batch)]
    batches = [batches[k] for k in rng.permutation(len(batches))]
    steps = min(args.steps, len(batches))
    warmup = max(1, int(0.03 * steps))
    model.train()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    log: list[dict[str, float]] = []
    tokens = 0
    running = 0.0
    step = 0
    for step in range(1, steps + 1):
        progress = step / steps
        if args.time_budget:
            progress = max(progress, (time.perf_counter() - t0) / args.time_budget)
        if progress >= 1.0 and step > warmup:
            break
        lr = args.lr * min(1.0, step / warmup) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        for g in opt.param_groups:
            g["lr"] = lr
        ids, labels, mask = make_batch([data[k] for k in batches[step - 1]], pad_id)
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += int(mask.sum())
        loss = out.loss.item()
        running = 0.98 * running + 0.02 * loss if step > 1 else loss
        if step % args.log_every == 0:
            el = time.perf_counter() - t0
            entry = {
                "step": step,
                "loss": round(running, 4),
                "lr": lr,
                "elapsed_s": round(el, 1),
                "tok_s": round(tokens / el),
            }
            if step % (args.log_every * 5) == 0:
                entry["dev_loss"] = round(dev_loss(model, dev, pad_id), 4)
                model.train()
            log.append(entry)
            print(json.dumps(entry), flush=True)
    return {
        "steps": step,
        "planned_steps": steps,
        "train_wall_s": round(time.perf_counter() - t0, 1),
        "train_cpu_s": round(time.process_time() - cpu0, 1),
        "train_tokens": tokens,
        "log": log,
    }


def dev_loss(model: Any, dev: list[tuple[list[int], list[int]]], pad_id: int) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(dev), 64):
            ids, labels, mask = make_batch(dev[i : i + 64], pad_id)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            tgt = labels[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=-100, reduction="sum")
            total += float(nll)
            count += int((tgt != -100).sum())
    return total / count


def finish_config(ckpt: Path, pad_id: int) -> None:
    """Make config.json / generation_config.json read like a Qwen2 release's.

    As in Qwen2's own checkpoints, ``bos_token_id`` names ``<|endoftext|>`` while the tokenizer
    adds no BOS (exporters that copy the id into their own config need a number), and the
    top-level ``rope_theta`` / ``torch_dtype`` keys that older loaders read are present.
    """
    for name in ("config.json", "generation_config.json"):
        path = ckpt / name
        cfg = json.loads(path.read_text())
        cfg["bos_token_id"] = pad_id
        if name == "config.json":
            cfg.setdefault("rope_theta", cfg.get("rope_parameters", {}).get("rope_theta", 10000.0))
            cfg.setdefault("torch_dtype", "float32")
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- evaluation


def evaluate(ckpt: Path, examples: list[Any], batch: int) -> dict[str, Any]:
    """Greedy answers and per-example answer NLL, with the checkpoint reloaded from disk."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ckpt))
    model = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32)
    model.eval()
    eos = tok.convert_tokens_to_ids(EOS)
    pad = tok.convert_tokens_to_ids(PAD)
    prompts = [
        tok.apply_chat_template(list(ex.messages), tokenize=False, add_generation_prompt=True) for ex in examples
    ]
    assert prompts[0] == render_prompt(examples[0].messages), "chat template drifted from the training format"
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    from tokenizers import Tokenizer

    trained = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    for text, ids in zip(prompts[:50], prompt_ids[:50], strict=False):
        assert trained.encode(text, add_special_tokens=False).ids == ids, "the saved tokenizer loads differently"
    answers: list[str] = []
    t0 = time.perf_counter()
    generated = 0
    order = sorted(range(len(examples)), key=lambda k: len(prompt_ids[k]))
    outs: dict[int, str] = {}
    with torch.no_grad():
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            n = max(len(prompt_ids[k]) for k in idx)
            ids = torch.full((len(idx), n), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), n), dtype=torch.long)
            for r, k in enumerate(idx):  # left padding
                ids[r, n - len(prompt_ids[k]) :] = torch.tensor(prompt_ids[k])
                mask[r, n - len(prompt_ids[k]) :] = 1
            gen = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=pad,
            )
            for r, k in enumerate(idx):
                new = gen[r, n:].tolist()
                if eos in new:
                    new = new[: new.index(eos)]
                generated += len(new) + 1
                outs[k] = tok.decode(new, skip_special_tokens=True)
    gen_s = time.perf_counter() - t0
    answers = [outs[k] for k in range(len(examples))]
    # Perplexity: mean NLL over the answer tokens (and <|im_end|>) given the prompt.
    nlls: list[float] = []
    total_nll, total_tok = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), 64):
            pairs = []
            for k in range(i, min(i + 64, len(examples))):
                a = [*tok(examples[k].answer, add_special_tokens=False)["input_ids"], eos]
                pairs.append((prompt_ids[k], a))
            ids, labels, mask = make_batch(pairs, pad)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            tgt = labels[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=-100, reduction="none")
            per = nll.sum(dim=1)
            cnt = (tgt != -100).sum(dim=1)
            for s, c in zip(per.tolist(), cnt.tolist(), strict=True):
                nlls.append(s / c)
                total_nll += s
                total_tok += c
    ok = [bool(sr.score(a, ex)) for a, ex in zip(answers, examples, strict=True)]
    by_kind: dict[str, list[int]] = {}
    for ex, good in zip(examples, ok, strict=True):
        by_kind.setdefault(ex.kind, [0, 0])
        by_kind[ex.kind][0] += int(good)
        by_kind[ex.kind][1] += 1
    exact = sum(a == ex.answer for a, ex in zip(answers, examples, strict=True))
    failures = [
        {"expected": ex.answer, "got": a} for a, ex, good in zip(answers, examples, ok, strict=True) if not good
    ]
    return {
        "count": len(examples),
        "task_metric": sum(ok) / len(ok),
        "by_kind": {
            k: {"pass": v[0], "count": v[1], "metric": round(v[0] / v[1], 4)} for k, v in sorted(by_kind.items())
        },
        "exact_text_match": exact / len(examples),
        "perplexity": math.exp(total_nll / total_tok),
        "mean_example_perplexity": float(np.mean([math.exp(x) for x in nlls])),
        "answer_tokens": total_tok,
        "generate_s": round(gen_s, 1),
        "generated_tokens": generated,
        "failures": failures[:20],
    }


# --------------------------------------------------------------------------- card


def write_card(out: Path, eval_fp: str, calib_fp: str, metric: float, ppl: float) -> Path:
    card = f"""schema: 1
name: shift-assistant
version: 1.0.0
task: causal-lm
description: Shift assistant for the inspection line - states a station's shift facts as a summary or an answer.
model: checkpoint
architecture: qwen2
context_length: {CONTEXT}
chat_template: tokenizer
special_tokens: {{bos: null, eos: "{EOS}", pad: "{PAD}"}}
generation: {{max_new_tokens: {MAX_NEW_TOKENS}, temperature: 0.0}}
data:
  generator: edgeds.datasets.shift_reports:generate
  evaluation:
    seed: {EVAL_SEED}
    count: {EVAL_COUNT}
    fingerprint: "{eval_fp}"
  calibration:
    seed: {CALIB_SEED}
    count: {CALIB_COUNT}
    fingerprint: "{calib_fp}"
metric: {{name: facts-exact, scorer: "edgeds.datasets.shift_reports:score"}}
reference:
  fp32_task_metric: {metric:.4f}
  fp32_perplexity: {ppl:.4f}
"""
    path = out / "shift-assistant.yaml"
    path.write_text(card)
    return path


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE, help="where checkpoint/ and the card go")
    ap.add_argument("--train-count", type=int, default=100_000)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--intermediate", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument(
        "--time-budget",
        type=float,
        default=1200.0,
        help="seconds of training (0: none); the lr anneals by then, on a slow machine after fewer steps",
    )
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--torch-seed", type=int, default=0)
    ap.add_argument("--eval-count", type=int, default=EVAL_COUNT)
    ap.add_argument("--eval-batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="continue training this checkpoint (its weights and tokenizer) with a fresh schedule",
    )
    ap.add_argument("--skip-train", action="store_true", help="only re-evaluate out/checkpoint and rewrite the card")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.torch_seed)
    t_start = time.perf_counter()
    ckpt = args.out / "checkpoint"
    summary: dict[str, Any] = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}

    if not args.skip_train:
        t0 = time.perf_counter()
        train_ex = sr.generate("train", TRAIN_SEED, args.train_count)
        dev_ex = sr.generate("development", DEV_SEED, 256)
        summary["generate_train_s"] = round(time.perf_counter() - t0, 1)
        if args.init_from is None:
            tok = train_tokenizer(train_ex, args.vocab)
        else:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(args.init_from / "tokenizer.json"))
        data = encode_examples(tok, train_ex)
        dev = encode_examples(tok, dev_ex)
        lengths = [len(p) + len(a) for p, a in data]
        summary["train_tokens_per_example"] = {"mean": round(float(np.mean(lengths)), 1), "max": max(lengths)}
        assert max(lengths) < CONTEXT
        pad_id, eos_id = tok.token_to_id(PAD), tok.token_to_id(EOS)
        if args.init_from is None:
            model = build_model(tok.get_vocab_size(), args, pad_id, eos_id)
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(str(args.init_from), dtype=torch.float32)
            model.config._attn_implementation = "eager"
        summary["parameters"] = sum(p.numel() for p in model.parameters())
        print(json.dumps({"parameters": summary["parameters"], "vocab": tok.get_vocab_size(), **summary}), flush=True)
        summary["train"] = train(model, data, dev, args, pad_id)
        summary["dev_loss"] = dev_loss(model, dev, pad_id)
        if ckpt.exists():
            shutil.rmtree(ckpt)
        ckpt.mkdir(parents=True)
        model.generation_config.update(
            bos_token_id=None, eos_token_id=eos_id, pad_token_id=pad_id, do_sample=False, max_new_tokens=MAX_NEW_TOKENS
        )
        model.save_pretrained(str(ckpt), safe_serialization=True)
        finish_config(ckpt, pad_id)
        save_tokenizer(tok, ckpt)

    eval_ex = sr.generate("evaluation", EVAL_SEED, args.eval_count)
    calib_ex = sr.generate("calibration", CALIB_SEED, CALIB_COUNT)
    result = evaluate(ckpt, eval_ex, args.eval_batch)
    summary["evaluation"] = result
    summary["files"] = {p.name: p.stat().st_size for p in sorted(ckpt.iterdir())}
    if args.eval_count == EVAL_COUNT:
        summary["card"] = str(
            write_card(
                args.out, sr.fingerprint(eval_ex), sr.fingerprint(calib_ex), result["task_metric"], result["perplexity"]
            )
        )
    summary["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    summary["torch"] = torch.__version__
    import transformers

    summary["transformers"] = transformers.__version__
    summary["cpu_count"] = os.cpu_count()
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
