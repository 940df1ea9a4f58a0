"""Recipes: one YAML per task, mapped one to one onto dataclasses, with typed `--set key.sub=value` overrides.

A recipe names everything a run needs (model, data, method, hyper-parameters, evaluation), and the resolved
recipe is written next to every output so any result can be reproduced from its folder alone.
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data import formats as adapters, clean
from . import methods
from .evaluation import metrics, perturb, selection
from .errors import UserError
from .families import Family

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def _choice(default: str, *choices: str, registry: Any = None) -> Any:
    """A string field with a fixed set of values, or the names of a registry (a dict, or a callable giving the names)
    so the list is written once, where the things it names are defined."""
    names = registry if registry is not None else (default, *choices)
    return field(default=default, metadata={"choices": names})


def choices_of(fld: dataclasses.Field) -> tuple[str, ...]:
    names = fld.metadata.get("choices") or ()
    return tuple(names() if callable(names) else names)


def _range(default: Any, lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> Any:
    """A number field with bounds, checked in `coerce` for YAML and --set alike (open ends exclude the bound)."""
    return field(default=default, metadata={"min": lo, "max": hi, "min_open": lo_open, "max_open": hi_open})


@dataclass
class DataConfig:
    source: str = ""  # local json/jsonl/csv/parquet file or glob, asset:NAME, a URL, or a hub dataset id
    format: str = _choice("alpaca", registry=adapters.ADAPTERS)  # which adapter turns rows into records
    hub_split: str = "train"  # split to read when `source` is a hub dataset id
    columns: dict[str, str] = field(default_factory=dict)  # our field -> source column, e.g. {output: answer}
    test_source: str = ""  # optional explicit test set; otherwise a seeded split of `source`
    drop_context: bool = False  # dolly: train without the context passage
    poetry_tasks: list[str] = field(default_factory=lambda: list(adapters.POETRY_TASKS))
    to_simplified: bool = False  # traditional -> simplified Chinese (OpenCC t2s)
    clean: list[str] = field(default_factory=list)  # rules from gemma_fast.clean.RULES, applied in order
    dedup: str = _choice("normalized", "exact", "none")
    on_bad_record: str = _choice("error", "skip")
    length_filter: bool = True  # drop records longer than train.max_seq_length tokens (model's tokenizer)
    val_fraction: float = _range(0.1, 0, 1, hi_open=True)
    test_fraction: float = _range(0.2, 0, 1, hi_open=True)
    max_records: int = _range(0, 0)  # seeded subset size after cleaning; 0 keeps every record
    context_dropout: float = _range(0.0, 0, 1)  # share of train records with a passage shown without it (seeded)
    mix_source: str = ""  # a second training source (e.g. general instructions), like `source`; train split only
    mix_format: str = _choice("alpaca", registry=adapters.ADAPTERS)  # mix_source's adapter
    mix_share: float = _range(0.0, 0, 1, hi_open=True)  # share of the train split drawn from mix_source; needs it
    dir: str = ""  # prepared splits; empty means data/<recipe name>


@dataclass
class PromptConfig:
    system: str = ""  # a system message: Gemma 4's own system turn; in front of the first question in Gemma 3/3n; none in 1/2


@dataclass
class LoraConfig:
    r: int = _range(16, 1)
    alpha: int = _range(32, 1)
    dropout: float = _range(0.05, 0, 1, hi_open=True)
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    use_rslora: bool = False  # rank-stabilised scaling alpha/sqrt(r)
    use_dora: bool = False  # weight-decomposed LoRA (hf backend)

    def targets(self, family: Family) -> list[str]:
        """The module names LoRA wraps: "all-linear" is the family's language-model projections (families.py: attention
        and MLP; never the LM head, the per-layer-embedding projections, the MoE router or a vision/audio tower)."""
        return list(family.lora_targets) if self.target_modules == ["all-linear"] else list(self.target_modules)


@dataclass
class PrefixConfig:
    num_virtual_tokens: int = _range(16, 1)  # train.method=prefix: learned key/value prefix length per layer


@dataclass
class RagConfig:
    index: str = ""  # rag/<name> folder to retrieve from; empty: no retrieval
    k: int = _range(3, 1)  # passages per question
    min_score: float = 0.0  # cosine similarity below which a passage is not used
    trigger: str = _choice("always", "terms")  # terms: only for questions that contain a glossary term
    glossary: str = ""  # term -> definition file (json object, or csv/tsv with two columns); also indexed
    corpus: list[str] = field(default_factory=list)  # files or globs: .txt/.md, or .json/.jsonl with corpus_field
    corpus_field: str = "input"  # the field whose distinct values are passages, for json/jsonl corpus files
    chunk_size: int = _range(1000, 1)  # characters
    chunk_overlap: int = _range(100, 0)
    embedding_model: str = "embedded:all-minilm-l6-v2"  # or a local sentence-transformers folder or a hub id


@dataclass
class RobustnessConfig:
    perturbations: list[str] = field(default_factory=lambda: [
        "typos:0.05", "casing:0.2", "punct_width", "punct_removal", "whitespace:0.1", "paraphrase", "code_switch:0.5",
        "context_removal", "sentence_shuffle", "distractor"])  # specs: name[:rate], composed with +
    metric: str = _choice("rougeL", registry=lambda: [m.name for m in metrics.metrics(headline=True) if m.level != "corpus"])  # the robustness score (mean relative drop)
    parallel_file: str = ""  # JSONL {id, instruction} of translated questions, for `translate`
    translate_to: str = "Chinese"  # target language for `self_translate`


@dataclass
class TrainConfig:
    method: str = _choice("lora", registry=methods.METHODS)
    epochs: float = _range(1.0, 0)
    max_steps: int = _range(-1, -1)  # > 0 overrides epochs
    batch_size: int = _range(8, 1)
    grad_accum: int = _range(1, 1)
    lr: float = _range(2e-4, 0, lo_open=True)
    scheduler: str = _choice("cosine", "linear", "constant", "constant_with_warmup")
    warmup_ratio: float = _range(0.03, 0, 1)
    weight_decay: float = _range(0.0, 0)
    max_grad_norm: float = _range(1.0, 0)
    max_seq_length: int = _range(512, 8)
    optimizer: str = "adamw_torch"  # any transformers optim name; paged_adamw_32bit / adamw_8bit need CUDA
    packing: bool = False  # pack short examples into full-length rows (padding-free)
    padding_free: bool = True  # transformers + peft: each batch as one row, attention per example (no padding computed)
    logging_steps: int = _range(1, 1)
    eval_steps: int = _range(0, 0)  # evaluate on the val split every N steps; 0: never
    save_steps: int = _range(0, 0)  # checkpoint every N steps (what --resume continues from); 0: only on Ctrl-C
    early_stopping_patience: int = _range(0, 0)  # stop after N evaluations without a better val loss; needs eval_steps
    gradient_checkpointing: bool = False
    tensorboard: bool = False  # also log to <run>/tensorboard (needs the tensorboard package)


@dataclass
class EvalConfig:
    split: str = _choice("test", "val", "train")
    ids: str = ""  # a file of ids to evaluate: one per line, or JSONL with "id"; an id not in the split is an error
    where: str = ""  # conditions on context (with|without), lang, task, source, comma-separated and ANDed
    without_context: bool = False  # the selected questions asked with their passage removed (same ids, new prompts)
    max_examples: int = _range(0, 0)  # the first N after ids, where and without_context; 0: all of them
    batch_size: int = _range(16, 1)  # prompts per generation batch, at most
    # tokens per batch, at most: rows x (longest prompt + max_new_tokens [+ Unsloth's 513-position decode buffer]),
    # i.e. the KV cache a batch holds; a prompt longer than this alone still runs, alone (batching.token_batches)
    batch_tokens: int = _range(8192, 1)
    max_new_tokens: int = _range(64, 1)
    do_sample: bool = False  # greedy by default: reproducible scores
    temperature: float = _range(1.0, 0)
    top_p: float = _range(1.0, 0, 1, lo_open=True)
    answer_stats: bool = True  # answer-token loss / perplexity / token accuracy (a forward over every reference answer)
    llamafactory_metrics: bool = False  # also report LLaMA-Factory-compatible BLEU-4 / ROUGE (char BLEU, jieba ROUGE, x100)
    min_n: int = _range(20, 1)  # report cells over fewer questions: dimmed in the terminal, withheld from report.md
    # what generates the fine-tuned model's answers: transformers (the run's adapter or merged folder), or llama.cpp
    # on the CPU (the run's exported <run>/gguf/model-<eval.gguf>.gguf: gemma-fast export --run RUN --gguf TYPE; the
    # base model, when compared, stays on transformers). docs/benchmarks.md measures both on a 2-core CPU
    runtime: str = _choice("transformers", "llama.cpp")
    gguf: str = "f16"  # the GGUF type eval.runtime=llama.cpp reads (f16: the same greedy answers; q8_0: faster, fewer)


@dataclass
class Recipe:
    name: str = ""
    model: str = "embedded:gemma-3-270m"  # embedded:gemma-3-270m | a hub id | a local folder
    backend: str = _choice("auto", "unsloth", "hf")
    seed: int = _range(42, 0, 2**32 - 1)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    prefix: PrefixConfig = field(default_factory=PrefixConfig)
    rag: RagConfig = field(default_factory=RagConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir or f"data/{self.name}")

    def default_out(self, stage: str, evaluated: Path | None = None) -> Path:
        """Where a stage writes when no --out is given: prepare -> data/<name>; rag -> rag.index or rag/<name>;
        train -> runs/<name>/<date-time>; evaluate / robustness -> inside the evaluated run or model folder
        (runs/<name>/... for the base model alone)."""
        import time

        if stage == "prepare":
            return self.data_dir
        if stage == "rag":
            return Path(self.rag.index or f"rag/{self.name}")
        if stage == "train":
            return Path("runs") / self.name / time.strftime("%Y%m%d-%H%M%S")
        if stage in ("eval", "robustness"):
            return (evaluated or Path("runs") / self.name) / stage
        raise ValueError(f"unknown stage {stage!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check(self, source: str = "recipe") -> None:
        """Once, at load time, so a bad recipe fails before any work: list values against the registries that
        define them, and the rules that involve more than one value (each value's own type, range and choice is
        checked in `coerce`). Rules that depend on the machine (CUDA, what Unsloth resolves to) are train.plan_run's."""
        t, e, d, lora = self.train, self.eval, self.data, self.lora
        _known(d.clean, clean.RULES, "data.clean", "rule", source)
        _known(d.poetry_tasks, adapters.POETRY_TASKS, "data.poetry_tasks", "task", source)
        for spec in self.robustness.perturbations:
            try:
                perturb.parse_spec(spec)
            except UserError as exc:
                raise UserError(f"{source}: robustness.perturbations: {exc}") from None
        try:
            selection.parse_where(e.where)
        except UserError as exc:
            raise UserError(f"{source}: {exc}") from None
        if t.epochs <= 0 and t.max_steps <= 0:
            raise UserError(f"{source}: train.epochs={t.epochs:g} and train.max_steps={t.max_steps}: set train.epochs > 0 "
                            "or train.max_steps > 0 (a run of 0 steps would save an untrained adapter)")
        if e.do_sample and e.temperature == 0:
            raise UserError(f"{source}: eval.do_sample=true needs eval.temperature > 0 (or set eval.do_sample=false for greedy)")
        if d.val_fraction + d.test_fraction >= 1:
            raise UserError(f"{source}: data.val_fraction={d.val_fraction:g} + data.test_fraction={d.test_fraction:g} "
                            "must sum below 1 (something must be left to train on)")
        if bool(d.mix_source) != (d.mix_share > 0):
            raise UserError(f"{source}: data.mix_share={d.mix_share:g} and data.mix_source={d.mix_source!r}: set both "
                            "(a share in (0, 1) of the train split drawn from the source) or neither")
        if self.rag.chunk_overlap >= self.rag.chunk_size:
            raise UserError(f"{source}: rag.chunk_overlap={self.rag.chunk_overlap} must be smaller than "
                            f"rag.chunk_size={self.rag.chunk_size}")
        if t.early_stopping_patience and not t.eval_steps:
            raise UserError(f"{source}: train.early_stopping_patience needs train.eval_steps > 0 (it watches the validation loss)")
        method = methods.method_of(t.method)
        if t.gradient_checkpointing and not method.checkpointing:
            raise UserError(f"{source}: train.method={t.method} does not work with train.gradient_checkpointing=true: PEFT's "
                            "prefix keys and values are dropped under checkpointing (tensor size mismatch); set it to false")
        if t.packing and not method.packing:
            raise UserError(f"{source}: train.method={t.method} does not work with train.packing=true (packed rows share one "
                            "prefix cache); set it to false")
        if self.backend == "unsloth" and not method.on_unsloth:
            raise UserError(f"{source}: train.method={t.method} runs on the hf backend (Unsloth patches LoRA only); set backend=hf or auto")
        if self.backend == "unsloth" and lora.use_dora:
            raise UserError(f"{source}: lora.use_dora=true runs on the hf backend; set backend=hf")
        if self.backend == "unsloth" and t.packing:
            raise UserError(f"{source}: train.packing=true is not supported on the Unsloth backend (packed examples could "
                            "attend to each other); set train.packing=false, or backend=hf")
        names = optimizer_names()
        if names and t.optimizer not in names:
            raise UserError(f"{source}: 'train.optimizer' {t.optimizer!r} is not a transformers optimizer; valid: {', '.join(names)}")

    def save(self, path: str | Path, notes: list[str] = ()) -> None:
        from .io import atomic_open

        with atomic_open(path) as handle:
            handle.write(f"# resolved recipe, written by gemma_fast; rerun with --recipe {path}\n")
            for note in notes:
                handle.write(f"# note: {note}\n")
            yaml.safe_dump(self.to_dict(), handle, sort_keys=False, allow_unicode=True)


def _known(values: list[str], registry, key: str, what: str, source: str) -> None:
    unknown = [v for v in values if v not in registry]
    if unknown:
        raise UserError(f"{source}: {key}: unknown {what} '{_clip(unknown[0])}'; valid: {', '.join(registry)}")


# ---------------------------------------------------------------- loading


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def resolve_recipe_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.parent != Path("."):
        if candidate.is_dir():
            raise UserError(f"recipe {candidate} is a folder, not a file")
        if not candidate.is_file():
            raise UserError(f"recipe file not found: {candidate}")
        return candidate
    path = RECIPES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise UserError(f"unknown recipe '{name_or_path}'; valid: {', '.join(available_recipes())} (or a path to a .yaml)")
    return path


MAX_YAML_NODES = 100_000  # values after alias expansion: a recipe has hundreds; a 1 KB alias bomb has billions
MAX_YAML_DEPTH = 100  # nesting levels: a recipe has three


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error (plain YAML lets the last one win), and
    that a document is bounded before anything is built from it: at most MAX_YAML_DEPTH levels deep (deeper input
    would exhaust Python's recursion) and at most MAX_YAML_NODES values with every alias expanded (a 1 KB alias bomb
    stands for 10^9 values, which any later walk over the value would expand)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        culprit = _too_large(node) if node is not None else None
        if culprit is not None:  # the innermost value past the bound: where the aliases are
            raise yaml.composer.ComposerError(None, None, f"its aliases (*name) expand to more than {MAX_YAML_NODES:,} "
                                                          "values (an alias bomb?); write the values out", culprit.start_mark)
        return node

    def construct_mapping(self, node, deep=False):
        """Merge keys (`<<: *defaults`) as YAML defines them (keys written here win over merged ones); a key written
        twice here is an error."""
        explicit = [(k, v) for k, v in node.value if k.tag != "tag:yaml.org,2002:merge"]
        self.flatten_mapping(node)
        seen: dict = {}
        for key_node, _ in explicit:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: let SafeLoader report it
                continue
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{_clip(str(key))}' (first on line {first})",
                                                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _too_large(root: yaml.Node) -> yaml.Node | None:
    """None when `root` stands for at most MAX_YAML_NODES values with every alias expanded; else the innermost node
    that stands for more. Sizes are computed once per node (aliases share nodes), without recursion; a node that
    contains itself counts once."""
    def children(node: yaml.Node) -> list:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return node.value if isinstance(node, yaml.SequenceNode) else []

    size: dict[int, int] = {}
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            size[id(node)] = 1 + sum(size.get(id(c), 1) for c in children(node))
        elif id(node) not in size:
            size[id(node)] = 1  # placeholder: a cycle back to this node counts it once
            stack.append((node, True))
            stack.extend((c, False) for c in children(node) if id(c) not in size)
    if size[id(root)] <= MAX_YAML_NODES:
        return None
    node, seen = root, set()
    while id(node) not in seen:
        seen.add(id(node))
        node = next((c for c in children(node) if size[id(c)] > MAX_YAML_NODES), node)
    return node


def load_yaml(text: str, where: str) -> Any:
    """A YAML document with the bounded, duplicate-refusing loader; a malformed one is a UserError naming `where`
    (and the line and column)."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise UserError(f"{where}{at}: malformed YAML: {getattr(exc, 'problem', None) or exc}") from None


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    path = resolve_recipe_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not valid UTF-8 (byte {exc.start}); save the recipe as UTF-8") from None
    raw = load_yaml(text, str(path)) or {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a recipe must be a mapping of keys to values")
    raw.setdefault("name", path.stem)
    recipe = _build(Recipe, raw, source=str(path), prefix="")
    for item in overrides or []:
        apply_override(recipe, item)
    recipe.check(source=str(path))
    return recipe


def optimizer_names() -> tuple[str, ...]:
    """transformers' OptimizerNames values, read from its source: importing transformers here would come before
    Unsloth's import, which must be first. () when the source cannot be read (then the Trainer checks it)."""
    import importlib.metadata

    try:  # found through the installed distribution's files: no import machinery is touched
        source = importlib.metadata.distribution("transformers").locate_file("transformers/training_args.py")
        text = Path(source).read_text(encoding="utf-8")
    except (importlib.metadata.PackageNotFoundError, OSError):
        return ()
    body = re.search(r"class OptimizerNames\(.*?\):\n(.*?)\n(?=\S)", text, re.S)
    return tuple(re.findall(r'^\s+[A-Z0-9_]+ = "([\w.-]+)"', body.group(1), re.M)) if body else ()


def _build(cls: type, raw: dict, source: str, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    obj = cls()
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise UserError(f"{source}: unknown key '{_clip(dotted)}'; valid: {', '.join(prefix + k for k in fields)}")
        target = hints[key]
        if dataclasses.is_dataclass(target):
            if not isinstance(value, dict):
                raise UserError(f"{source}: '{dotted}' must be a mapping with keys {', '.join(f.name for f in dataclasses.fields(target))}")
            setattr(obj, key, _build(target, value, source, prefix=f"{dotted}."))
        else:
            setattr(obj, key, coerce(value, target, fields[key], dotted, source))
    return obj


def _clip(text: str, limit: int = 120) -> str:
    """A user's text for an error message: at most `limit` characters, the cut said."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 4, 4, 80, 80


def _show(value: Any) -> str:
    """repr(value) for an error message, bounded whatever the value (a long string, a deep or alias-shared list)."""
    return _clip(_REPR.repr(value))


def coerce(value: Any, target: Any, fld: dataclasses.Field, dotted: str, source: str) -> Any:
    """Check and convert one value to its field's type; YAML reads `2e-4` as a string, so floats parse strings.
    Error messages are built only on failure, from a bounded repr of the value."""
    def bad() -> UserError:
        return UserError(f"{source}: '{dotted}' must be {getattr(target, '__name__', str(target))}, got {_show(value)}")

    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "yes", "no", "1", "0"}:
            return value.lower() in {"true", "yes", "1"}
        raise bad()
    if target is int:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return _in_range(value, fld, dotted, source)
        if isinstance(value, str):
            try:
                return _in_range(int(value), fld, dotted, source)
            except ValueError:
                raise bad() from None
        raise bad()
    if target is float:
        if isinstance(value, bool):
            raise bad()
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise bad() from None
        if not math.isfinite(number):
            raise UserError(f"{source}: '{dotted}' must be a finite number, got {_show(value)}")
        return _in_range(number, fld, dotted, source)
    if target is str:
        if isinstance(value, (dict, list)) or value is None:
            raise bad()
        text = str(value)
        choices = choices_of(fld)
        if choices and text not in choices:
            raise UserError(f"{source}: '{dotted}' must be one of {', '.join(choices)}, got {_show(text)}")
        return text
    if typing.get_origin(target) is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise UserError(f"{source}: '{dotted}' must be a mapping of strings, e.g. {{output: answer}}, got {_show(value)}")
        return dict(value)
    if typing.get_origin(target) is list:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
            raise UserError(f"{source}: '{dotted}' must be a list of strings, got {_show(value)}")
        return [str(v) for v in value]
    raise TypeError(f"unsupported field type {target!r} for {dotted}")


def _in_range(value: float, fld: dataclasses.Field, dotted: str, source: str) -> Any:
    lo, hi = fld.metadata.get("min"), fld.metadata.get("max")
    lo_open, hi_open = fld.metadata.get("min_open"), fld.metadata.get("max_open")
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and (value >= hi if hi_open else value > hi)
    if too_low or too_high:
        parts = ([f"{'>' if lo_open else '>='} {_num(lo)}"] if lo is not None else []) + \
                ([f"{'<' if hi_open else '<='} {_num(hi)}"] if hi is not None else [])
        raise UserError(f"{source}: '{dotted}' must be {' and '.join(parts)}, got {value!r}")
    return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def apply_override(recipe: Recipe, item: str) -> None:
    """Apply one `key.sub=value` override in place, with the same checks as the YAML file."""
    if "=" not in item:
        raise UserError(f"--set expects key=value, got {_show(item)}")
    dotted, text = item.split("=", 1)
    parts = dotted.strip().split(".")
    obj: Any = recipe
    for depth, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(obj)}
        prefix = ".".join(parts[:depth])
        if part not in fields:
            valid = ", ".join((prefix + "." if prefix else "") + name for name in fields)
            raise UserError(f"--set: unknown key '{_clip(dotted)}'; valid: {valid}")
        target = typing.get_type_hints(type(obj))[part]
        if depth < len(parts) - 1:
            if not dataclasses.is_dataclass(target):
                raise UserError(f"--set: '{'.'.join(parts[: depth + 1])}' has no sub-keys")
            obj = getattr(obj, part)
            continue
        if dataclasses.is_dataclass(target):
            subkeys = ", ".join(f"{dotted}.{f.name}" for f in dataclasses.fields(target))
            raise UserError(f"--set: '{dotted}' is a section; set one of {subkeys}")
        try:
            value = yaml.load(text, Loader=_UniqueKeyLoader) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise UserError(f"--set {dotted}: the value {_show(text)} is not valid YAML ({getattr(exc, 'problem', None) or exc}); "
                            "quote it, e.g. --set 'key=\"a, b\"'") from None
        setattr(obj, part, coerce(value, target, fields[part], dotted, source="--set"))
