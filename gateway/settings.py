"""Settings: one YAML file plus ``TIERGATE_*`` environment overrides; unknown or invalid keys fail loudly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from routers.base import Tier

ENV_PREFIX = "TIERGATE_"
# Environment variables with our prefix that are not settings keys.
RESERVED_ENV = {"TIERGATE_CONFIG", "TIERGATE_CACHE_DIR"}
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "default.yaml"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the offending key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timeouts(Strict):
    connect: float = Field(5.0, gt=0)
    read: float = Field(120.0, gt=0)
    write: float = Field(30.0, gt=0)
    pool: float = Field(10.0, gt=0)


class Price(Strict):
    """USD per 1M tokens. A self-hosted model gets an amortised price the operator sets."""

    prompt: float = Field(ge=0)
    completion: float = Field(ge=0)
    cached_prompt: float | None = Field(None, ge=0)


class OpenAIBackend(Strict):
    """Any server speaking the OpenAI chat API: OpenAI itself, vLLM, llama.cpp server, Ollama, TGI."""

    kind: Literal["openai"] = "openai"
    model: str  # the name clients use and, unless upstream_model is set, the name sent upstream
    upstream_model: str | None = None
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str | None = None  # the env var holding the key; keys never live in YAML
    forward_client_authorization: bool = False
    timeout: Timeouts = Timeouts()
    max_connections: int = Field(512, ge=1)
    max_concurrency: int | None = Field(None, ge=1)  # in-flight cap; None = unbounded
    max_queue: int = Field(1024, ge=0)


class LocalBackend(Strict):
    """A causal LM run in-process with transformers."""

    kind: Literal["transformers"] = "transformers"
    model: str
    path: str  # a model directory, a .gguf file, or "builtin:<name>" for the embedded defaults
    gguf_file: str | None = None
    quantize: Literal["none", "int8"] = "none"
    threads: int | None = Field(None, ge=1)
    max_concurrency: int = Field(1, ge=1)
    max_queue: int = Field(8, ge=0)
    max_input_tokens: int = Field(2048, ge=16)
    max_new_tokens: int = Field(512, ge=1)
    cache_dir: str | None = None
    # Used when a request omits them (OpenAI's own defaults are 1.0; tiny models answer better cooler).
    default_temperature: float = Field(1.0, ge=0, le=2)
    default_top_p: float = Field(1.0, ge=0, le=1)


BackendSettings = Annotated[OpenAIBackend | LocalBackend, Field(discriminator="kind")]


class ClassifierSettings(Strict):
    path: str = "builtin"  # "builtin" = the shipped default router; else a checkpoint directory
    max_length: int = Field(256, ge=8, le=512)
    max_batch: int = Field(32, ge=1)
    batch_wait_ms: float = Field(2.0, ge=0)
    queue_size: int = Field(512, ge=1)
    cache_size: int = Field(10_000, ge=0)
    threads: int = Field(2, ge=1)
    timeout_s: float = Field(2.0, gt=0)


class RoutingSettings(Strict):
    router: Literal["classifier", "random", "always-small", "always-large"] = "classifier"
    # None: the threshold the classifier checkpoint recommends (its metadata), or 0.5 for the baseline routers.
    threshold: float | None = Field(None, ge=0, le=1)
    aliases: list[str] = ["tiergate-auto"]
    fail_safe_tier: Tier = "large"
    include_system_prompt: bool = False
    target_large_share: float | None = Field(None, ge=0, le=1)
    share_window: int = Field(1000, ge=10)
    seed: int | None = None  # for the random router
    classifier: ClassifierSettings = ClassifierSettings()


class ServerSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    shutdown_grace_s: float = Field(30.0, ge=0)
    # False: accept connections at once (/healthz 200, /readyz and chat 503) while models load in the
    # background. True: the lifespan waits for the models before the server accepts anything.
    load_before_serving: bool = False


class ApiKeySettings(Strict):
    """One client key, stored only as ``sha256:<hex>`` (``tiergate hash-key`` prints it)."""

    name: str = Field(min_length=1, max_length=64)  # shows in logs instead of the key
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    tiers: list[Tier] | None = None  # None = every tier
    models: list[str] | None = None  # client model names allowed; None = all
    requests_per_minute: int | None = Field(None, ge=1)  # None = limits.requests_per_minute
    tokens_per_minute: int | None = Field(None, ge=1)  # None = limits.tokens_per_minute
    admin: bool = False  # may call the operator endpoints (POST /admin/router)


class AuthSettings(Strict):
    """Gateway API keys (bearer). Enabled when any key is configured unless ``enabled`` says otherwise."""

    enabled: bool | None = None
    keys: list[ApiKeySettings] = []
    keys_file: str | None = None  # YAML: a list of keys shaped like ``keys``, or ``{keys: [...]}``


class LimitSettings(Strict):
    max_messages: int = Field(2048, ge=1)
    max_total_chars: int = Field(2_000_000, ge=1)  # all text in ``messages``
    max_depth: int = Field(64, ge=4, le=200)  # JSON nesting; the upstream encoder stops at 254
    max_tokens: dict[Tier, int] = {}  # a ceiling on max_tokens/max_completion_tokens per tier
    requests_per_minute: int | None = Field(None, ge=1)  # per key (or per replica without auth)
    tokens_per_minute: int | None = Field(None, ge=1)


class RetrySettings(Strict):
    attempts: int = Field(3, ge=1)  # tries per tier, the first included
    base_delay_s: float = Field(0.2, ge=0)
    max_delay_s: float = Field(2.0, ge=0)
    max_retry_after_s: float = Field(5.0, ge=0)  # a longer upstream Retry-After is passed to the client
    # Not "on": YAML 1.1 reads a bare ``on:`` key as the boolean true.
    failures: list[Literal["connect", "rate_limit", "server_error", "timeout"]] = [
        "connect", "rate_limit", "server_error"]


class BreakerSettings(Strict):
    failure_threshold: int = Field(5, ge=1)  # consecutive failures that open the circuit
    reset_after_s: float = Field(15.0, gt=0)  # open time before one trial call is let through


class FallbackSettings(Strict):
    """When a tier fails after its retries, the other tier answers; ``[]`` turns fallback off."""

    # A list, not a mapping: settings merge mappings with their defaults, so one direction could not be removed.
    directions: list[Literal["small->large", "large->small"]] = ["small->large", "large->small"]
    failures: list[Literal["connect", "rate_limit", "server_error", "timeout", "overloaded", "circuit_open"]] = [
        "connect", "rate_limit", "server_error", "timeout", "overloaded", "circuit_open"]
    explicit_model: bool = False  # also fall back when the client named a backend model itself


class ResilienceSettings(Strict):
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    classifier_breaker: BreakerSettings = BreakerSettings(failure_threshold=5, reset_after_s=10.0)
    fallback: FallbackSettings = FallbackSettings()


class RequestLogSettings(Strict):
    """The optional JSONL request log: one line per request, for offline analysis and re-training."""

    path: str | None = None  # None = no log
    include_prompts: bool = False  # the routing text of each request; off unless explicitly enabled
    flush_interval_s: float = Field(1.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", nested_model_default_partial_update=True
    )

    server: ServerSettings = ServerSettings()
    tiers: dict[Tier, BackendSettings]
    routing: RoutingSettings = RoutingSettings()
    prices: dict[str, Price] = {}
    # Default prices (USD per 1M tokens) merged under ``prices``; relative to the config file's directory.
    prices_file: str | None = "prices.yaml"
    request_log: RequestLogSettings = RequestLogSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitSettings = LimitSettings()
    resilience: ResilienceSettings = ResilienceSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the YAML file (passed as init kwargs).
        return (env_settings, init_settings)

    def backend_for(self, tier: Tier) -> OpenAIBackend | LocalBackend:
        return self.tiers[tier]


def _check_env_keys(environ: dict[str, str]) -> None:
    top = set(Settings.model_fields)
    for key in environ:
        if not key.startswith(ENV_PREFIX) or key in RESERVED_ENV:
            continue
        first = key[len(ENV_PREFIX) :].split("__", 1)[0].lower()
        if first not in top:
            raise ConfigError(f"unknown setting in environment: {key} (known sections: {', '.join(sorted(top))})")


def _format(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(root)"
        lines.append(f"  {key}: {item['msg']}")
    return "\n".join(lines)


def load_settings(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read the YAML file (default ``config/default.yaml``), apply env overrides, validate everything."""
    config_path = Path(path or os.environ.get("TIERGATE_CONFIG") or DEFAULT_CONFIG)
    try:
        data = yaml.safe_load(config_path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {config_path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {config_path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {config_path} must hold a mapping at the top level")
    data.update(overrides or {})
    prices_file = data.get("prices_file", "prices.yaml")
    if isinstance(prices_file, str) and prices_file and not Path(prices_file).is_absolute():
        data["prices_file"] = str(config_path.resolve().parent / prices_file)
    _check_env_keys(dict(os.environ))
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format(exc, str(config_path))) from None
