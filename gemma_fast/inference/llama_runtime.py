"""A GGUF on llama.cpp's CPU runtime, through ik-llama-cpp-python (installed by tools.runtime_dir into the cache).

Used in-process by chat (streaming generation) and, for the export round trip, in a child process
(`python -m gemma_fast.llama_runtime REQUEST.json RESPONSE.json`), because a crash inside llama.cpp (e.g. a Gemma 3
with fewer than 6 layers) would otherwise take the training run with it. Greedy decoding reads the logits as a
numpy array (the package's own sampler walks all 262k candidates in Python for every token).
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np


@contextmanager
def _quiet_stderr(enabled: bool = True) -> Iterator[None]:
    """llama.cpp logs every tensor to stderr (fd 2) while loading; hide it unless asked."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_runtime(folder: str | Path):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    import ik_llama_cpp  # noqa: F401
    from ik_llama_cpp import _ctypes_api, _internals

    return _ctypes_api, _internals


class LlamaRuntime:
    def __init__(self, gguf: str | Path, runtime_folder: str | Path, n_ctx: int = 2048, threads: int = 0, verbose: bool = False):
        self.C, internals = import_runtime(runtime_folder)
        with _quiet_stderr(not verbose):
            self.model = internals.IkModel(str(gguf))
            self.context = internals.IkContext(self.model, n_ctx=n_ctx, n_threads=threads or (os.cpu_count() or 1), flash_attn=False)
        self.n_ctx, self.n_vocab = n_ctx, self.model.n_vocab
        self.n_ubatch = self.context._n_ubatch

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Ids of `text` without an added <bos>; control tokens like <start_of_turn> parsed when `special` (our own
        template text), left as characters when not (text from data or a user: prompts.Tokenize)."""
        return self.model.tokenize(text, add_bos=False, special=special)

    def piece(self, token: int) -> bytes:
        import ctypes

        buf = ctypes.create_string_buffer(256)
        n = self.C.llama_token_to_piece(self.model.model, token, buf, 256, 0, False)
        return buf.raw[:n] if n > 0 else b""

    def _logits(self, index: int) -> np.ndarray:
        pointer = self.context.get_logits(index)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()

    def forward(self, ids: list[int], start: int = 0, all_logits: bool = True) -> list[np.ndarray]:
        """Decode ids at positions start.. (the cache must hold 0..start-1); logits of every position, or the last."""
        if start + len(ids) > self.n_ctx:
            raise ValueError(f"{start + len(ids)} tokens exceed the context of {self.n_ctx}")
        out = []
        for offset in range(0, len(ids), self.n_ubatch):
            chunk = ids[offset:offset + self.n_ubatch]
            last_chunk = offset + self.n_ubatch >= len(ids)
            batch = self.C.llama_batch_init(len(chunk), 0, 1)
            batch.n_tokens = len(chunk)
            for i, token in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + offset + i, 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1 if all_logits or (last_chunk and i == len(chunk) - 1) else 0
            code = self.context.decode(batch)
            self.C.llama_batch_free(batch)
            if code != 0:
                raise RuntimeError(f"llama_decode failed ({code})")
            if all_logits:
                out += [self._logits(i) for i in range(len(chunk))]
            elif last_chunk:
                out.append(self._logits(len(chunk) - 1))
        return out

    def reset(self) -> None:
        self.context.kv_cache_clear()

    def generate(self, ids: list[int], max_new_tokens: int, stop_ids: set[int], on_token: Callable[[int], None] | None = None,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int = 0) -> list[int]:
        """Greedy (temperature 0) or sampled continuation of `ids` from an empty cache; stops at a stop id (not returned)."""
        rng = np.random.default_rng(seed)
        self.reset()
        logits = self.forward(ids, all_logits=False)[-1]
        out: list[int] = []
        for _ in range(max_new_tokens):
            token = int(np.argmax(logits)) if temperature <= 0 else _sample(logits, temperature, top_p, rng)
            if token in stop_ids:
                break
            out.append(token)
            if on_token:
                on_token(token)
            if len(ids) + len(out) >= self.n_ctx:
                break
            logits = self.forward([token], start=len(ids) + len(out) - 1, all_logits=False)[-1]
        return out


def _sample(logits: np.ndarray, temperature: float, top_p: float, rng) -> int:
    scaled = (logits - logits.max()) / temperature
    probs = np.exp(scaled)
    probs /= probs.sum()
    order = np.argsort(-probs)
    keep = order[: int(np.searchsorted(np.cumsum(probs[order]), top_p) + 1)]
    return int(rng.choice(keep, p=probs[keep] / probs[keep].sum()))


def serve_request(request: dict) -> dict:
    """The round trip's llama.cpp side: tokenisation, logits at the reference's top ids, greedy continuations."""
    runtime = LlamaRuntime(request["gguf"], request["runtime"], n_ctx=request["n_ctx"])
    stop = set(request["stop_ids"])
    rows = []
    for item in request["items"]:
        ids = runtime.tokenize(item["text"])
        runtime.reset()
        logits = runtime.forward(item["ref_ids"])
        positions = item["positions"]
        at_top = [[float(logits[p][t]) for t in top] for p, top in zip(positions, item["ref_top"])]
        argmax = [int(np.argmax(logits[p])) for p in positions]
        greedy = runtime.generate(item["prompt_ids"], request["max_new_tokens"], stop)
        # the GGUF's own logits where its greedy answer leaves the reference's (for the near-tie test)
        rows.append({"ids": ids, "argmax": argmax, "at_ref_top": at_top, "greedy": greedy})
    return {"rows": rows, "n_vocab": runtime.n_vocab}


if __name__ == "__main__":
    request_path, response_path = sys.argv[1:3]
    response = serve_request(json.loads(Path(request_path).read_text(encoding="utf-8")))
    Path(response_path).write_text(json.dumps(response), encoding="utf-8")
