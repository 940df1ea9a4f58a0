#!/usr/bin/env python3
"""QLoRA training throughput, side by side: the project's path (Unsloth) vs plain transformers + peft + bitsandbytes + TRL.

Builds a Gemma architecture from gemma_fast/assets/model_configs/<arch>.json (published layer counts and sizes) with
random weights (no download), saves it once, and runs N steps of LoRA r=16 on all linear layers over the same random batches through
each path. Reports tokens/s (after warm-up steps), peak reserved GPU memory, MFU, and whether the two paths' first-step
losses agree on the same batch.

Each path runs in its own Python process: Unsloth patches the transformers/peft classes process-wide, so a "plain"
model built in the same process would run Unsloth's kernels, and each path's peak memory must be its own. The
forward runs under autocast (bf16 on compute capability 8.0+, else fp16 with loss scaling) and the backward follows
its dtypes, as in the project's Trainer-based training.

MFU basis: N = the dense model's parameter count (4-bit weights at their unpacked size, the tied embedding / LM head
once, LoRA left out). LoRA training costs 4N FLOPs per token (2N forward + 2N for activation gradients; frozen
weights get no weight gradients), plus 2N more when activations are recomputed (gradient checkpointing); LoRA's own
FLOPs and attention's sequence-length term are left out, so MFU is slightly understated.

GPU:  python bench/train_throughput.py --arch gemma-7b --seq 2048 --steps 20 --paths unsloth,plain --peak-tflops 989
CPU:  python bench/train_throughput.py --tiny --steps 3        (tiny Gemma 3, plain path in float32, no autocast: keeps
      the script honest in CI; --paths plain,plain runs it twice, in two processes, and their losses must agree exactly)
Writes bench/results/train_throughput.json.
"""

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import save, stamp  # noqa: E402

CONFIGS = ROOT / "gemma_fast" / "assets" / "model_configs"  # the published configs --plan reads too
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_model_dir(arch: str, tiny: bool, cache: Path) -> Path:
    """A saved random-weight model folder for `arch` (bf16 on disk), built once per cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gemma_fast.testing.tiny import save_tiny_model

    tiny_dir = cache / "tiny-gemma3"
    if not (tiny_dir / "config.json").is_file():
        save_tiny_model("gemma3", tiny_dir)  # float32; also lends its tokenizer to the big architectures
    target = tiny_dir if tiny else cache / arch
    if (target / "config.json").is_file():
        return target
    import torch

    from gemma_fast.models.architecture import read_config, text_config_of

    path = CONFIGS / f"{arch}.json"
    torch.manual_seed(0)  # the language model alone, as gemma_fast trains it
    model = AutoModelForCausalLM.from_config(text_config_of(read_config(path), str(path)), dtype=torch.bfloat16)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(target)  # a stand-in: the batches are random token ids
    del model
    gc.collect()
    return target


def dense_params(model) -> int:
    """N for MFU: the parameters of the dense model, whatever wraps it. A Linear counts in_features * out_features,
    because bitsandbytes' Linear4bit subclasses nn.Linear with a packed uint8 weight of half the size; LoRA's
    adapters are left out; a tied embedding / LM head is one Parameter, so it counts once."""
    import torch

    seen, total = set(), 0
    for name, module in model.named_modules():
        if "lora_" in name:
            continue
        for pname, p in module.named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                linear = isinstance(module, torch.nn.Linear) and pname == "weight"
                total += module.in_features * module.out_features if linear else p.numel()
    return total


def import_unsloth_first() -> None:
    """Unsloth patches transformers, peft and trl as it is imported; anything imported before it stays unpatched."""
    early = [m for m in ("transformers", "peft", "trl") if m in sys.modules]
    if early:
        raise RuntimeError(f"unsloth must be imported before {', '.join(early)}; run each path in a fresh process")
    import unsloth  # noqa: F401


def amp_dtype(cuda: bool):
    """What real training autocasts to: bf16 where the GPU has it natively (compute capability 8.0+; below that
    torch only emulates it), else fp16. None on the CPU: float32 without autocast, so the CPU mode stays exact."""
    import torch

    if not cuda:
        return None
    return torch.bfloat16 if torch.cuda.get_device_capability() >= (8, 0) else torch.float16


def load(path_name: str, model_dir: Path, seq: int, amp, checkpointing: bool):
    import torch

    if path_name == "unsloth":
        from unsloth import FastLanguageModel

        model, _ = FastLanguageModel.from_pretrained(str(model_dir), max_seq_length=seq, dtype=amp, load_in_4bit=True)
        model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                                                 use_gradient_checkpointing="unsloth" if checkpointing else False, random_state=0)
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if amp is None:  # CPU: no 4-bit kernels; float32 LoRA, as the project's CPU path does
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    else:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=amp)
        model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quant, dtype=amp, device_map={"": 0})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    return get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM"))


def run_path(path_name: str, model_dir: Path, args) -> dict:
    """One path, in this (fresh) process."""
    if path_name == "unsloth":
        import_unsloth_first()
    import torch

    cuda = torch.cuda.is_available() and not args.tiny  # --tiny stays on the CPU even on a GPU machine
    amp = amp_dtype(cuda)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    generator = torch.Generator().manual_seed(0)  # the same batches in every process
    batches = [torch.randint(3, vocab, (args.batch, args.seq), generator=generator) for _ in range(args.steps)]
    torch.manual_seed(0)
    model = load(path_name, model_dir, args.seq, amp, args.checkpointing)
    n = dense_params(model)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scaler = torch.amp.GradScaler(enabled=amp == torch.float16)  # fp16 needs loss scaling, as Trainer does it
    model.train()
    losses, times = [], []
    for ids in batches:
        ids = ids.to(device)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=amp) if amp else contextlib.nullcontext():
            loss = model(input_ids=ids, labels=ids).loss
        scaler.scale(loss).backward()  # outside autocast, as Trainer does; backward ops keep the forward's dtypes
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    timed = times[args.warmup:] or times
    tokens_per_s = args.batch * args.seq * len(timed) / sum(timed)
    flops_per_token = (6 if args.checkpointing else 4) * n
    result = {"path": path_name, "pid": os.getpid(), "device": torch.cuda.get_device_name(0) if cuda else "cpu",
              "autocast": str(amp).removeprefix("torch.") if amp else "none (float32)",
              "first_loss": losses[0], "final_loss": losses[-1], "tokens_per_s": round(tokens_per_s, 1),
              "dense_params": n, "flops_per_token": flops_per_token,
              "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2) if cuda else None}
    if args.peak_tflops:
        result["mfu"] = round(tokens_per_s * flops_per_token / (args.peak_tflops * 1e12), 4)
    return result


def run_in_own_process(path_name: str, model_dir: Path, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--paths", path_name, "--worker", str(out), "--model-dir", str(model_dir),
                   "--seq", str(args.seq), "--batch", str(args.batch), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--peak-tflops", str(args.peak_tflops)]
        subprocess.run(command + ["--checkpointing"] * args.checkpointing + ["--tiny"] * args.tiny, check=True)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="gemma-7b", choices=sorted(p.stem for p in CONFIGS.glob("*.json")))
    parser.add_argument("--tiny", action="store_true", help="CPU mode: a tiny Gemma 3, plain path only")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    parser.add_argument("--paths", help="comma-separated, each run in its own process (default: unsloth,plain; --tiny: plain)")
    parser.add_argument("--checkpointing", action="store_true", help="recompute activations (both paths)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the GPU's dense bf16 peak, for MFU (H100 SXM: 989)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "gemma_fast_bench_models"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one path here, write its result to this file
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        Path(args.worker).write_text(json.dumps(run_path(args.paths, Path(args.model_dir), args)))
        return
    import torch

    paths = (args.paths or ("plain" if args.tiny else "unsloth,plain")).split(",")
    if args.tiny:
        if "unsloth" in paths:
            parser.error("--tiny runs on the CPU, where Unsloth does not; use --paths plain")
        args.seq, args.warmup = min(args.seq, 64), min(args.warmup, 1)
    elif not torch.cuda.is_available():
        parser.error("this benchmark needs a CUDA GPU (or --tiny for the CPU mode)")
    model_dir = build_model_dir(args.arch, args.tiny, Path(args.cache))
    results = [run_in_own_process(p, model_dir, args) for p in paths]
    for r in results:
        print(f"{r['path']:8s} {r['tokens_per_s']:9.1f} tok/s  peak {r['peak_reserved_gb']} GB  first loss {r['first_loss']:.4f}"
              + (f"  MFU {100 * r['mfu']:.1f}%" if "mfu" in r else ""), flush=True)
    report = stamp(arch="tiny-gemma3" if args.tiny else args.arch, seq=args.seq, batch=args.batch, steps=args.steps,
                   warmup=args.warmup, checkpointing=args.checkpointing, lora="r=16, all linear layers",
                   device=results[0]["device"], results=results)
    if len(results) == 2:
        a, b = results
        report["speedup"] = round(a["tokens_per_s"] / b["tokens_per_s"], 2)
        report["memory_ratio"] = round(a["peak_reserved_gb"] / b["peak_reserved_gb"], 2) if b["peak_reserved_gb"] else None
        report["first_loss_rel_diff"] = round(abs(a["first_loss"] - b["first_loss"]) / abs(b["first_loss"]), 4)
    save("train_throughput", report)


if __name__ == "__main__":
    main()
