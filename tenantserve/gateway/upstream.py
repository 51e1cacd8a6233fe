"""An external OpenAI-compatible server as a pool backend (a vLLM or SGLang deployment,
another provider): the request, already authenticated, admitted, rate-limited and
scheduled, is forwarded with the upstream's model name and the admitted `max_tokens`;
the answer comes back with this gateway's completion id and the caller's model name.

Usage is taken from the upstream's `usage` (streams are asked for it with
`stream_options.include_usage`, and the usage chunk is dropped again when the caller did
not ask for it), so rate-limit commits and the request log count what the upstream
counted. Upstream failures are 502 (`upstream_error`) or 504 (`upstream_timeout`); the
upstream's own 4xx pass through with its OpenAI-shaped body. A client that goes away
closes the upstream connection, which aborts the request there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from tenantserve.gateway.errors import ApiError

logger = logging.getLogger(__name__)

# Seconds to open a connection (and to wait for a free one of the pool's).
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class UpstreamUsage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # usage.prompt_tokens_details.cached_tokens, when reported


@dataclass(frozen=True)
class UpstreamReply:
    """A whole (non-streamed) completion, rewritten for the caller."""

    body: bytes
    usage: UpstreamUsage | None


class OpenAIUpstream:
    """A keep-alive HTTP client for one OpenAI-compatible server (aiohttp: its connection
    pool hands out an idle connection in O(1), where httpx's scanned every pooled
    connection on each request). The session lives in the serving event loop: it is
    opened by `start()` (or the first request) and closed by `shutdown()`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        max_connections: int = 256,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth_headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # No total deadline (a long stream is fine); each read may wait `timeout_s`.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=CONNECT_TIMEOUT_S, sock_read=timeout_s
        )
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}

    async def start(self) -> None:
        self._open()

    async def shutdown(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections, limit_per_host=0, keepalive_timeout=30.0
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._auth_headers,
                timeout=self._timeout,
                skip_auto_headers=("User-Agent",),
                # No cookies: nothing to keep between requests of different tenants (and
                # no cookie filtering per request).
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self.base_url + path)
        return url

    async def complete(
        self, path: str, body: dict[str, Any], request_id: str, rewrite: Mapping[str, str]
    ) -> UpstreamReply:
        """POST a non-streamed request; the reply with `rewrite` (id, model) applied."""
        session = self._session or self._open()
        try:
            async with session.post(
                self._url(path), data=json.dumps(body).encode(), headers=_headers(request_id)
            ) as response:
                status, content = response.status, await response.read()
        except TimeoutError as e:
            raise _timeout(e) from e
        except aiohttp.ClientError as e:
            raise _unreachable(e) from e
        if status >= 400:
            raise _upstream_error(status, content)
        try:
            payload = json.loads(content)
        except ValueError as e:
            raise ApiError(
                502, "the upstream sent invalid JSON", "server_error", "upstream_error"
            ) from e
        if not isinstance(payload, dict):
            raise ApiError(502, "the upstream sent invalid JSON", "server_error", "upstream_error")
        payload.update(rewrite)
        return UpstreamReply(json.dumps(payload).encode(), _usage(payload.get("usage")))

    async def stream(
        self,
        path: str,
        body: dict[str, Any],
        request_id: str,
        rewrite: Mapping[str, str],
        include_usage: bool,
        usage_out: list[UpstreamUsage],
    ) -> AsyncGenerator[bytes, None]:
        """POST a streamed request; server-sent events for the caller, each chunk
        rewritten. The status is checked before the first event, so errors before the
        stream are HTTP errors. The upstream's usage is appended to `usage_out`."""
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        session = self._session or self._open()
        try:
            response = await session.post(
                self._url(path), data=json.dumps(body).encode(), headers=_headers(request_id)
            )
        except TimeoutError as e:
            raise _timeout(e) from e
        except aiohttp.ClientError as e:
            raise _unreachable(e) from e
        if response.status >= 400:
            try:
                content = await response.read()
            except (TimeoutError, aiohttp.ClientError):
                content = b""
            finally:
                response.release()
            raise _upstream_error(response.status, content)
        return self._events(response, rewrite, include_usage, usage_out)

    async def _events(
        self,
        response: aiohttp.ClientResponse,
        rewrite: Mapping[str, str],
        include_usage: bool,
        usage_out: list[UpstreamUsage],
    ) -> AsyncGenerator[bytes, None]:
        try:
            async for line in _lines(response.content):
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    logger.warning("upstream sent a malformed event: %.200r", data)
                    continue
                if not isinstance(chunk, dict):
                    logger.warning("upstream sent a malformed event: %.200r", data)
                    continue
                if "error" in chunk:
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
                    continue
                usage = chunk.get("usage")
                if usage:
                    if parsed := _usage(usage):
                        usage_out.append(parsed)
                    if not include_usage:
                        if not chunk.get("choices"):
                            continue
                        chunk.pop("usage")
                chunk.update(rewrite)
                yield f"data: {json.dumps(chunk)}\n\n".encode()
        except TimeoutError as e:
            error = _timeout(e)
            yield f"data: {json.dumps({'error': error.detail.model_dump()})}\n\n".encode()
        except aiohttp.ClientError as e:
            error = _unreachable(e)
            yield f"data: {json.dumps({'error': error.detail.model_dump()})}\n\n".encode()
        finally:
            # Back to the pool when the body was read to its end; closed (which aborts
            # the request at the upstream) when the stream was left early.
            response.release()
        yield b"data: [DONE]\n\n"


async def _lines(content: aiohttp.StreamReader) -> AsyncGenerator[bytes, None]:
    """The body's lines, however long (aiohttp's own line reader caps their length)."""
    pending = b""
    async for data in content.iter_any():
        pending += data
        if b"\n" not in data:
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line
    if pending:
        yield pending


def _headers(request_id: str) -> dict[str, str]:
    return {"content-type": "application/json", "x-request-id": request_id}


def _usage(raw: Any) -> UpstreamUsage | None:
    if not isinstance(raw, dict):
        return None
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    cached = cached if isinstance(cached, int) and 0 <= cached <= prompt else 0
    return UpstreamUsage(prompt, completion, cached)


def _timeout(e: Exception) -> ApiError:
    logger.warning("upstream timed out: %r", e)
    return ApiError(
        504, "The model server did not answer in time.", "server_error", "upstream_timeout"
    )


def _unreachable(e: Exception) -> ApiError:
    logger.warning("upstream unreachable: %r", e)
    return ApiError(502, "The model server is unreachable.", "server_error", "upstream_error")


def _upstream_error(status: int, content: bytes) -> ApiError:
    """The upstream's 4xx as the caller's (its message, code and param kept); a 5xx as 502."""
    if 400 <= status < 500 and status not in (401, 403):
        try:
            error = json.loads(content)["error"]
            return ApiError(
                status,
                str(error.get("message", "")),
                str(error.get("type", "invalid_request_error")),
                error.get("code") if isinstance(error.get("code"), str) else None,
                error.get("param") if isinstance(error.get("param"), str) else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
    # 401/403 from the upstream are our configuration's fault, not the caller's.
    logger.warning("upstream answered %d: %.300r", status, content)
    return ApiError(502, f"The model server failed ({status}).", "server_error", "upstream_error")
