"""Export a finished training run: its LoRA merged into the base, GGUF files for llama.cpp and Ollama, each checked.

Each export is one entry of gemma_fast/export/exporters.py (EXPORTERS; --list shows them and what they write): --merge is
`merged`; --gguf TYPE is gguf-TYPE with an Ollama Modelfile beside each file, every file read back against the merged
model (--roundtrip N test prompts, gguf/roundtrip.json); --to NAME runs entries by name. They are written into the
run folder (merged/, gguf/), or into --out; the run itself is not changed. The run's own recipe.yaml is used unless
--recipe names another. `train --merge/--gguf` runs this stage in a fresh process after training, and
`train_qlora.py --export-only --out RUN` is its older spelling.
Examples:
  python scripts/export.py --run runs/quickstart/demo --gguf q8_0
  python scripts/export.py --recipe quickstart --run runs/quickstart/demo --gguf q8_0,q4_k_m --merge
  python scripts/export.py --run runs/quickstart/demo --gguf f16 --roundtrip 0 --out /mnt/big/demo-gguf
  python scripts/export.py --list
"""

import sys
from pathlib import Path

from gemma_fast.cli import common as cli


def main() -> None:
    if "--list" in sys.argv[1:]:
        from gemma_fast.export.exporters import EXPORTERS
        from gemma_fast.report import console, table

        rows = [(e.name, " ".join(e.writes), e.what) for e in EXPORTERS.values()]
        console.print(table("exports (--to NAME; --merge is merged, --gguf TYPE is gguf-TYPE and ollama)", ["name", "writes", "what"], rows))
        return
    p = cli.parser(__doc__.splitlines()[0], "\n".join(__doc__.splitlines()[2:]), recipe_default="the run's recipe.yaml")
    p.add_argument("--list", action="store_true", help="list the exports and exit")
    p.add_argument("--run", default=None, metavar="DIR", help="the finished training run to export (its adapter/ and recipe.yaml)")
    p.add_argument("--merge", action="store_true", help="save the base model with the LoRA merged in (merged/)")
    p.add_argument("--gguf", default="", metavar="TYPE", help="GGUF files (any backend, offline once the tools are cached): "
                                                              "f16, bf16, q8_0 or q4_k_m, comma-separated for several; "
                                                              "writes gguf/ with Ollama Modelfiles and roundtrip.json")
    p.add_argument("--to", default="", metavar="NAME", help="exports by name, comma-separated (--list shows them)")
    p.add_argument("--roundtrip", type=int, default=8, metavar="N", help="test prompts the GGUF round trip checks (0: skip)")
    p.add_argument("--merge-dtype", choices=("float32", "bfloat16"), default="float32", help="dtype of --merge's copy")
    cli.overwrite_flag(p, "the exports")
    args = p.parse_args()
    if not args.run:  # (train_qlora.py --export-only named the run with --out; here --out is where the exports go)
        raise cli.UserError("export needs --run: the folder of the finished training run to export (e.g. runs/quickstart/demo)"
                            + ("; --out is where the exports go (default: the run folder)" if args.out else ""))
    run_dir = Path(args.run)
    if not run_dir.is_dir():
        raise cli.UserError(f"export: {run_dir} does not exist (--run names the folder of a finished training run)")
    if not args.recipe:
        if not (run_dir / "recipe.yaml").is_file():
            raise cli.UserError(f"export: {run_dir / 'recipe.yaml'} not found: name the run's recipe with --recipe, or "
                                "--run a finished training run")
        args.recipe = str(run_dir / "recipe.yaml")
    recipe = cli.recipe_from_args(args)
    done = export(recipe, args.recipe, args.overrides, run_dir, merge=args.merge, gguf=args.gguf, to=args.to,
                  roundtrip=args.roundtrip, merge_dtype=args.merge_dtype, out=Path(args.out) if args.out else None,
                  overwrite=args.overwrite)
    from gemma_fast.report import console, table

    console.print(table(f"exported {run_dir}" + (f" -> {args.out}" if args.out else ""), ["", "value"], list(done.items())))


def export(recipe, recipe_arg: str, overrides: list[str], run_dir: Path, merge: bool = False, gguf: str = "", to: str = "",
           roundtrip: int = 8, merge_dtype: str = "float32", out: Path | None = None, overwrite: bool = False,
           label: str = "export") -> dict:
    """The stage, also train_qlora.py --export-only's (label): check the run and the exports asked for, refuse what this
    machine's RAM cannot hold (naming this command for a bigger machine), then export."""
    import torch

    from gemma_fast.export.ram import check_export_ram, export_command
    from gemma_fast.export.exporters import check_run, export_run, names_for

    if roundtrip < 0:
        raise cli.UserError(f"--roundtrip {roundtrip}: must be >= 0 (0: no round trip)")
    names = names_for(merge, gguf, to)
    chosen = check_run(recipe, run_dir, names, out, overwrite, label)
    dtype = getattr(torch, merge_dtype)
    types = ",".join(e.gguf for e in chosen if e.gguf)
    later = export_command(Path(recipe_arg), run_dir, merge, gguf, roundtrip, dtype, to=to, out=out, overrides=overrides)
    check_export_ram(recipe.model, "merged" in names, types, roundtrip, dtype, later, before_training=False)
    return export_run(recipe, run_dir, names, out=out, roundtrip=roundtrip, merge_dtype=dtype,
                      overwrite=overwrite, label=label)


def run() -> None:
    cli.run(main)


if __name__ == "__main__":
    run()
