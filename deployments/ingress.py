"""The HTTP ingress: OpenAI-compatible routes under @serve.ingress, thin by design.

Each route validates its body into a `protocol` model, runs the request pipeline (checks),
asks the router which deployment serves the model, calls it, and shapes the answer with
`serving` (passing text through the pipeline's filters). Every error leaves as the OpenAI
envelope via the exception handlers at the bottom of this module.
"""

# No `from __future__ import annotations` here: Serve re-wraps route methods and FastAPI then
# cannot resolve string annotations, turning bodies into query parameters.

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.store_actor import open_store
from serve_app.security_guard import SecurityGuard, bootstrap_admin_key, build_guard, strings_in
from security.settings import LIVE_SECURITY_FIELDS, SecuritySettings, live_security_fields
from serve_app.config import AppConfig, ingress_live_policy
from common.errors import (
    AegisError, InvalidRequest, NotFound, Overloaded, PayloadTooLarge, find_aegis_error)
from serve_app.live import LiveUpdates
from serve_app.metrics import security_event
from serve_app.pipeline import RequestContext, RequestLimits, RequestPipeline
from serve_app.protocol import (
    ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ModelCard, ModelList)
from serve_app.serving import collect, embeddings_response, stream_sse
from serve_app.function_calling import ToolPlan, plan_tool_calls, template_messages
from serve_app.agent_tools.api import (
    DocumentsAddRequest, ToolInvokeRequest, WorkflowRunRequest, arguments_digest, scope_arguments,
    tenant_namespace, unscope_result)
from serve_app.workflows import WorkflowRunner

logger = logging.getLogger("ray.serve")


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
            await _finish_error(Request(scope), error)
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


_MAX_BODY_BYTES_DEFAULT = 1_000_000


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")


async def _send_error(send: Send, exc: AegisError) -> None:
    response = _error_response(exc)
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


app = FastAPI(
    title="Aegis",
    description="OpenAI-compatible inference on Ray Serve, secure by default.",
    version="0.1.0",
)
app.add_middleware(BodySizeLimit)


# -- errors: one envelope for everything. Registered before @serve.ingress below, which takes
# the app as it is at decoration time.


def _error_response(exc: AegisError, extra_headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.envelope(), status_code=exc.status_code,
                        headers={**(extra_headers or {}), **exc.headers})


def _ctx_headers(request: Request) -> dict[str, str]:
    ctx = getattr(request.state, "ctx", None)
    return dict(ctx.response_headers) if ctx is not None else {}


def _request_id(request: Request) -> str:
    try:
        from ray.serve.context import _get_serve_request_context

        rid = _get_serve_request_context().request_id
    except Exception:  # outside Serve (unit tests of the app) there is no request context
        rid = ""
    return rid or str(uuid.uuid4())


def _new_context(request: Request, route: str, body: Any = None) -> RequestContext:
    ctx = RequestContext(request_id=_request_id(request), route=route, headers=request.headers,
                         client_host=request.client.host if request.client else None,
                         model=getattr(body, "model", None), body=body)
    request.state.ctx = ctx
    return ctx


_UNAUDITED_PATHS = frozenset({"/healthz", "/readyz"})


async def _finish_error(request: Request, exc: AegisError) -> None:
    """Run the pipeline's finishers (the audit record) for a request that ends in an error.

    Errors can come from a check, a model, the body parser (before the route runs, so there is
    no context yet) or the size middleware; each still gets its one audit record.
    """
    pipeline = getattr(request.app.state, "pipeline", None)
    if pipeline is None or request.url.path in _UNAUDITED_PATHS:
        return
    ctx = getattr(request.state, "ctx", None) or _new_context(request, request.url.path)
    ctx.annotations.setdefault("reason", exc.code or exc.error_type)
    try:
        await pipeline.finish(ctx, exc.status_code)
    except AegisError as audit_error:
        # The request is refused anyway; a failing audit sink must not change that answer.
        logger.error("audit of refused request %s failed: %s", ctx.request_id, audit_error.message)


@app.exception_handler(AegisError)
async def _aegis_error(request: Request, exc: AegisError) -> JSONResponse:
    await _finish_error(request, exc)
    return _error_response(exc, _ctx_headers(request))


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI parses the body before the route (and its checks) runs: authenticate here so an
    # anonymous caller learns nothing about the API beyond "401".
    guard = getattr(request.app.state, "guard", None)
    if guard is not None and getattr(request.state, "ctx", None) is None:
        ctx = _new_context(request, request.url.path)
        try:
            await guard.authenticate(ctx)
        except AegisError as auth_error:
            await _finish_error(request, auth_error)
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
    await _finish_error(request, err)
    return _error_response(err, _ctx_headers(request))


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    err: AegisError = (NotFound if exc.status_code == 404 else InvalidRequest)(str(exc.detail))
    err.status_code = exc.status_code  # e.g. 405 Method Not Allowed keeps its own status
    await _finish_error(request, err)
    return _error_response(err, {**_ctx_headers(request), **(exc.headers or {})})


@app.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    wrapped = find_aegis_error(exc)
    if wrapped is not None:
        await _finish_error(request, wrapped)
        return _error_response(wrapped, _ctx_headers(request))
    ctx = getattr(request.state, "ctx", None)
    rid = ctx.request_id if ctx is not None else "unknown"
    logger.exception("unhandled error in request %s", rid)
    error = AegisError(f"internal error (request id {rid})")
    await _finish_error(request, error)
    return _error_response(error, _ctx_headers(request))


def _defaults(parameters: dict[str, Any]) -> dict[str, Any]:
    """Default argument values from a tool's JSON schema."""
    return {name: prop["default"] for name, prop in parameters.get("properties", {}).items()
            if "default" in prop}


async def _prepend(first: dict[str, Any], rest: Any) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for event in rest:
        yield event


async def _call(awaitable: Any) -> Any:
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


# The class comes last: @serve.ingress serializes the routes with the module's globals as they
# are at decoration time, so every helper they call must already exist.
@serve.deployment(name="Ingress")
@serve.ingress(app)
class Ingress:
    """Front door of the application. Collaborators arrive through the constructor."""

    async def __init__(self, router: DeploymentHandle, models: dict[str, DeploymentHandle],
                       app_config: dict[str, Any], pipeline: RequestPipeline | None = None,
                       tool_runner: DeploymentHandle | None = None) -> None:
        self._cfg = AppConfig.model_validate(app_config)
        self._router = router
        self._models = models
        self._tool_runner = tool_runner
        self._tools_cache: dict[str, dict[str, Any]] | None = None
        self._workflows = self._cfg.load_workflows()
        settings = self._cfg.security_settings()
        # Loads the injection classifier: off the event loop so the replica stays responsive.
        self._guard: SecurityGuard = await asyncio.to_thread(build_guard, settings, open_store(settings))
        self._guard.layer.counters.add_listener(security_event)
        self._guard.layer.policy.set_model_aliases(
            {alias: m.name for m in self._cfg.models for alias in m.aliases})
        self._pipeline = pipeline or RequestPipeline(
            checks=[RequestLimits(self._cfg.limits), self._guard],
            filters=[self._guard], finishers=[self._guard])
        self._set_body_limit(settings)
        app.state.pipeline = self._pipeline
        app.state.guard = self._guard
        if settings.auth_disabled:
            logger.warning("\n" + "!" * 78 + "\n!! AEGIS DEV MODE: AUTHENTICATION IS OFF. Every "
                           "request is served as an admin.\n!! Never expose this server.\n"
                           + "!" * 78)
        await bootstrap_admin_key(self._guard)
        self._live = LiveUpdates("Ingress security policy", lambda: self._guard.layer.counters.inc("policy_rejected"))

    async def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Apply live security policy from the Serve config's `deployments: [{name: Ingress,
        user_config: {security: {...}}}]`, merged over `args.security`
        (`security.settings.LIVE_SECURITY_FIELDS`: rate limits, input limits, redaction, injection
        actions and templates). Serve calls this after `__init__` and whenever only that
        `user_config` changed, so the replica keeps serving: no restart, no model reload. A bad
        policy is refused on a running replica and counted as `policy_rejected` (`LiveUpdates`).

        Raises:
            ConfigError: on the first call only: a key other than `security`, a field that is not
                live, or an invalid value; `python -m serve_app check-config` finds these first.
        """
        async def update() -> list[str]:
            settings = self._cfg.security_settings(overlay=ingress_live_policy(user_config))
            changed = [s for s in LIVE_SECURITY_FIELDS if getattr(settings, s) != getattr(self._guard.settings, s)]
            if changed:
                # A policy that turns the classifier on for the first time loads it: off the event loop.
                await asyncio.to_thread(self._guard.retune, settings)
                self._set_body_limit(settings)
            return changed

        changed = await self._live.apply_async(update)
        if changed:
            logger.info("security policy reconfigured without a restart: %s (policy_version %s)",
                        ", ".join(changed), self._guard.layer.policy_version)

    def _set_body_limit(self, settings: SecuritySettings) -> None:
        # BodySizeLimit reads it per request: the tighter of the app's and the security layer's.
        app.state.max_body_bytes = min(self._cfg.limits.max_body_bytes, settings.input_limits.max_body_bytes)

    async def check_health(self) -> None:
        # The router must answer; a wedged router would make every request hang.
        await asyncio.wait_for(self._router.list_models.remote(), timeout=10)

    # -- routes ----------------------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        """The process is alive and serving HTTP."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Every configured model is loaded and answering."""
        states = await self._router.readiness.remote(self._cfg.limits.ready_timeout_s)
        ready = all(state == "ready" for state in states.values())
        return JSONResponse({"status": "ready" if ready else "not_ready", "models": states},
                            status_code=200 if ready else 503)

    @app.get("/admin/security/policy")
    async def security_policy(self, request: Request) -> Any:
        """The live security policy this replica enforces (admin): what `serve status` cannot say
        after a refused update. Each replica answers for itself."""
        ctx = self._context(request, "/admin/security/policy")
        await self._pipeline.before(ctx)
        layer = self._guard.layer
        body = {"replica": serve.get_replica_context().replica_id.unique_id,
                "policy_version": layer.policy_version,
                "live": layer.settings.model_dump(mode="json", include=live_security_fields()),
                "last_refused_update": self._live.last_refused}
        await self._pipeline.finish(ctx, 200)
        return JSONResponse(body, headers=ctx.response_headers)

    @app.get("/v1/models", response_model=ModelList)
    async def list_models(self, request: Request) -> Any:
        ctx = self._context(request, "/v1/models")
        await self._pipeline.before(ctx)
        models = await self._router.list_models.remote()
        ids = self._guard.visible_models(ctx, [m["id"] for m in models])
        await self._pipeline.finish(ctx, 200)
        return JSONResponse(ModelList(data=[ModelCard(id=i) for i in ids]).model_dump(),
                            headers=ctx.response_headers)

    @app.post("/v1/chat/completions")
    async def chat_completions(self, body: ChatCompletionRequest, request: Request) -> Any:
        tools = plan_tool_calls(body.tools, body.tool_choice, body.parallel_tool_calls)

        def payload() -> dict[str, Any]:
            fields = {"kind": "chat", "n": body.n, **body.sampling(),
                      "messages": template_messages(body.messages)}
            if tools is not None:
                fields.update(tools.payload(), stop=fields["stop"] + tools.stop())
            return fields

        return await self._generate(request, "/v1/chat/completions", body, payload, n=body.n,
                                    tools=tools)

    @app.post("/v1/completions")
    async def completions(self, body: CompletionRequest, request: Request) -> Any:
        if body.echo:
            raise InvalidRequest("echo is not supported", param="echo")

        def payload() -> dict[str, Any]:
            return {"kind": "completion", "n": body.n, **body.sampling(), "prompts": body.prompts()}

        return await self._generate(request, "/v1/completions", body, payload,
                                    n=body.n * len(body.prompts()))

    @app.post("/v1/embeddings")
    async def embeddings(self, body: EmbeddingRequest, request: Request) -> Any:
        ctx = self._context(request, "/v1/embeddings", body)
        await self._pipeline.before(ctx)
        if body.dimensions is not None:
            raise InvalidRequest("dimensions is not supported by this model", param="dimensions")
        deployment = await _call(self._router.resolve.remote(body.model, "embed"))
        result = await _call(self._models[deployment].embed.remote(body.inputs()))
        ctx.prompt_tokens = result["prompt_tokens"]
        response = embeddings_response(result["vectors"], model=body.model,
                                       prompt_tokens=result["prompt_tokens"],
                                       encoding_format=body.encoding_format)
        await self._pipeline.finish(ctx, 200)
        return JSONResponse(response, headers=ctx.response_headers)

    # -- tools, documents, workflows --------------------------------------------------------------

    @app.get("/v1/tools")
    async def list_tools(self, request: Request) -> Any:
        """The tools the caller's role may use, as OpenAI `tools[]` entries."""
        ctx = self._context(request, "/v1/tools")
        await self._pipeline.before(ctx)
        tools = await self._tool_infos()
        names = self._guard.visible_tools(ctx, list(tools))
        data = [{"type": "function", "function": {"name": n, "description": tools[n]["description"],
                                                  "parameters": tools[n]["parameters"]}}
                for n in names]
        await self._pipeline.finish(ctx, 200)
        return JSONResponse({"object": "list", "data": data}, headers=ctx.response_headers)

    @app.post("/v1/tools/{name}/invoke")
    async def invoke_tool(self, name: str, body: ToolInvokeRequest, request: Request) -> Any:
        ctx = self._context(request, "/v1/tools/{name}/invoke", body)
        ctx.annotations.update(tool=name, arguments_sha256=arguments_digest(body.arguments))
        await self._pipeline.before(ctx)
        self._guard.authorize_tool(ctx, name)
        info = await self._tool_info(name)
        await self._guard.scan_model_inputs(ctx, [
            v for a in info["model_input_arguments"] if isinstance(v := body.arguments.get(a), str)])
        result = await self._run_tool(ctx, info, body.arguments)
        guardrails = await self._inspect_tool_output(ctx, info, result)
        response = {"name": name, "result": self._guard.redact_value(ctx, result)}
        if guardrails:
            response["guardrails"] = guardrails
        await self._pipeline.finish(ctx, 200)
        return JSONResponse(response, headers=ctx.response_headers)

    @app.get("/v1/tools/{name}/collections/{collection}")
    async def get_collection(self, name: str, collection: str, request: Request) -> Any:
        ctx = self._context(request, "/v1/tools/{name}/collections/{collection}")
        ctx.annotations["tool"] = name
        await self._pipeline.before(ctx)
        count = await self._documents(ctx, name, "count", collection, {})
        await self._pipeline.finish(ctx, 200)
        return JSONResponse({"collection": collection, "count": count}, headers=ctx.response_headers)

    @app.post("/v1/tools/{name}/collections/{collection}/documents")
    async def add_documents(self, name: str, collection: str, body: DocumentsAddRequest,
                            request: Request) -> Any:
        ctx = self._context(request, "/v1/tools/{name}/collections/{collection}/documents", body)
        ctx.annotations.update(tool=name, arguments_sha256=arguments_digest(body.documents))
        await self._pipeline.before(ctx)
        result = await self._documents(ctx, name, "add_documents", collection,
                                       {"documents": body.documents})
        await self._pipeline.finish(ctx, 200)
        return JSONResponse({**result, "collection": collection}, headers=ctx.response_headers)

    @app.delete("/v1/tools/{name}/collections/{collection}/documents/{document_id}")
    async def delete_document(self, name: str, collection: str, document_id: str,
                              request: Request) -> Any:
        ctx = self._context(request, "/v1/tools/{name}/collections/{collection}/documents/{document_id}")
        ctx.annotations["tool"] = name
        await self._pipeline.before(ctx)
        result = await self._documents(ctx, name, "delete_documents", collection,
                                       {"ids": [document_id]})
        if not result.get("deleted"):
            raise NotFound(f"No document `{document_id}` in collection `{collection}`.",
                           param="document_id", code="document_not_found")
        await self._pipeline.finish(ctx, 200)
        return JSONResponse({**result, "collection": collection, "id": document_id},
                            headers=ctx.response_headers)

    @app.get("/v1/workflows")
    async def list_workflows(self, request: Request) -> Any:
        """The workflows whose every tool the caller may use."""
        ctx = self._context(request, "/v1/workflows")
        await self._pipeline.before(ctx)
        data = [spec.describe() for spec in self._workflows.values()
                if all(self._guard.layer.policy.may_use_tool(ctx.identity, t) for t in spec.uses_tools)]
        await self._pipeline.finish(ctx, 200)
        return JSONResponse({"object": "list", "data": data}, headers=ctx.response_headers)

    @app.post("/v1/workflows/{name}/run")
    async def run_workflow(self, name: str, body: WorkflowRunRequest, request: Request) -> Any:
        ctx = self._context(request, "/v1/workflows/{name}/run", body)
        ctx.annotations.update(workflow=name, arguments_sha256=arguments_digest(body.inputs))
        await self._pipeline.before(ctx)
        spec = self._workflows.get(name)
        if spec is None:
            raise NotFound(f"The workflow `{name}` does not exist.", param="name",
                           code="workflow_not_found")
        # A workflow grants nothing: the caller needs every tool and model it uses.
        for tool in spec.uses_tools:
            self._guard.authorize_tool(ctx, tool)
        for model in spec.uses_models:
            self._guard.layer.policy.authorize(ctx.identity, "/v1/chat/completions", model)
        tools = {tool: await self._tool_info(tool) for tool in spec.uses_tools}
        if spec.uses_models or any(info["model_input_arguments"] for info in tools.values()):
            # The caller's inputs end up in a model's prompt: scanned like a chat message.
            await self._guard.scan_model_inputs(ctx, strings_in(body.inputs), param="inputs")

        async def call_tool(tool: str, arguments: dict[str, Any]) -> Any:
            return await self._run_tool(ctx, tools[tool], arguments)

        async def call_model(model: str, chat: dict[str, Any]) -> dict[str, Any]:
            answer = await _call(self._router.chat.remote(chat))
            usage = answer.get("usage") or {}
            ctx.prompt_tokens += int(usage.get("prompt_tokens", 0))
            ctx.completion_tokens += int(usage.get("completion_tokens", 0))
            return answer

        async def inspect(step: str, tool: str, result: Any) -> Any:
            guardrails = await self._inspect_tool_output(ctx, tools[tool], result)
            if guardrails.get("flagged"):
                ctx.annotations.setdefault("flagged_steps", []).append(step)
            return result

        runner = WorkflowRunner(call_tool, call_model, inspect)
        result = await runner.run(spec, body.inputs)
        if ctx.annotations.get("flagged_steps"):
            result["guardrails"] = {"flagged_steps": ctx.annotations["flagged_steps"]}
        response = self._guard.redact_value(ctx, result)
        await self._pipeline.finish(ctx, 200)
        return JSONResponse(response, headers=ctx.response_headers)

    async def _tool_infos(self) -> dict[str, dict[str, Any]]:
        if self._tools_cache is None:
            infos = await _call(self._tool_runner.list_tools.remote()) if self._tool_runner else []
            self._tools_cache = {info["name"]: info for info in infos}
        return self._tools_cache

    async def _tool_info(self, name: str) -> dict[str, Any]:
        """What the ToolRunner says of tool `name` (`ToolRunner.list_tools`), or 404."""
        info = (await self._tool_infos()).get(name)
        if info is None:
            raise NotFound(f"The tool `{name}` does not exist.", param="name", code="tool_not_found")
        return info

    async def _inspect_tool_output(self, ctx: RequestContext, info: dict[str, Any],
                                   result: Any) -> dict[str, Any]:
        return await self._guard.inspect_tool_output(ctx, info["name"], result, info["untrusted_output"])

    async def _run_tool(self, ctx: RequestContext, info: dict[str, Any], arguments: dict[str, Any]) -> Any:
        """Invoke a tool, its tenant-scoped arguments (document collections) in the caller's namespace."""
        scoped, defaults = info["tenant_scoped_arguments"], _defaults(info["parameters"])
        tenant = ctx.identity.tenant if ctx.identity else None
        result = await _call(self._tool_runner.invoke.remote(
            info["name"], scope_arguments(arguments, scoped, tenant, defaults)))
        return unscope_result(result, scoped, arguments, defaults)

    async def _documents(self, ctx: RequestContext, name: str, method: str, collection: str,
                         kwargs: dict[str, Any]) -> Any:
        info = (await self._tool_infos()).get(name)
        if info is None or method not in info["admin_methods"]:
            raise NotFound(f"The tool `{name}` has no document collections.", param="name",
                           code="tool_not_found")
        self._guard.authorize_tool(ctx, name)
        stored = tenant_namespace(ctx.identity.tenant if ctx.identity else None, collection,
                                  "collection")
        return await _call(self._tool_runner.call_method.remote(
            name, method, {**kwargs, "collection": stored}))

    # -- generation --------------------------------------------------------------------------------

    async def _generate(self, request: Request, route: str, body: Any,
                        make_payload: Any, *, n: int, tools: ToolPlan | None = None) -> Any:
        ctx = self._context(request, route, body)
        await self._pipeline.before(ctx)
        # Built after the checks: input redaction may have rewritten the body.
        payload = make_payload()
        deployment = await _call(self._router.resolve.remote(body.model, "generate"))
        handle = self._models[deployment].options(stream=True)
        events = handle.stream.remote(payload)
        # Pull the first event before answering: errors in the request (prompt too long,
        # overload) must become a proper status, not a broken 200 stream.
        first = await _call(events.__anext__())
        stream = _prepend(first, events)
        kind = payload["kind"]

        def open_filters() -> Any:
            return self._pipeline.open_filters(ctx)

        if not body.stream:
            result = await collect(stream, kind=kind, model=body.model, choices=n, ctx=ctx,
                                   open_filters=open_filters, tools=tools)
            await self._pipeline.finish(ctx, 200)
            return JSONResponse(result, headers=ctx.response_headers)

        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def sse() -> AsyncIterator[str]:
            try:
                async for line in stream_sse(stream, kind=kind, model=body.model, choices=n,
                                             include_usage=include_usage, ctx=ctx,
                                             open_filters=open_filters, tools=tools):
                    yield line
            finally:
                try:
                    await self._pipeline.finish(ctx, 200)
                except AegisError as exc:  # the 200 is already sent; record it in the logs
                    logger.error("finishing stream %s failed: %s", ctx.request_id, exc.message)

        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={**ctx.response_headers, "Cache-Control": "no-cache"})

    def _context(self, request: Request, route: str, body: Any = None) -> RequestContext:
        return _new_context(request, route, body)
