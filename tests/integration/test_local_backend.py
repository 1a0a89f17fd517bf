"""The transformers backend on the real SmolLM2-135M: answers, streams, stops, counts, queues and cancels."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from gateway.backends.local.backend import TransformersBackend
from gateway.backends.local.models import prepare_builtin
from gateway.errors import BackendOverloadedError, InvalidRequestError
from gateway.settings import LocalBackend

# Longer than the suite's 120 s: on a fresh machine the first test also converts SmolLM2 from GGUF (about 20 s
# on two idle cores, several times that on busy ones).
pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend() -> AsyncIterator[TransformersBackend]:
    """SmolLM2, converted once into the default cache (or $TIERGATE_CACHE_DIR), one slot, one waiting place."""
    settings = LocalBackend(
        model="smollm2-test",
        path="builtin:smollm2",
        # One thread: OpenMP's spin-waiting makes two threads several times slower on a shared, busy CPU.
        threads=1,
        max_concurrency=1,
        max_queue=1,
        max_input_tokens=128,
        max_new_tokens=24,
    )
    local = TransformersBackend(settings, name="small")
    assert not local.ready()
    await local.start()
    assert local.ready()
    yield local
    await local.aclose()
    assert not local.ready()


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "smollm2-test", "messages": QUESTION, "temperature": 0, **extra}


async def collect(local: TransformersBackend, request: dict[str, Any]) -> list[dict[str, Any]]:
    return [chunk async for chunk in local.stream(request)]


async def test_complete_answers_with_usage_matching_the_tokenizer(backend: TransformersBackend) -> None:
    response = await backend.complete(body(max_tokens=12))
    assert response["object"] == "chat.completion" and response["model"] == "smollm2-test"
    choice = response["choices"][0]
    assert choice["message"]["role"] == "assistant" and "Paris" in choice["message"]["content"]
    assert choice["finish_reason"] in {"stop", "length"}
    tokenizer = backend.tokenizer
    template = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    prompt_tokens = len(tokenizer(template, add_special_tokens=False)["input_ids"])
    answer_tokens = len(tokenizer(choice["message"]["content"], add_special_tokens=False)["input_ids"])
    usage = response["usage"]
    assert usage["prompt_tokens"] == prompt_tokens
    # The end-of-turn token is generated and counted but is not part of the text.
    assert usage["completion_tokens"] == answer_tokens + (choice["finish_reason"] == "stop")
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_stream_sends_role_then_tokens_then_finish_then_usage(backend: TransformersBackend) -> None:
    whole = await backend.complete(body(max_tokens=12))
    chunks = await collect(backend, body(max_tokens=12))
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks[1:-2]]
    assert len(deltas) >= 3  # token by token, not one blob
    assert "".join(deltas) == whole["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


async def test_max_tokens_and_max_completion_tokens_bound_the_answer(backend: TransformersBackend) -> None:
    long_question = [{"role": "user", "content": "Write a long story about a dragon."}]
    short = await backend.complete(body(messages=long_question, max_tokens=5))
    assert short["usage"]["completion_tokens"] == 5 and short["choices"][0]["finish_reason"] == "length"
    shorter = await backend.complete(body(messages=long_question, max_tokens=9, max_completion_tokens=3))
    assert shorter["usage"]["completion_tokens"] == 3


async def test_stop_cuts_the_text_before_the_stop_string(backend: TransformersBackend) -> None:
    free = (await backend.complete(body(max_tokens=12)))["choices"][0]["message"]["content"]
    stop = free.split()[2]  # a word in the middle of the greedy answer
    cut = await backend.complete(body(max_tokens=12, stop=[stop, "zzz-never"]))
    assert cut["choices"][0]["message"]["content"] == free[: free.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"
    streamed = await collect(backend, body(max_tokens=12, stop=stop))
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in streamed if c["choices"])
    assert text == free[: free.index(stop)]


async def test_seed_repeats_a_sampled_answer_and_n_gives_several(backend: TransformersBackend) -> None:
    first = await backend.complete(body(temperature=1.0, seed=42, max_tokens=6, n=2))
    second = await backend.complete(body(temperature=1.0, seed=42, max_tokens=6, n=2))
    assert [c["message"]["content"] for c in first["choices"]] == [c["message"]["content"] for c in second["choices"]]
    assert [c["index"] for c in first["choices"]] == [0, 1]
    assert first["usage"]["completion_tokens"] <= 12


async def test_over_long_prompt_is_a_400_context_length_exceeded(backend: TransformersBackend) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await backend.complete(body(messages=[{"role": "user", "content": "word " * 200}]))
    assert info.value.status == 400 and info.value.code == "context_length_exceeded"
    assert info.value.param == "messages"


async def wait_idle(local: TransformersBackend, timeout: float = 5.0) -> float:
    started = time.perf_counter()
    while local.in_flight() or local.queue_depth():
        assert time.perf_counter() - started < timeout, "the generation slot was not freed"
        await asyncio.sleep(0.01)
    return time.perf_counter() - started


async def test_full_queue_answers_429_with_retry_after(backend: TransformersBackend) -> None:
    running = backend.stream(body(max_tokens=24))
    await running.__anext__()  # role chunk: the slot is held
    waiting = asyncio.create_task(backend.complete(body(max_tokens=2)))
    deadline = time.monotonic() + 30
    while backend.queue_depth() < 1:
        assert time.monotonic() < deadline, "the second request never started waiting for the slot"
        await asyncio.sleep(0.005)
    assert backend.in_flight() == 1
    with pytest.raises(BackendOverloadedError) as info:
        await backend.complete(body(max_tokens=2))
    assert info.value.status == 429 and info.value.headers == {"Retry-After": "1"}
    await running.aclose()
    assert (await waiting)["usage"]["completion_tokens"] <= 2
    await wait_idle(backend)


async def test_closing_a_stream_early_cancels_generation_and_frees_the_slot(
    backend: TransformersBackend,
) -> None:
    stream = backend.stream(body(max_tokens=24))
    seen = [await stream.__anext__(), await stream.__anext__()]
    assert seen[1]["choices"][0]["delta"].get("content")
    await stream.aclose()  # what the gateway does when the client disconnects
    assert await wait_idle(backend) < 1.0  # stops before the next token, not after 24 of them
    after = await backend.complete(body(max_tokens=2))
    assert after["usage"]["completion_tokens"] <= 2


async def test_any_model_directory_loads_and_int8_quantises_its_linear_layers(tmp_path: Path) -> None:
    """A tiny random Llama saved with save_pretrained, with SmolLM2's tokenizer and chat template."""
    tokenizer = AutoTokenizer.from_pretrained(str(prepare_builtin("smollm2")))
    tokenizer.save_pretrained(str(tmp_path))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(tmp_path))
    tiny = TransformersBackend(LocalBackend(model="tiny", path=str(tmp_path), quantize="int8", max_new_tokens=4))
    await tiny.start()
    try:
        quantised = [m for m in tiny._model.modules() if "quantized" in type(m).__module__]
        assert quantised, "no Linear layer was replaced by a dynamically quantised one"
        response = await tiny.complete(body(model="tiny", max_tokens=3))
        assert response["usage"]["completion_tokens"] <= 3
    finally:
        await tiny.aclose()


async def test_models_loading_at_the_same_time_both_answer(backend: TransformersBackend) -> None:
    """Overlapping from_pretrained calls once left a model's rotary buffers uninitialised (garbage answers)."""
    twins = [TransformersBackend(backend.settings.model_copy(update={"model": f"twin-{i}"})) for i in range(2)]
    await asyncio.gather(*(twin.start() for twin in twins))
    try:
        for twin in twins:
            answer = await twin.complete(body(max_tokens=8))
            assert "Paris" in answer["choices"][0]["message"]["content"]
    finally:
        await asyncio.gather(*(twin.aclose() for twin in twins))
