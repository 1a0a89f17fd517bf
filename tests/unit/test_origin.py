"""Host names, the default allowed hosts, the JSON content-type rule and raw connection-layer answers."""

from __future__ import annotations

import orjson
import pytest

from gateway.errors import UnsupportedMediaTypeError
from gateway.http.connection_limits import raw_error
from gateway.http.origin import allowed_hosts, host_name, require_json
from gateway.settings import Settings

TIERS = {"small": {"kind": "openai", "model": "a"}, "large": {"kind": "openai", "model": "b"}}


@pytest.mark.parametrize(("value", "expected"), [
    ("example.com:8000", "example.com"), ("Example.COM", "example.com"), ("[::1]:80", "[::1]"),
    ("127.0.0.1", "127.0.0.1"), ("localhost:x", "localhost:x")])
def test_host_name_drops_the_port(value: str, expected: str) -> None:
    assert host_name(value) == expected


def test_default_allowed_hosts_only_on_a_keyless_loopback_gateway() -> None:
    loopback = Settings(tiers=TIERS)
    assert "localhost" in allowed_hosts(loopback, auth_enabled=False)
    assert allowed_hosts(loopback, auth_enabled=True) == frozenset()
    public = Settings(tiers=TIERS, server={"host": "0.0.0.0"})
    assert allowed_hosts(public, auth_enabled=False) == frozenset()
    configured = Settings(tiers=TIERS, server={"allowed_hosts": ["API.example"]})
    assert allowed_hosts(configured, auth_enabled=True) == frozenset({"api.example"})
    anything = Settings(tiers=TIERS, server={"allowed_hosts": []})
    assert allowed_hosts(anything, auth_enabled=False) == frozenset()


@pytest.mark.parametrize("value", ["application/json", "Application/JSON; charset=utf-8"])
def test_json_content_types_pass(value: str) -> None:
    require_json(value)


@pytest.mark.parametrize("value", [None, "", "text/plain", "multipart/form-data; boundary=x", "application/jsonx"])
def test_other_content_types_are_415(value: str | None) -> None:
    with pytest.raises(UnsupportedMediaTypeError) as caught:
        require_json(value)
    assert caught.value.status == 415


def test_raw_error_is_a_complete_openai_shaped_response() -> None:
    raw = raw_error(431, "too big", "request_header_fields_too_large")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"content-length: %d" % len(body) in head and b"connection: close" in head
    assert orjson.loads(body) == {"error": {"message": "too big", "type": "invalid_request_error", "param": None,
                                            "code": "request_header_fields_too_large"}}
