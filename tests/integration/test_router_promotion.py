"""Promoting a classifier checkpoint without a restart: under load, refused when broken, admin keys only, SIGHUP."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from gateway.admin import install_sighup
from gateway.admission.auth import hash_key
from gateway.app import create_app, default_router
from gateway.settings import Settings
from gateway.tools.fake_upstream import FakeUpstream, ServerThread
from routers.checkpoint import HEAD_FILE, save_pooled_checkpoint, truncated_encoder
from routers.pooled import HeadSpec, MLPHead, PooledClassifier
from routers.swap import SwappableRouter, checkpoint_name
from tests.support.gateway import running_gateway, upstream_settings
from tests.support.tiny_encoder import WORDS, build_tiny_encoder

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
ADMIN, CLIENT = "tg-admin-key-0123456789", "tg-client-key-0123456789"
AUTH = {"keys": [{"name": "ops", "hash": hash_key(ADMIN), "admin": True},
                 {"name": "app", "hash": hash_key(CLIENT)}]}


def _checkpoint(tiny: Path, out: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = PooledClassifier(truncated_encoder(tiny, 1), MLPHead(32, HeadSpec(hidden=8, members=2))).train(False)
    save_pooled_checkpoint(model, out, {"base": str(tiny), "max_length": 32, "threshold": 0.5, "data": {}})
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    tiny = build_tiny_encoder(root / "tiny")
    old, new = _checkpoint(tiny, root / "old", 1), _checkpoint(tiny, root / "new", 2)
    broken = root / "broken"
    shutil.copytree(new, broken)
    (broken / HEAD_FILE).unlink()
    return {"old": old, "new": new, "broken": broken}


def _settings(upstream: str, path: Path) -> Settings:
    classifier = {"path": str(path), "max_length": 32, "threads": 1, "timeout_s": 10}
    return upstream_settings(upstream, auth=AUTH, routing={"classifier": classifier})


@pytest.fixture
def gateway(fake_upstream: FakeUpstream, checkpoints: dict[str, Path]) -> Iterator[ServerThread]:
    settings = _settings(fake_upstream.url, checkpoints["old"])  # type: ignore[attr-defined]
    with running_gateway(settings, router=default_router(settings)) as server:
        yield server


def _prompt(i: int) -> dict[str, object]:
    words = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(3 + i % 9))
    return {"model": "tiergate-auto", "messages": [{"role": "user", "content": f"{words} {i}"}]}


async def test_promotion_under_load_answers_every_request_from_the_old_or_the_new_checkpoint(
    gateway: ServerThread, checkpoints: dict[str, Path]
) -> None:
    old, new = checkpoint_name(str(checkpoints["old"])), checkpoint_name(str(checkpoints["new"]))
    assert old != new
    seen: list[str] = []
    statuses: list[int] = []
    limit = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30,
                                 headers={"authorization": f"Bearer {CLIENT}"}) as client:

        async def one(i: int) -> None:
            async with limit:
                response = await client.post(CHAT, json=_prompt(i))
                statuses.append(response.status_code)
                seen.append(response.headers.get("x-tiergate-router", ""))

        async def promote_midway() -> httpx.Response:
            while len(statuses) < 150:  # enough traffic first to re-derive the threshold from
                await asyncio.sleep(0.01)
            return await client.post("/admin/router", json={"path": str(checkpoints["new"])},
                                     headers={"authorization": f"Bearer {ADMIN}"})

        results = await asyncio.gather(promote_midway(), *(one(i) for i in range(500)))
        promoted = results[0]
        after = await client.post(CHAT, json=_prompt(10_000))
    assert promoted.status_code == 200, promoted.text
    body = promoted.json()["promoted"]
    assert body["old"] == old and body["new"] == new and body["recent_texts"] >= 50
    assert body["threshold"] is not None and 0.0 <= body["large_share"] <= 1.0
    assert statuses == [200] * 500
    assert set(seen) == {old, new} and seen.count(old) >= 150
    assert after.headers["x-tiergate-router"] == new
    assert after.headers["x-tiergate-threshold"] == f"{body['threshold']:.4f}"  # the re-derived threshold applies


async def test_broken_checkpoint_is_refused_and_the_old_one_keeps_serving(
    gateway: ServerThread, checkpoints: dict[str, Path]
) -> None:
    old = checkpoint_name(str(checkpoints["old"]))
    admin = {"authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        for path in (checkpoints["broken"], checkpoints["old"].parent / "missing"):
            refused = await client.post("/admin/router", json={"path": str(path)}, headers=admin)
            assert refused.status_code == 422 and refused.json()["error"]["code"] == "checkpoint_refused"
            assert old in refused.json()["error"]["message"]
        answer = await client.post(CHAT, json=_prompt(1), headers={"authorization": f"Bearer {CLIENT}"})
        assert answer.status_code == 200 and answer.headers["x-tiergate-router"] == old
        metrics = (await client.get("/metrics")).text
        assert f'classifier_checkpoint="{old}"' in metrics


async def test_only_admin_keys_may_promote(gateway: ServerThread, checkpoints: dict[str, Path]) -> None:
    body = {"path": str(checkpoints["new"])}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        assert (await client.post("/admin/router", json=body)).status_code == 401
        denied = await client.post("/admin/router", json=body, headers={"authorization": f"Bearer {CLIENT}"})
        assert denied.status_code == 403 and denied.json()["error"]["type"]
        bad = await client.post("/admin/router", json={"nope": 1}, headers={"authorization": f"Bearer {ADMIN}"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "path"


async def test_sighup_reloads_the_serving_directory(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    live = tmp_path / "live"
    shutil.copytree(checkpoints["old"], live)
    settings = _settings("http://127.0.0.1:9", live)
    app = create_app(settings, router=default_router(settings))
    state = app.state.gateway
    router = state.decider.router
    assert isinstance(router, SwappableRouter)
    await router.start()
    remove = install_sighup(state)
    try:
        before = router.checkpoint
        shutil.rmtree(live)
        shutil.copytree(checkpoints["new"], live)
        (live / "metadata.json").write_text((live / "metadata.json").read_text().replace("0.5", "0.55"))
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(200):
            if router.checkpoint != before:
                break
            await asyncio.sleep(0.05)
        assert router.checkpoint == checkpoint_name(str(live)) != before
        assert router.ready() and 0.0 <= await router.score("prove the theorem") <= 1.0
    finally:
        remove()
        await router.aclose()
