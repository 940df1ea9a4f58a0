"""Gated and unreachable Hub repositories: one line naming the licence page, `hf auth login` and HF_TOKEN, at the
first stage that touches the repo, with huggingface_hub's own errors raised by monkeypatched loaders (no network)."""

import sys
import types

import httpx
import pytest
import transformers
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from gemma_fast.models import hub
from gemma_fast.errors import UserError
from gemma_fast.models.loader import load_model, load_tokenizer
from gemma_fast.testing.tiny import save_tiny_model

REPO = "google/gemma-7b-it"


def hub_error(kind, repo=REPO):
    url = f"https://huggingface.co/api/models/{repo}"
    return kind(f"401 Client Error. Access to model {repo} is restricted.", response=httpx.Response(401, request=httpx.Request("GET", url)))


def as_transformers_raises(exc):
    """transformers' cached_file: `raise OSError("You are trying to access a gated repo...") from exc`."""
    def raiser(*args, **kwargs):
        try:
            raise exc
        except Exception as inner:
            raise OSError(f"You are trying to access a gated repo.\nMake sure to have access to it at https://huggingface.co/{REPO}.") from inner
    return raiser


def test_gated_tokenizer_is_one_line_naming_login_token_and_licence_page(monkeypatch):
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", as_transformers_raises(hub_error(GatedRepoError)))
    with pytest.raises(UserError) as refused:
        load_tokenizer(REPO)  # prepare's first touch of the model (data._prompt_format)
    line = str(refused.value)
    assert "\n" not in line and "gated" in line
    for needed in ("hf auth login", "HF_TOKEN", f"https://huggingface.co/{REPO}"):
        assert needed in line


def test_gated_tokenizer_file_and_unknown_repo(monkeypatch, tmp_path):
    folder = save_tiny_model("gemma", tmp_path / "g")  # a readable config, then the tokenizer is refused
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: (_ for _ in ()).throw(hub_error(GatedRepoError)))
    monkeypatch.setattr("gemma_fast.models.loader.resolve_model", lambda spec: str(folder))
    with pytest.raises(UserError, match=r"^tokenizer: 'google/gemma-7b-it' is a gated repository"):
        load_tokenizer(REPO)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda *a, **k: (_ for _ in ()).throw(hub_error(RepositoryNotFoundError, "google/gemma-70b")))
    with pytest.raises(UserError, match=r"no repository 'google/gemma-70b'.*https://huggingface.co/google/gemma-70b.*hf auth login"):
        load_model("google/gemma-70b", backend="hf")


def test_other_load_errors_keep_their_own_message(monkeypatch):
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda *a, **k: (_ for _ in ()).throw(OSError("disk on fire")))
    with pytest.raises(UserError, match="cannot read the config of model 'google/gemma-7b-it': disk on fire"):
        load_tokenizer(REPO)


def test_access_probe_before_training(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "auth_check", lambda repo: (_ for _ in ()).throw(hub_error(GatedRepoError, repo)))
    with pytest.raises(UserError, match="gated repository.*https://huggingface.co/google/gemma-7b-it"):
        hub.check_access(REPO)
    monkeypatch.setattr(huggingface_hub, "auth_check", lambda repo: (_ for _ in ()).throw(httpx.ConnectError("no route")))
    assert "could not check access" in hub.check_access(REPO)  # no network is no verdict
    monkeypatch.setattr(huggingface_hub, "auth_check", lambda repo: None)
    assert hub.check_access(REPO) is None
    assert hub.check_access(str(tmp_path)) is None and hub.check_access("embedded:gemma-3-270m") is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "not checked" in hub.check_access(REPO)


def test_plan_names_a_gated_base_without_a_traceback(monkeypatch, capsys):
    import huggingface_hub

    from gemma_fast.cli import common as cli
    from gemma_fast.cli import train as train_qlora

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "auth_check", lambda repo: (_ for _ in ()).throw(hub_error(GatedRepoError, repo)))
    monkeypatch.setattr(sys, "argv", ["train_qlora.py", "--recipe", "kaggle_docs", "--plan", "--gpu", "t4"])
    with pytest.raises(SystemExit) as stopped:
        cli.run(train_qlora.main)
    err = capsys.readouterr().err
    assert stopped.value.code == UserError.exit_code
    assert "Traceback" not in err and "hf auth login" in err and "https://huggingface.co/google/gemma-7b-it" in err


def test_unsloth_loads_the_exact_repo_and_the_recipe_checkpointing(monkeypatch, tmp_path):
    """Unsloth's mapper would swap google/gemma-7b-it for unsloth/gemma-7b-it-bnb-4bit; use_exact_model_name keeps the
    repo that the tokenizer, merge and export stages read. A loader that still read another repo is recorded."""
    folder = save_tiny_model("gemma", tmp_path / "g")
    calls = []

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(model_name, **kwargs):
            calls.append(kwargs)
            model = transformers.AutoModelForCausalLM.from_pretrained(model_name)
            model.config._name_or_path = "unsloth/gemma-7b-it-bnb-4bit"  # what a remapped load reports
            return model, transformers.AutoTokenizer.from_pretrained(model_name)

    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=FastLanguageModel))
    loaded = load_model(str(folder), backend="unsloth", gradient_checkpointing=False)
    assert calls[0]["use_exact_model_name"] is True and calls[0]["use_gradient_checkpointing"] is False
    assert loaded.loaded_from == "unsloth/gemma-7b-it-bnb-4bit" != loaded.path
    load_model(str(folder), backend="unsloth", gradient_checkpointing=True)
    assert calls[1]["use_gradient_checkpointing"] == "unsloth"
    load_model(str(folder), backend="unsloth")  # evaluation: Unsloth's default
    assert "use_gradient_checkpointing" not in calls[2]
