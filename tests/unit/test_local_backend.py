"""Local backend pieces without a model: stop-string streaming, sampling, request checks, model files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from gateway.backends.local import models as local_models
from gateway.backends.local.generation import (
    SamplingParams,
    StopText,
    generation_config,
    make_generator,
    sampling_processors,
)
from gateway.backends.local.models import Builtin, builtin_gguf, concatenate_parts, resolve_model_dir
from gateway.backends.local.request import Shaper, parse_request
from gateway.backends.requirements import check_backend_requirements
from gateway.errors import InvalidRequestError
from gateway.settings import ConfigError, LocalBackend, Settings


class CharTokenizer:
    """One token per character: token id = code point."""

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in token_ids)


def feed(text: str, stop: tuple[str, ...]) -> tuple[list[str], StopText]:
    tracker = StopText(CharTokenizer(), stop)
    deltas = []
    for char in text:
        deltas.append(tracker.add(ord(char)))
        if tracker.stopped:
            break
    deltas.append(tracker.flush())
    return [d for d in deltas if d], tracker


def test_stop_text_cuts_at_the_stop_string_and_never_sends_part_of_it() -> None:
    deltas, tracker = feed("Hello END world", ("END",))
    assert "".join(deltas) == "Hello "
    assert tracker.stopped and tracker.text == "Hello "


def test_stop_text_releases_a_held_back_prefix_that_turns_out_not_to_be_a_stop() -> None:
    deltas, tracker = feed("a EN b", ("END",))
    assert "".join(deltas) == "a EN b"
    assert not tracker.stopped
    assert "EN" not in deltas  # held back until it was clearly not "END"


def test_stop_text_uses_the_earliest_of_several_stop_strings() -> None:
    deltas, _ = feed("one, two. three", (".", ","))
    assert "".join(deltas) == "one"


def test_stop_text_waits_for_an_incomplete_character() -> None:
    class Partial(CharTokenizer):
        def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
            return super().decode(token_ids).replace("#", "\ufffd")

    tracker = StopText(Partial())
    assert tracker.add(ord("a")) == "a"
    assert tracker.add(ord("#")) == ""


def pick(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """The token ``generate``'s greedy search takes after the request's processors (see local_generation)."""
    scores = sampling_processors(params, generator)(torch.zeros(1, 1, dtype=torch.long), logits.unsqueeze(0))
    return int(torch.argmax(scores[0]).item())


def test_greedy_picks_the_argmax_and_seeded_sampling_repeats() -> None:
    logits = torch.tensor([0.1, 3.0, 0.2, 2.9])
    assert pick(logits, SamplingParams(max_new_tokens=1, temperature=0.0), make_generator(None)) == 1
    params = SamplingParams(max_new_tokens=1, temperature=1.5)
    first = [pick(logits, params, g) for g in [make_generator(7)] for _ in range(20)]
    second = [pick(logits, params, g) for g in [make_generator(7)] for _ in range(20)]
    assert first == second
    assert len(set(first)) > 1  # it samples: not always the argmax


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=8, temperature=0.0),
        SamplingParams(max_new_tokens=8, temperature=0.7, top_p=0.9, seed=1),
        SamplingParams(max_new_tokens=8, ignore_eos=True),
    ],
)
def test_generation_config_is_valid_and_keeps_the_model_defaults_out(params: SamplingParams) -> None:
    from transformers import GenerationConfig

    config = generation_config(params, frozenset({2, 7}), pad_id=None)
    # Qwen2.5's own generation_config.json: generate() fills only what we left unset from it.
    qwen = GenerationConfig(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.1)  # type: ignore[no-untyped-call]
    config.update(**qwen.to_dict(), defaults_only=True)
    config.validate(strict=True)  # strict: what would be a logged warning on every generation raises here
    assert not config.do_sample and config.repetition_penalty == 1.0 and config.temperature == 1.0
    assert config.eos_token_id == [2, 7] and config.pad_token_id == 2
    assert config.min_new_tokens == (params.max_new_tokens if params.ignore_eos else 0)


def test_tiny_top_p_keeps_only_the_best_token() -> None:
    logits = torch.tensor([0.1, 3.0, 0.2, 2.9])
    params = SamplingParams(max_new_tokens=1, temperature=1.0, top_p=0.01)
    assert {pick(logits, params, make_generator(s)) for s in range(20)} == {1}


SETTINGS = LocalBackend(model="tiny", path="/nowhere", max_new_tokens=64)
MESSAGES = [{"role": "user", "content": "hi"}]


def test_parse_request_clamps_max_tokens_and_prefers_max_completion_tokens() -> None:
    assert parse_request({"messages": MESSAGES, "max_tokens": 1000}, SETTINGS, False).params.max_new_tokens == 64
    request = parse_request({"messages": MESSAGES, "max_tokens": 9, "max_completion_tokens": 5}, SETTINGS, False)
    assert request.params.max_new_tokens == 5


def test_parse_request_flattens_text_parts() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
    assert parse_request(body, SETTINGS, False).messages == [{"role": "user", "content": "ab"}]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"top_p": -1}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"seed": "x"}, "seed"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
    ],
)
def test_parse_request_rejects_bad_parameters_naming_them(extra: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_request({"messages": MESSAGES, **extra}, SETTINGS, False)
    assert info.value.param == param and info.value.status == 400


def test_streaming_with_several_choices_is_a_400() -> None:
    with pytest.raises(InvalidRequestError):
        parse_request({"messages": MESSAGES, "n": 2}, SETTINGS, True)


def test_shaper_builds_openai_objects() -> None:
    shaper = Shaper("tiny")
    completion = shaper.completion([("hi", "stop")], 3, 1)
    assert completion["id"].startswith("chatcmpl-") and completion["object"] == "chat.completion"
    assert completion["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    assert shaper.usage_chunk(3, 1)["choices"] == []
    assert shaper.chunk({"content": "x"})["id"] == completion["id"]


def write_parts(tmp_path: Path, chunks: list[bytes]) -> list[Path]:
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        part = tmp_path / f"part{i:02d}.bin"
        part.write_bytes(chunk)
        parts.append(part)
    return parts


def test_concatenate_parts_checks_sha256_and_publishes_atomically(tmp_path: Path) -> None:
    parts = write_parts(tmp_path, [b"GGUF", b"-rest"])
    digest = hashlib.sha256(b"GGUF-rest").hexdigest()
    target = concatenate_parts(parts, tmp_path / "out" / "m.gguf", sha256=digest, size=9)
    assert target.read_bytes() == b"GGUF-rest"
    with pytest.raises(ConfigError, match="sha256"):
        concatenate_parts(parts, tmp_path / "bad" / "m.gguf", sha256="0" * 64, size=9)
    assert list((tmp_path / "bad").iterdir()) == []  # no half-written file left behind
    with pytest.raises(ConfigError, match="bytes"):
        concatenate_parts(parts, tmp_path / "short" / "m.gguf", sha256=None, size=10)


def test_missing_package_says_what_to_install(tmp_path: Path) -> None:
    missing = Builtin("x", "X", ("no_such_module_tiergate",), "pip install no-such==1", "x.gguf")
    with pytest.raises(ConfigError, match="pip install no-such==1"):
        builtin_gguf(missing, tmp_path)


def test_resolve_model_dir_explains_a_missing_directory_or_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config.json"):
        resolve_model_dir(str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="GGUF file not found"):
        resolve_model_dir(str(tmp_path / "absent.gguf"))
    with pytest.raises(ConfigError, match="builtin:smollm2"):
        resolve_model_dir("builtin:nope", cache_dir=str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_dir(str(tmp_path)) == tmp_path


def test_cache_root_prefers_setting_then_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(local_models.CACHE_ENV, str(tmp_path / "env"))
    assert local_models.cache_root() == tmp_path / "env"
    assert local_models.cache_root(str(tmp_path / "set")) == tmp_path / "set"


def test_requirements_name_the_missing_key_and_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings = Settings(
        tiers={
            "small": {"kind": "transformers", "model": "phi", "path": str(tmp_path / "phi")},
            "large": {"kind": "openai", "model": "gpt-4o", "api_key_env": "OPENAI_API_KEY"},
        }
    )
    with pytest.raises(ConfigError) as info:
        check_backend_requirements(settings)
    message = str(info.value)
    assert "OPENAI_API_KEY" in message and "tiers.small" in message and "TIERGATE_TIERS__SMALL__PATH" in message
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    (tmp_path / "phi").mkdir()
    (tmp_path / "phi" / "config.json").write_text("{}")
    check_backend_requirements(settings)


@pytest.mark.parametrize("name", ["default", "openai", "phi3", "phi3-local"])
def test_shipped_profiles_validate(name: str) -> None:
    from gateway.settings import load_settings

    settings = load_settings(Path(__file__).resolve().parents[2] / "config" / f"{name}.yaml")
    assert set(settings.tiers) == {"small", "large"}
    for backend in settings.tiers.values():
        assert backend.model in settings.prices
