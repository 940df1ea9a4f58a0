"""Evaluate the base model and a fine-tuned adapter on the same prompts, from one model load."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .data import load_split
from .errors import UserError
from .generate import generate_batched
from .io import write_json, write_jsonl
from .metrics import answer_token_losses, loss_and_perplexity, rouge_l
from .models import load_model
from .prompts import record_prompt
from .recipe import Recipe
from .report import plot_comparison


def find_adapter(path: Path, recipe: Recipe) -> Path:
    """Accept a run folder or its adapter folder; refuse an adapter trained on another base model."""
    adapter = path / "adapter" if (path / "adapter").is_dir() else path
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"no adapter found at {path} (expected adapter_config.json in it or in its adapter/ folder)")
    run_recipe = next((p for p in (adapter / "recipe.yaml", adapter.parent / "recipe.yaml") if p.is_file()), None)
    if run_recipe:
        trained_on = (yaml.safe_load(run_recipe.read_text(encoding="utf-8")) or {}).get("model")
        if trained_on and trained_on != recipe.model:
            raise UserError(f"adapter {adapter} was trained on model '{trained_on}', but the recipe's model is '{recipe.model}'")
    return adapter


def evaluate(recipe: Recipe, adapter_path: Path | None, out_dir: Path) -> dict:
    records = load_split(recipe.data_dir, recipe.eval.split)
    if recipe.eval.max_examples:
        records = records[: recipe.eval.max_examples]
    if not records:
        raise UserError(f"{recipe.data_dir / (recipe.eval.split + '.jsonl')} has no records to evaluate")
    adapter = find_adapter(adapter_path, recipe) if adapter_path else None
    loaded = load_model(recipe.model, recipe.backend, recipe.train.max_seq_length)
    model, tokenizer = loaded.model, loaded.tokenizer
    variants = [("base", nullcontext)]
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
        variants = ([("base", model.disable_adapter)] if recipe.eval.compare_base else []) + [("fine-tuned", nullcontext)]

    prompts = [record_prompt(r) for r in records]
    references = [r["output"] for r in records]
    results: dict[str, dict] = {}
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        for name, context in variants:
            task = progress.add_task(f"{name}: loss + generation", total=2 * len(records))
            with context():
                losses = answer_token_losses(model, tokenizer, records, recipe.train.max_seq_length, recipe.eval.batch_size)
                progress.advance(task, len(records))
                predictions = generate_batched(
                    model, tokenizer, prompts, recipe.eval.batch_size, recipe.eval.max_new_tokens,
                    on_batch=lambda n, task=task: progress.advance(task, n),
                )
            loss, ppl = loss_and_perplexity(losses)
            rouge = rouge_l(predictions, references)
            results[name] = {"predictions": predictions, "rougeL": rouge, "losses": losses,
                             "metrics": {"answer_loss": loss, "perplexity": ppl, "rougeL": sum(rouge) / len(rouge)}}

    rows = []
    for i, record in enumerate(records):
        row = {"id": record["id"], "prompt": prompts[i], "reference": references[i]}
        for name, res in results.items():
            row[name] = {"prediction": res["predictions"][i], "rougeL": round(res["rougeL"][i], 4),
                         "answer_loss": round(res["losses"][i][0] / max(res["losses"][i][1], 1), 4)}
        rows.append(row)
    metrics = {name: res["metrics"] for name, res in results.items()}
    summary = {"recipe": recipe.name, "model": recipe.model, "adapter": str(adapter) if adapter else None,
               "split": recipe.eval.split, "examples": len(records), "backend": loaded.backend, "metrics": metrics}
    write_jsonl(out_dir / "predictions.jsonl", rows)
    write_json(out_dir / "metrics.json", summary)
    plot_comparison(metrics, out_dir / "metrics.png")
    recipe.save(out_dir / "recipe.yaml")
    return summary

