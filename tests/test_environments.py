"""Every rule's software, checked without conda or Apptainer (neither installs here): a conda env
and an Apptainer definition that exist, an env that holds every package its script imports,
env pins that resolve on the package index; and the user's SLURM settings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

from seqrerank import environments, slurm
from seqrerank.config import workflow_rules
from seqrerank.registry import RERANKERS, RETRIEVERS

REPO = Path(__file__).resolve().parents[1]
ENVS = sorted(path.stem for path in (REPO / "envs").glob("*.yaml"))
METHODS = {"retriever": RETRIEVERS, "reranker": RERANKERS}
METHODS_BY_NAME = {**RETRIEVERS, **RERANKERS}


def load_rules(configfile: Path) -> list:
    """The rules of the workflow as Snakemake parses them with ``configfile``."""
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(configfiles=[configfile]),
            snakefile=REPO / "Snakefile",
            workdir=REPO,
        )
        return list(workflow._workflow.rules)


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


# --- the user's SLURM settings ----------------------------------------------------------------


def test_gpu_jobs_go_to_the_gpu_partition_and_cpu_jobs_to_the_cpu_one(tmp_path: Path) -> None:
    path = tmp_path / "slurm.yaml"
    path.write_text("account: lab\ncpu_partition: short\ngpu_partition: a100\ngpu_model: a100\n")
    settings = slurm.load_settings(path)
    assert slurm.placement(settings, gpus=0) == {"slurm_account": "lab", "slurm_partition": "short"}
    assert slurm.placement(settings, gpus=2) == {
        "slurm_account": "lab",
        "slurm_partition": "a100",
        "gpu_model": "a100",
    }


def test_every_rule_takes_the_account_and_partition_from_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On a cluster that requires an account, a rule without it would never run."""
    path = tmp_path / "slurm.yaml"
    path.write_text("account: lab\ncpu_partition: short\ngpu_partition: a100\n")
    monkeypatch.setenv(slurm.SETTINGS_ENV, str(path))
    rules = [rule for rule in load_rules(REPO / "config/demo.yaml") if not rule.norun]
    assert {rule.name for rule in rules} == set(workflow_rules(REPO))
    for rule in rules:
        assert rule.resources.get("slurm_account") == "lab", rule.name
        assert rule.resources.get("slurm_partition") == "short", rule.name  # the demo has no GPU


def test_without_a_settings_file_jobs_name_no_account_or_partition(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(slurm.SETTINGS_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert slurm.load_settings() == {}
    assert slurm.placement({}, gpus=1) == {}


def test_a_named_settings_file_must_exist(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(slurm.SETTINGS_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        slurm.load_settings()


def test_an_unknown_settings_key_is_named_with_the_valid_ones(tmp_path: Path) -> None:
    path = tmp_path / "slurm.yaml"
    path.write_text("partition: gpu\n")
    with pytest.raises(ValueError, match=r"unknown keys \['partition'\]; valid keys: account"):
        slurm.load_settings(path)


# --- the SLURM cluster test runs only when asked -------------------------------------------------


@pytest.mark.parametrize(
    ("ci", "options", "outcome"),
    [(None, [], "1 skipped"), ("true", [], "1 failed"), (None, ["--slurm-cluster"], "1 failed")],
    ids=["make test", "CI=true make test", "make test-slurm"],
)
def test_the_slurm_cluster_test_runs_only_when_asked(
    tmp_path: Path, ci: str | None, options: list[str], outcome: str
) -> None:
    """A stand-in test marked slurm, run under the suite's conftest: it fails whenever it runs
    (the real one installs SLURM)."""
    (tmp_path / "test_stand_in.py").write_text(
        "import pytest\n\n\n@pytest.mark.slurm\ndef test_cluster():\n    raise AssertionError\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env |= {"CI": ci} if ci else {}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), str(REPO)])
    command = [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-rs"]
    result = subprocess.run(
        [*command, *options, "test_stand_in.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert outcome in result.stdout, result.stdout
    if outcome == "1 skipped":
        assert "run it with `make test-slurm` (or `CI=true make test`)" in result.stdout


# --- the profiles -------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_a_profile_prints_the_log_of_a_failing_job(profile: str) -> None:
    settings = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())
    assert settings["show-failed-logs"] is True


def test_make_demo_prints_the_log_of_a_failing_job() -> None:
    recipe = (REPO / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    workflow_run = next(line for line in recipe.splitlines() if "--cores" in line)
    assert "--show-failed-logs" in workflow_run.split()


# --- the workflow's own lint ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "config", [[], ["--configfile", "config/demo.yaml"]], ids=["default", "demo"]
)
def test_snakemake_lint_is_clean(config: list[str], snakemake_cli) -> None:
    result = snakemake_cli("--lint", *config)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in result.stdout
