"""Client authentication: bearer gateway keys checked against stored SHA-256 hashes in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import yaml
from pydantic import TypeAdapter, ValidationError

from gateway.errors import AuthenticationError, PermissionDeniedError
from gateway.settings import ApiKeySettings, AuthSettings, ConfigError
from routers.base import Tier

HASH_PREFIX = "sha256:"
# Query parameters that look like credentials: a key in a URL ends up in proxy and access logs.
QUERY_KEY_PARAMS = frozenset({"api_key", "api-key", "apikey", "key", "access_token", "token", "auth"})


def hash_key(key: str) -> str:
    """The form a key is stored in. Gateway keys are random (see :func:`new_key`), so a plain hash suffices."""
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return "tg-" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a configured key's name and what it may use. Never holds the key itself."""

    name: str
    tiers: frozenset[Tier] | None = None
    models: frozenset[str] | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    shadow: bool | None = None  # learning opt-in (True) / opt-out (False)
    admin: bool = False  # may call the operator endpoints (POST /admin/router)

    def allows_tier(self, tier: Tier) -> bool:
        return self.tiers is None or tier in self.tiers

    def check_model(self, model: str) -> None:
        if self.models is not None and model not in self.models:
            raise PermissionDeniedError(f"this API key may not use the model '{model}'", param="model")


ANONYMOUS = Principal("anonymous")


def _principal(entry: ApiKeySettings) -> Principal:
    return Principal(
        entry.name,
        frozenset(entry.tiers) if entry.tiers is not None else None,
        frozenset(entry.models) if entry.models is not None else None,
        entry.requests_per_minute,
        entry.tokens_per_minute,
        entry.shadow,
        entry.admin,
    )


def load_keys(settings: AuthSettings, base_dir: Path | None = None) -> list[ApiKeySettings]:
    """Keys from the settings plus the keys file (hashes only, like the settings)."""
    keys = list(settings.keys)
    if settings.keys_file:
        path = Path(settings.keys_file)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            data = yaml.safe_load(path.read_text()) or []
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"auth.keys_file {path} cannot be read: {exc}") from None
        if isinstance(data, dict):
            data = data.get("keys", [])
        try:
            keys += TypeAdapter(list[ApiKeySettings]).validate_python(data)
        except ValidationError as exc:
            raise ConfigError(f"auth.keys_file {path} is invalid: {exc.errors()[0]['msg']}") from None
    names = [key.name for key in keys]
    if len(set(names)) != len(names):
        raise ConfigError("auth: key names must be unique")
    return keys


class Authenticator:
    """Maps an ``Authorization: Bearer`` header to a :class:`Principal`, or raises a 401."""

    def __init__(self, keys: list[ApiKeySettings], enabled: bool | None = None) -> None:
        self.enabled = bool(keys) if enabled is None else enabled
        if self.enabled and not keys:
            raise ConfigError("auth.enabled is true but no keys are configured")
        self._entries = [(bytes.fromhex(key.hash[len(HASH_PREFIX) :]), _principal(key)) for key in keys]

    @classmethod
    def from_settings(cls, settings: AuthSettings, base_dir: Path | None = None) -> Authenticator:
        return cls(load_keys(settings, base_dir), settings.enabled)

    def lookup(self, presented: str) -> Principal | None:
        digest = hashlib.sha256(presented.encode("utf-8", "replace")).digest()
        found = None
        # Every entry is compared, with no early exit, so timing says nothing about which key was close.
        for stored, principal in self._entries:
            if hmac.compare_digest(stored, digest):
                found = principal
        return found

    def authenticate(self, authorization: str | None, query_string: str = "") -> Principal:
        if not self.enabled:
            return ANONYMOUS
        if query_string and any(name.lower() in QUERY_KEY_PARAMS for name, _ in
                                parse_qsl(query_string, keep_blank_values=True)):
            raise unauthorized("API keys are not accepted in the query string; send 'Authorization: Bearer <key>'")
        if not authorization:
            raise unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("The Authorization header must be 'Bearer <key>'.")
        principal = self.lookup(token)
        if principal is None:
            raise unauthorized("Incorrect API key provided.")  # never echo the key, not even a part of it
        return principal


def require_admin(authenticator: Authenticator, authorization: str | None, query_string: str = "") -> Principal:
    """The caller of an operator endpoint: a configured key marked ``admin: true`` (401 / 403 otherwise)."""
    principal = authenticator.authenticate(authorization, query_string) if authenticator.enabled else ANONYMOUS
    if not principal.admin:
        raise PermissionDeniedError("this endpoint needs an admin key (auth.keys[].admin: true)")
    return principal


def unauthorized(message: str) -> AuthenticationError:
    return AuthenticationError(message, headers={"www-authenticate": "Bearer"})
