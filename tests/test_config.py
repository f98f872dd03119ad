"""One settings system: shared fields keep one name and one default; flags come from the fields."""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from coderag.config import (
    PIPELINE_PARAMETERS,
    CodeRAGSettings,
    JobSettings,
    PipelineSettings,
    PromotionSettings,
    TrainingSettings,
    add_settings_flags,
)
from coderag.errors import ConfigError
from serving.settings import GeneratorSettings, RagSettings, RetrieverSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
ALL = (JobSettings, TrainingSettings, PipelineSettings, PromotionSettings, RetrieverSettings, GeneratorSettings,
       RagSettings)
SHARED = tuple(CodeRAGSettings.model_fields)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_shared_fields_keep_one_name_and_one_default(cls):
    for name in SHARED:
        assert cls.model_fields[name].default == CodeRAGSettings.model_fields[name].default, (cls.__name__, name)
        assert cls.model_fields[name].metadata == CodeRAGSettings.model_fields[name].metadata, (cls.__name__, name)


def test_no_drifted_aliases_remain():
    drifted = {"corpus_source", "base_model", "lr", "n_eval_questions", "default_k", "generator_url",
               "generator_model", "generator_api_key", "model_path", "default_max_tokens", "max_tokens"}
    for cls in ALL:
        assert drifted.isdisjoint(cls.model_fields), cls.__name__


def test_settings_classes_live_in_at_most_three_files():
    files = subprocess.run(["grep", "-rlE", r"^class \w+\((CodeRAGSettings|BaseSettings|\w+Settings)\)",
                            "coderag", "serving", "components", "pipelines"], cwd=REPO_ROOT,
                           capture_output=True, text=True).stdout.split()
    assert sorted(files) == ["coderag/config.py", "serving/settings.py"]


def test_pipeline_function_defaults_are_the_settings_defaults():
    from pipelines.coderag_pipeline import build_pipeline

    signature = inspect.signature(build_pipeline().pipeline_func)
    assert tuple(signature.parameters) == PIPELINE_PARAMETERS
    defaults = PipelineSettings.from_values().pipeline_arguments()
    assert {name: p.default for name, p in signature.parameters.items()} == defaults


def test_flags_take_type_choices_and_help_from_the_fields():
    parser = argparse.ArgumentParser()
    add_settings_flags(parser, JobSettings, ("k", "llm_backend", "min_score", "llm_api_key", "out_dir"))
    action = {a.dest: a for a in parser._actions}
    assert action["llm_backend"].choices == ["local", "openai"]
    assert "CODERAG_K" in action["k"].help and "default 3" in action["k"].help
    assert "llm_api_key" not in action  # a secret is never a flag
    args = parser.parse_args(["-k", "7", "--min-score", "0.25", "--out-dir", "x"])
    assert (args.k, args.min_score, args.out_dir, args.llm_backend) == (7, 0.25, Path("x"), None)
    with pytest.raises(SystemExit):
        parser.parse_args(["--llm-backend", "llamacpp"])


def test_kserve_style_flags_and_booleans():
    parser = argparse.ArgumentParser()
    add_settings_flags(parser, RagSettings, style="kserve")
    args = parser.parse_args(["--llm_base_url", "http://h/v1", "--repair", "false", "--k", "2"])
    assert (args.llm_base_url, args.repair, args.k) == ("http://h/v1", False, 2)
    assert not any("api_key" in a.dest and a.dest != "llm_api_key_file" for a in parser._actions)


def test_flags_override_env_which_overrides_defaults(monkeypatch):
    monkeypatch.setenv("CODERAG_K", "4")
    monkeypatch.setenv("CODERAG_TRAIN_LEARNING_RATE", "0.001")
    assert JobSettings.from_flags(k=None).k == 4
    assert JobSettings.from_flags(k=9).k == 9
    assert TrainingSettings().learning_rate == 0.001
    assert PipelineSettings().k == 3  # another area's prefix


def test_a_profile_is_named_defaults_that_flags_and_env_still_override(monkeypatch):
    assert TrainingSettings().profile == "laptop" and TrainingSettings().cached is False
    full = TrainingSettings.from_flags(profile="full", epochs=1.5)
    assert (full.epochs, full.batch_size, full.cached, full.max_train_pairs) == (1.5, 256, True, 0)
    assert "epochs" not in full.profile_values() and full.profile_values()["batch_size"] == 256
    monkeypatch.setenv("CODERAG_TRAIN_BATCH_SIZE", "64")
    assert TrainingSettings(profile="full").batch_size == 64
    monkeypatch.setenv("CODERAG_PIPELINE_PROFILE", "full")
    pipeline = PipelineSettings()
    assert (pipeline.max_steps, pipeline.cached, pipeline.batch_size) == (0, True, 256)
    assert "batch_size" not in pipeline.model_fields_set  # `pipeline submit` sends only what a person set
    with pytest.raises(ConfigError):
        TrainingSettings.from_flags(profile="huge")


def test_invalid_value_is_one_line_naming_flag_and_env():
    with pytest.raises(ConfigError) as info:
        JobSettings.from_flags(k=500)
    message = str(info.value)
    assert "\n" not in message and "--k" in message and "CODERAG_K" in message


def test_llm_key_from_env_alias_or_file(monkeypatch, tmp_path):
    monkeypatch.delenv("CODERAG_LLM_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert RagSettings().api_key() == "sk-openai"
    monkeypatch.setenv("CODERAG_LLM_API_KEY", "sk-coderag")
    assert RagSettings().api_key() == "sk-coderag"
    monkeypatch.delenv("CODERAG_LLM_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY")
    key = tmp_path / "key"
    key.write_text("sk-file\n")
    assert JobSettings(llm_api_key_file=key).api_key() == "sk-file"
    assert "sk-file" not in str(JobSettings(llm_api_key_file=key).describe())


def test_cli_has_no_secret_flags():
    out = subprocess.run([sys.executable, "-m", "coderag.cli", "ask", "--help"], capture_output=True, text=True,
                         cwd=REPO_ROOT)
    assert out.returncode == 0 and "--llm-base-url" in out.stdout and "api-key " not in out.stdout
    assert "--llm-api-key-file" in out.stdout
