"""The HTTP ingress: OpenAI-compatible routes under @serve.ingress, thin by design.

Every route runs inside `_exchange` (context, pipeline checks, then the finishers and the
response headers), validates its body into a `protocol` model, resolves `model` to its
deployment itself (`ModelRegistry`: no routing hop) and sends the replica one typed request
(`replica_api`). `serving` shapes the answer, passing text through the pipeline's filters.
Errors leave as the OpenAI envelope through the handlers in `http_errors`.
"""

# No `from __future__ import annotations` here: Serve re-wraps route methods and FastAPI then
# cannot resolve string annotations, turning bodies into query parameters.

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from common.errors import AegisError, InvalidRequest, NotFound
from deployments import http_errors
from deployments.http_errors import call_handle, new_context
from deployments.store_actor import open_store
from security.settings import LIVE_SECURITY_FIELDS, SecuritySettings, live_security_fields
from serve_app.agent_tools.api import (
    DocumentsAddRequest, ToolInvokeRequest, WorkflowRunRequest, arguments_digest, scope_arguments,
    tenant_namespace, unscope_result)
from serve_app.config import AppConfig, ingress_live_policy
from serve_app.function_calling import ToolPlan, plan_tool_calls
from serve_app.live import LiveUpdates
from serve_app.metrics import security_event
from serve_app.model_registry import ModelRegistry
from serve_app.pipeline import RequestContext, RequestLimits, RequestPipeline
from serve_app.protocol import (
    ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ModelCard, ModelList)
from serve_app.replica_api import EmbedRequest, GenerateRequest
from serve_app.security_guard import SecurityGuard, bootstrap_admin_key, build_guard, strings_in
from serve_app.serving import collect, embeddings_response, stream_sse
from serve_app.workflows import WorkflowRunner

logger = logging.getLogger("ray.serve")

app = FastAPI(
    title="Aegis",
    description="OpenAI-compatible inference on Ray Serve, secure by default.",
    version="0.1.0",
)
# Before @serve.ingress below, which takes the app as it is at decoration time.
http_errors.install(app)


class _Exchange:
    """One request in a route: its context, and how its answer leaves (`reply` or `stream`)."""

    def __init__(self, ctx: RequestContext, pipeline: RequestPipeline) -> None:
        self.ctx = ctx
        self._pipeline = pipeline
        self.streaming = False

    def reply(self, body: Any) -> JSONResponse:
        return JSONResponse(body, headers=self.ctx.response_headers)

    def stream(self, lines: AsyncIterator[str]) -> StreamingResponse:
        """An SSE response; the request finishes when its last line is sent (or the client leaves)."""
        self.streaming = True
        ctx, pipeline = self.ctx, self._pipeline

        async def sse() -> AsyncIterator[str]:
            try:
                async for line in lines:
                    yield line
            finally:
                try:
                    await pipeline.finish(ctx, 200)
                except AegisError as exc:  # the 200 is already sent; record it in the logs
                    logger.error("finishing stream %s failed: %s", ctx.request_id, exc.message)

        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={**ctx.response_headers, "Cache-Control": "no-cache"})


def _defaults(parameters: dict[str, Any]) -> dict[str, Any]:
    """Default argument values from a tool's JSON schema."""
    return {name: prop["default"] for name, prop in parameters.get("properties", {}).items()
            if "default" in prop}


async def _prepend(first: Any, rest: Any) -> AsyncIterator[Any]:
    yield first
    async for event in rest:
        yield event


# The class comes last: @serve.ingress serializes the routes with the module's globals as they
# are at decoration time, so every helper they call must already exist.
@serve.deployment(name="Ingress")
@serve.ingress(app)
class Ingress:
    """Front door of the application. Collaborators arrive through the constructor.

    Args:
        router: the Router handle, which workflows use to reach models by name.
        models: `{deployment name: DeploymentHandle}`, one per model deployment.
        app_config: the validated `AppConfig`, dumped.
    """

    async def __init__(self, router: DeploymentHandle, models: dict[str, DeploymentHandle],
                       app_config: dict[str, Any], pipeline: RequestPipeline | None = None,
                       tool_runner: DeploymentHandle | None = None) -> None:
        self._cfg = AppConfig.model_validate(app_config)
        self._router = router
        self._registry = ModelRegistry.from_models(self._cfg.models)
        self._models = models
        # One streaming handle per model, made once (as Ray Serve LLM's ingress caches them).
        self._streams = {name: handle.options(stream=True) for name, handle in models.items()}
        self._tool_runner = tool_runner
        self._tools_cache: dict[str, dict[str, Any]] | None = None
        self._workflows = self._cfg.load_workflows()
        settings = self._cfg.security_settings()
        # Loads the injection classifier: off the event loop so the replica stays responsive.
        self._guard: SecurityGuard = await asyncio.to_thread(build_guard, settings, open_store(settings))
        self._guard.layer.counters.add_listener(security_event)
        self._guard.layer.policy.set_model_aliases(self._registry.aliases())
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
        # Only what a restart of this replica would fix. A model or the shared store being down
        # is reported per request (503) and by /readyz; restarting the ingress fixes neither.
        missing = self._registry.missing_deployments(self._models)
        if missing:
            raise RuntimeError(f"ingress has no handle for {sorted(missing)}")

    @asynccontextmanager
    async def _exchange(self, request: Request, route: str, body: Any = None,
                        **annotations: Any) -> AsyncIterator[_Exchange]:
        """Every route's frame: context, then the checks; on success, the finishers (audit).

        An error inside skips the finishers here: the exception handlers run them with the
        error's status.
        """
        ctx = new_context(request, route, body)
        ctx.annotations.update(annotations)
        await self._pipeline.before(ctx)
        exchange = _Exchange(ctx, self._pipeline)
        yield exchange
        if not exchange.streaming:
            await self._pipeline.finish(ctx, 200)

    # -- routes ----------------------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        """The process is alive and serving HTTP."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Every configured model is loaded and answering."""
        timeout_s = self._cfg.limits.ready_timeout_s

        async def probe(name: str, deployment: str) -> tuple[str, str]:
            try:
                await asyncio.wait_for(self._models[deployment].info.remote(), timeout=timeout_s)
                return name, "ready"
            except asyncio.TimeoutError:
                return name, f"no answer within {timeout_s:.0f}s"
            except Exception as exc:  # any failure means not ready; the reason is for operators
                return name, f"{type(exc).__name__}"

        states = dict(await asyncio.gather(*(probe(r.name, r.deployment) for r in self._registry.routes)))
        ready = all(state == "ready" for state in states.values())
        return JSONResponse({"status": "ready" if ready else "not_ready", "models": states},
                            status_code=200 if ready else 503)

    @app.get("/admin/security/policy")
    async def security_policy(self, request: Request) -> Any:
        """The live security policy this replica enforces (admin): what `serve status` cannot say
        after a refused update. Each replica answers for itself."""
        async with self._exchange(request, "/admin/security/policy") as ex:
            layer = self._guard.layer
            return ex.reply({"replica": serve.get_replica_context().replica_id.unique_id,
                             "policy_version": layer.policy_version,
                             "live": layer.settings.model_dump(mode="json", include=live_security_fields()),
                             "last_refused_update": self._live.last_refused})

    @app.get("/v1/models", response_model=ModelList)
    async def list_models(self, request: Request) -> Any:
        async with self._exchange(request, "/v1/models") as ex:
            ids = self._guard.visible_models(ex.ctx, [m["id"] for m in self._registry.listed()])
            return ex.reply(ModelList(data=[ModelCard(id=i) for i in ids]).model_dump())

    @app.post("/v1/chat/completions")
    async def chat_completions(self, body: ChatCompletionRequest, request: Request) -> Any:
        tools = plan_tool_calls(body.tools, body.tool_choice, body.parallel_tool_calls)
        async with self._exchange(request, "/v1/chat/completions", body) as ex:
            # Built after the checks: input redaction may have rewritten the body.
            return await self._generate(ex, body, GenerateRequest.chat(body, tools), tools)

    @app.post("/v1/completions")
    async def completions(self, body: CompletionRequest, request: Request) -> Any:
        if body.echo:
            raise InvalidRequest("echo is not supported", param="echo")
        async with self._exchange(request, "/v1/completions", body) as ex:
            return await self._generate(ex, body, GenerateRequest.completion(body))

    @app.post("/v1/embeddings")
    async def embeddings(self, body: EmbeddingRequest, request: Request) -> Any:
        async with self._exchange(request, "/v1/embeddings", body) as ex:
            if body.dimensions is not None:
                raise InvalidRequest("dimensions is not supported by this model", param="dimensions")
            route = self._registry.resolve(body.model, "embed")
            result = await call_handle(self._models[route.deployment].embed.remote(
                EmbedRequest(tuple(body.inputs()))))
            ex.ctx.prompt_tokens = result.prompt_tokens
            return ex.reply(embeddings_response(result.vectors, model=body.model,
                                                prompt_tokens=result.prompt_tokens,
                                                encoding_format=body.encoding_format))

    # -- tools, documents, workflows --------------------------------------------------------------

    @app.get("/v1/tools")
    async def list_tools(self, request: Request) -> Any:
        """The tools the caller's role may use, as OpenAI `tools[]` entries."""
        async with self._exchange(request, "/v1/tools") as ex:
            tools = await self._tool_infos()
            names = self._guard.visible_tools(ex.ctx, list(tools))
            data = [{"type": "function", "function": {"name": n, "description": tools[n]["description"],
                                                      "parameters": tools[n]["parameters"]}}
                    for n in names]
            return ex.reply({"object": "list", "data": data})

    @app.post("/v1/tools/{name}/invoke")
    async def invoke_tool(self, name: str, body: ToolInvokeRequest, request: Request) -> Any:
        async with self._exchange(request, "/v1/tools/{name}/invoke", body, tool=name,
                                  arguments_sha256=arguments_digest(body.arguments)) as ex:
            self._guard.authorize_tool(ex.ctx, name)
            info = await self._tool_info(name)
            await self._guard.scan_model_inputs(ex.ctx, [
                v for a in info["model_input_arguments"] if isinstance(v := body.arguments.get(a), str)])
            result = await self._run_tool(ex.ctx, info, body.arguments)
            guardrails = await self._inspect_tool_output(ex.ctx, info, result)
            response = {"name": name, "result": self._guard.redact_value(ex.ctx, result)}
            if guardrails:
                response["guardrails"] = guardrails
            return ex.reply(response)

    @app.get("/v1/tools/{name}/collections/{collection}")
    async def get_collection(self, name: str, collection: str, request: Request) -> Any:
        async with self._exchange(request, "/v1/tools/{name}/collections/{collection}", tool=name) as ex:
            count = await self._documents(ex.ctx, name, "count", collection, {})
            return ex.reply({"collection": collection, "count": count})

    @app.post("/v1/tools/{name}/collections/{collection}/documents")
    async def add_documents(self, name: str, collection: str, body: DocumentsAddRequest,
                            request: Request) -> Any:
        async with self._exchange(request, "/v1/tools/{name}/collections/{collection}/documents", body,
                                  tool=name, arguments_sha256=arguments_digest(body.documents)) as ex:
            result = await self._documents(ex.ctx, name, "add_documents", collection,
                                           {"documents": body.documents})
            return ex.reply({**result, "collection": collection})

    @app.delete("/v1/tools/{name}/collections/{collection}/documents/{document_id}")
    async def delete_document(self, name: str, collection: str, document_id: str,
                              request: Request) -> Any:
        async with self._exchange(
                request, "/v1/tools/{name}/collections/{collection}/documents/{document_id}", tool=name) as ex:
            result = await self._documents(ex.ctx, name, "delete_documents", collection,
                                           {"ids": [document_id]})
            if not result.get("deleted"):
                raise NotFound(f"No document `{document_id}` in collection `{collection}`.",
                               param="document_id", code="document_not_found")
            return ex.reply({**result, "collection": collection, "id": document_id})

    @app.get("/v1/workflows")
    async def list_workflows(self, request: Request) -> Any:
        """The workflows whose every tool the caller may use."""
        async with self._exchange(request, "/v1/workflows") as ex:
            data = [spec.describe() for spec in self._workflows.values()
                    if all(self._guard.layer.policy.may_use_tool(ex.ctx.identity, t) for t in spec.uses_tools)]
            return ex.reply({"object": "list", "data": data})

    @app.post("/v1/workflows/{name}/run")
    async def run_workflow(self, name: str, body: WorkflowRunRequest, request: Request) -> Any:
        async with self._exchange(request, "/v1/workflows/{name}/run", body, workflow=name,
                                  arguments_sha256=arguments_digest(body.inputs)) as ex:
            return ex.reply(await self._run_workflow(ex.ctx, name, body))

    async def _run_workflow(self, ctx: RequestContext, name: str, body: WorkflowRunRequest) -> dict[str, Any]:
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
            answer = await call_handle(self._router.chat.remote(chat))
            usage = answer.get("usage") or {}
            ctx.prompt_tokens += int(usage.get("prompt_tokens", 0))
            ctx.completion_tokens += int(usage.get("completion_tokens", 0))
            return answer

        async def inspect(step: str, tool: str, result: Any) -> Any:
            guardrails = await self._inspect_tool_output(ctx, tools[tool], result)
            if guardrails.get("flagged"):
                ctx.annotations.setdefault("flagged_steps", []).append(step)
            return result

        result = await WorkflowRunner(call_tool, call_model, inspect).run(spec, body.inputs)
        if ctx.annotations.get("flagged_steps"):
            result["guardrails"] = {"flagged_steps": ctx.annotations["flagged_steps"]}
        return self._guard.redact_value(ctx, result)

    async def _tool_infos(self) -> dict[str, dict[str, Any]]:
        if self._tools_cache is None:
            infos = await call_handle(self._tool_runner.list_tools.remote()) if self._tool_runner else []
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
        result = await call_handle(self._tool_runner.invoke.remote(
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
        return await call_handle(self._tool_runner.call_method.remote(
            name, method, {**kwargs, "collection": stored}))

    # -- generation --------------------------------------------------------------------------------

    async def _generate(self, ex: _Exchange, body: Any, request: GenerateRequest,
                        tools: ToolPlan | None = None) -> Any:
        route = self._registry.resolve(body.model, "generate")
        events = self._streams[route.deployment].stream.remote(request)
        # Pull the first event before answering: errors in the request (prompt too long,
        # overload) must become a proper status, not a broken 200 stream.
        first = await call_handle(events.__anext__())
        stream = _prepend(first, events)
        shape = {"kind": request.kind, "model": body.model, "choices": request.choices,
                 "ctx": ex.ctx, "open_filters": lambda: self._pipeline.open_filters(ex.ctx),
                 "tools": tools}
        if not body.stream:
            return ex.reply(await collect(stream, **shape))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return ex.stream(stream_sse(stream, include_usage=include_usage, **shape))
