"""SFTTrainer glue: the run plan (what runs where), adapters, answer-only data, checkpoints, progress and exports.

On CUDA with Unsloth: FastLanguageModel + get_peft_model(use_gradient_checkpointing="unsloth"). Elsewhere:
transformers + peft (+ bitsandbytes for QLoRA on a GPU). Every fallback is said in the log, in
train_summary.json and in the saved recipe, which records what actually ran.
"""

from __future__ import annotations

import logging
import dataclasses
import json
import os
import re
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from . import varlen
from ..models.backend import check_gpu_setup, cpu_precision, resolve_backend
from ..data.pipeline import load_split
from ..errors import UserError
from ..identity import BASE_FILE, check_adapter_shape, check_same_base, recorded_base, write_base
from ..io import write_json, write_jsonl, writing
from .loss import LOSS_PATH, answer_only_trainer
from ..export.ram import check_export_ram, export_command, run_export_process
from ..export.merge import free_memory
from ..families import TOWERS, family_of_config
from ..methods import method_of
from .guards import FirstBatchCheck, GradientAndMovement, check_moved, guarded
from ..models.loader import load_config, load_model, resolve_model, under_fsdp
from ..outputs import check_out_dir, holds_files, mark, output_kind, replace_guard
from ..rag import attach_passages
from ..recipe import Recipe
from ..report import plot_loss

log = logging.getLogger(__name__)

CUDA_ONLY_OPTIMIZERS = ("paged", "8bit", "bnb")


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0  # set by accelerate / torchrun for each process


# ---------------------------------------------------------------- the plan: what will run, decided once


@dataclass
class Plan:
    method: str
    backend: str
    optimizer: str
    notes: list[str] = field(default_factory=list)


def plan_run(recipe: Recipe, cuda: bool, has_unsloth: bool | None = None) -> Plan:
    """Check the combination and decide the effective method, backend and optimizer, with a note per fallback.
    `has_unsloth` None tries `import unsloth` now, so call this before anything imports transformers, peft or trl."""
    t, notes = recipe.train, []
    method, optimizer = t.method, t.optimizer
    if method_of(method).weights_4bit and not cuda:
        fallback = method_of(method).cpu_fallback
        notes.append(f"train.method={method} needs a CUDA GPU for 4-bit weights; none found, so this run trains "
                     f"{fallback} in float32")
        method = fallback
    backend = recipe.backend
    if not method_of(method).on_unsloth:  # the recipe's own combination rules were checked at load time (Recipe.check)
        if backend == "auto" and cuda:
            notes.append(f"train.method={method} runs on transformers + peft, not Unsloth")
        backend = "hf"
    if under_fsdp():  # Unsloth is single-GPU; FSDP shards the transformers + peft model
        if backend == "unsloth":
            raise UserError("backend=unsloth does not run under FSDP (accelerate launch --config_file "
                            "configs/accelerate_fsdp.yaml); set backend=hf or auto")
        if backend == "auto":
            notes.append("FSDP runs on transformers + peft, not Unsloth")
        backend = "hf"
    chosen, backend_notes = resolve_backend(backend, unsloth_imports=has_unsloth, cuda=cuda)
    notes += backend_notes
    if chosen == "unsloth" and recipe.lora.use_dora:  # backend=auto resolved to Unsloth here
        raise UserError("lora.use_dora=true runs on the hf backend; set backend=hf")
    if chosen == "unsloth" and t.packing:  # Unsloth reads packed-sequence boundaries its own way: unverified, so refused
        raise UserError("train.packing=true is not supported on the Unsloth backend (packed examples could attend to each "
                        "other); set train.packing=false, or backend=hf")
    if chosen == "unsloth" and not t.gradient_checkpointing:
        notes.append("Unsloth runs without gradient checkpointing (train.gradient_checkpointing=false); set it true to save memory")
    if not cuda and any(tag in optimizer for tag in CUDA_ONLY_OPTIMIZERS):
        notes.append(f"train.optimizer={optimizer} needs bitsandbytes on CUDA; using adamw_torch")
        optimizer = "adamw_torch"
    if t.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise UserError("train.tensorboard=true needs the tensorboard package: pip install tensorboard")
    return Plan(method, chosen, optimizer, notes)


def fsdp_wrap_class(model, family, notes: list[str]) -> str | None:
    """Under FSDP: the decoder-layer class accelerate wraps, from the family table (families.Family.fsdp_layer) and
    exported as accelerate reads it (FSDP_TRANSFORMER_CLS_TO_WRAP) before the trainer builds its Accelerator. A class
    given in the config that this model does not have is replaced, with a note. None when not under FSDP."""
    if not under_fsdp():
        return None
    present = {type(m).__name__ for m in model.modules()}
    given = [c for c in os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "").split(",") if c]
    if given and all(c in present for c in given):
        return ",".join(given)
    if given:
        notes.append(f"FSDP: {', '.join(c for c in given if c not in present)} is not in this {family.label} model; "
                     f"wrapping {family.fsdp_layer} (families.py)")
    os.environ["FSDP_TRANSFORMER_CLS_TO_WRAP"] = family.fsdp_layer
    return family.fsdp_layer


def effective_recipe(recipe: Recipe, plan: Plan) -> Recipe:
    """The recipe as it ran, so rerunning from the run folder repeats this run."""
    return dataclasses.replace(recipe, backend=recipe.backend if method_of(plan.method).on_unsloth else "hf",
                               train=dataclasses.replace(recipe.train, method=plan.method, optimizer=plan.optimizer))


# ---------------------------------------------------------------- adapters


def attach_adapter(loaded, recipe: Recipe, method: str):
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model

    if method_of(method).peft_type == "PREFIX_TUNING":
        return get_peft_model(loaded.model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=recipe.prefix.num_virtual_tokens))
    lora = recipe.lora
    targets = lora.targets(loaded.family)
    if loaded.backend == "unsloth":  # the language model alone is loaded (models.load_model): no tower to exclude
        from unsloth import FastLanguageModel

        return FastLanguageModel.get_peft_model(
            loaded.model, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
            bias="none", use_gradient_checkpointing="unsloth" if recipe.train.gradient_checkpointing else False,
            random_state=recipe.seed, use_rslora=lora.use_rslora,
        )
    if method_of(method).weights_4bit:
        from peft import prepare_model_for_kbit_training

        loaded.model = prepare_model_for_kbit_training(loaded.model, use_gradient_checkpointing=recipe.train.gradient_checkpointing)
    # the language model alone is loaded (models.load_model); should a tower be there, LoRA never enters it
    towers = TOWERS if any(re.fullmatch(TOWERS, name) for name, _ in loaded.model.named_modules()) else None
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                        exclude_modules=towers, use_rslora=lora.use_rslora, use_dora=lora.use_dora, task_type="CAUSAL_LM")
    try:
        return get_peft_model(loaded.model, config)
    except ValueError as exc:  # only peft's "Target modules {...} not found in the base model" is about target_modules
        first = str(exc).splitlines()[0]
        if "not found in the base model" in first:
            raise UserError(f"lora.target_modules={lora.target_modules}: {first}") from None
        raise UserError(f"lora (r={lora.r}, alpha={lora.alpha}, dropout={lora.dropout}): {first}") from None


# ---------------------------------------------------------------- run folder


# The JSON types of the trainer_state.json fields Trainer reads on resume (TrainerState(**json) takes any type, and
# a wrong one fails deep inside the resumed run). Which fields exist at all is the installed TrainerState's.
STATE_TYPES: dict[str, tuple] = {
    "global_step": (int,), "max_steps": (int,), "epoch": (int, float), "logging_steps": (int, float),
    "eval_steps": (int, float), "save_steps": (int, float), "train_batch_size": (int, type(None)),
    "num_train_epochs": (int, float), "num_input_tokens_seen": (int, float), "total_flos": (int, float),
    "log_history": (list,), "best_metric": (int, float, type(None)), "best_global_step": (int, type(None)),
    "best_model_checkpoint": (str, type(None)), "is_local_process_zero": (bool,), "is_world_process_zero": (bool,),
    "is_hyper_param_search": (bool,), "trial_name": (str, type(None)), "trial_params": (dict, type(None)),
    "stateful_callbacks": (dict, list, type(None)),
}


def trainer_state_problem(state: object, step: int) -> str | None:
    """Why a checkpoint's trainer_state.json cannot be resumed from (fields, types, its step), or None."""
    from transformers.trainer_callback import TrainerState

    if not isinstance(state, dict):
        return "is not an object"
    unknown = sorted(set(state) - {f.name for f in dataclasses.fields(TrainerState)})  # TrainerState(**json) refuses them
    if unknown:
        return f"has unknown field '{unknown[0]}'"
    for key, types in STATE_TYPES.items():
        value = state.get(key)
        if key in state and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            return f"field '{key}' is {type(value).__name__}, expected {' or '.join(t.__name__ for t in types)}"
    if state.get("global_step") != step:
        return f"says global_step {state.get('global_step')}, not {step}"
    if not all(isinstance(row, dict) for row in state.get("log_history", [])):
        return "field 'log_history' holds a non-object"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, by cheap checks (headers and small files only), or None: every file
    resume reads is checked, so a damaged one is skipped rather than crashing the resumed run. Trainer writes
    trainer_state.json last, so a checkpoint without it was cut off mid-save (SIGKILL, power, a full disk)."""
    import zipfile

    from ..identity import adapter_problem

    state = path / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (cut off while saving)"
    try:
        problem = trainer_state_problem(json.loads(state.read_text(encoding="utf-8")), _step_of(path))
    except (OSError, ValueError, RecursionError) as exc:
        return f"trainer_state.json unreadable ({type(exc).__name__})"
    if problem:
        return f"trainer_state.json {problem}"
    problem = adapter_problem(path)  # weights whole, and of the rank adapter_config.json says
    if problem:
        return problem
    for file in sorted(path.iterdir()):  # torch.save files (optimizer, scheduler, RNG states, args) are zips:
        if file.suffix in (".pt", ".pth") or file.name == "training_args.bin":  # a truncated one has no directory
            try:
                with zipfile.ZipFile(file) as archive:
                    archive.namelist()
            except (OSError, zipfile.BadZipFile) as exc:
                return f"{file.name} unreadable ({exc})"
    return None


def checkpoint_write_failure(exc: BaseException, output_dir: Path, step: int) -> UserError | None:
    """A failed write while Trainer saved checkpoint-<step> (a full disk: torch.save's RuntimeError, safetensors'
    SafetensorError, an OSError) as one line naming the newest complete checkpoint, the half-written one removed;
    None when `exc` is something else."""
    import errno

    from ..io import write_error

    if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS):
        return None  # another OS error (cli says it, naming its file)
    half = output_dir / f"checkpoint-{step}"
    failure = write_error(exc, half)
    if failure is None:
        return None
    removed = ""
    if half.is_dir() and checkpoint_problem(half):
        shutil.rmtree(half, ignore_errors=True)
        removed = f"; the half-written {half.name} was removed"
    newest = newest_complete_checkpoint(output_dir)
    return UserError(f"writing a checkpoint in {output_dir} failed ({failure.filename}: {failure.strerror}){removed}; "
                     + (f"the newest complete checkpoint is {newest}: free space and --resume" if newest else
                        "no complete checkpoint was written"))


def newest_complete_checkpoint(folder: Path, skipped: list[str] | None = None) -> str | None:
    """The newest checkpoint that passes checkpoint_problem; each newer one skipped is described in `skipped`."""
    found = sorted((p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        if skipped is not None:
            skipped.append(f"{path.name}: {problem}")
    return None


def has_resumable_state(folder: Path) -> bool:
    """A run folder worth keeping after a failure: a saved adapter or a complete checkpoint."""
    return (folder / "adapter").is_dir() or newest_complete_checkpoint(folder / "checkpoints") is not None


def check_run_dir(out_dir: Path, recipe: Recipe, resume: bool, overwrite: bool, notes: list[str] | None = None) -> str | None:
    """The checkpoint to resume from, or None. Only checks: nothing is moved or deleted here (see replace_guard).
    Checkpoints that fail the cheap checks are skipped, each with a line in `notes`."""
    stub = output_kind(out_dir) == "run" and not has_resumable_state(out_dir)  # killed before its first checkpoint
    if not resume:
        check_out_dir(out_dir, "run", overwrite, hint="it holds a run that stopped before its first checkpoint, so there is "
                      "nothing to resume: " if stub else "--resume continues a run, ")
        return None
    if not holds_files(out_dir):
        raise UserError(f"--resume: {out_dir} holds no run to continue")
    by_content = (out_dir / BASE_FILE).is_file()  # the base by content, not by spelling
    if by_content:
        check_same_base(out_dir, recipe.model, "--resume: run")
    skipped: list[str] = []
    checkpoint = newest_complete_checkpoint(out_dir / "checkpoints", skipped)
    if not by_content and checkpoint and recorded_base(Path(checkpoint)) is not None:  # peft's adapter_config.json
        check_same_base(Path(checkpoint), recipe.model, "--resume: run")
    elif not by_content:
        saved = out_dir / "recipe.yaml"
        trained_on = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("model") if saved.is_file() else None
        if trained_on and trained_on != recipe.model:
            raise UserError(f"--resume: {out_dir} was trained on model '{trained_on}', but the recipe's model is '{recipe.model}'; nothing was changed")
    if checkpoint is None:
        if skipped:
            raise UserError(f"--resume: no usable checkpoint in {out_dir / 'checkpoints'} ({'; '.join(skipped)})")
        if stub and holds_files(out_dir):
            raise UserError(f"--resume: {out_dir} holds a run that stopped before its first checkpoint (killed outright: "
                            "Ctrl-C and SIGTERM save one), so there is nothing to resume; start it again with --overwrite "
                            "(train.save_steps also writes checkpoints as it goes)")
        raise UserError(f"--resume: no checkpoint in {out_dir / 'checkpoints'} (set train.save_steps to write them)")
    if notes is not None:
        notes += [f"--resume skipped {line}; continuing from {Path(checkpoint).name}" for line in skipped]
    spec = recipe.model
    targets = recipe.lora.targets(family_of_config(load_config(spec, resolve_model(spec)), f"model '{spec}'"))
    check_adapter_shape(Path(checkpoint), recipe, recipe.train.method,
                        "--resume: checkpoint", targets)
    return checkpoint


def _step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[-1])


def trim_metrics(metrics_path: Path, checkpoint: Path) -> None:
    """On resume, drop metrics.jsonl rows logged after the checkpoint (a killed run logged them; the resumed run
    logs those steps again) and a line cut off mid-write. Step N's own rows were logged before checkpoint-N."""
    if not metrics_path.is_file():
        return
    step, kept = _step_of(checkpoint), []
    for line in metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(row)
    write_jsonl(metrics_path, kept)


def save_adapter(model, tokenizer, out_dir: Path, family=None) -> Path:
    """Write adapter/ whole or not at all; on a failed write (disk full) say where the newest checkpoint is. The
    model card (README.md, what the hub shows) carries the base model's licence."""
    final, partial = out_dir / "adapter", out_dir / "adapter.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with writing(partial):  # a full disk is an OSError here, also from safetensors (SafetensorError)
            model.save_pretrained(partial)
            tokenizer.save_pretrained(partial)
            if family is not None:
                card_licence(partial / "README.md", family)
            if (out_dir / BASE_FILE).is_file():  # the base travels with a copied adapter
                shutil.copyfile(out_dir / BASE_FILE, partial / BASE_FILE)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        checkpoint = newest_complete_checkpoint(out_dir / "checkpoints")
        where = f"the newest complete checkpoint is {checkpoint}: --resume continues from it" if checkpoint else \
            "no checkpoint was written (set train.save_steps to keep one)"
        raise UserError(f"saving the adapter to {final} failed ({exc.strerror or exc}); nothing half-written was left; "
                        f"{where}") from None
    if final.exists():  # a resumed run replaces its own earlier adapter
        shutil.rmtree(final)
    partial.rename(final)
    return final


def card_licence(card_path: Path, family) -> None:
    """Put the base model's licence into the adapter's model card metadata (Apache-2.0 for Gemma 4, the Gemma Terms of
    Use for Gemma 1-3 and 3n), so a published adapter says under which terms its base weights come."""
    from huggingface_hub import ModelCard, ModelCardData

    card = ModelCard.load(card_path) if card_path.is_file() else ModelCard("")
    data = card.data or ModelCardData()
    name, url = family.licence
    data.license = "apache-2.0" if name == "Apache-2.0" else "gemma"
    data.license_link = url
    card.data = data
    card.save(card_path)


def reference_attention(loaded, padding_free: bool) -> str | None:
    """The attention the first-batch check's evaluation pass runs with: the model's own when training pads, else
    what evaluation loads (eager for Gemma 2, SDPA otherwise) in place of the padding-free function."""
    if not padding_free:
        return None
    return "eager" if loaded.family.eager_attention else "sdpa"


def tokenize_split(prompts, records: list[dict], max_length: int):
    """The records as training examples (prompts.PromptFormat.example: ids and the answer mask)."""
    from datasets import Dataset

    return Dataset.from_list([prompts.example(r, max_length) for r in records])


@dataclass
class Exports:
    merge: bool = False
    gguf: str = ""  # GGUF types, comma-separated: f16, bf16, q8_0, q4_k_m (exporters.py, on every backend)
    push_to_hub: str = ""  # a hub repo id
    roundtrip: int = 8  # test prompts the GGUF round trip checks after the export (0: none)


def check_exports(exports: Exports, plan: Plan) -> str | None:
    """Fail before training, not after an hour of it. Returns the hub token to use, if pushing."""
    method = method_of(plan.method)
    if exports.merge and not method.merges:
        raise UserError(f"--merge: {method.why_not}; only LoRA adapters merge")
    if exports.gguf:
        from ..export.exporters import check_tools, choose, names_for

        if not method.merges:
            raise UserError(f"--gguf: {method.why_not}, so no GGUF; only LoRA adapters export")
        check_tools(choose(names_for(gguf=exports.gguf)))  # installs the converter (and llama-quantize) now, not after training
    if exports.push_to_hub:
        from huggingface_hub import get_token

        token = os.environ.get("HF_TOKEN") or get_token()
        if not token:
            raise UserError("--push-to-hub needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")
        return token
    return None


CUDA_PADDING_FREE = "GEMMA_FAST_CUDA_PADDING_FREE"  # =1: padding-free batches on CUDA too (to measure them there)


def use_padding_free(loaded, plan: Plan, wanted: bool = True, cuda: bool = False) -> bool:
    """transformers + peft: concatenate each batch into one row and attend per example (varlen.py), so the backbone
    computes no padding (about half of a Kaggle docs batch). Unsloth pads its own way; prefix tuning needs the
    padded cache; train.padding_free=false pads as plain TRL does; a generation whose per-example attention is not
    verified (families.Family.varlen) pads too, and the run's notes say so. On CUDA it pads by default: one SDPA
    launch per example was measured faster on a CPU only (docs/benchmarks.md), and a GPU may lose to a padded batch."""
    if not wanted or loaded.backend != "hf" or not method_of(plan.method).padding_free:
        return False
    if cuda and os.environ.get(CUDA_PADDING_FREE) != "1":
        plan.notes.append(f"padding-free batches (train.padding_free) are measured on CPUs only: this GPU run pads its "
                          f"batches ({CUDA_PADDING_FREE}=1 turns them on, to measure them)")
        return False
    if not varlen.supports(loaded.model):
        plan.notes.append(f"padding-free batches are not verified for {loaded.family.label}: this run pads its batches (slower)")
        return False
    varlen.use_varlen(loaded.model)
    return True


def sft_args(recipe: Recipe, plan: Plan, dtype: torch.dtype, out_dir: Path, has_eval: bool, cuda: bool, cpu_amp: str | None,
             padding_free: bool, backend: str) -> dict:
    """The recipe's short names mapped onto TRL's SFTConfig (keyword arguments, so the mapping can be tested)."""
    t = recipe.train
    save_steps = t.save_steps or (t.eval_steps if t.early_stopping_patience else 0)  # the best model must be on disk
    return dict(
        output_dir=str(out_dir / "checkpoints"), per_device_train_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr, lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,  # transformers 5 reads a float below 1 as a share of the steps (warmup_ratio is gone)
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, num_train_epochs=t.epochs, max_steps=t.max_steps,
        optim=plan.optimizer, logging_steps=t.logging_steps, eval_strategy="steps" if has_eval else "no",
        eval_steps=t.eval_steps or None, per_device_eval_batch_size=t.batch_size,
        save_strategy="steps" if save_steps else "no", save_steps=save_steps or None, save_total_limit=2,
        load_best_model_at_end=bool(t.early_stopping_patience), metric_for_best_model="eval_loss", greater_is_better=False,
        seed=recipe.seed, data_seed=recipe.seed,
        bf16=dtype == torch.bfloat16 or cpu_amp == "bf16-autocast", fp16=dtype == torch.float16, use_cpu=not cuda,
        completion_only_loss=True, packing=t.packing, padding_free=padding_free,
        # records are already cut to max_seq_length (PromptFormat.example); TRL refuses max_length with padding-free rows
        # unless it packs
        max_length=None if padding_free and not t.packing else t.max_seq_length,
        include_num_input_tokens_seen="non_padding", report_to=["tensorboard"] if t.tensorboard else "none",
        disable_tqdm=True, dataloader_num_workers=0,
        # always explicit: TRL's default is True. (The name is deprecated in transformers 5.23, but its replacement
        # is absent from 5.17, the GPU pin.) Unsloth does its own checkpointing.
        gradient_checkpointing=t.gradient_checkpointing and backend != "unsloth",
    )


# ---------------------------------------------------------------- the run


def train(recipe: Recipe, out_dir: Path, resume: bool = False, overwrite: bool = False, exports: Exports | None = None) -> dict:
    exports = exports or Exports()
    check_gpu_setup()
    cuda = torch.cuda.is_available()
    plan = plan_run(recipe, cuda)  # imports Unsloth when it will run, before the imports below
    from transformers import EarlyStoppingCallback, PrinterCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    from .callbacks import ProgressAndMetrics, SaveAndStopOnCtrlC, SaveRecipeOnTrainBegin, peak_memory_mb
    token = check_exports(exports, plan)
    if is_main_process():  # the exports run after training, on the CPU: refuse now if this machine's RAM cannot hold them
        check_export_ram(recipe.model, exports.merge, exports.gguf, exports.roundtrip, merge_dtype(cuda),
                         export_command(out_dir / "recipe.yaml", out_dir, exports.merge, exports.gguf, exports.roundtrip,
                                        merge_dtype(cuda)))
    resume_notes: list[str] = []
    checkpoint = check_run_dir(out_dir, recipe, resume, overwrite, resume_notes)
    train_records, val_records = load_records(recipe)
    t = recipe.train
    for note in plan.notes + resume_notes:
        log.warning(note)

    set_seed(recipe.seed)  # before the adapter exists: LoRA A and prefix weights are drawn at creation, not by Trainer
    loaded = load_model(recipe.model, plan.backend, t.max_seq_length, load_in_4bit=method_of(plan.method).weights_4bit,
                        system=recipe.prompt.system, gradient_checkpointing=t.gradient_checkpointing)
    if loaded.loaded_from != loaded.path:  # merge and export read recipe.model: say so when training read another repo
        plan.notes.append(f"the weights came from '{loaded.loaded_from}', not '{loaded.path}': merge and export read '{recipe.model}'")
        log.warning(plan.notes[-1])
    padding_free = use_padding_free(loaded, plan, t.padding_free, cuda)
    fsdp_wrap = fsdp_wrap_class(loaded.model, loaded.family, plan.notes)
    model = attach_adapter(loaded, recipe, plan.method)
    train_ds = tokenize_split(loaded.prompts, train_records, t.max_seq_length)
    val_ds = tokenize_split(loaded.prompts, val_records, t.max_seq_length) if val_records else None

    ran = effective_recipe(recipe, plan)
    metrics_path = out_dir / "metrics.jsonl"
    if t.tensorboard:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(out_dir / "tensorboard")  # transformers 5 reads it here, per run
    # on a CPU the weights stay float32; where the CPU computes bf16 natively, autocast runs the matmuls in bf16
    cpu_amp = cpu_precision() if not cuda and loaded.backend == "hf" and loaded.dtype == torch.float32 else None
    args = SFTConfig(**sft_args(recipe, plan, loaded.dtype, out_dir, has_eval=val_ds is not None, cuda=cuda, cpu_amp=cpu_amp,
                                padding_free=padding_free, backend=loaded.backend))
    # Everything is checked and loaded; only now is --out touched. An old run is moved aside and removed once
    # this one has its adapter; a failure before any checkpoint puts it back (replace_guard).
    guard = replace_guard(out_dir, "run", overwrite, keep_on_failure=has_resumable_state) \
        if checkpoint is None and is_main_process() else nullcontext()
    with guard:
        if is_main_process():
            mark(out_dir, "run")
            if not (out_dir / BASE_FILE).is_file():
                write_base(out_dir, recipe.model)  # the base by content: resume and evaluate compare with it
            if checkpoint:
                trim_metrics(metrics_path, Path(checkpoint))
        progress = ProgressAndMetrics(metrics_path)
        stopper = SaveAndStopOnCtrlC()
        saver = SaveRecipeOnTrainBegin(ran, out_dir / "recipe.yaml", plan.notes)
        # guards against silent failure (guards.py): the first batch two ways, finite gradients, an adapter that moves
        first_batch = FirstBatchCheck(loaded.prompts, train_records, t.max_seq_length, loaded.dtype,
                                      reference_attention(loaded, padding_free))
        gradients = GradientAndMovement()
        callbacks = [saver, progress, stopper, gradients.callback(args.fp16)] + \
            ([EarlyStoppingCallback(t.early_stopping_patience)] if t.early_stopping_patience else [])
        # transformers + peft: the head and the loss only at answer positions (gemma_fast.loss); Unsloth: its own fused loss
        trainer_class = guarded(answer_only_trainer() if loaded.backend == "hf" else SFTTrainer, first_batch)
        trainer = make_trainer(trainer_class, loaded.backend, model=model, args=args, train_dataset=train_ds,
                               eval_dataset=val_ds, processing_class=loaded.tokenizer, callbacks=callbacks)
        trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; the rich bar and metrics.jsonl replace it
        result, wall = run_trainer(trainer, checkpoint, stopper)
        if not trainer.is_world_process_zero():
            return {}
        if result.global_step == 0 or (checkpoint and result.global_step <= _step_of(Path(checkpoint))):
            raise UserError(f"no training step ran (train.epochs={t.epochs:g}, train.max_steps={t.max_steps}"
                            f"{', resumed at step ' + str(_step_of(Path(checkpoint))) if checkpoint else ''}); no adapter saved")
        save_adapter(model, loaded.tokenizer, out_dir, loaded.family)
        summary = {
            "recipe": recipe.name, "model": recipe.model, "model_loaded_from": loaded.loaded_from, "backend": loaded.backend, "method": plan.method,
            "dtype": str(loaded.dtype).removeprefix("torch."), "cpu_precision": cpu_amp,
            "unsloth_forced_float32": loaded.unsloth_forced_float32,
            "loss_path": LOSS_PATH if loaded.backend == "hf" else "unsloth", "optimizer": plan.optimizer, "notes": plan.notes,
            "batches": "padding-free, attention per example" if padding_free else "padded",
            "processes": trainer.accelerator.num_processes, "distributed": str(trainer.accelerator.distributed_type.value),
            "fsdp_wrap": fsdp_wrap,
            "adapter": str(out_dir / "adapter"), "resumed_from": checkpoint, "train_records": len(train_records),
            "steps": result.global_step, "train_seconds": round(wall, 1),
            **loss_summary(metrics_path, out_dir / "loss.png"),
            "tokens_per_s": round((trainer.state.num_input_tokens_seen - progress.tokens_at_start) / wall, 1) if wall else None,
            "peak_memory_mb": round(peak_memory_mb(), 1),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "adapter_dtype": sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad}),
            "guards": {"first_batch": first_batch.result or {"checked": False, "why": "resumed from a checkpoint"},
                       **gradients.summary(model)},
            "licence": dict(zip(("name", "url"), loaded.family.licence)),
            "exports": {},
        }
        write_json(out_dir / "train_summary.json", summary)
    idle = check_moved(summary["guards"])  # after the run is saved: a run whose gradients were all zero exits non-zero
    if idle:
        log.warning(idle)
        summary["notes"] = [*summary["notes"], idle]
        write_json(out_dir / "train_summary.json", summary)
    # The run is complete (and any replaced run removed); exports that fail leave it intact.
    summary["exports"] = run_exports(exports, model, loaded.tokenizer, out_dir, token)
    del trainer, model, loaded  # the training state leaves memory before a second copy of the base is loaded
    free_memory()
    return finish_exports(recipe, out_dir, exports, summary, cuda)


def make_trainer(trainer_class, backend: str, **kwargs):
    """The trainer, with a LoRA adapter that stays float32 on the transformers + peft path. TRL 1.15/1.16's
    SFTTrainer.__init__ recasts a quantized model's trainable weights to bf16 (sft_trainer.py, `_is_quantized_model`),
    which on a T4 means emulated-bf16 LoRA matmuls and AdamW updates that round away, while the run says float32.
    Recast here, before the optimizer exists (Trainer builds it in train()). Unsloth's trainer drops TRL's recast."""
    trainer = trainer_class(**kwargs)
    if backend == "hf":
        for param in trainer.model.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.to(torch.float32)
    return trainer


def load_records(recipe: Recipe) -> tuple[list[dict], list[dict]]:
    """The train split, the val split when validation runs, with retrieved passages when rag.index is set (the same
    ones evaluation will put in its prompts)."""
    t = recipe.train
    train_records = load_split(recipe.data_dir, "train")
    if not train_records:
        raise UserError(f"{recipe.data_dir / 'train.jsonl'} is empty: no training data")
    val_records = load_split(recipe.data_dir, "val") if t.eval_steps > 0 else []
    if t.eval_steps > 0 and not val_records:
        raise UserError(f"train.eval_steps={t.eval_steps} but {recipe.data_dir / 'val.jsonl'} is empty; set data.val_fraction > 0")
    if recipe.rag.index:
        train_records, val_records = attach_passages(recipe, train_records, val_records)
    return train_records, val_records


def run_trainer(trainer, checkpoint: str | None, stopper) -> tuple[object, float]:
    """trainer.train() under the Ctrl-C handler; a full disk while checkpointing becomes one line naming the newest
    complete checkpoint. Returns the train result and the wall time."""
    start = time.perf_counter()
    output_dir = trainer.args.output_dir
    with stopper:
        try:
            result = trainer.train(resume_from_checkpoint=checkpoint)
        except Exception as exc:  # a full disk while checkpointing (torch.save, safetensors): checkpoint_write_failure
            failure = checkpoint_write_failure(exc, Path(output_dir), trainer.state.global_step)
            if failure is None:
                raise
            raise failure from None
    return result, time.perf_counter() - start


def loss_summary(metrics_path: Path, plot_path: Path) -> dict:
    """First and last training loss and the best validation loss, from metrics.jsonl; loss.png beside it."""
    rows = [json.loads(line) for line in metrics_path.open(encoding="utf-8")] if metrics_path.is_file() else []
    if rows:
        plot_loss(rows, plot_path)
    losses = [r["loss"] for r in rows if "loss" in r]
    eval_losses = [r["eval_loss"] for r in rows if "eval_loss" in r]
    return {"first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
            "best_eval_loss": min(eval_losses) if eval_losses else None}


def merge_dtype(cuda: bool) -> torch.dtype:
    return torch.bfloat16 if cuda else torch.float32  # after a GPU run: half the RAM of float32 for a GPU-sized model


def finish_exports(recipe: Recipe, out_dir: Path, exports: Exports, summary: dict, cuda: bool) -> dict:
    """The exports that reload the base (--merge, --gguf), in a fresh process (export/ram.py says why) once the run is
    saved: the export stage (gemma-fast export) on this run, its output streamed here. A failure leaves the run
    complete and names the command that retries the exports."""
    write_json(out_dir / "train_summary.json", summary)
    if not exports.merge and not exports.gguf:
        return summary
    command = export_command(out_dir / "recipe.yaml", out_dir, exports.merge, exports.gguf, exports.roundtrip, merge_dtype(cuda))
    log.info(f"exporting in a fresh process: {' '.join(command[1:])}")
    run_export_process(command, out_dir)
    if exports.merge:
        summary["exports"]["merged"] = str(out_dir / "merged")
    if exports.gguf:
        summary["exports"]["gguf"] = str(out_dir / "gguf" / "roundtrip.json")
    write_json(out_dir / "train_summary.json", summary)
    return summary


def run_exports(exports: Exports, model, tokenizer, out_dir: Path, token: str | None) -> dict:
    """The exports that need the trained model in memory (merging reloads the base on the CPU: merge_adapter)."""
    done = {}
    if exports.push_to_hub:
        try:
            model.push_to_hub(exports.push_to_hub, token=token, private=True)
            tokenizer.push_to_hub(exports.push_to_hub, token=token, private=True)
        except Exception as exc:  # never echo the token, whatever the library put in its message
            raise UserError(f"--push-to-hub {exports.push_to_hub} failed ({type(exc).__name__}); the adapter is saved in "
                            f"{out_dir / 'adapter'}: {str(exc).replace(token or '', '***').splitlines()[0]}") from None
        done["hub"] = exports.push_to_hub
    return done
