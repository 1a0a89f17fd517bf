"""Settings: one YAML file plus ``TIERGATE_*`` environment overrides; unknown or invalid keys fail loudly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from routers.base import Tier
from routers.options import CLASSIFIER_DEFAULTS, RuntimeChoice
from routers.registry import DEFAULT_ROUTER, router_kind

ENV_PREFIX = "TIERGATE_"
# Environment variables with our prefix that are not settings keys.
RESERVED_ENV = {"TIERGATE_CONFIG", "TIERGATE_CACHE_DIR", "TIERGATE_WORKER_METRICS_DIR"}
# The shipped profiles: config/ in the repository, package data in an installed gateway (gateway/profiles links
# to config/), so `pip install tiergate && tiergate serve` has its default profile too.
PROFILES = Path(__file__).resolve().parent / "profiles"
DEFAULT_CONFIG = PROFILES / "default.yaml"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the offending key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timeouts(Strict):
    connect: float = Field(5.0, gt=0)
    read: float = Field(120.0, gt=0)
    write: float = Field(30.0, gt=0)
    pool: float = Field(10.0, gt=0)
    # A whole JSON answer, or a stream's first chunk, within this (each try); None = no bound.
    total: float | None = Field(600.0, gt=0)
    stream_total: float | None = Field(None, gt=0)  # a whole stream, first chunk to [DONE]; None = no bound


class Price(Strict):
    """USD per 1M tokens. A self-hosted model gets an amortised price the operator sets."""

    prompt: float = Field(ge=0)
    completion: float = Field(ge=0)
    cached_prompt: float | None = Field(None, ge=0)


class Capabilities(Strict):
    """What a tier's model can do; routing never sends a request to a tier lacking what it needs.
    ``None`` fields take the backend kind's default (gateway.capabilities)."""

    tools: bool | None = None
    json_schema: bool | None = None  # response_format / text.format json_schema and json_object
    vision: bool | None = None  # image content parts
    context_tokens: int | None = Field(None, ge=16)  # None = unknown (not checked)


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
    max_response_bytes: int = Field(16 * 1024 * 1024, ge=1024)  # a JSON answer; larger = 502
    max_event_bytes: int = Field(4 * 1024 * 1024, ge=1024)  # one SSE event of a stream; larger = error
    responses_api: bool = False  # speaks POST /responses: forwarded as sent instead of translated to chat
    embeddings: bool = False  # serves POST /v1/embeddings (forwarded, not routed)
    completions: bool = False  # serves the legacy POST /v1/completions (forwarded, not routed)
    capabilities: Capabilities = Capabilities()

    def api_key(self) -> str:
        """The key in ``api_key_env`` as it is sent, surrounding whitespace stripped (a key file's newline
        would break the header); empty when unset."""
        return os.environ.get(self.api_key_env, "").strip() if self.api_key_env else ""


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
    capabilities: Capabilities = Capabilities()


BackendSettings = Annotated[OpenAIBackend | LocalBackend, Field(discriminator="kind")]


class ClassifierSettings(Strict):
    """The fields of ``routers.options.ClassifierOptions`` (what each means, and its default), with bounds."""

    path: str = CLASSIFIER_DEFAULTS.path
    max_length: int = Field(CLASSIFIER_DEFAULTS.max_length, ge=8, le=512)
    max_batch: int = Field(CLASSIFIER_DEFAULTS.max_batch, ge=1)
    batch_wait_ms: float = Field(CLASSIFIER_DEFAULTS.batch_wait_ms, ge=0)
    queue_size: int = Field(CLASSIFIER_DEFAULTS.queue_size, ge=1)
    cache_size: int = Field(CLASSIFIER_DEFAULTS.cache_size, ge=0)
    threads: int = Field(CLASSIFIER_DEFAULTS.threads, ge=1)
    timeout_s: float = Field(CLASSIFIER_DEFAULTS.timeout_s, gt=0)
    runtime: RuntimeChoice = CLASSIFIER_DEFAULTS.runtime


class RoutingSettings(Strict):
    router: str = DEFAULT_ROUTER  # one of routers.registry.ROUTER_NAMES
    # None: the threshold the router recommends (a classifier checkpoint's metadata), else 0.5 (routers.base).
    threshold: float | None = Field(None, ge=0, le=1)
    aliases: list[str] = ["tiergate-auto"]
    fail_safe_tier: Tier = "large"
    include_system_prompt: bool = False
    target_large_share: float | None = Field(None, ge=0, le=1)
    share_window: int = Field(1000, ge=10)
    seed: int | None = None  # for the random router
    classifier: ClassifierSettings = ClassifierSettings()

    @field_validator("router")
    @classmethod
    def _registered(cls, name: str) -> str:
        router_kind(name)  # a ValueError naming every registered router
        return name


class ServerSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    shutdown_grace_s: float = Field(30.0, ge=0)
    # False: accept connections at once (/healthz 200, /readyz and chat 503) while models load in the
    # background. True: the lifespan waits for the models before the server accepts anything.
    load_before_serving: bool = False
    workers: int = Field(1, ge=1, le=64)  # processes sharing the port (``tiergate serve --workers``)
    # Connection limits, enforced before the app sees a request (gateway.http.connection_limits).
    max_connections: int = Field(4096, ge=1)  # more are answered 503 and closed at once
    max_header_bytes: int = Field(32 * 1024, ge=1024)  # request line plus headers; more = 431
    header_timeout_s: float = Field(10.0, gt=0)  # from connect (or a request's first byte) to its last header
    body_timeout_s: float = Field(60.0, gt=0)  # from the last header to the body's last byte
    keep_alive_s: int = Field(5, ge=1)  # an idle connection between requests is closed after this
    # Host header values accepted (port ignored). None: loopback names when bound to loopback with auth off
    # (a web page cannot spend through a local gateway by DNS rebinding), else any; [] = any.
    allowed_hosts: list[str] | None = None


class ApiKeySettings(Strict):
    """One client key, stored only as ``sha256:<hex>`` (``tiergate hash-key`` prints it)."""

    name: str = Field(min_length=1, max_length=64)  # shows in logs instead of the key
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    tiers: list[Tier] | None = None  # None = every tier
    models: list[str] | None = None  # client model names allowed; None = all
    requests_per_minute: int | None = Field(None, ge=1)  # None = limits.requests_per_minute
    tokens_per_minute: int | None = Field(None, ge=1)  # None = limits.tokens_per_minute
    shadow: bool | None = None  # learning: True opts this key in, False out; None follows learning.shadow_keys
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


class ConversationSettings(Strict):
    """Sticky conversations: tool loops stay on the tier that issued the call; pinned conversations too."""

    # How a conversation is recognised, first match wins; [] pins only tool loops. "hash": the opening
    # messages (system prompts and the first user turn), which every later turn repeats.
    keys: list[Literal["session", "user", "metadata", "hash"]] = ["session", "metadata"]
    session_header: str = "x-tiergate-session"
    metadata_key: str = "session_id"  # the ``metadata`` field naming the conversation
    ttl_s: float = Field(3600.0, gt=0)
    max_entries: int = Field(100_000, ge=1)


class ResponsesSettings(Strict):
    """The Responses API: responses kept for ``previous_response_id`` and ``GET /v1/responses/{id}``."""

    store_ttl_s: float = Field(3600.0, ge=0)  # 0 = keep nothing: store/previous_response_id answer 400
    max_stored: int = Field(10_000, ge=1)


class StateSettings(Strict):
    """Where per-key limits, budgets, pins and the share window live: this process, or Redis (shared)."""

    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"  # no password here: see redis_password_env
    redis_password_env: str | None = None  # the env var holding the Redis password
    key_prefix: str = "tiergate:"
    timeout_s: float = Field(0.25, gt=0)  # per Redis operation; slower counts as a failure
    on_failure: Literal["fail_open", "fail_closed"] = "fail_open"  # fail_open: local limits; fail_closed: 503
    breaker: BreakerSettings = BreakerSettings(failure_threshold=3, reset_after_s=2.0)
    share_sync_s: float = Field(0.5, gt=0)  # how often the share controller's window is merged


class Budget(Strict):
    """USD caps; ``None`` = no cap. The ``large_*`` caps cover spend on the large tier only."""

    daily_usd: float | None = Field(None, ge=0)
    monthly_usd: float | None = Field(None, ge=0)
    large_daily_usd: float | None = Field(None, ge=0)
    large_monthly_usd: float | None = Field(None, ge=0)


class KeyBudget(Budget):
    team: str | None = None  # the key also spends from ``budgets.teams[team]``


class BudgetSettings(Strict):
    """Spend caps per API key name (and per team), priced from the price table, UTC days and months."""

    keys: dict[str, KeyBudget] = {}
    teams: dict[str, Budget] = {}
    # Completion tokens reserved for a request that sends no max_tokens, until its real usage is known.
    reserve_completion_tokens: int = Field(256, ge=0)

    @model_validator(mode="after")
    def _teams_exist(self) -> BudgetSettings:
        unknown = sorted({b.team for b in self.keys.values() if b.team is not None and b.team not in self.teams})
        if unknown:
            raise ValueError(f"budgets.keys name teams that budgets.teams does not define: {', '.join(unknown)}")
        return self

class JudgeSettings(Strict):
    """Grades shadow pairs (gateway.learning.judge); prompts are files in ``prompts_dir``."""

    mode: Literal["pairwise", "single"] = "pairwise"
    tier: Tier = "large"  # the tier whose backend judges, unless ``backend`` names another model
    backend: OpenAIBackend | None = None  # any OpenAI-compatible model
    prompts_dir: str = "judge"  # relative to the config directory
    max_concurrency: int = Field(2, ge=1)
    daily_budget_usd: float = Field(1.0, ge=0)
    max_tokens: int = Field(256, ge=16)
    timeout_s: float = Field(120.0, gt=0)
    retry_base_s: float = Field(30.0, gt=0)  # a failed judgement waits this long, doubling to retry_max_s
    retry_max_s: float = Field(3600.0, gt=0)
    poll_s: float = Field(5.0, gt=0)  # how often the queue is checked for pairs due again
    tie_margin: float = Field(0.1, ge=0, le=1)  # small counts as good as large within this score gap


class LearningSettings(Strict):
    """Learning from live traffic: label store, shadow answers, judge, feedback (off unless enabled)."""

    enabled: bool = False  # the label store and /v1/feedback; also on whenever shadow_rate > 0
    store: str | None = None  # a path, sqlite:///path or postgresql://...; None = the cache directory's file
    include_prompts: bool | None = None  # keep the routing text; None = request_log.include_prompts
    shadow_rate: float = Field(0.0, ge=0, le=1)  # share of routed chat requests also sent to the other tier
    shadow_keys: Literal["all", "opted_in"] = "all"  # which keys are shadowed (per-key auth.keys[].shadow)
    shadow_max_concurrency: int = Field(4, ge=1)
    shadow_queue_size: int = Field(64, ge=0)  # waiting shadow calls beyond this are dropped and counted
    shadow_timeout_s: float = Field(120.0, gt=0)
    shadow_daily_budget_usd: float = Field(1.0, ge=0)  # priced from the price table; resets at 00:00 UTC
    store_queue_size: int = Field(10_000, ge=1)  # store writes waiting beyond this are dropped and counted
    # Background work yields to clients: no shadow call starts (counted "busy") and the judge waits while the
    # event loop runs this late on average; 0 = never yield.
    max_loop_lag_ms: float = Field(5.0, ge=0)
    seed: int | None = None  # for the shadow sampling
    judge: JudgeSettings = JudgeSettings()

    def active(self) -> bool:
        return self.enabled or self.shadow_rate > 0


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
    conversations: ConversationSettings = ConversationSettings()
    responses: ResponsesSettings = ResponsesSettings()
    state: StateSettings = StateSettings()
    budgets: BudgetSettings = BudgetSettings()

    learning: LearningSettings = LearningSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Values passed in code win over the environment; load_settings layers the YAML file under both.
        return (init_settings, env_settings)


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


def _layered(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, mapping by mapping (a nested key set on top replaces only that key)."""
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        merged[key] = _layered(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return merged


def load_settings(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read the YAML file (default ``config/default.yaml``) and validate everything.

    Precedence, highest first: ``overrides`` (code arguments) > ``TIERGATE_*`` environment > the YAML file >
    the defaults in the models above.
    """
    config_path = Path(path or os.environ.get("TIERGATE_CONFIG") or DEFAULT_CONFIG)
    try:
        data = yaml.safe_load(config_path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {config_path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {config_path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {config_path} must hold a mapping at the top level")
    _check_env_keys(dict(os.environ))
    data = _layered(_layered(data, EnvSettingsSource(Settings)()), overrides or {})
    prices_file = data.get("prices_file", "prices.yaml")
    if isinstance(prices_file, str) and prices_file and not Path(prices_file).is_absolute():
        data["prices_file"] = str(config_path.resolve().parent / prices_file)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format(exc, str(config_path))) from None
