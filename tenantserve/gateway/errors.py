"""OpenAI-shaped errors: every error leaves as `{"error": {"message", "type", "code", "param"}}`,
4xx for the client's mistakes, 5xx only for ours, and every one with its `x-request-id`.

    ApiError                  raised by the routes; a malformed body too   -> its status
      (body too large)                                                     -> 413
      (admission Denied)      unknown model 404, key scope / region 403    -> its status
      (quota exceeded)        quota_exceeded, Retry-After: period end      -> 429
      (limiter Reject)        rate_limit_exceeded, Retry-After             -> 429
                              limiter_unavailable (fail closed)            -> 503
    ClientGone                the client hung up before the response       -> 499, no body
    ClientDisconnect (starlette)  ... or while sending its body            -> 499, no body
    AuthenticationError       missing / invalid / expired / revoked        -> 401
    PermissionDeniedError     valid credentials, not allowed               -> 403
      TenantSuspendedError                                                 -> 403
    InvalidRequestError       the request (or an admin field) is wrong     -> 400
      PromptTooLongError                                                   -> 400
      NotFoundError           no such tenant / key                         -> 404
    Overloaded (scheduling)
      QueueFull               the tier's queue is full, Retry-After        -> 429
      Shed                    shed under overload, Retry-After             -> 503
    EngineError               the engine failed                            -> 500
      EngineDeadError         the engine is restarting                     -> 503
    HTTPException (starlette) unknown path, wrong method                   -> its status
    RequestValidationError    a path / query parameter FastAPI refused     -> 400
    anything else             logged                                       -> 500
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from tenantserve.admission.limiter import Reject
from tenantserve.admission.policy import Denied
from tenantserve.admission.quotas import QuotaExceeded
from tenantserve.errors import (
    AuthenticationError,
    AuthError,
    EngineDeadError,
    EngineError,
    InvalidRequestError,
    NotFoundError,
    PromptTooLongError,
    TenantSuspendedError,
)
from tenantserve.gateway.schemas import ErrorDetail, ErrorResponse
from tenantserve.scheduling.queue_types import Overloaded, QueueFull

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"

Body = TypeVar("Body", bound=BaseModel)


class ApiError(Exception):
    """An error response in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = ErrorDetail(message=message, type=type_, code=code, param=param)
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return JSONResponse(
            ErrorResponse(error=self.detail).model_dump(mode="json"),
            status_code=self.status,
            headers=self.headers,
        )


class ClientGone(Exception):
    """The client closed the connection before the response was ready."""


def api_error_from_validation(e: ValidationError) -> ApiError:
    """A 400 naming the first problem with the request body (and how many more there are)."""
    errors = e.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON: {first['msg']}")
    loc = [str(p) for p in first["loc"]]
    path = ".".join(loc) or "body"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return ApiError(400, f"{path}: {first['msg']}{more}", param=loc[0] if loc else None)


async def parse_body(request: Request, schema: type[Body]) -> Body:
    """The JSON body validated against `schema`, whatever the Content-Type says; a 400
    naming the first problem otherwise."""
    return parse_json(await request.body(), schema)


def parse_json(raw: bytes, schema: type[Body]) -> Body:
    """`raw` validated against `schema`; a 400 naming the first problem otherwise."""
    try:
        return schema.model_validate_json(raw)
    except ValidationError as e:
        raise api_error_from_validation(e) from e


def retry_after(seconds: float) -> dict[str, str]:
    """The `Retry-After` header: whole seconds, rounded up, at least 1."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def api_error_from_auth(e: AuthError) -> ApiError:
    """401 for credentials that do not authenticate, 403 for ones that may not do this."""
    if isinstance(e, AuthenticationError):
        return ApiError(401, str(e), code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    code = "tenant_suspended" if isinstance(e, TenantSuspendedError) else "permission_denied"
    return ApiError(403, str(e), code=code)


def api_error_from_denied(denied: Denied) -> ApiError:
    """Admission's refusal, with its own status, code and parameter."""
    return ApiError(denied.status, denied.message, code=denied.code, param=denied.param)


def api_error_from_reject(reject: Reject) -> ApiError:
    """A rate-limit refusal as 429 (503 when the limiter's store is down and the tier fails
    closed), with Retry-After."""
    headers = retry_after(reject.retry_after_s)
    if reject.reason == "limiter_unavailable":
        message = "The rate limiter is unavailable; retry shortly."
        return ApiError(503, message, "server_error", code="limiter_unavailable", headers=headers)
    limit = reject.reason.replace("_", " ")
    message = f"Rate limit reached ({limit}); retry after {headers['Retry-After']} s."
    type_ = "tokens" if reject.reason == "tokens_per_minute" else "requests"
    return ApiError(429, message, type_, code="rate_limit_exceeded", headers=headers)


def api_error_from_quota(exceeded: QuotaExceeded) -> ApiError:
    """A hard quota's refusal as 429 quota_exceeded, Retry-After at the period's end."""
    headers = retry_after(exceeded.retry_after_s)
    return ApiError(
        429, exceeded.message, "insufficient_quota", code="quota_exceeded", headers=headers
    )


def api_error_from_overload(e: Overloaded) -> ApiError:
    """A full tier queue as 429, shedding as 503; both with Retry-After."""
    headers = retry_after(e.retry_after_s)
    if isinstance(e, QueueFull):
        return ApiError(429, f"Too many queued requests: {e}.", code="queue_full", headers=headers)
    return ApiError(
        503,
        "The server is overloaded; retry shortly.",
        "server_error",
        code="overloaded",
        headers=headers,
    )


def api_error_from_engine(e: InvalidRequestError | EngineError) -> ApiError:
    """The engine's (or a service's) refusal as a 400 (404 for an unknown resource), its
    failure as a 5xx (503 while it restarts)."""
    if isinstance(e, NotFoundError):
        return ApiError(404, str(e), code="not_found")
    if isinstance(e, PromptTooLongError):
        return ApiError(400, str(e), code="context_length_exceeded")
    if isinstance(e, InvalidRequestError):
        return ApiError(400, str(e))
    if isinstance(e, EngineDeadError):
        return ApiError(503, str(e), "server_error", code="engine_unavailable")
    return ApiError(500, str(e), "server_error", code="engine_error")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error `app` raises leave in OpenAI's shape."""

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def engine_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InvalidRequestError | EngineError)
        if isinstance(exc, EngineError):
            logger.warning("engine error on %s: %s", request.url.path, exc)
        return api_error_from_engine(exc).response()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        error = ApiError(exc.status_code, str(exc.detail), code=code)
        return error.response()

    async def invalid_parameter(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ())]
        param = loc[-1] if loc else None
        message = f"{'.'.join(loc) or 'request'}: {first.get('msg', 'invalid')}"
        return ApiError(400, message, param=param).response()

    async def auth_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AuthError)
        return api_error_from_auth(exc).response()

    async def overloaded(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Overloaded)
        return api_error_from_overload(exc).response()

    async def client_gone(request: Request, exc: Exception) -> Response:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

    async def unexpected(request: Request, exc: Exception) -> Response:
        # Runs outside the request-id middleware (in Starlette's outermost layer), so it
        # puts the header on itself.
        logger.exception("unhandled error on %s", request.url.path, exc_info=exc)
        response = ApiError(500, "internal server error", "server_error").response()
        request_id = request.scope.get("state", {}).get("request_id")
        if request_id:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(AuthError, auth_error)
    app.add_exception_handler(Overloaded, overloaded)
    app.add_exception_handler(InvalidRequestError, engine_error)
    app.add_exception_handler(EngineError, engine_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_parameter)
    app.add_exception_handler(ClientGone, client_gone)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, unexpected)
