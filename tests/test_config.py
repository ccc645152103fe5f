"""AdpQConfig: validation names the option, round trips through dict / JSON keep a version."""

from __future__ import annotations

import dataclasses
import json

import pytest

from adpq_onnx.config import CONFIG_VERSION, AdpQConfig, ConfigError
from adpq_onnx.errors import UserError


@pytest.mark.parametrize(
    ("changes", "option"),
    [
        ({"bits": 5}, "bits"),
        ({"bits": 1}, "bits"),
        ({"group_size": 0}, "group_size"),
        ({"group_size": 48}, "group_size"),
        ({"group_size": 512}, "group_size"),
        ({"outlier_ratio": 0.7}, "outlier_ratio"),
        ({"outlier_ratio": -0.1}, "outlier_ratio"),
        ({"gamma": -1.0}, "gamma"),
        ({"gamma": float("nan")}, "gamma"),
        ({"lasso_scope": "column"}, "lasso_scope"),
        ({"outlier_mode": "drop"}, "outlier_mode"),
        ({"outlier_dtype": "float32"}, "outlier_dtype"),
        ({"target": "gguf"}, "target"),
        ({"target": "matmulnbits", "bits": 3}, "matmulnbits"),
        ({"include": "("}, "include"),
        ({"exclude": "[a-"}, "exclude"),
        ({"min_size": -1}, "min_size"),
        ({"rounding": {"method": "stochastic"}}, "rounding.method"),
        ({"rounding": {"damp": 0.0}}, "rounding.damp"),
        ({"transforms": {"kinds": ("attn", "rotate")}}, "transforms.kinds"),
        ({"transforms": {"steps": 0}}, "transforms.steps"),
        ({"transforms": {"lr": 2.0}}, "transforms.lr"),
    ],
)
def test_bad_values_name_the_option(changes: dict, option: str) -> None:
    with pytest.raises(ConfigError, match=option):
        AdpQConfig(**changes)


def test_config_error_is_a_user_error() -> None:
    assert issubclass(ConfigError, UserError)
    assert issubclass(ConfigError, ValueError)


def test_defaults_are_valid_and_frozen() -> None:
    cfg = AdpQConfig()
    assert (cfg.bits, cfg.group_size, cfg.target) == (4, 128, "adpq")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.bits = 3  # type: ignore[misc]


def test_replace_validates_again() -> None:
    assert AdpQConfig().replace(bits=3).bits == 3
    with pytest.raises(ConfigError):
        AdpQConfig().replace(bits=7)


def test_dict_and_json_round_trip() -> None:
    cfg = AdpQConfig(bits=3, group_size=64, outlier_ratio=0.01, include="mlp", min_size=16)
    data = cfg.to_dict()
    assert data["version"] == CONFIG_VERSION
    assert AdpQConfig.from_dict(data) == cfg
    assert AdpQConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert set(data) == {f.name for f in dataclasses.fields(AdpQConfig)} | {"version"}


def test_nested_pass_configs_round_trip() -> None:
    cfg = AdpQConfig(
        rounding={"method": "paired", "damp": 0.1},
        transforms={"kinds": ["attn", "norm"], "steps": 7},
    )
    assert cfg.rounding.method == "paired" and cfg.transforms.kinds == ("attn", "norm")
    assert AdpQConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert AdpQConfig().rounding.method == "nearest" and AdpQConfig().transforms.kinds == ()


def test_from_dict_rejects_unknown_version_and_fields() -> None:
    with pytest.raises(ConfigError, match="version"):
        AdpQConfig.from_dict({"version": CONFIG_VERSION + 1})
    with pytest.raises(ConfigError, match="colour"):
        AdpQConfig.from_dict({"colour": "red"})
