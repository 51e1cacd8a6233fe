"""`VllmAdapters` against a scripted vLLM (httpx MockTransport): loaded on first use,
bounded, least recently used unloaded first, never one a request holds."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tenantserve.engine.request import LoraRef
from tenantserve.gateway.errors import ApiError
from tenantserve.gateway.vllm_adapters import VllmAdapters


class FakeVllm:
    """Records load / unload calls; answers like vLLM (400 when loaded twice)."""

    def __init__(self) -> None:
        self.loaded: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.fail: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        name = body["lora_name"]
        op = request.url.path.rsplit("/", 1)[-1]
        self.calls.append((op, name))
        if op == "load_lora_adapter":
            if name in self.fail:
                return httpx.Response(400, json={"error": {"message": "bad adapter"}})
            if name in self.loaded:
                return httpx.Response(
                    400, text=f"The lora adapter '{name}' has already been loaded."
                )
            self.loaded.add(name)
            return httpx.Response(200, text="ok")
        if name not in self.loaded:
            return httpx.Response(404, text="cannot be found")
        self.loaded.discard(name)
        return httpx.Response(200, text="ok")


def _manager(fake: FakeVllm, max_loaded: int, wait_s: float = 0.2) -> VllmAdapters:
    client = httpx.AsyncClient(base_url="http://vllm/v1", transport=httpx.MockTransport(fake))
    return VllmAdapters(client, max_loaded=max_loaded, wait_timeout_s=wait_s)


def _lora(name: str) -> LoraRef:
    return LoraRef(name, f"/cache/{name}")


async def test_an_adapter_is_loaded_once_on_first_use() -> None:
    fake = FakeVllm()
    adapters = _manager(fake, 2)
    for _ in range(3):
        assert await adapters.acquire(_lora("a")) == "a"
        adapters.release("a")
    assert fake.calls == [("load_lora_adapter", "a")]


async def test_the_least_recently_used_adapter_is_unloaded_first() -> None:
    fake = FakeVllm()
    adapters = _manager(fake, 2)
    for name in ("a", "b", "a", "c"):  # b is the least recently used when c comes
        await adapters.acquire(_lora(name))
        adapters.release(name)
    assert fake.loaded == {"a", "c"}
    assert ("unload_lora_adapter", "b") in fake.calls
    assert adapters.loaded() == ["a", "c"]


async def test_an_adapter_a_request_holds_is_never_unloaded() -> None:
    fake = FakeVllm()
    adapters = _manager(fake, 2)
    await adapters.acquire(_lora("a"))  # held
    await adapters.acquire(_lora("b"))
    adapters.release("b")
    await adapters.acquire(_lora("c"))  # evicts b, not the older but held a
    assert fake.loaded == {"a", "c"}


async def test_a_new_adapter_waits_for_a_free_slot_then_gives_up_with_503() -> None:
    fake = FakeVllm()
    adapters = _manager(fake, 1, wait_s=0.3)
    await adapters.acquire(_lora("a"))
    waiting = asyncio.create_task(adapters.acquire(_lora("b")))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    adapters.release("a")
    assert await waiting == "b"
    assert fake.loaded == {"b"}
    with pytest.raises(ApiError) as e:  # b is held: c cannot get a slot
        await adapters.acquire(_lora("c"))
    assert e.value.status == 503


async def test_concurrent_first_uses_load_once() -> None:
    fake = FakeVllm()
    adapters = _manager(fake, 2)
    names = await asyncio.gather(*(adapters.acquire(_lora("a")) for _ in range(5)))
    assert names == ["a"] * 5
    assert fake.calls == [("load_lora_adapter", "a")]


async def test_an_adapter_already_loaded_at_the_server_counts_as_loaded() -> None:
    fake = FakeVllm()
    fake.loaded.add("a")  # a server that outlived a gateway restart
    adapters = _manager(fake, 2)
    assert await adapters.acquire(_lora("a")) == "a"


async def test_a_refused_load_is_a_502_and_frees_its_slot() -> None:
    fake = FakeVllm()
    fake.fail.add("bad")
    adapters = _manager(fake, 1)
    with pytest.raises(ApiError) as e:
        await adapters.acquire(_lora("bad"))
    assert e.value.status == 502
    assert adapters.loaded() == []
    assert await adapters.acquire(_lora("good")) == "good"
