"""Incarnation: one engine process and the two threads that keep its pipe off the event loop.

    writer thread   SimpleQueue[bytes] -> pipe -> child      (a full pipe blocks only it)
    reader thread   child -> pipe -> loop.call_soon_threadsafe(on_message / on_exit)

`AsyncEngineClient` owns the incarnations: the current one, and any that are still exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from multiprocessing.connection import wait as wait_for_ready
from typing import Any

from tenantserve.engine.process import CoreInput, CoreOutput, EngineProcess

logger = logging.getLogger(__name__)


class Incarnation:
    """One engine process plus the reader and writer threads that serve its pipes."""

    def __init__(
        self,
        process: EngineProcess,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[Incarnation, CoreOutput], None],
        on_exit: Callable[[Incarnation, int], None],
    ) -> None:
        self.process = process
        self.pid = process.pid
        self._loop = loop
        self._on_message = on_message
        self._on_exit = on_exit
        # Resolved by Ready, or failed by Failed / the process exiting first.
        self.ready: asyncio.Future[None] = loop.create_future()
        self.ready.add_done_callback(_mark_retrieved)
        self.became_ready = False
        self.last_error: str | None = None
        self._to_child: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._writer = threading.Thread(
            target=self._write, name=f"tenantserve-engine-writer-{self.pid}", daemon=True
        )
        self._reader = threading.Thread(
            target=self._read, name=f"tenantserve-engine-reader-{self.pid}", daemon=True
        )

    def start(self) -> None:
        self._writer.start()
        self._reader.start()

    def send(self, msg: CoreInput) -> None:
        """Queue a message for the child; never blocks. Pickling errors raise here."""
        self._to_child.put(EngineProcess.encode(msg))

    @property
    def running(self) -> bool:
        """True until the process has exited and both threads are done."""
        return self._reader.is_alive()

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait until the process has exited and was cleaned up; False on timeout."""
        self._reader.join(timeout_s)
        return not self._reader.is_alive()

    def _write(self) -> None:
        broken = False
        while (payload := self._to_child.get()) is not None:
            if broken:
                continue
            try:
                self.process.send_bytes(payload)
            except OSError:
                broken = True  # the child is gone; the reader reports it

    def _read(self) -> None:
        conn = self.process.output_conn
        try:
            while True:
                ready = wait_for_ready([conn, self.process.sentinel])
                if conn not in ready:
                    break  # exited, and nothing is left to read
                try:
                    msg = self.process.recv()
                except EOFError:
                    break
                self._post(self._on_message, self, msg)
        except Exception:
            logger.exception("cannot read from engine process %d; killing it", self.pid)
            self.process.kill()
        finally:
            exit_code = self.process.reap()
            self._to_child.put(None)
            self._writer.join()
            self.process.close()
            self._post(self._on_exit, self, exit_code)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        # RuntimeError: the loop is closed, so nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)


def _mark_retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
