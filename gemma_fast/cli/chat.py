"""Chat with a model: a base, a fine-tuned run (adapter), a merged folder or a GGUF, through the training prompt builder.

No recipe needed: an adapter run brings its own (runs/<...>/recipe.yaml, as it ran); --recipe and --set override or
supply one (model, backend, rag.*, eval.max_new_tokens/temperature). Answers stream to stdout and stop at
<end_of_turn>; status goes to stderr, so pipelines see only answers.
Input, first that applies: --prompt (repeatable); --input FILE.jsonl ('-' = stdin; {instruction[, input]} or {prompt}
per line -> one JSON line {id, instruction, answer} each); lines piped on stdin (one question per line, one answer
per line); else an interactive chat (/reset forgets earlier turns, /exit or Ctrl-D quits).
Examples:
  python scripts/chat.py --adapter runs/quickstart/demo --prompt "How do I resume training?"
  echo "How do I resume training?" | python scripts/chat.py --gguf runs/quickstart/demo/gguf/model-q8_0.gguf
  python scripts/chat.py --model runs/quickstart/demo/merged --input data/quickstart/test.jsonl > answers.jsonl
  python scripts/chat.py --adapter runs/kaggle/r1 --rag            # retrieved passages, as the run was trained
  python scripts/chat.py --model embedded:gemma-3-270m               # the base model, interactively
"""

import argparse
import json
import math
import sys
from pathlib import Path

from gemma_fast.cli import common as cli


def parse_args() -> argparse.Namespace:
    doc = __doc__.splitlines()
    p = argparse.ArgumentParser(description=doc[1], epilog="\n".join(doc[3:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--adapter", default="", metavar="RUN", help="a training run folder (or its adapter/): base + adapter")
    what.add_argument("--gguf", default="", metavar="FILE", help="a GGUF file (llama.cpp where installed, else transformers)")
    p.add_argument("--model", default="", metavar="SPEC", help="a base or merged model folder, embedded:gemma-3-270m or a hub "
                                                                "id (default: the adapter's base, else the recipe's model)")
    p.add_argument("--recipe", default=None, help="recipe name or YAML path (default: the adapter run's saved recipe, else defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override one recipe value (repeatable)")
    p.add_argument("--prompt", action="append", default=[], metavar="TEXT", help="ask this and exit (repeatable)")
    p.add_argument("--input", default="", metavar="FILE", help="JSONL of questions ('-' reads stdin); answers as JSONL on stdout")
    p.add_argument("--context", default="", metavar="TEXT", help="a context passage for every question (the record's `input`)")
    p.add_argument("--rag", nargs="?", const="", default=None, metavar="INDEX",
                   help="retrieve passages into each prompt: from the recipe's rag.index, or from this index folder")
    p.add_argument("--max-new-tokens", type=int, default=None, metavar="N", help="answer length limit (default 256)")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: the recipe's eval settings)")
    from gemma_fast.inference.generation import RUNTIMES

    p.add_argument("--runtime", choices=["auto", *RUNTIMES], default="auto",
                   help="what runs the model (auto: a GGUF on llama.cpp where installed, else transformers)")
    p.add_argument("--no-history", action="store_true", help="interactive: answer each question on its own")
    return p.parse_args()


def resolve_recipe(args):
    from gemma_fast.recipe import Recipe, apply_override, load_recipe

    if args.recipe:
        return load_recipe(args.recipe, args.overrides)
    if args.adapter:
        from gemma_fast.inference.chat import adapter_folder

        adapter = adapter_folder(Path(args.adapter))
        saved = next((p for p in (adapter / "recipe.yaml", adapter.parent / "recipe.yaml") if p.is_file()), None)
        if saved:
            return load_recipe(str(saved), args.overrides)
    recipe = Recipe(name="chat")
    for item in args.overrides:
        apply_override(recipe, item)
    recipe.check(source="--set")
    return recipe


def main() -> None:
    args = parse_args()
    if args.gguf and args.model:
        raise cli.UserError("--gguf and --model name two models; give one")
    recipe = resolve_recipe(args)
    from gemma_fast.inference.chat import Conversation, Source, open_model, retriever_for
    from gemma_fast.inference.generation import GenerationSettings

    console = cli.console  # stderr
    if args.temperature is not None and not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise cli.UserError(f"--temperature must be a finite number >= 0 (0: greedy), got {args.temperature:g}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise cli.UserError("--max-new-tokens must be at least 1")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens or 256, seed=recipe.seed,
                                  temperature=args.temperature if args.temperature is not None else
                                  (recipe.eval.temperature if recipe.eval.do_sample else 0.0), top_p=recipe.eval.top_p)
    questions = None
    if args.input:
        questions = read_jsonl(args.input)
    retriever = retriever_for(recipe, args.rag)
    generator = open_model(Source(model=args.model, adapter=args.adapter, gguf=args.gguf, runtime=args.runtime), recipe)
    interactive = not args.prompt and questions is None and sys.stdin.isatty()
    conversation = Conversation(generator, settings, retriever, args.context, history=interactive and not args.no_history,
                                max_length=recipe.train.max_seq_length)

    def stream(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    if questions is not None:
        for record in questions:
            answer = conversation.ask(record["instruction"], context=record.get("input") or args.context)
            print(json.dumps({"id": record.get("id"), "instruction": record["instruction"], "answer": answer}, ensure_ascii=False), flush=True)
    elif args.prompt or not sys.stdin.isatty():
        for question in args.prompt or stdin_questions():
            if question.strip():
                conversation.ask(question, stream)
                stream("\n")
    else:
        console.print("[dim]chat: /reset forgets earlier turns, /exit or Ctrl-D quits[/]")
        while True:
            try:
                question = input("you> ").strip()
            except EOFError:
                print()
                return
            if question in ("/exit", "/quit"):
                return
            if question == "/reset":
                conversation.reset()
                continue
            if question:
                stream("gemma> ")
                conversation.ask(question, stream)
                stream("\n")


def read_jsonl(path: str) -> list[dict]:
    """--input's questions: {instruction | prompt | question, [input], [id]} per line, every field checked."""
    from gemma_fast.io import jsonl_rows, require_file

    where = f"--input {path}"
    if path == "-":
        rows = list(jsonl_rows(sys.stdin.buffer, "--input - (stdin)"))
    else:
        require_file(Path(path), "--input")
        try:
            with open(path, "rb") as handle:
                rows = list(jsonl_rows(handle, where))
        except OSError as exc:
            raise cli.UserError(f"{where}: {exc.strerror or exc}") from None
    questions = []
    for number, row in rows:
        names = ("instruction", "prompt", "question")
        key = next((k for k in names if row.get(k)), None) or next((k for k in names if k in row), None)
        text = row.get(key) if key else None
        if not isinstance(text, str) or not text.strip():
            got = f"'{key}' is {type(text).__name__ if not isinstance(text, str) else 'empty'}" if key else "none of them"
            raise cli.UserError(f"{where}:{number}: expected a non-empty string in 'instruction' (or 'prompt'); {got}")
        context = row.get("input")
        if context is not None and not isinstance(context, str):
            raise cli.UserError(f"{where}:{number}: field 'input' (the context passage) must be a string, got {type(context).__name__}")
        questions.append({"id": row.get("id", number), "instruction": text, "input": context or ""})
    return questions


def stdin_questions():
    """One question per line of stdin, read lazily (each is answered as it arrives); stdin that is not UTF-8 is one
    error naming the line."""
    from gemma_fast.io import decoded_lines

    return (line.strip() for _, line in decoded_lines(sys.stdin.buffer, "stdin"))


def run() -> None:
    cli.run(main)


if __name__ == "__main__":
    run()
