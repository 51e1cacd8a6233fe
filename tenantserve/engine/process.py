"""The engine in its own process: typed messages across the boundary, the child's loop,
and the parent's handle on the child.

    parent: EngineProcess                     child: run_engine_core -> EngineCore
    AddRequest, AbortRequest, GetStats,  ──pipe──▶  drain all inputs, step(), send
    Shutdown                                        the step's outputs as one message
    Ready, Outputs, StatsReply, Failed   ◀──pipe──

Two one-way pipes, so the parent can write and read from different threads. The child
builds `LLMEngine(config)` and answers `Ready`, or `Failed` if that raised. An error
inside `step()` is fatal: the child logs it, sends `Failed` and exits with code 1; the
parent (`AsyncEngineClient`) restarts it. The child also exits when the parent's end of
the pipe closes, so it never outlives the gateway.

Spawn starts a fresh interpreter that re-imports the parent's main module, so that
module must guard its entry point with `if __name__ == "__main__":`.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING

from tenantserve.engine.config import EngineConfig
from tenantserve.engine.request import EngineRequest, FinishReason, RequestOutput
from tenantserve.errors import InvalidRequestError

if TYPE_CHECKING:
    from tenantserve.engine.engine import EngineStats, LLMEngine

logger = logging.getLogger(__name__)

# -- messages into the engine process ---------------------------------------------------


@dataclass(frozen=True)
class AddRequest:
    """Queue a request; a rejected one comes back as a finished ERROR output."""

    request: EngineRequest


@dataclass(frozen=True)
class AbortRequest:
    """End a request; its final output carries FinishReason.ABORT. Unknown ids are ignored."""

    request_id: str


@dataclass(frozen=True)
class GetStats:
    """Ask for an `EngineStats` snapshot; answered by `StatsReply` with the same query id."""

    query_id: int


@dataclass(frozen=True)
class Shutdown:
    """Stop stepping and exit with code 0; unfinished requests are dropped."""


CoreInput = AddRequest | AbortRequest | GetStats | Shutdown

# -- messages out of the engine process -------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """The engine is built and serving."""

    pid: int


@dataclass(frozen=True)
class Outputs:
    """Everything one step produced, in order; finished outputs end their requests."""

    outputs: list[RequestOutput]


@dataclass(frozen=True)
class StatsReply:
    query_id: int
    stats: EngineStats


@dataclass(frozen=True)
class Failed:
    """Start-up failed, or a step raised and the process is about to exit.

    `exception` is the original exception when it could be pickled."""

    message: str
    exception: BaseException | None = None


CoreOutput = Ready | Outputs | StatsReply | Failed


# -- the child ----------------------------------------------------------------------------


class EngineCore:
    """Drives an engine from a pipe: drain pending inputs, step, send the step's outputs.

    Blocks on the input pipe only while the engine has nothing to do."""

    def __init__(self, engine: LLMEngine, inbox: Connection, outbox: Connection) -> None:
        self._engine = engine
        self._inbox = inbox
        self._outbox = outbox
        # Outputs produced outside step() (rejected requests), sent with the next step's.
        self._pending: list[RequestOutput] = []
        # Requests the engine accepted and has not finished: aborts for others are dropped.
        self._live: set[str] = set()
        self._step_needed = False

    def run(self) -> None:
        """Serve until `Shutdown` arrives or the parent's end of the pipe closes."""
        while True:
            idle = not (self._engine.has_unfinished_requests() or self._pending)
            if not self._drain(block=idle):
                return
            outputs, self._pending = self._pending, []
            if self._engine.has_unfinished_requests() or self._step_needed:
                self._step_needed = False
                outputs.extend(self._engine.step())
            for out in outputs:
                if out.finished:
                    self._live.discard(out.request_id)
            if outputs:
                self._outbox.send(Outputs(outputs))

    def _drain(self, block: bool) -> bool:
        """Handle every message waiting on the pipe (waiting for one if `block`).

        False when it is time to exit."""
        try:
            if block:
                self._inbox.poll(None)
            while self._inbox.poll():
                if not self._handle(self._inbox.recv()):
                    return False
        except EOFError:
            logger.info("the client closed the pipe; exiting")
            return False
        return True

    def _handle(self, msg: CoreInput) -> bool:
        match msg:
            case AddRequest(request=request):
                try:
                    self._engine.add_request(request)
                except InvalidRequestError as e:
                    self._pending.append(_rejected(request.request_id, str(e)))
                else:
                    self._live.add(request.request_id)
            case AbortRequest(request_id=request_id):
                if request_id in self._live:
                    self._engine.abort_request(request_id)
                    self._step_needed = True
            case GetStats(query_id=query_id):
                self._outbox.send(StatsReply(query_id, self._engine.stats()))
            case Shutdown():
                return False
        return True


def _rejected(request_id: str, error: str) -> RequestOutput:
    return RequestOutput(
        request_id=request_id,
        new_token_ids=(),
        text_delta="",
        finished=True,
        finish_reason=FinishReason.ERROR,
        error=error,
        error_code="invalid_request",
    )


def _failed(e: BaseException) -> Failed:
    message = f"{type(e).__name__}: {e}"
    try:
        pickle.loads(pickle.dumps(e))
    except Exception:
        return Failed(message)
    return Failed(message, e)


def run_engine_core(config: EngineConfig, inbox: Connection, outbox: Connection) -> None:
    """The child process's entry point: build the engine, say Ready, serve, exit.

    Exit code 0 after Shutdown or when the parent has gone, 1 after a failure."""
    # The parent owns this process's lifetime (Shutdown, or closing the pipe); a Ctrl-C
    # meant for the gateway must not kill the engine under it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s engine[%(process)d] %(levelname)s %(message)s"
    )
    exit_code = _serve(config, inbox, outbox)
    # Skip the interpreter's teardown, which takes about a second once torch is loaded
    # and delays every shutdown and restart; the engine holds nothing worth finalising.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


def _serve(config: EngineConfig, inbox: Connection, outbox: Connection) -> int:
    try:
        import torch

        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        from tenantserve.engine.engine import LLMEngine

        engine = LLMEngine(config)
    except Exception as e:
        logger.exception("engine failed to start from %s", config.model_dir)
        _send_quietly(outbox, _failed(e))
        return 1
    try:
        outbox.send(Ready(os.getpid()))
        EngineCore(engine, inbox, outbox).run()
    except (BrokenPipeError, ConnectionResetError):
        logger.info("the client went away; exiting")
    except Exception as e:
        logger.exception("engine step failed; exiting")
        _send_quietly(outbox, _failed(e))
        return 1
    return 0


def _send_quietly(conn: Connection, msg: CoreOutput) -> None:
    with contextlib.suppress(OSError):
        conn.send(msg)


# -- the parent's handle ------------------------------------------------------------------


class EngineProcess:
    """One spawned engine process and the parent's ends of its two pipes.

    Thread use: `send_bytes` from one thread, `recv` from another. Only the thread
    that calls `reap()` may wait for the process; others watch `sentinel`."""

    def __init__(self, config: EngineConfig) -> None:
        ctx = multiprocessing.get_context("spawn")
        child_inbox, self._to_child = ctx.Pipe(duplex=False)
        self._from_child, child_outbox = ctx.Pipe(duplex=False)
        self._process: BaseProcess = ctx.Process(
            target=run_engine_core,
            args=(config, child_inbox, child_outbox),
            name="tenantserve-engine",
            daemon=True,
        )
        try:
            self._process.start()
        finally:
            # Only the child holds its ends now, so its death reads as EOF here.
            child_inbox.close()
            child_outbox.close()
        assert self._process.pid is not None
        self.pid: int = self._process.pid
        self.sentinel: int = self._process.sentinel
        self._closed = False

    @staticmethod
    def encode(msg: CoreInput) -> bytes:
        """Pickle a message (in the caller's thread, so a bad payload raises there)."""
        return bytes(ForkingPickler.dumps(msg))

    def send_bytes(self, payload: bytes) -> None:
        """Write an encoded message; blocks while the pipe is full, OSError once the child exits."""
        self._to_child.send_bytes(payload)

    @property
    def output_conn(self) -> Connection:
        """The pipe the child's messages arrive on (readable: a message or EOF)."""
        return self._from_child

    def recv(self) -> CoreOutput:
        """The next message from the child; EOFError once it is gone."""
        msg: CoreOutput = self._from_child.recv()
        return msg

    def kill(self) -> None:
        """SIGKILL the child (no-op once it has been reaped)."""
        if not self._closed:
            # ValueError: closed by the reaping thread meanwhile.
            with contextlib.suppress(ValueError):
                self._process.kill()

    def reap(self) -> int:
        """Wait for the child to exit and return its exit code (negative: killed by signal)."""
        self._process.join()
        code = self._process.exitcode
        assert code is not None
        return code

    def close(self) -> None:
        """Release the pipes and the process object; call after `reap()`."""
        self._closed = True
        self._to_child.close()
        self._from_child.close()
        self._process.close()
