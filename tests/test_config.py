"""Configuration checks: the schema, the cross-key rules, model parameters, and the error a
user sees from the real Snakemake command line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from seqrerank.config import (
    ConfigError,
    model_params,
    training_settings,
    validate_config,
    workflow_rules,
)
from seqrerank.data.dataset import SequenceData
from seqrerank.features import ItemFeatures
from seqrerank.methods.base import check_params
from seqrerank.methods.llm_reranker import LLMReranker
from seqrerank.methods.vip5 import VIP5
from seqrerank.registry import RERANKERS, RETRIEVERS, load_method, model_parameters

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config/schema.yaml"
CONFIG_FILES = ["config/config.yaml", "config/demo.yaml", "config/beauty.yaml"]


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / name).read_text())


@pytest.fixture
def demo_config() -> dict[str, Any]:
    return load("config/demo.yaml")


def config_error(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as error:
        validate_config(config, SCHEMA, source="my.yaml")
    return str(error.value)


# --- the shipped configs ----------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_shipped_config_is_valid(name: str) -> None:
    validate_config(load(name), SCHEMA, source=name)


def test_validation_fills_in_defaults(demo_config: dict[str, Any]) -> None:
    validate_config(demo_config, SCHEMA)
    assert demo_config["retrieval"]["metric"] == "ndcg@10"
    assert demo_config["retrieval"]["weight_decay"] == 0.01
    assert demo_config["rerank"]["negatives"] == 19
    assert demo_config["features"]["text_encoder"] == "clip"


def test_method_training_settings_override_the_stage_defaults(
    demo_config: dict[str, Any],
) -> None:
    validate_config(demo_config, SCHEMA)
    settings = training_settings(demo_config, "rerank", "bert4rec")
    assert settings == {
        "epochs": 40,
        "lr": 2e-3,
        "lr_decay_epochs": None,
        "weight_decay": 0.01,
        "batch_size": 64,
        "patience": 5,
        "metric": "ndcg@10",
        "precision": "bf16",
    }
    assert training_settings(demo_config, "retrieval", "popularity")["epochs"] == 20


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_methods_model_params_are_accepted_by_its_class(name: str) -> None:
    config = load(name)
    for method in config["methods"]:
        cls, params = load_method(method), model_params(config, method)
        check_params(cls, params, where=f"{name} methods.{method}.model")
        if issubclass(cls, LLMReranker | VIP5):
            continue  # load pretrained weights: tests/test_llm.py, tests/test_vip5.py
        # and really build the model, on a tiny dataset with an item feature
        data = SequenceData(20, [np.array([1, 2, 3])] * 4, np.array([4] * 4), np.array([5] * 4))
        image = ItemFeatures("image", torch.rand(21, 8), torch.ones(21, dtype=torch.bool), {})
        assert isinstance(cls.from_data(data, features={"image": image}, **params), cls)


def test_every_registered_method_can_be_loaded() -> None:
    for name in {*RETRIEVERS, *RERANKERS}:
        assert load_method(name).__name__.lower() == name.replace("_", "")


# --- names that are not in the registry ---------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "location", "valid"),
    [
        ("retrievers", ["popularity", "sasrec"], "retrievers[1]", str(sorted(RETRIEVERS))),
        ("rerankers", ["llamarec"], "rerankers[0]", str(sorted(RERANKERS))),
        ("modes", ["retrieval", "gt"], "modes[1]", "['retrieval', 'ground_truth']"),
    ],
)
def test_unknown_name_names_its_location_and_the_valid_names(
    demo_config: dict[str, Any], key: str, value: list[str], location: str, valid: str
) -> None:
    demo_config[key] = value
    message = config_error(demo_config)
    assert "invalid configuration (my.yaml)" in message
    bad = value[-1]
    assert f"{location}: '{bad}' is not one of {valid}" in message


def test_unknown_method_section_lists_the_registered_methods(demo_config: dict[str, Any]) -> None:
    demo_config["methods"]["sasrec"] = {"model": {}}
    message = config_error(demo_config)
    registered = sorted({*RETRIEVERS, *RERANKERS})
    assert f"methods: 'sasrec' is not one of {registered}" in message


def test_unknown_dataset_source_lists_the_valid_sources(demo_config: dict[str, Any]) -> None:
    demo_config["datasets"]["demo"]["source"] = "movielens"
    message = config_error(demo_config)
    assert "datasets.demo.source: 'movielens' is not one of" in message
    assert "['amazon', 'sequences', 'synthetic']" in message


def test_unknown_metric_lists_the_valid_metrics(demo_config: dict[str, Any]) -> None:
    demo_config["retrieval"]["metric"] = "mrr"
    message = config_error(demo_config)
    assert "retrieval.metric: 'mrr' is not one of ['recall@5'," in message


# --- keys that are not in the schema ------------------------------------------------------------


def valid_keys(message: str) -> list[str]:
    return re.search(r"valid keys: (.*)", message).group(1).split(", ")


def test_unknown_top_level_key_lists_the_valid_keys(demo_config: dict[str, Any]) -> None:
    demo_config["retreivers"] = ["lrurec"]
    message = config_error(demo_config)
    assert "(top level): Additional properties are not allowed ('retreivers'" in message
    assert {"run", "datasets", "retrievers", "rerankers", "modes"} <= set(valid_keys(message))


def test_unknown_stage_setting_lists_the_valid_settings(demo_config: dict[str, Any]) -> None:
    demo_config["retrieval"]["topk"] = 50
    message = config_error(demo_config)
    assert "retrieval: Unevaluated properties are not allowed ('topk' was unexpected)" in message
    assert set(valid_keys(message)) == {
        "epochs",
        "lr",
        "lr_decay_epochs",
        "weight_decay",
        "metric",
        "batch_size",
        "patience",
        "precision",
        "top_k",
    }


def test_unknown_method_training_key_lists_the_valid_keys(demo_config: dict[str, Any]) -> None:
    demo_config["methods"]["bert4rec"]["training"]["epoch"] = 3
    message = config_error(demo_config)
    assert "methods.bert4rec.training: Unevaluated properties are not allowed" in message
    assert "epochs" in valid_keys(message)


def test_unknown_dataset_key_lists_the_valid_keys(demo_config: dict[str, Any]) -> None:
    demo_config["datasets"]["demo"]["min_user_count"] = 5
    message = config_error(demo_config)
    assert "datasets.demo: Additional properties are not allowed ('min_user_count'" in message
    assert {"source", "min_uc", "min_sc", "min_rating"} <= set(valid_keys(message))


def test_every_problem_is_reported_at_once(demo_config: dict[str, Any]) -> None:
    demo_config["retrievers"] = ["sasrec"]
    demo_config["modes"] = ["gt"]
    message = config_error(demo_config)
    assert "retrievers[0]" in message and "modes[0]" in message


def test_misspelled_rule_under_resources_lists_the_rules(demo_config: dict[str, Any]) -> None:
    demo_config["resources"] = {"trian_reranker": {"gpu": 1}}
    message = config_error(demo_config)
    assert f"resources: 'trian_reranker' is not one of {workflow_rules(REPO)}" in message
    assert "'train_reranker'" in message


def test_the_rules_that_resources_takes_are_the_workflows_rules(snakemake_cli) -> None:
    result = snakemake_cli("--list-rules")
    assert result.returncode == 0, result.stdout[-3000:]
    # One rule a line, its docstring beside it; the target rule `all` runs no job.
    listed = set(re.findall(r"^(\w+)(?: \(|$)", result.stdout, re.MULTILINE)) - {"all"}
    assert set(workflow_rules(REPO)) == listed


# --- rules across keys --------------------------------------------------------------------------


def test_rerank_top_k_above_retrieval_top_k_is_rejected(demo_config: dict[str, Any]) -> None:
    demo_config["rerank"]["top_k"] = 150  # retrieval exports 100
    message = config_error(demo_config)
    assert "rerank.top_k (150) exceeds retrieval.top_k (100)" in message


def test_rerank_top_k_equal_to_retrieval_top_k_is_accepted(demo_config: dict[str, Any]) -> None:
    demo_config["rerank"]["top_k"] = 100
    validate_config(demo_config, SCHEMA)


def test_amazon_dataset_without_a_category_is_rejected(demo_config: dict[str, Any]) -> None:
    demo_config["datasets"]["demo"] = {"source": "amazon", "ratings": "r.csv", "meta": "m.json"}
    message = config_error(demo_config)
    assert "datasets.demo: source 'amazon' needs the key 'category'" in message


# --- model parameters ---------------------------------------------------------------------------


def test_unknown_model_parameter_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as error:
        check_params(load_method("lrurec"), {"hiden": 64}, where="config methods.lrurec.model")
    message = str(error.value)
    assert message.startswith("config methods.lrurec.model: unknown parameter(s) hiden for LRURec")
    assert "valid parameters: hidden, blocks, dropout, lru_dropout, max_len" in message


def test_known_model_parameters_are_accepted() -> None:
    check_params(load_method("bert4rec"), {"hidden": 32, "mask_prob": 0.1}, where="x")


def test_unknown_model_key_in_config_lists_the_class_keywords(demo_config: dict[str, Any]) -> None:
    demo_config["methods"]["lrurec"]["model"]["hiden"] = 64
    demo_config["methods"]["popularity"] = {"model": {"smoothing": 1}}
    message = config_error(demo_config)
    assert (
        "methods.lrurec.model: Additional properties are not allowed ('hiden' was unexpected); "
        "valid keys: hidden, blocks, dropout, lru_dropout, max_len"
    ) in message
    assert "methods.popularity.model: Additional properties are not allowed" in message
    assert "valid keys: none" in message


@pytest.mark.parametrize("method", sorted({*RETRIEVERS, *RERANKERS}))
def test_config_model_keys_are_the_keywords_the_class_accepts(method: str) -> None:
    """Read from the source (no torch import) as check_params reads them from the class."""
    cls, keys = load_method(method), model_parameters(method)
    check_params(cls, dict.fromkeys(keys), where="x")
    with pytest.raises(ValueError, match=f"valid parameters: {', '.join(keys) or 'none'}$"):
        check_params(cls, {"not_a_parameter": 1}, where="x")


def test_validating_a_config_imports_no_torch() -> None:
    """Every SLURM job parses the Snakefile, and so validates the config: it stays cheap."""
    check = (
        "import sys; from seqrerank.config import load_config; "
        "load_config('config/demo.yaml'); print(sorted(m for m in sys.modules if 'torch' in m))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# --- the command line -------------------------------------------------------------------------


def test_snakemake_rejects_a_bad_config_with_the_clear_message(
    demo_config: dict[str, Any], tmp_path: Path, snakemake_cli
) -> None:
    demo_config["retrievers"] = ["popularity", "sasrec"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(demo_config))
    result = snakemake_cli("-n", "--configfile", path, "--directory", tmp_path)
    assert result.returncode != 0
    assert "ConfigError" in result.stdout
    assert f"retrievers[1]: 'sasrec' is not one of {sorted(RETRIEVERS)}" in result.stdout


def test_snakemake_dry_run_rejects_a_misspelled_rule_and_model_key_at_once(
    demo_config: dict[str, Any], tmp_path: Path, snakemake_cli
) -> None:
    demo_config["resources"]["trian_reranker"] = {"gpu": 1}
    demo_config["methods"]["bert4rec"]["model"]["hiden"] = 64
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(demo_config))
    result = snakemake_cli("-n", "--configfile", path, "--directory", tmp_path)
    assert result.returncode != 0
    assert "resources: 'trian_reranker' is not one of ['aggregate'," in result.stdout
    assert "methods.bert4rec.model: Additional properties are not allowed ('hiden'" in result.stdout
    assert "valid keys: hidden, layers, heads, dropout, max_len, mask_prob" in result.stdout


def test_snakemake_rejects_a_rerank_top_k_above_retrieval_top_k(
    demo_config: dict[str, Any], tmp_path: Path, snakemake_cli
) -> None:
    demo_config["rerank"]["top_k"] = 150
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(demo_config))
    result = snakemake_cli("-n", "--configfile", path, "--directory", tmp_path)
    assert result.returncode != 0
    assert "rerank.top_k (150) exceeds retrieval.top_k (100)" in result.stdout
