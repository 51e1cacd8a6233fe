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

import httpx

from tenantserve.gateway.errors import ApiError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpstreamUsage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class UpstreamReply:
    """A whole (non-streamed) completion, rewritten for the caller."""

    body: bytes
    usage: UpstreamUsage | None


class OpenAIUpstream:
    """A keep-alive HTTP client for one OpenAI-compatible server."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        max_connections: int = 256,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=5.0),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def start(self) -> None:
        pass  # connections open on first use

    async def shutdown(self) -> None:
        await self._client.aclose()

    async def complete(
        self, path: str, body: dict[str, Any], request_id: str, rewrite: Mapping[str, str]
    ) -> UpstreamReply:
        """POST a non-streamed request; the reply with `rewrite` (id, model) applied."""
        try:
            response = await self._client.post(
                path, content=json.dumps(body), headers=_headers(request_id)
            )
        except httpx.TimeoutException as e:
            raise _timeout(e) from e
        except httpx.HTTPError as e:
            raise _unreachable(e) from e
        if response.status_code >= 400:
            raise _upstream_error(response.status_code, response.content)
        try:
            payload = response.json()
        except ValueError as e:
            raise ApiError(
                502, "the upstream sent invalid JSON", "server_error", "upstream_error"
            ) from e
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
        request = self._client.build_request(
            "POST", path, content=json.dumps(body), headers=_headers(request_id)
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException as e:
            raise _timeout(e) from e
        except httpx.HTTPError as e:
            raise _unreachable(e) from e
        if response.status_code >= 400:
            content = await response.aread()
            await response.aclose()
            raise _upstream_error(response.status_code, content)
        return self._events(response, rewrite, include_usage, usage_out)

    async def _events(
        self,
        response: httpx.Response,
        rewrite: Mapping[str, str],
        include_usage: bool,
        usage_out: list[UpstreamUsage],
    ) -> AsyncGenerator[bytes, None]:
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    logger.warning("upstream sent a malformed event: %.200s", data)
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
        except httpx.HTTPError as e:
            error = _unreachable(e)
            yield f"data: {json.dumps({'error': error.detail.model_dump()})}\n\n".encode()
        finally:
            await response.aclose()
        yield b"data: [DONE]\n\n"


def _headers(request_id: str) -> dict[str, str]:
    return {"content-type": "application/json", "x-request-id": request_id}


def _usage(raw: Any) -> UpstreamUsage | None:
    if not isinstance(raw, dict):
        return None
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return UpstreamUsage(prompt, completion)


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
