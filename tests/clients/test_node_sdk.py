"""The official ``openai`` npm package drives the gateway: chat, stream, tools and the Responses API."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.tools.fake_upstream import FakeUpstream, Reply
from tests.support.doubles import FixedRouter
from tests.support.gateway import running_gateway, upstream_settings

HERE = Path(__file__).resolve().parent
ANSWER = "Hello from the fake upstream."
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = [pytest.mark.skipif(NODE is None or NPM is None, reason="node and npm are not on the PATH"),
              pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def openai_package() -> Path:
    """``node_modules`` from package-lock.json (``npm ci``), once; reused while the lock file is unchanged."""
    installed = HERE / "node_modules" / "openai" / "package.json"
    stamp = HERE / "node_modules" / ".tiergate-lock"
    lock = (HERE / "package-lock.json").read_text()
    if not installed.is_file() or not stamp.is_file() or stamp.read_text() != lock:
        assert NPM is not None
        result = subprocess.run([NPM, "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True,
                                timeout=240, check=False)
        if result.returncode != 0:
            pytest.skip(f"npm ci could not install the openai package (offline?): {result.stderr[-500:]}")
        stamp.write_text(lock)
    return installed


def test_node_sdk_chat_stream_tools_and_responses(openai_package: Path, fake_upstream: FakeUpstream) -> None:
    settings = upstream_settings(fake_upstream.url,  # type: ignore[attr-defined]
                                 tier_overrides={"large": {"responses_api": True}})
    fake_upstream.push(Reply(), Reply(), Reply(tool_calls=[{"id": "call_node", "name": "get_weather",
                                                            "arguments": '{"city": "Paris"}'}]))
    with running_gateway(settings, router=FixedRouter(0.1, by_keyword={"prove": 0.9})) as gateway:
        assert NODE is not None
        result = subprocess.run([NODE, str(HERE / "openai_node.mjs"), gateway.url + "/v1"], capture_output=True,
                                text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["chat"] == {"content": ANSWER, "tier": "small"}
    assert seen["stream"].split() == ANSWER.split()
    assert seen["tool_call"] == {"id": "call_node", "name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert seen["tool_follow_up_reason"] == "sticky"
    assert seen["responses"] == {"text": ANSWER, "status": "completed"}
    assert seen["responses_stream"]["text"].split() == ANSWER.split()
    assert (seen["responses_stream"]["first"], seen["responses_stream"]["last"]) == (
        "response.created", "response.completed")
    paths = [received.path for received in fake_upstream.received]
    assert paths[-2:] == ["/v1/chat/completions", "/v1/responses"]  # small translated, large forwarded
