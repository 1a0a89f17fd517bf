"""Gateway API keys: hashing, lookup, the bearer header, keys files, and the hash-key command."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.admission.auth import ANONYMOUS, Authenticator, hash_key, load_keys, new_key
from gateway.cli import main
from gateway.errors import AuthenticationError, PermissionDeniedError
from gateway.settings import ApiKeySettings, AuthSettings, ConfigError

KEY = "tg-test-key-0123456789"


def authenticator(**extra: object) -> Authenticator:
    return Authenticator([ApiKeySettings(name="team-a", hash=hash_key(KEY), **extra)])  # type: ignore[arg-type]


def test_hash_is_sha256_and_new_keys_are_random() -> None:
    assert hash_key("abc") == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert new_key() != new_key() and len(new_key()) > 40


def test_valid_bearer_key_maps_to_its_principal() -> None:
    principal = authenticator(tiers=["small"]).authenticate(f"Bearer {KEY}")
    assert principal.name == "team-a" and principal.allows_tier("small") and not principal.allows_tier("large")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer wrong", f"Basic {KEY}", KEY, f"Bearer {KEY}x"])
def test_missing_or_wrong_keys_are_refused_without_echoing_them(header: str | None) -> None:
    with pytest.raises(AuthenticationError) as caught:
        authenticator().authenticate(header)
    assert caught.value.status == 401 and KEY not in caught.value.message
    assert caught.value.headers == {"www-authenticate": "Bearer"}


def test_key_in_query_string_is_refused_even_with_a_valid_header() -> None:
    with pytest.raises(AuthenticationError):
        authenticator().authenticate(f"Bearer {KEY}", f"api_key={KEY}")
    assert authenticator().authenticate(f"Bearer {KEY}", "foo=bar").name == "team-a"


def test_auth_is_off_without_keys_and_refuses_to_enable_without_any() -> None:
    assert Authenticator([]).authenticate(None) is ANONYMOUS
    with pytest.raises(ConfigError):
        Authenticator([], enabled=True)


def test_model_allow_list() -> None:
    principal = authenticator(models=["tiergate-auto"]).authenticate(f"Bearer {KEY}")
    principal.check_model("tiergate-auto")
    with pytest.raises(PermissionDeniedError):
        principal.check_model("gpt-4o")


def test_keys_file_adds_keys_and_rejects_plain_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(f"keys:\n  - name: from-file\n    hash: {hash_key('k2-secret-value')}\n")
    keys = load_keys(AuthSettings(keys_file=str(path)))
    assert Authenticator(keys).authenticate("Bearer k2-secret-value").name == "from-file"
    path.write_text("- name: bad\n  hash: k2-secret-value\n")
    with pytest.raises(ConfigError):
        load_keys(AuthSettings(keys_file=str(path)))


def test_hash_key_command_prints_the_hash(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash-key", "abc"]) == 0
    assert capsys.readouterr().out.strip() == f"hash: {hash_key('abc')}"
