"""Fine-tune a Gemma model (QLoRA, LoRA or prefix tuning) on a prepared recipe; writes runs/<recipe>/<run>/.

Uses Unsloth's kernels when a CUDA GPU and Unsloth are there (backend=auto), else transformers + peft + TRL;
on a CPU, qlora trains LoRA in float32 and says so. Writes adapter/, metrics.jsonl, loss.png,
train_summary.json and the recipe as it ran. Ctrl-C saves a checkpoint; --resume continues from the newest.
Examples:
  python scripts/train_qlora.py --recipe quickstart --out runs/quickstart/demo
  python scripts/train_qlora.py --recipe kaggle_docs --set model=embedded:gemma-3-270m --set train.max_steps=20
  python scripts/train_qlora.py --recipe quickstart --set train.save_steps=5 --out runs/q/r1   # then --resume
  python scripts/train_qlora.py --recipe quickstart --out runs/quickstart/demo --gguf q4_k_m   # then export (scripts/export.py)
  python scripts/train_qlora.py --recipe kaggle_docs --plan --gpu t4   # what would run, and will it fit? (no weights loaded)
  accelerate launch --multi_gpu --num_processes 2 scripts/train_qlora.py --recipe kaggle_docs --set backend=hf --set lora.r=16 --set lora.alpha=32
      # DDP on 2×T4, as the README says (the recipe's r=128 needs A100-class cards; FSDP: README, "More than one GPU")
"""

from pathlib import Path

from gemma_fast.cli import common as cli


def main() -> None:
    p = cli.parser(__doc__.splitlines()[0], "\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--merge", action="store_true", help="also save the base model with the LoRA merged in (<run>/merged)")
    p.add_argument("--gguf", default="", metavar="TYPE", help="also export GGUF (any backend, offline once the tools are cached): "
                                                              "f16, bf16, q8_0 or q4_k_m, comma-separated for several; "
                                                              "writes <run>/gguf/ with Ollama Modelfiles and roundtrip.json")
    p.add_argument("--roundtrip", type=int, default=8, metavar="N", help="test prompts the GGUF round trip checks (0: skip)")
    p.add_argument("--export-only", action="store_true", help="do not train: export the finished run in --out (--gguf, --merge); "
                                                              "an alias of `gemma-fast export --run DIR`, kept for existing commands")
    p.add_argument("--merge-dtype", choices=("float32", "bfloat16"), default="float32",
                   help="dtype of --merge's copy (default float32; training passes bfloat16 after a GPU run: half the RAM)")
    p.add_argument("--push-to-hub", default="", metavar="REPO", help="push the adapter to a private hub repo (token from HF_TOKEN)")
    p.add_argument("--plan", action="store_true", help="print what would run and the peak memory of its training and of the "
                                                       "evaluation after it, then stop")
    p.add_argument("--gpu", default=None, metavar="NAME", help="with --plan: plan for this GPU (t4, v100, l4, a100-40gb, "
                                                              "a100-80gb, h100) instead of this machine")
    args = p.parse_args()
    recipe = cli.recipe_from_args(args)
    if args.gpu and not args.plan:
        raise cli.UserError("--gpu goes with --plan (a real run uses the GPU it finds)")
    if args.plan:
        from gemma_fast.plan.preflight import preflight, render
        from gemma_fast.report import console

        console.print(render(preflight(recipe, args.gpu)))
        from gemma_fast.models.hub import check_access

        note = check_access(recipe.model)  # a gated google/* repo fails here, not an hour into Colab
        if note:
            console.print(f"[yellow]note:[/] {note}")
        return
    from gemma_fast.report import console, table
    from gemma_fast.training.run import Exports, train

    if args.resume and not args.out:
        raise cli.UserError("--resume needs --out: the run folder to continue")
    if args.export_only:  # the export stage's older spelling (gemma-fast export --run DIR), kept for existing commands
        if not args.out:
            raise cli.UserError("--export-only needs --out: the finished run folder to export")
        from gemma_fast.cli.export import export

        done = export(recipe, args.recipe, args.overrides, Path(args.out), merge=args.merge, gguf=args.gguf,
                      roundtrip=args.roundtrip, merge_dtype=args.merge_dtype, label="--export-only")
        console.print(table(f"exported {args.out}", ["", "value"], list(done.items())))
        return
    out_dir = Path(args.out) if args.out else recipe.default_out("train")
    summary = train(recipe, out_dir, resume=args.resume, overwrite=args.overwrite,
                    exports=Exports(merge=args.merge, gguf=args.gguf, push_to_hub=args.push_to_hub, roundtrip=args.roundtrip))
    if not summary:  # not the main process of a multi-process run
        return
    keys = ["backend", "method", "dtype", "optimizer", "train_records", "steps", "first_loss", "final_loss",
            "best_eval_loss", "tokens_per_s", "peak_memory_mb", "trainable_parameters", "train_seconds"]
    rows = [(k, summary[k]) for k in keys if summary[k] is not None] + [(k, v) for k, v in summary["exports"].items()]
    console.print(table(f"trained {recipe.name} -> {out_dir}", ["", "value"], rows))


def run() -> None:
    cli.run(main)


if __name__ == "__main__":
    run()
