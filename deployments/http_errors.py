"""The ingress's HTTP edge: the body-size limit, and every error leaving as the OpenAI envelope.

`install(app)` adds the middleware and the exception handlers to the ingress's FastAPI app; it
must run before `@serve.ingress` takes the app. Each error still gets its one audit record
(`finish_error`), also when it comes before any route ran (body parser, size limit).
"""

# No `from __future__ import annotations`: FastAPI reads these handlers' annotations at run time.

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import AegisError, InvalidRequest, NotFound, Overloaded, PayloadTooLarge, find_aegis_error
from serve_app.pipeline import RequestContext

__all__ = ["BodySizeLimit", "call_handle", "finish_error", "install", "new_context"]

logger = logging.getLogger("ray.serve")

_MAX_BODY_BYTES_DEFAULT = 1_000_000
_UNAUDITED_PATHS = frozenset({"/healthz", "/readyz"})


class BodySizeLimit:
    """ASGI middleware: refuse bodies over `app.state.max_body_bytes` with 413, before parsing.

    Checks Content-Length up front and counts bytes as they arrive, so a chunked upload cannot
    get past the limit either.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = getattr(scope["app"].state, "max_body_bytes", None) if "app" in scope else None
        limit = limit or _MAX_BODY_BYTES_DEFAULT
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            error = _too_large(limit)
            await finish_error(Request(scope), error)
            await _send_error(send, error)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit)
            return message

        await self.app(scope, limited_receive, send)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")


async def _send_error(send: Send, exc: AegisError) -> None:
    response = _error_response(exc)
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def _error_response(exc: AegisError, extra_headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.envelope(), status_code=exc.status_code,
                        headers={**(extra_headers or {}), **exc.headers})


def _ctx_headers(request: Request) -> dict[str, str]:
    ctx = getattr(request.state, "ctx", None)
    return dict(ctx.response_headers) if ctx is not None else {}


def _request_id() -> str:
    try:
        from ray.serve.context import _get_serve_request_context

        rid = _get_serve_request_context().request_id
    except Exception:  # outside Serve (unit tests of the app) there is no request context
        rid = ""
    return rid or str(uuid.uuid4())


def new_context(request: Request, route: str, body: Any = None) -> RequestContext:
    """The request's context, kept on `request.state` for the error handlers."""
    ctx = RequestContext(request_id=_request_id(), route=route, headers=request.headers,
                         client_host=request.client.host if request.client else None,
                         model=getattr(body, "model", None), body=body)
    request.state.ctx = ctx
    return ctx


async def finish_error(request: Request, exc: AegisError) -> None:
    """Run the pipeline's finishers (the audit record) for a request that ends in an error.

    Errors can come from a check, a model, the body parser (before the route runs, so there is
    no context yet) or the size middleware; each still gets its one audit record.
    """
    pipeline = getattr(request.app.state, "pipeline", None)
    if pipeline is None or request.url.path in _UNAUDITED_PATHS:
        return
    ctx = getattr(request.state, "ctx", None) or new_context(request, request.url.path)
    ctx.annotations.setdefault("reason", exc.code or exc.error_type)
    try:
        await pipeline.finish(ctx, exc.status_code)
    except AegisError as audit_error:
        # The request is refused anyway; a failing audit sink must not change that answer.
        logger.error("audit of refused request %s failed: %s", ctx.request_id, audit_error.message)


async def _aegis_error(request: Request, exc: AegisError) -> JSONResponse:
    await finish_error(request, exc)
    return _error_response(exc, _ctx_headers(request))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI parses the body before the route (and its checks) runs: authenticate here so an
    # anonymous caller learns nothing about the API beyond "401".
    guard = getattr(request.app.state, "guard", None)
    if guard is not None and getattr(request.state, "ctx", None) is None:
        ctx = new_context(request, request.url.path)
        try:
            await guard.authenticate(ctx)
        except AegisError as auth_error:
            await finish_error(request, auth_error)
            return _error_response(auth_error)
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        err = InvalidRequest("request body is not valid JSON", code="invalid_json")
    else:
        location = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(location) or None
        message = first.get("msg", "invalid request")
        if first.get("type") == "missing":
            message = f"missing required field: {param}"
        elif param:
            message = f"{param}: {message}"
        err = InvalidRequest(message, param=param, code="invalid_value")
    await finish_error(request, err)
    return _error_response(err, _ctx_headers(request))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    err: AegisError = (NotFound if exc.status_code == 404 else InvalidRequest)(str(exc.detail))
    err.status_code = exc.status_code  # e.g. 405 Method Not Allowed keeps its own status
    await finish_error(request, err)
    return _error_response(err, {**_ctx_headers(request), **(exc.headers or {})})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    wrapped = find_aegis_error(exc)
    if wrapped is not None:
        await finish_error(request, wrapped)
        return _error_response(wrapped, _ctx_headers(request))
    ctx = getattr(request.state, "ctx", None)
    rid = ctx.request_id if ctx is not None else "unknown"
    logger.exception("unhandled error in request %s", rid)
    error = AegisError(f"internal error (request id {rid})")
    await finish_error(request, error)
    return _error_response(error, _ctx_headers(request))


def install(app: FastAPI) -> None:
    """Add the body-size limit and the envelope-producing exception handlers to `app`."""
    app.add_middleware(BodySizeLimit)
    app.add_exception_handler(AegisError, _aegis_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


async def call_handle(awaitable: Any) -> Any:
    """Await a handle call, turning Ray's wrappers and transport errors into Aegis errors."""
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    try:
        return await awaitable
    except BackPressureError:
        raise Overloaded("The model is at capacity; retry shortly.", retry_after_s=1.0) from None
    except DeploymentUnavailableError:
        raise Overloaded("The model is not available right now.", retry_after_s=5.0) from None
    except Exception as exc:
        original = find_aegis_error(exc)
        if original is None:
            raise
        raise original from None
