"""Hugging Face Hub access, said once and plainly: Google's Gemma repositories (google/gemma-*) are gated, so the first
stage that touches one (prepare loads the tokenizer; --plan probes access) fails with one line naming the licence page,
`hf auth login` and HF_TOKEN, instead of a library traceback at a later stage.

transformers wraps huggingface_hub's GatedRepoError / RepositoryNotFoundError in an OSError (`raise OSError(...) from
exc`), so the exception chain is searched, not only the exception itself. Nothing here imports torch or transformers.
"""

from __future__ import annotations

import os

from ..errors import UserError
from ..paths import looks_like_hub_id

LOGIN = "`hf auth login` (or set HF_TOKEN; in Colab: `from huggingface_hub import login; login()`)"


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def hub_problem(exc: BaseException) -> str | None:
    """"gated" or "not found" when `exc` (or what it wraps) is the Hub refusing a repository, else None."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    for link in _chain(exc):
        if isinstance(link, GatedRepoError):
            return "gated"
        if isinstance(link, RepositoryNotFoundError):
            return "not found"
    text = str(exc)
    if "gated repo" in text:  # transformers' own wording, should the chain have been cut
        return "gated"
    return None


def access_error(spec: str, where: str, exc: BaseException) -> UserError | None:
    """One line for a Hub refusal of `spec` at stage `where`, or None when `exc` is something else."""
    problem = hub_problem(exc)
    if problem is None:
        return None
    page = f"https://huggingface.co/{spec}"
    if problem == "gated":
        return UserError(f"{where}: '{spec}' is a gated repository on the Hugging Face Hub: accept its licence at {page} "
                         f"(signed in to the Hub), then log in here with {LOGIN}, and run again")
    return UserError(f"{where}: the Hugging Face Hub has no repository '{spec}' that this machine may read (misspelt, or "
                     f"private/gated and no token): check {page}; for a gated or private one, log in with {LOGIN}")


def check_access(spec: str, where: str = "model") -> str | None:
    """Ask the Hub whether this machine may read `spec` (no download). Raises the one-line UserError when it may not;
    returns a note when it could not ask (offline, network), None when access is fine or `spec` is no hub id."""
    if not looks_like_hub_id(spec) or os.path.isdir(os.path.expanduser(spec)):
        return None
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return f"{where}: HF_HUB_OFFLINE is set, so access to '{spec}' was not checked"
    from huggingface_hub import auth_check

    try:
        auth_check(spec)
    except Exception as exc:  # network errors, a Hub outage: not a verdict on access
        error = access_error(spec, where, exc)
        if error is not None:
            raise error from None
        return f"{where}: could not check access to '{spec}' ({type(exc).__name__})"
    return None
