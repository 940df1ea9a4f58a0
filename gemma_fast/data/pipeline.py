"""Preparation: rows -> adapters -> cleaning -> validation -> de-duplication -> length filter -> subset -> split
-> mix draw -> test-duplicate removal -> context dropout.

Everything ends in one record schema {id, instruction, input, output, lang, source}; a train record whose passage
data.context_dropout hid keeps it in `dropped_context`. Nothing is dropped
silently: every record that does not reach a split is counted under a reason, and
`records_in == sum(splits) + sum(dropped)` always holds. All work happens in memory before anything is
written, so bad input never touches earlier outputs.
"""

from __future__ import annotations

import dataclasses
import json
import random
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NotRequired, TypedDict

from .formats import ADAPTERS, BadRecord
from .clean import clean_text, exact_key, normalized_key, to_simplified
from ..errors import UserError
from ..io import read_jsonl_numbered, write_json, write_jsonl
from ..lang import question_lang
from ..recipe import DataConfig, Recipe
from ..outputs import check_not_inputs, check_out_dir, mark
from ..paths import cache_root
from .sources import local_paths, read_rows

SPLITS = ("train", "val", "test")
SCHEMA = ("id", "instruction", "input", "output", "lang", "source")


class Record(TypedDict):
    """One prepared example: the keys every split file holds (SCHEMA), and the extras some stages add."""

    id: str
    instruction: str  # the question, as the user asked it
    input: str  # the context passage ("" when there is none)
    output: str  # the reference answer
    lang: str  # "zh" or "en", by the question (lang.question_lang)
    source: str  # the source file or dataset it came from (mix records: the mix source)
    task: NotRequired[str]  # what kind of request (poetry records carry it in their id suffix: -title, -continue, -author)
    dropped_context: NotRequired[str]  # data.context_dropout: the passage this training record is shown without
    passages: NotRequired[list[str]]  # retrieved at prompt time (rag.attach_passages), never written to a split
OPTIONAL = ("dropped_context",)  # the passage data.context_dropout took out of `input` (train split only)
INCOMPLETE = ".incomplete"  # present while a dataset is being written; readers refuse a folder that has it
OUTPUT_FILES = tuple(f"{name}.jsonl" for name in SPLITS) + ("recipe.yaml", "prep_report.json")


@dataclass
class Tally:
    """Records in and drops by reason, shared by every stage."""

    records_in: int = 0
    dropped: Counter = field(default_factory=Counter)

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] += n

    def absorb(self, other: Tally, prefix: str) -> None:
        """Count another source's records here, its drop reasons prefixed."""
        self.records_in += other.records_in
        for reason, n in other.dropped.items():
            self.drop(prefix + reason, n)


def _source_name(source: str) -> str:
    name = source.rstrip("/").split("/")[-1].split("?")[0]
    return name.split(":")[-1].rsplit(".", 1)[0].replace("*", "all") or "data"


def collect(source: str, cfg: DataConfig, tally: Tally, cache: Path) -> list[dict]:
    """Read, adapt, clean and validate every row of one source into schema records."""
    adapter = ADAPTERS[cfg.format]
    name = _source_name(source)
    records: list[dict] = []
    first_seen: dict[str, str] = {}

    def bad(where: str, detail: str, reason: str) -> None:
        if cfg.on_bad_record == "error":
            raise UserError(f"{where}: {detail} (set data.on_bad_record=skip to count and skip such records)")
        tally.records_in += 1
        tally.drop(f"bad_record:{reason}")

    for row_no, raw in enumerate(read_rows(source, cache, cfg.hub_split), start=1):
        if raw.problem:
            bad(raw.where, raw.problem, "unreadable")
            continue
        if not isinstance(raw.row, dict):
            bad(raw.where, f"expected an object, got {type(raw.row).__name__}", "wrong_type")
            continue
        try:
            produced = adapter(raw.row, cfg)
        except BadRecord as exc:
            bad(raw.where, str(exc), exc.reason)
            continue
        for k, rec in enumerate(produced):
            fields = {key: rec.get(key, "") for key in ("instruction", "input", "output")}
            if cfg.to_simplified:
                fields = {key: to_simplified(text) for key, text in fields.items()}
            fields = {key: clean_text(text, cfg.clean) for key, text in fields.items()}
            empty = next((key for key in ("output", "instruction") if not fields[key]), None)
            if empty:
                bad(raw.where, f"field '{empty}' is empty" + (" after cleaning" if rec.get(empty, "").strip() else ""), f"empty_{empty}")
                continue
            suffix = f"-{rec['task']}" if "task" in rec else (f"-{k}" if len(produced) > 1 else "")
            record_id = rec.get("id") or f"{name}-{row_no:06d}{suffix}"
            if record_id in first_seen:
                bad(raw.where, f"duplicate id '{record_id}' (first at {first_seen[record_id]})", "duplicate_id")
                continue
            first_seen[record_id] = raw.where
            tally.records_in += 1
            records.append({"id": record_id, **fields, "lang": question_lang(fields), "source": name})
    if not records and not tally.records_in:
        raise UserError(f"{source}: the source has no records")
    return records


def deduplicate(records: list[dict], mode: str, tally: Tally) -> list[dict]:
    """Keep the first of each duplicate."""
    if mode == "none":
        return records
    exact, normalized, kept = set(), set(), []
    for record in records:
        ek, nk = exact_key(record), normalized_key(record)
        if ek in exact:
            tally.drop("duplicate_exact")
        elif mode == "normalized" and nk in normalized:
            tally.drop("duplicate_normalized")
        else:
            kept.append(record)
        exact.add(ek)
        normalized.add(nk)
    return kept


def remove_test_duplicates(records: list[dict], test: list[dict]) -> tuple[list[dict], dict[str, str]]:
    """Records whose normalized key is a test record's removed (normalized under data.dedup=exact too: a near copy
    leaks the answer as well); also returns {removed id: the test id it duplicates}."""
    test_ids: dict[tuple, str] = {}
    for record in test:
        test_ids.setdefault(normalized_key(record), record["id"])
    kept, removed = [], {}
    for record in records:
        test_id = test_ids.get(normalized_key(record))
        if test_id is None:
            kept.append(record)
        else:
            removed[record["id"]] = test_id
    return kept, removed


def split_records(records: list[dict], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[dict]]:
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise UserError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must each be in [0, 1) and sum below 1")
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    n_test, n_val = round(len(shuffled) * test_fraction), round(len(shuffled) * val_fraction)
    return {"test": shuffled[:n_test], "val": shuffled[n_test : n_test + n_val], "train": shuffled[n_test + n_val :]}


def _passage_key(text: str) -> str:
    return " ".join(text.split()).casefold().replace("\0", "")  # \0 is the separator passages_in_train joins on


def passages_in_train(train: list[dict], test: list[dict], examples: int = 5) -> dict:
    """Test records whose context passage equals, or sits inside, a training record's (white space and case folded).
    Only reported, not dropped: the question differs, but the model may have learned the passage's answers."""
    train_keys = {_passage_key(r["input"]) for r in train} - {""}
    joined = "\0".join(train_keys)  # one substring search per distinct passage; none can match across a \0
    verdicts: dict[str, str | None] = {}
    counts, ids = Counter(), []
    for record in test:
        key = _passage_key(record["input"])
        if key and key not in verdicts:
            verdicts[key] = "equal" if key in train_keys else "contained" if key in joined else None
        verdict = verdicts.get(key)
        if verdict:
            counts[verdict] += 1
            if len(ids) < examples:
                ids.append(record["id"])
    return {"count": counts.total(), "equal": counts["equal"], "contained": counts["contained"], "ids": ids}


def collect_mix(cfg: DataConfig, tally: Tally, cache: Path) -> list[dict]:
    """The mix source's records, read with data.mix_format and that format's own field names (data.columns maps
    data.source only). Ids get a `mix:` prefix: the two sources' row ids would otherwise meet (train-000001)."""
    mix_cfg = dataclasses.replace(cfg, format=cfg.mix_format, columns={})
    return [{**r, "id": f"mix:{r['id']}"} for r in collect(cfg.mix_source, mix_cfg, tally, cache)]


def draw_mix(mix: list[dict], wanted: int, seed: int, tally: Tally) -> list[dict]:
    """A seeded draw of `wanted` mix records (all of them when there are fewer: the report says so)."""
    drawn = random.Random(f"{seed}:mix").sample(mix, min(wanted, len(mix)))
    tally.drop("subset", len(mix) - len(drawn))
    return drawn


def choose_context_dropout(train: list[dict], share: float, seed: int) -> set[str]:
    """Ids of the `share` of training records with a passage that will be shown without it."""
    with_passage = [r["id"] for r in train if r["input"]]
    return set(random.Random(f"{seed}:context_dropout").sample(with_passage, round(share * len(with_passage))))


def drop_contexts(train: list[dict], ids: set[str]) -> list[dict]:
    """Blank the chosen records' input, keeping the passage in `dropped_context`: the saved split then shows
    exactly what training sees (the prompt builder reads `input` only) and what was hidden."""
    return [{**r, "input": "", "dropped_context": r["input"]} if r["id"] in ids else r for r in train]


OVERLAPS_LISTED = 50  # prep_report.json names this many test duplicates at most (their count is always exact)
CHARS_PER_TOKEN_LIMIT = 8  # no tokenizer makes fewer tokens than characters / 8 of real text


def _length_filter(records: list[dict], prompts, max_length: int, tally: Tally) -> tuple[list[dict], dict[str, int]]:
    """Drop records longer than max_length tokens (as the model's prompts.PromptFormat writes them). A record of more
    than 8 x max_length characters is dropped by its character count first: tokenizing a 50 MB answer only to drop it
    costs gigabytes of memory."""
    limit = CHARS_PER_TOKEN_LIMIT * max_length
    short = [r for r in records if sum(len(r[k]) for k in ("instruction", "input", "output")) <= limit]
    tally.drop("too_long", len(records) - len(short))
    records = short
    if not records:  # nothing to tokenize (every record skipped or too long)
        return [], {}
    lengths = prompts.example_lengths(records)
    kept = [r for r, n in zip(records, lengths) if n <= max_length]
    tally.drop("too_long", len(records) - len(kept))
    return kept, {r["id"]: n for r, n in zip(records, lengths)}


def prepare(recipe: Recipe, out_dir: Path, tokenizer=None, overwrite: bool = False) -> dict:
    """Prepare the recipe's data into out_dir; returns the report (also written as prep_report.json). The recipe's
    data.dir becomes out_dir (in the saved recipe.yaml too), so training the same recipe object reads this dataset.

    `tokenizer` (a tokenizer or its prompts.PromptFormat) is loaded from recipe.model when the length filter is on and
    none is given. A folder holding files this project did not write is refused unless `overwrite` (outputs.check_out_dir).
    """

    recipe.data.dir = str(out_dir)
    cfg = recipe.data
    _check_settings(cfg, out_dir, overwrite)
    tally, mix_tally = Tally(), Tally()  # the mix source's drops are reported apart, as mix:<reason>
    pool = collect(cfg.source, cfg, tally, cache_root())
    test = collect(cfg.test_source, cfg, tally, cache_root()) if cfg.test_source else None
    mix = collect_mix(cfg, mix_tally, cache_root()) if cfg.mix_source else []
    if test is not None:
        test = deduplicate(test, cfg.dedup, tally)
    pool = deduplicate(pool, cfg.dedup, tally)
    mix = deduplicate(pool + mix, cfg.dedup, mix_tally)[len(pool):]  # pool is unique already: every drop is a mix record

    lengths: dict[str, int] = {}
    if cfg.length_filter:
        prompts = _prompt_format(recipe, tokenizer)
        pool, lengths = _length_filter(pool, prompts, recipe.train.max_seq_length, tally)
        mix, mix_lengths = _length_filter(mix, prompts, recipe.train.max_seq_length, mix_tally)
        lengths.update(mix_lengths)
        if test is not None:
            test, test_lengths = _length_filter(test, prompts, recipe.train.max_seq_length, tally)
            lengths.update(test_lengths)
    # Every seeded draw (subset, split, mix, context dropout) is made before test duplicates are removed, so the
    # test file cannot change which records are drawn: it can only take its own duplicates out of them.
    if cfg.max_records and len(pool) > cfg.max_records:
        tally.drop("subset", len(pool) - cfg.max_records)
        pool = random.Random(recipe.seed).sample(pool, cfg.max_records)
    splits = split_records(pool, cfg.val_fraction, 0.0 if test is not None else cfg.test_fraction, recipe.seed)
    mix_wanted = round(cfg.mix_share * len(splits["train"]) / (1 - cfg.mix_share))
    mixed = draw_mix(mix, mix_wanted, recipe.seed, mix_tally)
    splits["train"] += mixed
    hidden = choose_context_dropout(splits["train"], cfg.context_dropout, recipe.seed)
    mixed_ids = {r["id"] for r in mixed}
    overlaps: dict[str, str] = {}
    if test is not None:
        if cfg.dedup != "none":
            overlaps = _remove_test_overlaps(splits, test, mixed_ids, tally, mix_tally)
        splits["test"] = test
    tally.absorb(mix_tally, "mix:")
    if not splits["train"]:
        raise UserError(f"{cfg.source}: no training records left (drops: {dict(tally.dropped) or 'none'})")
    _check_unique_ids(splits["train"], cfg)
    passages = passages_in_train(splits["train"], splits["test"])  # the passages as read, hidden ones too
    splits["train"] = drop_contexts(splits["train"], hidden)
    dropped_context = [r for r in splits["train"] if "dropped_context" in r]
    if lengths and dropped_context:  # their prompts got shorter
        lengths.update(zip((r["id"] for r in dropped_context), prompts.example_lengths(dropped_context)))

    report = {
        "recipe": recipe.name, "source": cfg.source, "test_source": cfg.test_source or None, "format": cfg.format,
        "records_in": tally.records_in,
        "kept": {name: len(splits[name]) for name in SPLITS},
        "dropped": dict(sorted(tally.dropped.items())),
        "tokens": {name: _length_stats([lengths[r["id"]] for r in splits[name]]) if lengths else None for name in SPLITS},
        "languages": {name: dict(sorted(Counter(r["lang"] for r in splits[name]).items())) for name in SPLITS},
        "overlaps_test": {"count": len(overlaps), "ids": dict(sorted(overlaps.items())[:OVERLAPS_LISTED])},
        "test_passages_in_train": passages,
        "context_dropout": {"share": cfg.context_dropout, "train": len(dropped_context)},
        "mix": _mix_report(cfg, mix_tally, mix_wanted, splits["train"], mixed_ids) if cfg.mix_source else None,
    }
    assert report["records_in"] == sum(report["kept"].values()) + sum(report["dropped"].values()), report
    write_dataset(out_dir, splits, recipe, report)
    return report


def _remove_test_overlaps(splits: dict[str, list[dict]], test: list[dict], mixed_ids: set[str], tally: Tally,
                          mix_tally: Tally) -> dict[str, str]:
    """Take test duplicates out of train and val, counting each under its source; {removed id: test id}."""
    overlaps: dict[str, str] = {}
    for name in ("train", "val"):
        splits[name], removed = remove_test_duplicates(splits[name], test)
        overlaps.update(removed)
    mixed = len(mixed_ids & set(overlaps))
    tally.drop("overlaps_test", len(overlaps) - mixed)
    mix_tally.drop("overlaps_test", mixed)
    return overlaps


def _mix_report(cfg: DataConfig, mix_tally: Tally, wanted: int, train: list[dict], mixed_ids: set[str]) -> dict:
    """`wanted` is what data.mix_share asks for; `train` can fall short when the source runs out or test
    duplicates are removed."""
    n = sum(r["id"] in mixed_ids for r in train)
    return {"source": cfg.mix_source, "format": cfg.mix_format, "share": cfg.mix_share, "records_in": mix_tally.records_in,
            "wanted": wanted, "train": n, "train_share": round(n / len(train), 4)}


def _prompt_format(recipe: Recipe, tokenizer=None):
    """The model's prompt format: loaded with its tokenizer (the first stage that meets the model), or built around a
    tokenizer the caller gives (its generation judged from its turn tokens)."""
    from ..prompts import PromptFormat, prompt_format

    if isinstance(tokenizer, PromptFormat):
        return tokenizer
    if tokenizer is not None:
        return prompt_format(tokenizer, None, recipe.prompt.system)
    from ..models.loader import load_tokenizer

    return load_tokenizer(recipe.model, recipe.prompt.system)[1]


def _check_settings(cfg: DataConfig, out_dir: Path, overwrite: bool) -> None:
    """What can be checked before reading anything."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder")
    inputs = [p for source in (cfg.source, cfg.test_source, cfg.mix_source) if source for p in local_paths(source)]
    check_not_inputs([out_dir / name for name in OUTPUT_FILES], inputs)
    check_out_dir(out_dir, "data", overwrite)


def _check_unique_ids(train: list[dict], cfg: DataConfig) -> None:
    """Mixed ids carry a `mix:` prefix, so only an explicit `mix:...` id in data.source can meet one."""
    twice = next((i for i, n in Counter(r["id"] for r in train).items() if n > 1), None)
    if twice:
        raise UserError(f"{cfg.mix_source}: record id '{twice}' is also an id in {cfg.source}; rename one")


def write_dataset(out_dir: Path, splits: dict[str, list[dict]], recipe: Recipe, report: dict) -> None:
    """Write the splits as one whole: a marker first, the report last, the marker removed only then. A run cut off
    in between (disk full, SIGKILL) leaves the marker, and load_split refuses the mix of old and new files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / INCOMPLETE).write_text("prepare_data.py was writing this dataset and did not finish\n", encoding="utf-8")
    try:
        mark(out_dir, "data")
        for name in SPLITS:
            write_jsonl(out_dir / f"{name}.jsonl", ({k: r[k] for k in SCHEMA + OPTIONAL if k in r} for r in splits[name]))
        recipe.save(out_dir / "recipe.yaml")
        write_json(out_dir / "prep_report.json", report)
    except OSError as exc:  # disk full mid-dataset: say so, and that the folder is refused until prepared again
        raise UserError(f"writing the dataset to {out_dir} failed ({exc.filename or out_dir}: {exc.strerror or exc}); "
                        f"the folder is marked incomplete and is refused until prepare_data.py runs again") from None
    (out_dir / INCOMPLETE).unlink()


def _length_stats(values: list[int]) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"mean": round(statistics.fmean(ordered), 1), "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], "max": ordered[-1]}


def load_split(data_dir: Path, split: str) -> list[Record]:
    path = data_dir / f"{split}.jsonl"
    if (data_dir / INCOMPLETE).exists():
        raise UserError(f"{data_dir} holds an incomplete dataset (a prepare_data.py run did not finish): run it again")
    if not path.is_file():
        raise UserError(f"{path} not found: run scripts/prepare_data.py for this recipe first")
    rows, first_line = [], {}
    for lineno, row in read_jsonl_numbered(path):
        missing = [k for k in ("id", "instruction", "output") if k not in row]
        if missing:
            raise UserError(f"{path}:{lineno}: missing field '{missing[0]}'")
        for key in ("instruction", "input", "output", "lang"):
            if key in row and not isinstance(row[key], str):
                raise UserError(f"{path}:{lineno}: field '{key}' must be a string, got {type(row[key]).__name__} "
                                f"({json.dumps(row[key])[:40]})")
        if not isinstance(row["id"], (str, int)) or isinstance(row["id"], bool):
            raise UserError(f"{path}:{lineno}: field 'id' must be a string, got {type(row['id']).__name__}")
        row["id"] = str(row["id"])
        if row["id"] in first_line:
            raise UserError(f"{path}:{lineno}: duplicate id '{row['id']}' (first on line {first_line[row['id']]}); "
                            "ids must be unique or metrics would count one answer twice")
        first_line[row["id"]] = lineno
        rows.append(row)
    return rows
