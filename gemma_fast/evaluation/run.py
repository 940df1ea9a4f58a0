"""Evaluate models on a prepared split: generate (batched, resumable), score per example, add intervals.

Several models (the base and a fine-tuned adapter, or a merged folder) see exactly the same prompts, from the one
prompt builder. Predictions are appended to <out>/partial/<model>.jsonl as each batch finishes, so a rerun after a
crash or Ctrl-C skips the ids already done.
"""

from __future__ import annotations

import logging
import dataclasses
import hashlib
import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import metrics as M
from ..models.backend import resolve_backend
from .bertscore import encoder_label
from ..data.pipeline import load_split
from ..errors import UserError
from ..inference.generation import GenerationSettings, Weights, for_inference, open_transformers
from ..identity import run_recipe, trained_in_4bit, base_identity, check_same_base, folder_sha256, recorded_base
from ..io import read_jsonl_numbered, write_json, write_jsonl
from ..training.loss import answer_token_stats
from ..outputs import check_not_inputs, check_out_dir, claim_out_dir, mark
from ..rag import attach_passages
from ..recipe import Recipe
from .report import plot_metrics, write_eval_report
from .selection import describe, select, selection_summary
from ..log import console

log = logging.getLogger(__name__)

NO_STATS = {"loss_sum": float("nan"), "n_tokens": 0, "n_correct": 0}  # eval.answer_stats=false


def find_adapter(path: Path, recipe: Recipe) -> Path:
    """Accept a run folder or its adapter folder; refuse an adapter trained on another base model, judged by the
    base the adapter records (gemma_fast_base.json, else adapter_config.json), by content for local folders."""
    adapter = path / "adapter" if (path / "adapter").is_dir() else path
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"no adapter found at {path} (expected adapter_config.json in it or in its adapter/ folder)")
    if recorded_base(adapter) is not None:
        check_same_base(adapter, recipe.model, "adapter")
    else:
        trained_on = run_recipe(adapter).get("model")
        if trained_on and trained_on != recipe.model:
            raise UserError(f"adapter {adapter} was trained on model '{trained_on}', but the recipe's model is '{recipe.model}'")
    return adapter


@dataclass
class Candidate:
    """A model to evaluate, loaded on first use and released after (so two full models never share the GPU)."""

    name: str
    identity: object  # what must match for a partial file to be reused: content digests, not paths
    loader: Callable[[], tuple]  # -> (generator, scorer, context); context e.g. the PEFT model's disable_adapter
    loaded: tuple | None = None
    runtime: str = "transformers"  # the generator's generation.RUNTIMES name, known before it loads

    def _get(self) -> tuple:
        if self.loaded is None:
            self.loaded = self.loader()
        return self.loaded

    generator = property(lambda self: self._get()[0])  # generation.Generator
    scorer = property(lambda self: self._get()[1])  # the transformers model answer-token stats run on (None: none)
    context = property(lambda self: self._get()[2])
    prompts = property(lambda self: self.generator.prompts)  # prompts.PromptFormat

    def renamed(self, name: str) -> "Candidate":
        """The same loaded model under another name (robustness runs one model on several inputs)."""
        self._get()
        return dataclasses.replace(self, name=name)

    def release(self) -> None:
        self.loaded = None
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def candidates(recipe: Recipe, adapter_path: Path | None, merged_path: Path | None, compare_base: bool) -> list[Candidate]:
    adapter = find_adapter(adapter_path, recipe) if adapter_path else None
    if merged_path and not (merged_path / "config.json").is_file():
        raise UserError(f"--model {merged_path}: not a model folder (no config.json)")
    # evaluate the way it was trained: a QLoRA run's base, adapter and merged copy all in 4-bit on CUDA, so that
    # --compare base compares like with like (a 16-bit merged copy of a 7B base would not fit a T4 either)
    four_bit = trained_in_4bit(recipe, adapter or merged_path)

    def load(spec: str, with_adapter: Path | None = None):
        generator = open_transformers(Weights(spec, with_adapter, backend=recipe.backend, max_seq_length=recipe.train.max_seq_length,
                                              load_in_4bit=four_bit, system=recipe.prompt.system))
        for_inference(generator.model, generator.backend)
        return generator

    def plain(spec: str):
        generator = load(spec)
        return generator, generator.model, nullcontext

    if merged_path:  # a separate full model: the base is loaded (and freed) only to compare with it
        out = [Candidate("base", base_identity(recipe.model), lambda: plain(recipe.model))] if compare_base else []
        if recipe.eval.runtime == "llama.cpp":
            return out + [gguf_candidate(recipe, merged_path.parent, merged_path, lambda: plain(str(merged_path))[1])]
        return out + [Candidate("fine-tuned", {"merged_sha256": folder_sha256(merged_path)}, lambda: plain(str(merged_path)))]
    if not adapter:
        return [Candidate("base", base_identity(recipe.model), lambda: plain(recipe.model))]
    shared: list = []

    def with_adapter():  # one load serves both: the base runs with the adapter switched off
        if not shared:
            shared.append(load(recipe.model, adapter))
        return shared[0]

    base_id = base_identity(recipe.model)
    out = [Candidate("base", base_id, lambda: (with_adapter(), with_adapter().model, with_adapter().model.disable_adapter))] \
        if compare_base else []
    if recipe.eval.runtime == "llama.cpp":
        return out + [gguf_candidate(recipe, adapter.parent if adapter.name == "adapter" else adapter, adapter,
                                     lambda: with_adapter().model)]
    return out + [Candidate("fine-tuned", {"base": base_id, "adapter_sha256": folder_sha256(adapter)},
                            lambda: (with_adapter(), with_adapter().model, nullcontext))]


def gguf_candidate(recipe: Recipe, run_dir: Path, made_of: Path, scorer: Callable[[], object]) -> Candidate:
    """The fine-tuned model as the run's exported GGUF on llama.cpp (eval.runtime=llama.cpp). Refused when the file is
    missing or was exported from another adapter than `made_of` (a run's adapter/, or its merged/ folder), by content.
    Answer-token stats still run on the transformers model (`scorer`, loaded only when eval.answer_stats asks)."""
    from ..inference.generation import RUNTIMES
    from ..identity import file_sha256

    kind = recipe.eval.gguf
    path = run_dir / "gguf" / f"model-{kind}.gguf"
    export = f"gemma-fast export --run {run_dir} --gguf {kind}"
    if not path.is_file():
        raise UserError(f"eval.runtime=llama.cpp reads {path}, which does not exist: export it first ({export}), or "
                        "evaluate with eval.runtime=transformers")
    stale = gguf_mismatch(path, made_of, recipe.model)
    if stale:
        raise UserError(f"eval.runtime=llama.cpp: {path} {stale}; export it again ({export} --overwrite)")
    if recipe.eval.do_sample:
        log.warning("eval.runtime=llama.cpp samples with llama.cpp's own random numbers: answers differ from transformers'")
    weights = Weights(gguf=path, system=recipe.prompt.system)

    def load():
        generator = RUNTIMES["llama.cpp"](weights)
        return generator, (scorer() if recipe.eval.answer_stats else None), nullcontext

    return Candidate("fine-tuned", {"gguf_sha256": file_sha256(path)}, load, runtime="llama.cpp")


def gguf_mismatch(path: Path, made_of: Path, base_spec: str) -> str | None:
    """Why the GGUF at `path` is not `made_of` (a run's adapter/, or its merged/ folder) exported, or None. The export
    stage records what each file was made from in gguf/roundtrip.json (exporters.gguf_file); a merged folder records
    the adapter it was made from (merge.MERGED_FILE), which is then the one the GGUF must come from."""
    from ..export.merge import MERGED_FILE, made_from_mismatch

    no_record = "has no record of what it was exported from (gguf/roundtrip.json: exported by an older gemma_fast?)"
    try:
        record = json.loads((path.parent / "roundtrip.json").read_text(encoding="utf-8"))[path.stem.removeprefix("model-")]["made_from"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return no_record
    if not isinstance(record, dict) or not isinstance(record.get("base"), dict):
        return no_record
    if (made_of / MERGED_FILE).is_file():
        try:
            merged = json.loads((made_of / MERGED_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            merged = {}
        same = isinstance(merged, dict) and merged.get("adapter_sha256") == record.get("adapter_sha256")
        return None if same else f"was exported from another adapter than {made_of}"
    return made_from_mismatch(record, made_of, base_spec, made="was exported")


def prefer_unsloth_first(recipe: Recipe) -> None:
    """Decide the backend (importing Unsloth when it will run) before retrieval or loading imports transformers."""
    import torch

    for note in resolve_backend(recipe.backend, cuda=torch.cuda.is_available())[1]:
        log.warning(note)


# ---------------------------------------------------------------- generation, resumable


def run_candidate(cand: Candidate, records: list[dict], recipe: Recipe, partial: Path, progress: Progress) -> dict[str, dict]:
    """id -> {prediction, loss_sum, n_tokens, n_correct}; reuses and extends partial/<name>.jsonl.

    A cached answer is reused only when the model's content (adapter and base weights), the generation settings and
    the record's own prompt and reference (a per-row hash) all match: retraining an adapter in place, or editing the
    test split, never reuses a stale answer."""
    settings = {"identity": cand.identity, "max_new_tokens": recipe.eval.max_new_tokens, "do_sample": recipe.eval.do_sample,
                "temperature": recipe.eval.temperature, "top_p": recipe.eval.top_p, "seed": recipe.seed,
                "max_seq_length": recipe.train.max_seq_length, "rag": dataclasses.asdict(recipe.rag),
                **({"system": recipe.prompt.system} if recipe.prompt.system else {}),
                **({"runtime": cand.runtime} if cand.runtime != "transformers" else {}),
                **({} if recipe.eval.answer_stats else {"answer_stats": False})}
    path, meta = partial / f"{cand.name}.jsonl", partial / f"{cand.name}.settings.json"
    keys = {r["id"]: row_key(r) for r in records}
    done: dict[str, dict] = {}
    if path.is_file() and meta.is_file() and _read_settings(meta) == json.loads(json.dumps(settings)):
        rows = read_partial(path)
        done = {row["id"]: row for row in rows if row.get("id") in keys and row.get("key") == keys[row["id"]]}
        if len(done) < len(rows):
            log.warning(f"{cand.name}: {len(rows) - len(done)} earlier answers were for other prompts or references; "
                        "they are answered again")
        write_jsonl(path, done.values())  # drop stale rows and a torn last line before appending
    elif path.exists():
        log.warning(f"{cand.name}: earlier partial predictions were made with another model or other settings; starting over")
        path.unlink()
    partial.mkdir(parents=True, exist_ok=True)
    write_json(meta, settings)
    todo = [r for r in records if r["id"] not in done]
    prompts = [cand.prompts.record_prompt(r) for r in todo]
    lengths = [len(ids) for ids in cand.prompts.encode_many(prompts)]
    check_prompt_lengths(todo, lengths, recipe.train.max_seq_length, f"{recipe.data_dir / recipe.eval.split}.jsonl ({cand.name})")
    task = progress.add_task(cand.name, total=len(records), completed=len(records) - len(todo))
    ev = recipe.eval

    def save(idx: list[int], answers: list[str]) -> None:  # each finished batch survives a crash
        batch = [todo[i] for i in idx]
        stats = (answer_token_stats(cand.scorer, cand.prompts, batch, recipe.train.max_seq_length, len(batch),
                                    batch_tokens=ev.batch_tokens)
                 if ev.answer_stats else [NO_STATS] * len(batch))  # generation only: a CPU saving
        for record, pred, stat in zip(batch, answers, stats):
            row = {"id": record["id"], "key": keys[record["id"]], "prediction": pred, **stat}
            done[record["id"]] = row
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        progress.advance(task, len(batch))

    with cand.context(), path.open("a", encoding="utf-8") as handle:
        # the generator batches (transformers: shortest first, each batch within eval.batch_size prompts and
        # eval.batch_tokens tokens of KV cache); answer-token stats run on the same batches
        cand.generator.generate(prompts, GenerationSettings.from_eval(ev, recipe.seed), on_batch=save)
    return done


def check_prompt_lengths(records: list[dict], lengths: list[int], max_length: int, where: str) -> None:
    """Refuse, before anything generates, prompts that are not shorter than train.max_seq_length: training refuses them
    (prompts.PromptFormat.example), and generation would not say it cut them (Unsloth's forward keeps the start of an
    over-long row, the system turn and context, and drops the question). Answers may run past max_seq_length: only the
    prompt's forward is cut, and Gemma's positions reach 8k."""
    long = [(r["id"], n) for r, n in zip(records, lengths) if n >= max_length]
    if long:
        raise UserError(f"{where}: {len(long)} prompt(s) not shorter than train.max_seq_length={max_length} tokens (id "
                        f"{long[0][0]}: {long[0][1]}); nothing was generated: raise train.max_seq_length or shorten the "
                        "context (rag.k, eval.where, eval.ids)")


def row_key(record: dict) -> str:
    """What one cached answer depends on besides the model and the settings (the system message among them): the
    question, its context and retrieved passages, and the reference."""
    parts = [record["instruction"], record.get("input", ""), list(record.get("passages", ())), record["output"]]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:32]


def _read_settings(meta: Path):
    try:
        return json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_partial(path: Path) -> list[dict]:
    """The cached rows; an unparsable *last* line (cut off by SIGKILL or a full disk mid-append) is dropped with a
    warning, an unparsable line elsewhere means the file was edited: start over."""
    lines = path.read_bytes().split(b"\n")
    rows = []
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
            if not isinstance(row, dict) or "id" not in row:
                raise ValueError("not a cached answer")
        except ValueError:
            if all(not rest.strip() for rest in lines[n:]):
                log.warning(f"{path}:{n}: dropping a cut-off last line (the earlier run was killed mid-write)")
                break
            log.warning(f"{path}:{n}: unreadable cached answer; the cache is ignored and rebuilt")
            return []
        rows.append(row)
    return rows


# ---------------------------------------------------------------- scoring


def score(records: list[dict], predictions: list[str], llamafactory: bool = False) -> dict[str, list]:
    """Per-example scores for every per-example metric of the table (metrics.METRICS), each language with its own
    tokenisation and encoders; None where a metric does not apply. `llamafactory` adds the LLaMA-Factory-compatible
    scores."""
    M.check_pairs(predictions, [r["output"] for r in records])
    table = [m for group in ("default", "llamafactory") if group == "default" or llamafactory
             for m in M.metrics(group=group) if m.level in ("language", "record")]
    out: dict[str, list] = {m.name: [None] * len(records) for m in table}
    for m in table:
        if m.level == "record":
            out[m.name] = [m.fn(record, pred) for record, pred in zip(records, predictions)]
    for lang in sorted({r["lang"] for r in records}):
        idx = [i for i, r in enumerate(records) if r["lang"] == lang]
        preds, refs = [predictions[i] for i in idx], [records[i]["output"] for i in idx]
        for m in table:
            if m.level == "language" and (values := m.fn(preds, refs, lang)) is not None:
                for j, i in enumerate(idx):
                    out[m.name][i] = values[j]
    return out


def summarise(records: list[dict], rows: list[dict], scores: dict[str, list], seed: int, with_loss: bool = True) -> dict:
    """Means with 95% bootstrap intervals, overall and per language, and the corpus-level metrics per language.
    Without answer-token stats (`with_loss` false: scoring a file, or eval.answer_stats off) the token metrics are None."""
    def block(idx: list[int]) -> dict:
        sub, recs = [rows[i] for i in idx], [records[i] for i in idx]
        out = {}
        for m in M.metrics(level="token"):
            out[m.name] = M.bootstrap_ratio(*m.fn(sub, recs), transform=m.transform, seed=seed) if with_loss else None
        for name, values in scores.items():
            out[name] = M.bootstrap_mean([values[i] for i in idx], seed=seed)
        return out

    langs = sorted({r["lang"] for r in records})
    summary = {"overall": block(list(range(len(records)))), "by_lang": {}, "corpus": {},
               "empty_predictions": sum(1 for r in rows if not r["prediction"].strip())}
    for lang in langs:
        idx = [i for i, r in enumerate(records) if r["lang"] == lang]
        summary["by_lang"][lang] = block(idx)
        preds, refs = [rows[i]["prediction"] for i in idx], [records[i]["output"] for i in idx]
        summary["corpus"][lang] = {m.name: m.fn(preds, refs, lang) for m in M.metrics(level="corpus")}
    return summary


def compare(records: list[dict], rows_a: list[dict], rows_b: list[dict], scores_a: dict, scores_b: dict, seed: int,
            with_loss: bool = True) -> dict:
    """Fine-tuned minus base, paired by example, with a 95% paired-bootstrap interval (token-level metrics: each
    example's own mean, e.g. its mean token loss)."""
    out = {}
    for m in M.metrics(level="token") if with_loss else ():
        if m.paired:
            per_example = [[n / max(d, 1) for n, d in zip(*m.fn(rows, records))] for rows in (rows_a, rows_b)]
            out[m.name] = M.paired_bootstrap(*per_example, seed=seed)
    for name in scores_a:
        out[name] = M.paired_bootstrap(scores_a[name], scores_b[name], seed=seed)
    return out


# ---------------------------------------------------------------- the whole evaluation


def evaluate(recipe: Recipe, out_dir: Path, adapter: Path | None = None, merged: Path | None = None,
             compare_base: bool = False, overwrite: bool = False) -> dict:
    if compare_base and not (adapter or merged):
        raise UserError("--compare base needs --adapter or --model: the base model is what they are compared with")
    check_out_dir(out_dir, "eval", overwrite)
    prefer_unsloth_first(recipe)
    records = load_eval_records(recipe)
    cands = candidates(recipe, adapter, merged, compare_base)
    claim_out_dir(out_dir, "eval", overwrite)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    results, prompts = {}, {}
    with Progress(*columns, console=console) as progress:
        for cand in cands:
            done = run_candidate(cand, records, recipe, out_dir / "partial", progress)
            results[cand.name] = [done[r["id"]] for r in records]
            if cand.loaded is not None and not prompts:  # the prompts as this model's chat template writes them
                prompts = {r["id"]: cand.prompts.record_prompt(r).text for r in records}
            cand.release()
    return finish(recipe, records, results, out_dir, sources={"adapter": str(adapter) if adapter else None,
                                                              "merged": str(merged) if merged else None,
                                                              **runtimes_of(cands)}, prompts=prompts)


def runtimes_of(cands: list[Candidate]) -> dict:
    """{"runtimes": {model: runtime}} when one model is not generated by transformers (the summary says which)."""
    return {"runtimes": {c.name: c.runtime for c in cands}} if any(c.runtime != "transformers" for c in cands) else {}


def score_file(recipe: Recipe, predictions_path: Path, out_dir: Path, overwrite: bool = False) -> dict:
    """Score an existing predictions JSONL ({id, prediction} per line) against the recipe's split; no model."""
    check_out_dir(out_dir, "eval", overwrite)
    records = load_eval_records(recipe)
    by_id, first_line = {}, {}
    for lineno, row in read_jsonl_numbered(predictions_path):
        if "id" not in row or not isinstance(row.get("prediction"), str):
            raise UserError(f"{predictions_path}:{lineno}: each line needs 'id' and a string 'prediction'")
        key = str(row["id"])
        if key in first_line:
            raise UserError(f"{predictions_path}:{lineno}: duplicate id '{key}' (first on line {first_line[key]}); "
                            "each id needs exactly one prediction")
        first_line[key] = lineno
        by_id[key] = row["prediction"]
    missing = [r["id"] for r in records if r["id"] not in by_id]
    extra = set(by_id) - {r["id"] for r in records}
    if missing or extra:  # an id of the split that the selection leaves out is not an unknown id: said apart
        in_split = {r["id"] for r in load_split(recipe.data_dir, recipe.eval.split)}
        left_out, unknown = sorted(extra & in_split), sorted(extra - in_split)
        chosen = describe(selection_summary(recipe.eval, len(records)))
        parts = [f"{len(missing)} ids missing, e.g. {missing[:1]}"] + \
            ([f"{len(left_out)} for ids of the {recipe.eval.split} split that the selection ({chosen}) leaves out, e.g. "
              f"{left_out[:1]}"] if left_out else []) + ([f"{len(unknown)} for ids not in the {recipe.eval.split} split, "
                                                           f"e.g. {unknown[:1]}"] if unknown else [])
        raise UserError(f"{predictions_path}: {len(by_id)} predictions for {len(records)} references ({'; '.join(parts)}); "
                        "they must pair up one to one")
    results = {"predictions": [{"id": r["id"], "prediction": by_id[r["id"]], "loss_sum": float("nan"), "n_tokens": 0, "n_correct": 0}
                               for r in records]}
    check_not_inputs([out_dir / "predictions.jsonl"], [predictions_path])
    mark(out_dir, "eval")
    return finish(recipe, records, results, out_dir, sources={"predictions": str(predictions_path)}, with_loss=False)


def load_eval_records(recipe: Recipe) -> list[dict]:
    """The split's records that eval.ids, eval.where, eval.without_context and eval.max_examples select (selection.py),
    with retrieved passages when rag.index is set."""
    path = recipe.data_dir / f"{recipe.eval.split}.jsonl"
    records = load_split(recipe.data_dir, recipe.eval.split)
    for r in records:
        r.setdefault("lang", "en")
    records = select(records, recipe.eval, path)
    if not records:
        chosen = describe(selection_summary(recipe.eval, 0))
        raise UserError(f"{path} has no records to evaluate" + (f" ({chosen})" if chosen else ""))
    return attach_passages(recipe, records)[0]


def finish(recipe: Recipe, records: list[dict], results: dict[str, list[dict]], out_dir: Path, sources: dict, with_loss: bool = True,
           prompts: dict[str, str] | None = None) -> dict:
    """Scores, intervals, predictions.jsonl (with each prompt as the model saw it, when a model ran), metrics.json,
    report.md, metrics.png and the recipe."""
    lf = recipe.eval.llamafactory_metrics
    scores = {name: score(records, [r["prediction"] for r in rows], lf) for name, rows in results.items()}
    with_loss = with_loss and recipe.eval.answer_stats
    models = {name: summarise(records, rows, scores[name], recipe.seed, with_loss) for name, rows in results.items()}
    names = list(results)
    comparison = (compare(records, results[names[0]], results[names[-1]], scores[names[0]], scores[names[-1]], recipe.seed,
                          with_loss) if len(names) == 2 else None)
    summary = {"recipe": recipe.name, "model": recipe.model, **sources, "split": recipe.eval.split, "examples": len(records),
               "selection": selection_summary(recipe.eval, len(records)),
               "languages": dict(sorted((lang, sum(1 for r in records if r["lang"] == lang)) for lang in {r["lang"] for r in records})),
               "generation": {"max_new_tokens": recipe.eval.max_new_tokens, "do_sample": recipe.eval.do_sample},
               "bertscore_encoders": {lang: encoder_label(lang) for lang in sorted({r["lang"] for r in records})},
               "llamafactory_metrics": lf,
               "bootstrap": {"resamples": 1000, "interval": 0.95, "seed": recipe.seed}, "min_n": recipe.eval.min_n,
               "models": models, "comparison": comparison}
    rows = []
    for i, record in enumerate(records):
        row = {"id": record["id"], "lang": record["lang"], "question": record["instruction"],
               **({"prompt": prompts[record["id"]]} if prompts and record["id"] in prompts else {}), "reference": record["output"]}
        for name, res in results.items():
            r = res[i]
            row[name] = {"prediction": r["prediction"], **{k: _round(v[i]) for k, v in scores[name].items()}}
            if with_loss:  # the counts behind the token-weighted means: sum loss_sum / sum n_tokens over any subset
                row[name].update(answer_loss=round(r["loss_sum"] / max(r["n_tokens"], 1), 4), loss_sum=round(r["loss_sum"], 4),
                                 n_tokens=r["n_tokens"], n_correct=r["n_correct"])
        rows.append(row)
    write_jsonl(out_dir / "predictions.jsonl", rows)
    write_json(out_dir / "metrics.json", summary)
    plot_metrics(models, out_dir / "metrics.png")
    write_eval_report(summary, rows, out_dir / "report.md")
    recipe.save(out_dir / "recipe.yaml")
    return summary


def _round(value):
    return round(value, 4) if isinstance(value, float) else value
