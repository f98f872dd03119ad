"""The local generator service: real SmolLM2 behind /openai/v1/chat/completions, called with the openai client."""

from __future__ import annotations

import openai
import pytest
from serving_harness import metric_value, scrape_metrics

from coderag.generation.llm import OpenAIChatGenerator
from serving import metrics

MODEL = "coderag-generator"


def _client(service) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.url}/openai/v1", api_key="not-needed", max_retries=0, timeout=120)


def test_openai_client_gets_a_chat_completion(generator_service):
    completion = _client(generator_service).chat.completions.create(
        model=MODEL,
        max_tokens=12,
        temperature=0,
        messages=[
            {"role": "system", "content": "You write SQLite queries."},
            {"role": "user", "content": "Write a query that counts the rows of table orders."},
        ],
    )
    assert completion.object == "chat.completion" and completion.model == MODEL
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert 0 < completion.usage.completion_tokens <= 12
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_core_openai_generator_talks_to_the_local_service(generator_service):
    generator = OpenAIChatGenerator(base_url=f"{generator_service.url}/openai/v1", model=MODEL)
    reply = generator.complete([{"role": "user", "content": "Say hello."}], max_tokens=5)
    assert isinstance(reply, str) and reply.strip()


def test_several_choices_are_sampled_in_one_request(generator_service):
    """``n`` > 1 (what voting sends): n choices decoded in one batch; the core's ``sample`` reads them (more
    than 16 is refused: see test_bad_chat_requests_raise_openai_errors)."""
    generator = OpenAIChatGenerator(base_url=f"{generator_service.url}/openai/v1", model=MODEL)
    replies = generator.sample([{"role": "user", "content": "Count the rows of table orders."}], n=3, max_tokens=6,
                               temperature=0.9)
    assert len(replies) == 3 and all(isinstance(r.text, str) and r.text.strip() for r in replies)
    assert all(r.mean_logprob is None for r in replies)  # this server sends no log-probabilities


def test_models_route_lists_the_served_model(generator_service):
    models = _client(generator_service).models.list()
    assert [m.id for m in models.data] == [MODEL]


@pytest.mark.parametrize(
    "kwargs, status, message",
    [
        ({"model": MODEL, "messages": []}, 400, '\'messages\' must be a non-empty list of {"role", "content"} objects'),
        (
            {"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]},
            400,
            "messages[0] must have a role in system, user, assistant",
        ),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10_000},
            400,
            "max_tokens must be an integer between 1 and 64, got 10000",
        ),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 5},
            400,
            "temperature must be a number between 0 and 2, got 5",
        ),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True},
            400,
            "streaming is not supported by this server: send stream=false",
        ),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 17},
            400,
            "n must be an integer between 1 and 16, got 17",
        ),
        (
            {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]},
            404,
            "model 'gpt-4' is not served here: use one of coderag-generator",
        ),
    ],
)
def test_bad_chat_requests_raise_openai_errors(generator_service, kwargs, status, message):
    with pytest.raises(openai.APIStatusError) as caught:
        _client(generator_service).chat.completions.create(**kwargs)
    assert caught.value.status_code == status
    assert caught.value.body == {"message": message, "type": "invalid_request_error", "param": None, "code": status}


def test_generator_metrics(generator_service):
    _client(generator_service).chat.completions.create(
        model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "Hi"}]
    )
    samples = scrape_metrics(generator_service.url)
    assert metric_value(samples, f"{metrics.STAGE_LATENCY}_count", service="generator", stage="generate") > 0
    assert metric_value(samples, metrics.MODEL_INFO, service="generator", llm="SmolLM2-135M-Instruct") == 1
    assert metric_value(samples, metrics.REQUESTS, service="generator", route="openai", code="200") > 0
    assert metric_value(samples, metrics.GENERATOR_ERRORS, service="generator", kind="error") == 0
