"""Every rule's software, checked without conda or Apptainer (neither installs here): a conda env
and an Apptainer definition that exist, an env that holds every package its script imports,
env pins that resolve on the package index; and the user's SLURM settings.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import environments
import pytest
import yaml
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings,
    DeploymentSettings,
    OutputSettings,
    ResourceSettings,
)

from seqrerank.registry import RERANKERS, RETRIEVERS

REPO = Path(__file__).resolve().parents[1]
ENVS = sorted(path.stem for path in (REPO / "envs").glob("*.yaml"))
METHODS = {"retriever": RETRIEVERS, "reranker": RERANKERS}
METHODS_BY_NAME = {**RETRIEVERS, **RERANKERS}


def load_workflow(configfile: Path, apptainer_args: str = ""):
    """The workflow as Snakemake parses it with ``configfile``."""
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(configfiles=[configfile]),
            deployment_settings=DeploymentSettings(apptainer_args=apptainer_args),
            snakefile=REPO / "Snakefile",
            workdir=REPO,
        )
        return workflow._workflow


def load_rules(configfile: Path) -> list:
    """The rules of the workflow as Snakemake parses them with ``configfile``."""
    return list(load_workflow(configfile).rules)


@pytest.fixture(scope="module")
def jobs_software() -> list[tuple[str, str | None, str, str, Path]]:
    """(rule, method, env, image, script) for every rule that runs a script, and for a rule
    whose software depends on its method, for every registered method."""
    software = []
    for rule in load_rules(REPO / "config/demo.yaml"):
        if not rule.script:
            continue
        wildcard = getattr(rule.conda_env, "method_wildcard", None)
        methods = METHODS[wildcard] if wildcard else [None]
        for method in methods:
            wildcards = SimpleNamespace(**{wildcard: method}) if wildcard else None
            env, image = rule.conda_env, rule.container_img
            if wildcard:
                env, image = env(wildcards), image(wildcards)
            env_name = Path(env).stem
            assert env == f"../envs/{env_name}.yaml", f"{rule.name}: env {env}"
            script = (Path(rule.snakefile).parent / rule.script).resolve()
            software.append((rule.name, method, env_name, image, script))
    return software


def test_every_rule_running_a_script_has_an_env_and_an_image(jobs_software) -> None:
    assert {rule for rule, *_ in jobs_software} >= {"prepare_data", "train_retriever", "rerank"}
    for rule, method, env, image, _ in jobs_software:
        assert (REPO / "envs" / f"{env}.yaml").exists(), f"{rule} ({method}): no envs/{env}.yaml"
        assert image == str(REPO / "containers" / f"{env}.sif"), f"{rule} ({method}): {image}"


@pytest.mark.parametrize("env", ENVS)
def test_every_env_has_an_apptainer_definition_built_from_it(env: str) -> None:
    definition = (REPO / "containers" / f"{env}.def").read_text()
    assert f"envs/{env}.yaml /opt/env.yaml" in definition
    assert "sh /opt/install-env.sh /opt/env.yaml" in definition


def test_every_definition_belongs_to_an_env() -> None:
    assert sorted(path.stem for path in (REPO / "containers").glob("*.def")) == ENVS


# Backends that a config option selects and that the code imports only then (`loader: unsloth`,
# `backend: vllm`, `captions.backend: lavis`): each lives in the one env made for it.
OPTIONAL_BACKENDS = {"unsloth": "llm", "vllm": "llm", "lavis": "captions-lavis"}


def test_every_package_a_script_imports_is_in_its_env(jobs_software) -> None:
    problems = []
    for rule, method, env, _, script in jobs_software:
        method_module = [METHODS_BY_NAME[method].target.split(":")[0]] if method else []
        needed = environments.distributions_of(
            environments.imported_modules([script], method_module)
        ) - set(OPTIONAL_BACKENDS)
        missing = needed - environments.env_packages(REPO / "envs" / f"{env}.yaml")
        if missing:
            problems.append(f"{rule} ({method or 'any method'}): envs/{env}.yaml lacks {missing}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("backend", "env"), OPTIONAL_BACKENDS.items())
def test_every_optional_backend_is_in_its_env(backend: str, env: str) -> None:
    distribution = {"lavis": "salesforce-lavis"}.get(backend, backend)
    assert distribution in environments.env_packages(REPO / "envs" / f"{env}.yaml")


def test_imports_are_followed_through_the_package() -> None:
    script = REPO / "workflow_scripts/train_retriever.py"
    modules = environments.imported_modules([script], ["seqrerank.methods.lrurec"])
    assert {"torch", "numpy", "pandas", "tqdm"} <= modules  # the script itself imports none
    assert environments.distributions_of({"PIL", "yaml"}) == {"pillow", "pyyaml"}


def test_a_registry_uri_in_the_config_names_every_image(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config["containers"] = "oras://ghcr.io/someone/seqrerank-{env}:0.1.0"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    images = {rule.name: rule.container_img for rule in load_rules(tmp_path / "c.yaml")}
    assert images["aggregate"] == "oras://ghcr.io/someone/seqrerank-report:0.1.0"
    assert images["rerank"](SimpleNamespace(reranker="bert4rec")) == (
        "oras://ghcr.io/someone/seqrerank-retrieval:0.1.0"
    )


@pytest.mark.index
def test_every_envs_pip_pins_resolve_on_the_package_index() -> None:
    errors = environments.resolution_errors([REPO / "envs" / f"{env}.yaml" for env in ENVS])
    assert not errors, "\n\n".join(f"envs/{p.name}:\n{out[-3000:]}" for p, out in errors.items())


@pytest.mark.index
def test_a_pin_that_does_not_exist_is_caught(tmp_path: Path) -> None:
    env = tmp_path / "bad.yaml"
    env.write_text(yaml.safe_dump({"dependencies": ["python=3.11", {"pip": ["numpy==0.0.1"]}]}))
    errors = environments.resolution_errors([env])
    assert "numpy==0.0.1" in errors[env]


def test_apptainer_jobs_get_the_binds_of_the_config(tmp_path: Path) -> None:
    """The arguments every Apptainer job of the workflow runs with (the user's and the binds
    of seqrerank.grid.Grid.bind_paths), as Snakemake passes them to the jobs it starts."""
    (tmp_path / "Beauty.txt").write_text("1 1 2 3\n")
    config = yaml.safe_load((REPO / "config/beauty.yaml").read_text())
    dataset = config["datasets"]["beauty_5core"]
    dataset["path"] = str(tmp_path / "Beauty.txt")
    dataset["attributes"] = str(tmp_path / "attributes.json")
    config["model_cache"] = str(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    workflow = load_workflow(tmp_path / "c.yaml", apptainer_args="--nv")
    assert workflow.deployment_settings.apptainer_args == f"--nv --bind {tmp_path}"
