"""OpenAI-shaped errors: every error leaves as `{"error": {"message", "type", "code", "param"}}`,
4xx for the client's mistakes, 5xx only for ours.

    ApiError                   raised by the routes; a malformed body too     -> its status
    ClientGone                 the client hung up before the response         -> 499, no body
    InvalidRequestError        the engine refused the request                 -> 400
      PromptTooLongError                                                      -> 400
    EngineError                the engine failed                              -> 500
      EngineDeadError          the engine is restarting                       -> 503
    HTTPException (starlette)  unknown path, wrong method                     -> its status
    anything else              logged                                         -> 500
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from tenantserve.errors import (
    EngineDeadError,
    EngineError,
    InvalidRequestError,
    PromptTooLongError,
)
from tenantserve.gateway.schemas import ErrorDetail, ErrorResponse

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error response in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = ErrorDetail(message=message, type=type_, code=code, param=param)

    def response(self) -> JSONResponse:
        return JSONResponse(
            ErrorResponse(error=self.detail).model_dump(mode="json"), status_code=self.status
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


def api_error_from_engine(e: InvalidRequestError | EngineError) -> ApiError:
    """The engine's refusal as a 400, its failure as a 5xx (503 while it restarts)."""
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

    async def client_gone(request: Request, exc: Exception) -> Response:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s", request.url.path, exc_info=exc)
        return ApiError(500, "internal server error", "server_error").response()

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(InvalidRequestError, engine_error)
    app.add_exception_handler(EngineError, engine_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(ClientGone, client_gone)
    app.add_exception_handler(Exception, unexpected)
