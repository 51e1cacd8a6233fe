"""`VllmAdapters`: tenants' LoRA adapters loaded into one vLLM server at runtime, at most
`max_loaded` at once.

An adapter is loaded on its first use (`POST /v1/load_lora_adapter` with its local
directory: vLLM runs on the same machine and reads the files the registry's cache
pulled) under its adapter id, which requests then name as `model`. A request holds its
adapter (`acquire` → `release`) until it has ended, so an adapter is never unloaded under
a running request; when all slots are taken, the least recently used adapter no request
holds is unloaded (`POST /v1/unload_lora_adapter`) first. With every slot held, a new
adapter waits for one (at most `wait_timeout_s`, then 503).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field

import httpx

from tenantserve.engine.request import LoraRef
from tenantserve.gateway.errors import ApiError

logger = logging.getLogger(__name__)


@dataclass
class _Slot:
    path: str
    holders: int = 0
    loaded: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class VllmAdapters:
    """The adapters one vLLM server has loaded, in least recently used order."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        max_loaded: int,
        wait_timeout_s: float = 60.0,
    ) -> None:
        self.client = client  # base_url: the server's, up to and including `/v1`
        self.max_loaded = max_loaded
        self.wait_timeout_s = wait_timeout_s
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._freed = asyncio.Event()  # replaced (and set) whenever a slot may have freed
        # Adapters being unloaded: loading one again waits for its unload to finish.
        self._unloading: dict[str, asyncio.Future[None]] = {}
        self.num_loads = 0
        self.num_unloads = 0

    def loaded(self) -> list[str]:
        """Adapter ids loaded (or loading), least recently used first."""
        return list(self._slots)

    async def acquire(self, lora: LoraRef) -> str:
        """Load `lora` unless it is loaded, hold it for one request; its vLLM model name.
        Each successful call needs one `release` of the same id."""
        name = lora.adapter_id
        victim: str | None = None
        loading = False
        try:
            async with asyncio.timeout(self.wait_timeout_s):
                while True:  # nothing awaits between a look at the slots and its change
                    slot = self._slots.get(name)
                    if slot is not None:
                        break
                    if len(self._slots) >= self.max_loaded:
                        victim = self._least_recently_used_idle()
                        if victim is None:
                            await self._freed.wait()
                            continue
                        del self._slots[victim]
                        self._unloading[victim] = asyncio.get_running_loop().create_future()
                    slot = self._slots[name] = _Slot(lora.path)
                    loading = True
                    break
        except TimeoutError as e:
            raise ApiError(
                503,
                "Every adapter slot of the model server is busy; try again shortly.",
                "server_error",
                code="adapter_slots_busy",
            ) from e
        slot.holders += 1
        self._slots.move_to_end(name)
        if loading:
            unloading = self._unloading.get(name)
            try:
                if victim is not None:
                    await self._unload(victim)
                if unloading is not None:
                    await asyncio.shield(unloading)
                await self._load(name, lora.path)
            except BaseException as e:
                if self._slots.get(name) is slot:
                    del self._slots[name]
                    self._wake()
                slot.loaded.set_exception(e)
                slot.loaded.exception()  # retrieved: waiters re-raise it themselves
                raise
            slot.loaded.set_result(None)
        else:
            try:
                await asyncio.shield(slot.loaded)
            except BaseException:
                self.release(name)
                raise
        return name

    def release(self, name: str) -> None:
        """A request holding `name` has ended."""
        slot = self._slots.get(name)
        if slot is not None and slot.holders > 0:
            slot.holders -= 1
            if slot.holders == 0:
                self._wake()

    def _least_recently_used_idle(self) -> str | None:
        return next((n for n, s in self._slots.items() if s.holders == 0), None)

    def _wake(self) -> None:
        """Wake the acquirers waiting for a free slot (they look again)."""
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()

    async def _load(self, name: str, path: str) -> None:
        response = await self._post("/load_lora_adapter", {"lora_name": name, "lora_path": path})
        if response.status_code == 200 or _already(response, "already been loaded"):
            self.num_loads += 1
            logger.info("vLLM loaded adapter %s", name)
            return
        logger.warning("vLLM refused adapter %s (%d): %.300s", name, response.status_code,
                       response.text)  # fmt: skip
        raise ApiError(
            502,
            f"The model server could not load the adapter ({response.status_code}).",
            "server_error",
            code="adapter_load_failed",
        )

    async def _unload(self, name: str) -> None:
        try:
            response = await self._post("/unload_lora_adapter", {"lora_name": name})
        finally:
            done = self._unloading.pop(name, None)
            if done is not None:
                done.set_result(None)
        if response.status_code == 200 or response.status_code in (400, 404):
            # 400 / 404: not loaded there (a restarted server): nothing to free.
            self.num_unloads += 1
            logger.info("vLLM unloaded adapter %s", name)
            return
        raise ApiError(
            502,
            f"The model server could not unload an adapter ({response.status_code}).",
            "server_error",
            code="adapter_unload_failed",
        )

    async def _post(self, path: str, body: dict[str, str]) -> httpx.Response:
        try:
            return await self.client.post(path.lstrip("/"), json=body)
        except httpx.TimeoutException as e:
            raise ApiError(
                504, "The model server did not answer in time.", "server_error", "upstream_timeout"
            ) from e
        except httpx.HTTPError as e:
            raise ApiError(
                502, "The model server is unreachable.", "server_error", "upstream_error"
            ) from e


def _already(response: httpx.Response, phrase: str) -> bool:
    return response.status_code == 400 and phrase in response.text
