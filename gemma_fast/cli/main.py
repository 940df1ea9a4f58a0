"""`gemma-fast <stage> [options]`: the stages (and chat) as one installed command. `python scripts/<stage>.py`
runs the same code (gemma_fast/cli/); each stage's `--help` lists its options and examples.

Listing the stages imports nothing but the standard library, so `gemma-fast --help` works right after
`pip install -e .`, before the requirements are installed."""

from __future__ import annotations

import importlib
import sys

STAGES = {  # stage -> (module in gemma_fast.cli; what it does); scripts/<name>.py runs the same
    "prepare": ("prepare", "load, clean, de-duplicate and split a recipe's dataset"),
    "rag": ("rag", "build a FAISS retrieval index from a recipe's corpus"),
    "train": ("train", "fine-tune with QLoRA, LoRA or prefix tuning (Unsloth where it runs)"),
    "evaluate": ("evaluate", "score base and fine-tuned models on a split, with 95% intervals"),
    "robustness": ("robustness", "the same metrics on perturbed questions, paired with the clean run"),
    "export": ("export", "merge a trained run, write GGUF files and Ollama Modelfiles, each checked"),
    "chat": ("chat", "talk to a trained run, a merged model or a GGUF"),
    "env": ("env", "print library versions, CUDA, driver and GPUs for a bug report"),
}


def usage() -> str:
    width = max(map(len, STAGES))
    lines = ["usage: gemma-fast <stage> --recipe NAME [--set KEY=VALUE ...] [--out DIR] [options]", "", "stages:"]
    lines += [f"  {stage:<{width}}  {what}" for stage, (module, what) in STAGES.items()]
    lines += ["", "gemma-fast <stage> --help shows a stage's options and examples."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        try:
            print(usage())
        except BrokenPipeError:  # `gemma-fast --help | head`
            pass
        sys.exit(0 if argv else 2)
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"gemma-fast: unknown stage '{stage}'; valid: {', '.join(STAGES)}", file=sys.stderr)
        sys.exit(2)
    try:
        command = importlib.import_module(f"gemma_fast.cli.{STAGES[stage][0]}")
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("gemma_fast"):
            raise
        print(f"gemma-fast {stage} needs '{exc.name}': install the requirements first "
              "(pip install -r requirements.txt; on a GPU see the README)", file=sys.stderr)
        sys.exit(2)
    sys.argv = [f"gemma-fast {stage}", *rest]
    command.run()


if __name__ == "__main__":
    main()
