"""AsyncEngineClient: the gateway's asyncio face of an engine running in its own process.

The event loop never waits on the engine. Per engine process (an `Incarnation`), two threads
move bytes:

    writer thread   SimpleQueue[bytes] -> pipe -> child      (a full pipe blocks only it)
    reader thread   child -> pipe -> loop.call_soon_threadsafe(...)

and the loop hands each `RequestOutput` to its request's `asyncio.Queue`. When the child
exits unexpectedly, every in-flight stream raises `EngineDeadError`, the client spawns a
new process (with back-off while that fails), and `generate()` calls made meanwhile wait
for it, up to `ready_timeout_s`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncGenerator, Callable
from types import TracebackType
from typing import TYPE_CHECKING

from tenantserve.engine.config import EngineConfig
from tenantserve.engine.incarnation import Incarnation
from tenantserve.engine.process import (
    AbortRequest,
    AddRequest,
    CoreOutput,
    EngineProcess,
    Failed,
    GetStats,
    Outputs,
    Ready,
    Shutdown,
    StatsReply,
)
from tenantserve.engine.request import EngineRequest, FinishReason, RequestOutput
from tenantserve.errors import (
    EngineDeadError,
    EngineError,
    InvalidRequestError,
    TenantServeError,
)

if TYPE_CHECKING:
    from tenantserve.engine.engine import EngineStats

logger = logging.getLogger(__name__)

MAX_RESTART_BACKOFF_S = 30.0


class AsyncEngineClient:
    """An `LLMEngine` in a child process, restarted if it dies; one async stream per request.

    Use from a single event loop: `async with AsyncEngineClient(cfg) as engine: ...`.
    """

    def __init__(
        self,
        config: EngineConfig,
        *,
        startup_timeout_s: float = 300.0,
        ready_timeout_s: float = 120.0,
        restart_backoff_s: float = 0.5,
        shutdown_timeout_s: float = 10.0,
    ) -> None:
        self.config = config
        self._startup_timeout_s = startup_timeout_s
        self._ready_timeout_s = ready_timeout_s
        self._restart_backoff_s = restart_backoff_s
        self._shutdown_timeout_s = shutdown_timeout_s
        # Times the engine process died unexpectedly and a restart began.
        self.num_restarts = 0
        self._engine: Incarnation | None = None
        self._incarnations: list[Incarnation] = []  # still running; joined at shutdown
        self._ready = asyncio.Event()
        self._streams: dict[str, asyncio.Queue[RequestOutput | EngineError]] = {}
        # Requests whose consumer left early: aborted, final output not yet seen.
        self._detached: set[str] = set()
        self._stats_waiters: dict[int, asyncio.Future[EngineStats]] = {}
        self._query_ids = itertools.count()
        self._restart_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the engine process and wait until it serves; raises what start-up raised."""
        if self._closed:
            raise EngineError("the engine client is shut down")
        if self._started:
            return
        try:
            await self._launch()
        except Exception:
            await asyncio.to_thread(self._stop_processes)
            raise
        self._started = True

    async def shutdown(self) -> None:
        """Stop the engine process and the client's threads; in-flight streams raise
        EngineError. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._ready.set()  # wake generate() calls waiting for a restart: they see _closed
        if self._restart_task is not None and not self._restart_task.done():
            self._restart_task.cancel()
            await asyncio.wait([self._restart_task])
        self._fail_all(lambda: EngineError("the engine client was shut down"))
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.send(Shutdown())
        await asyncio.to_thread(self._stop_processes)

    async def __aenter__(self) -> AsyncEngineClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    @property
    def pid(self) -> int | None:
        """The serving engine process's id; None while (re)starting or shut down."""
        return self._engine.pid if self._engine is not None else None

    @property
    def num_unfinished_requests(self) -> int:
        """Requests the engine still holds: streaming, or aborted and not yet confirmed."""
        return len(self._streams) + len(self._detached)

    # -- requests -----------------------------------------------------------------------

    async def generate(self, request: EngineRequest) -> AsyncGenerator[RequestOutput, None]:
        """Stream the request's outputs, the last one finished. Raises InvalidRequestError
        if the engine rejected it, EngineError (EngineDeadError) if the engine failed.
        Stopping early (break, close, cancel) aborts the request in the engine."""
        engine = await self._wait_ready()
        request_id = request.request_id
        if request_id in self._streams or request_id in self._detached:
            raise InvalidRequestError(f"request id {request_id!r} is already in flight")
        outputs: asyncio.Queue[RequestOutput | EngineError] = asyncio.Queue()
        engine.send(AddRequest(request))
        self._streams[request_id] = outputs
        try:
            while True:
                out = await outputs.get()
                if isinstance(out, EngineError):
                    raise out
                if out.finish_reason is FinishReason.ERROR:
                    raise _request_error(out)
                yield out
                if out.finished:
                    return
        finally:
            if self._streams.get(request_id) is outputs:
                # The consumer left before the engine finished the request.
                del self._streams[request_id]
                if self._engine is engine:
                    self._detached.add(request_id)
                    engine.send(AbortRequest(request_id))

    async def abort(self, request_id: str) -> None:
        """End a request early; its stream finishes with FinishReason.ABORT.

        No-op for a request that is unknown or already finished."""
        if request_id in self._streams and self._engine is not None:
            self._engine.send(AbortRequest(request_id))

    async def stats(self) -> EngineStats:
        """A snapshot of the engine's queues, steps and KV cache."""
        engine = await self._wait_ready()
        query_id = next(self._query_ids)
        reply: asyncio.Future[EngineStats] = asyncio.get_running_loop().create_future()
        self._stats_waiters[query_id] = reply
        try:
            engine.send(GetStats(query_id))
            return await reply
        finally:
            self._stats_waiters.pop(query_id, None)

    # -- internals ----------------------------------------------------------------------

    async def _launch(self) -> None:
        """Spawn a process, make it the current engine and wait for Ready.

        Spawning runs on the loop: it is a fork-exec of a few milliseconds."""
        loop = asyncio.get_running_loop()
        self._incarnations = [i for i in self._incarnations if i.running]
        engine = Incarnation(EngineProcess(self.config), loop, self._on_message, self._on_exit)
        self._incarnations.append(engine)
        self._engine = engine
        engine.start()
        try:
            await asyncio.wait_for(asyncio.shield(engine.ready), self._startup_timeout_s)
        except BaseException as e:
            if self._engine is engine:
                self._engine = None
            engine.process.kill()
            if isinstance(e, TimeoutError):
                raise EngineError(
                    f"the engine for {self.config.model_dir} did not start within "
                    f"{self._startup_timeout_s:g} s"
                ) from None
            raise
        if self._engine is engine:  # else it died at once, and _on_exit restarts it
            self._ready.set()

    async def _restart(self) -> None:
        backoff_s = self._restart_backoff_s
        while not self._closed:
            try:
                await self._launch()
            except Exception as e:
                logger.error("engine restart failed (%s); retrying in %.1f s", e, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(2 * backoff_s, MAX_RESTART_BACKOFF_S)
            else:
                logger.info("engine restarted as process %s", self.pid)
                return

    async def _wait_ready(self) -> Incarnation:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ready_timeout_s
        while True:
            if self._closed:
                raise EngineError("the engine client is shut down")
            if not self._started:
                raise EngineError("the engine client is not started; call start() first")
            if self._ready.is_set() and self._engine is not None:
                return self._engine
            try:
                await asyncio.wait_for(self._ready.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise EngineDeadError(
                    "the engine process is restarting and was not ready within "
                    f"{self._ready_timeout_s:g} s"
                ) from None

    def _on_message(self, engine: Incarnation, msg: CoreOutput) -> None:
        if engine is not self._engine:
            return  # a process that was already given up on
        match msg:
            case Outputs(outputs=outputs):
                self._dispatch(outputs)
            case StatsReply(query_id=query_id, stats=stats):
                waiter = self._stats_waiters.get(query_id)
                if waiter is not None and not waiter.done():
                    waiter.set_result(stats)
            case Ready():
                engine.became_ready = True
                if not engine.ready.done():
                    engine.ready.set_result(None)
            case Failed(message=message):
                engine.last_error = message
                if not engine.ready.done():
                    engine.ready.set_exception(self._startup_error(msg))

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is not None:
                stream.put_nowait(out)
                if out.finished:
                    del self._streams[out.request_id]
            elif out.finished:
                self._detached.discard(out.request_id)

    def _on_exit(self, engine: Incarnation, exit_code: int) -> None:
        if not engine.ready.done():
            detail = f": {engine.last_error}" if engine.last_error else ""
            engine.ready.set_exception(
                EngineError(f"engine process exited with code {exit_code} during start-up{detail}")
            )
        if engine is not self._engine:
            return
        self._engine = None
        self._ready.clear()
        if self._closed or not engine.became_ready:
            return  # shutdown() or _launch() deals with it
        message = f"engine process exited with code {exit_code} and is restarting"
        if engine.last_error:
            message += f" ({engine.last_error})"
        logger.error(message)
        self._fail_all(lambda: EngineDeadError(message))
        self.num_restarts += 1
        self._restart_task = asyncio.get_running_loop().create_task(self._restart())

    def _fail_all(self, error: Callable[[], EngineError]) -> None:
        """End every in-flight stream and stats query with a fresh `error()` each."""
        for stream in self._streams.values():
            stream.put_nowait(error())
        self._streams.clear()
        self._detached.clear()
        for waiter in self._stats_waiters.values():
            if not waiter.done():
                waiter.set_exception(error())

    def _startup_error(self, failed: Failed) -> TenantServeError:
        if isinstance(failed.exception, TenantServeError):
            return failed.exception
        return EngineError(
            f"the engine for {self.config.model_dir} failed to start: {failed.message}"
        )

    def _stop_processes(self) -> None:
        """Wait for every process to exit (killing any that overstay) and its threads to end."""
        for engine in self._incarnations:
            if not engine.join(self._shutdown_timeout_s):
                logger.warning("engine process %d did not exit; killing it", engine.pid)
                engine.process.kill()
                engine.join()
        self._incarnations.clear()


def _request_error(out: RequestOutput) -> EngineError | InvalidRequestError:
    message = out.error or "the engine rejected the request"
    if out.error_code == "invalid_request":
        return InvalidRequestError(message)
    return EngineError(message)
