"""Validation of the workflow configuration against ``config/schema.yaml``.

The schema's lists of names are filled in from where they are defined, so that each stays the one
place that knows them: method names and each method's model keys from :mod:`seqrerank.registry`,
the rule names that ``resources`` takes from the workflow's rule files. Defaults from the schema
are written into the config.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators

from seqrerank.registry import RERANKERS, RETRIEVERS, model_parameters

RULE = re.compile(r"^rule (\w+):", re.MULTILINE)


class ConfigError(ValueError):
    pass


def _with_defaults(validator_class: type) -> type:
    """A validator that also fills in each property's ``default`` while it walks the config."""
    check_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from check_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def load_schema(schema_path: str | Path, methods: Iterable[str] = ()) -> dict:
    """The schema (``<workflow>/config/schema.yaml``) with its lists of names: the registered
    methods, the workflow's rules, and the model keys of each registered method in ``methods``
    (only those, as reading a method's keys parses its source)."""
    schema_path = Path(schema_path)
    schema = yaml.safe_load(schema_path.read_text())
    props = schema["properties"]
    registered = sorted({*RETRIEVERS, *RERANKERS})
    props["retrievers"]["items"]["enum"] = sorted(RETRIEVERS)
    props["rerankers"]["items"]["enum"] = sorted(RERANKERS)
    props["methods"]["propertyNames"]["enum"] = registered
    props["resources"]["propertyNames"]["enum"] = workflow_rules(schema_path.parent.parent)
    # A configured method: the schema of every method, and its class's keyword arguments.
    props["methods"]["properties"] = {
        name: {
            "allOf": [props["methods"]["additionalProperties"]],
            "properties": {
                "model": {
                    "properties": {key: {} for key in model_parameters(name)},
                    "additionalProperties": False,
                }
            },
        }
        for name in methods
        if name in registered
    }
    return schema


def workflow_rules(workflow_dir: str | Path) -> list[str]:
    """The rules of the workflow's rule files (``rules/*.smk``), the names that ``resources``
    takes: read from the files, as Snakemake parses them only after the config is checked."""
    files = sorted(Path(workflow_dir, "rules").glob("*.smk"))
    if not files:  # else every rule name would be rejected
        raise FileNotFoundError(
            f"no rules/*.smk in {workflow_dir}: validate against the schema in the workflow "
            "folder, <workflow>/config/schema.yaml"
        )
    return sorted(name for path in files for name in RULE.findall(path.read_text()))


def validate_config(
    config: dict[str, Any], schema_path: str | Path, source: str = "config"
) -> dict:
    """Check ``config`` in place (defaults filled in); raise :class:`ConfigError` listing every
    problem with its location in the config and, for a name, the valid values."""
    methods = config.get("methods") if isinstance(config, dict) else None
    schema = load_schema(schema_path, methods if isinstance(methods, dict) else ())
    validator = _with_defaults(Draft202012Validator)(schema)
    # Two passes: the first fills defaults, which the second then checks too.
    list(validator.iter_errors(config))
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"invalid configuration ({source}):"]
        for error in errors:
            where = (
                "".join(
                    f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
                ).lstrip(".")
                or "(top level)"
            )
            message = error.message
            if error.validator in ("additionalProperties", "unevaluatedProperties"):
                valid = ", ".join(_known_keys(error.schema, schema)) or "none"
                message += f"; valid keys: {valid}"
            lines.append(f"  - {where}: {message}")
        raise ConfigError("\n".join(lines))
    _check_cross_references(config, source)
    return config


def load_config(path: str | Path) -> dict:
    """A workflow config file (config/*.yaml), validated against the schema beside it."""
    path = Path(path)
    config = yaml.safe_load(path.read_text())
    return validate_config(config, path.parent / "schema.yaml", source=str(path))


def _known_keys(subschema: dict, schema: dict) -> list[str]:
    """The keys a (sub)schema defines, following its local ``$ref`` and ``allOf`` parts."""
    keys = list(subschema.get("properties", {}))
    parts = [*subschema.get("allOf", []), *([subschema] if "$ref" in subschema else [])]
    for part in parts:
        if "$ref" in part:
            target = schema
            for name in part["$ref"].removeprefix("#/").split("/"):
                target = target[name]
            part = target
        keys += [key for key in _known_keys(part, schema) if key not in keys]
    return keys


def _check_cross_references(config: dict[str, Any], source: str) -> None:
    """Rules a JSON schema cannot express."""
    for name, dataset in config["datasets"].items():
        needed = {"amazon": "category", "sequences": "path"}.get(dataset["source"])
        if needed and needed not in dataset:
            raise ConfigError(
                f"invalid configuration ({source}): datasets.{name}: source "
                f"'{dataset['source']}' needs the key '{needed}'"
            )
    if config["rerank"]["top_k"] > config["retrieval"]["top_k"]:
        raise ConfigError(
            f"invalid configuration ({source}): rerank.top_k ({config['rerank']['top_k']}) "
            f"exceeds retrieval.top_k ({config['retrieval']['top_k']}): Stage 2 can only rerank "
            "what Stage 1 exported"
        )


def training_settings(config: dict[str, Any], stage: str, method: str) -> dict[str, Any]:
    """Stage defaults (``retrieval`` or ``rerank``) overridden by ``methods.<method>.training``."""
    keys = (
        "epochs",
        "lr",
        "lr_decay_epochs",
        "weight_decay",
        "batch_size",
        "patience",
        "metric",
        "precision",
    )
    settings = {key: config[stage][key] for key in keys}
    settings.update(config["methods"].get(method, {}).get("training", {}))
    return settings


def model_params(config: dict[str, Any], method: str) -> dict[str, Any]:
    return dict(config["methods"].get(method, {}).get("model", {}))
