#!/usr/bin/env python3
"""QLoRA training throughput, side by side: the project's path (Unsloth) vs plain transformers + peft + bitsandbytes + TRL.

Builds a Gemma architecture from bench/configs/<arch>.json (public layer counts and sizes) with random weights (no
download), saves it once, and runs N steps of LoRA r=16 on all linear layers over the same random batches through
each path. Reports tokens/s (after warm-up steps), peak reserved GPU memory, MFU, and whether the two paths' first-step
losses agree on the same batch.

MFU basis: N = parameters of every matmul the forward runs (all layers plus the LM head; the embedding lookup is
not a matmul). LoRA training costs 4N FLOPs per token (2N forward + 2N for activation gradients; frozen weights get
no weight gradients), plus 2N more when activations are recomputed (gradient checkpointing); LoRA's own FLOPs and
attention's sequence-length term are left out, so MFU is slightly understated.

GPU:  python bench/train_throughput.py --arch gemma-7b --seq 2048 --steps 20 --paths unsloth,plain --peak-tflops 989
CPU:  python bench/train_throughput.py --tiny --steps 3        (tiny Gemma 3, plain path in float32: keeps the script honest in CI)
Writes bench/results/train_throughput.json.
"""

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import save, stamp  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "configs"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_model_dir(arch: str, tiny: bool, cache: Path) -> Path:
    """A saved random-weight model folder for `arch` (bf16 on disk), built once per cache."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from gemma_fast.models import tiny_config, tiny_tokenizer

    target = cache / ("tiny-gemma3" if tiny else arch)
    if (target / "config.json").is_file():
        return target
    tokenizer = tiny_tokenizer()
    if tiny:
        config = tiny_config("gemma3", vocab_size=len(tokenizer))
    else:
        raw = json.loads((CONFIGS / f"{arch}.json").read_text())
        config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32 if tiny else torch.bfloat16)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)  # a stand-in: the batches are random token ids, not text
    del model
    gc.collect()
    return target


def matmul_params(model) -> int:
    """Parameters of the matmuls a forward pass runs: every Linear, plus the (possibly tied) LM head."""
    import torch

    linear = sum(m.weight.numel() for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lora_" not in name)
    head = model.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    return linear + (head.weight.numel() if tied else 0)


def load(path_name: str, model_dir: Path, seq: int, tiny: bool, checkpointing: bool):
    import torch

    if path_name == "unsloth":
        from unsloth import FastLanguageModel

        model, _ = FastLanguageModel.from_pretrained(str(model_dir), max_seq_length=seq, dtype=torch.bfloat16, load_in_4bit=True)
        model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                                                 use_gradient_checkpointing="unsloth" if checkpointing else False, random_state=0)
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if tiny:  # CPU: no 4-bit kernels; float32 LoRA, as the project's CPU path does
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    else:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quant, dtype=torch.bfloat16, device_map={"": 0})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    return get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM"))


def run_path(path_name: str, model_dir: Path, args, batches) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    model = load(path_name, model_dir, args.seq, args.tiny, args.checkpointing)
    n = matmul_params(model)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    losses, times = [], []
    for step, ids in enumerate(batches):
        ids = ids.to(device)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    timed = times[args.warmup:] or times
    tokens_per_s = args.batch * args.seq * len(timed) / sum(timed)
    flops_per_token = (6 if args.checkpointing else 4) * n
    result = {"path": path_name, "first_loss": losses[0], "final_loss": losses[-1], "tokens_per_s": round(tokens_per_s, 1),
              "matmul_params": n, "flops_per_token": flops_per_token,
              "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2) if cuda else None}
    if args.peak_tflops:
        result["mfu"] = round(tokens_per_s * flops_per_token / (args.peak_tflops * 1e12), 4)
    del model, optimizer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="gemma-7b", choices=sorted(p.stem for p in CONFIGS.glob("*.json")))
    parser.add_argument("--tiny", action="store_true", help="CPU mode: a tiny Gemma 3, plain path only")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    parser.add_argument("--paths", default="unsloth,plain")
    parser.add_argument("--checkpointing", action="store_true", help="recompute activations (both paths)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the GPU's dense bf16 peak, for MFU (H100 SXM: 989)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "gemma_fast_bench_models"))
    args = parser.parse_args()
    import torch

    if args.tiny:
        args.paths, args.seq, args.warmup = "plain", min(args.seq, 64), min(args.warmup, 1)
    elif not torch.cuda.is_available():
        parser.error("this benchmark needs a CUDA GPU (or --tiny for the CPU mode)")
    model_dir = build_model_dir(args.arch, args.tiny, Path(args.cache))
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(3, vocab, (args.batch, args.seq), generator=generator) for _ in range(args.steps)]
    results = [run_path(p, model_dir, args, batches) for p in args.paths.split(",")]
    for r in results:
        print(f"{r['path']:8s} {r['tokens_per_s']:9.1f} tok/s  peak {r['peak_reserved_gb']} GB  first loss {r['first_loss']:.4f}"
              + (f"  MFU {100 * r['mfu']:.1f}%" if "mfu" in r else ""), flush=True)
    report = stamp(arch="tiny-gemma3" if args.tiny else args.arch, seq=args.seq, batch=args.batch, steps=args.steps,
                   warmup=args.warmup, checkpointing=args.checkpointing, lora="r=16, all linear layers",
                   device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", results=results)
    if len(results) == 2:
        a, b = results
        report["speedup"] = round(a["tokens_per_s"] / b["tokens_per_s"], 2)
        report["memory_ratio"] = round(a["peak_reserved_gb"] / b["peak_reserved_gb"], 2) if b["peak_reserved_gb"] else None
        report["first_loss_rel_diff"] = round(abs(a["first_loss"] - b["first_loss"]) / abs(b["first_loss"]), 4)
    save("train_throughput", report)


if __name__ == "__main__":
    main()
