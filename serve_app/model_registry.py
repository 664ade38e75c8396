"""Which deployment serves a requested model name or alias, for which task."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from common.errors import InvalidRequest, ModelNotFound

__all__ = ["ModelRegistry", "ModelRoute"]

Task = Literal["generate", "embed"]


@dataclass(frozen=True)
class ModelRoute:
    """A configured model: its name, its task and the Serve deployment that serves it."""

    name: str
    task: Task
    deployment: str
    aliases: tuple[str, ...] = ()


class ModelRegistry:
    """Names and aliases of the configured models, resolved without a network hop.

    The ingress and the Router each build one from the same `AppConfig.models`, so both answer
    the same way; neither asks the other.
    """

    def __init__(self, routes: Iterable[ModelRoute]) -> None:
        self._routes = {route.name: route for route in routes}
        self._names: dict[str, str] = {}
        for route in self._routes.values():
            self._names[route.name] = route.name
            for alias in route.aliases:
                self._names[alias] = route.name

    @classmethod
    def from_models(cls, models: Iterable[Any]) -> ModelRegistry:
        """From `ModelConfig`s (or anything with name, task, aliases and deployment_name)."""
        return cls(ModelRoute(name=m.name, task=m.task, deployment=m.deployment_name,
                              aliases=tuple(m.aliases)) for m in models)

    @property
    def routes(self) -> list[ModelRoute]:
        return list(self._routes.values())

    def missing_deployments(self, handles: Iterable[str]) -> set[str]:
        """The deployments of configured models that `handles` (deployment names) lack."""
        return {route.deployment for route in self._routes.values()} - set(handles)

    def resolve(self, model: str, task: Task) -> ModelRoute:
        """The route serving `model` for `task`.

        Raises:
            ModelNotFound: no model or alias has that name.
            InvalidRequest: the model exists but does another task (e.g. chat on an embedder).
        """
        name = self._names.get(model)
        if name is None:
            raise ModelNotFound(f"The model `{model}` does not exist.", param="model")
        route = self._routes[name]
        if route.task != task:
            wanted = "text generation" if task == "generate" else "embeddings"
            raise InvalidRequest(f"The model `{model}` does not support {wanted}.",
                                 param="model", code="wrong_model_task")
        return route

    def listed(self) -> list[dict[str, str]]:
        """Every servable name (models and aliases), sorted, for `/v1/models`."""
        return [{"id": alias, "model": name, "task": self._routes[name].task}
                for alias, name in sorted(self._names.items())]

    def aliases(self) -> dict[str, str]:
        """`{alias: model name}` for every alias (RBAC rules name models, not aliases)."""
        return {alias: name for alias, name in self._names.items() if alias != name}
