"""The workflow's software environments (``envs/<env>.yaml``) and the checks that keep them
honest without conda: what an env pins, what a workflow script imports (following the package's
own modules), and whether an env's pip part resolves against the package index.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import yaml

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the repository, where seqrerank/ is
PACKAGE = "seqrerank"


def normalize(name: str) -> str:
    """A distribution name as package indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return normalize(re.split(r"[\s\[=<>!~;]", requirement.strip(), maxsplit=1)[0])


def pip_requirements(env_file: str | Path) -> list[str]:
    """The ``pip:`` entries of a conda env file."""
    dependencies = yaml.safe_load(Path(env_file).read_text())["dependencies"]
    return [req for dep in dependencies if isinstance(dep, dict) for req in dep.get("pip", [])]


def env_packages(env_file: str | Path) -> set[str]:
    """Normalized names of everything an env file installs, conda and pip packages alike."""
    dependencies = yaml.safe_load(Path(env_file).read_text())["dependencies"]
    conda = [dep for dep in dependencies if isinstance(dep, str)]
    return {_requirement_name(req) for req in [*conda, *pip_requirements(env_file)]}


def _module_file(module: str) -> Path | None:
    """The source file of one of the package's own modules, or None."""
    base = PACKAGE_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imported_modules(files: list[Path], extra_modules: list[str] = ()) -> set[str]:
    """Top-level names of the third-party modules imported by ``files`` and by the package
    modules they import, recursively (function-level imports included)."""
    pending = [*files, *(f for f in map(_module_file, extra_modules) if f)]
    seen: set[Path] = set()
    third_party: set[str] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from seqrerank import slurm` may name a module as well as an attribute.
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == PACKAGE:
                    pending += [f for f in [_module_file(name)] if f]
                elif top not in sys.stdlib_module_names and top != "__future__":
                    third_party.add(top)
    return third_party


def distributions_of(modules: set[str]) -> set[str]:
    """Normalized distribution names that provide ``modules`` (``PIL`` -> ``pillow``), as far
    as this interpreter knows them; a module it does not know stands for itself."""
    known = importlib.metadata.packages_distributions()
    return {normalize(known[m][0]) if m in known else normalize(m) for m in modules}


def python_version(env_file: str | Path) -> str:
    """The Python an env file asks for (``python=3.11``)."""
    dependencies = yaml.safe_load(Path(env_file).read_text())["dependencies"]
    pinned = [dep for dep in dependencies if isinstance(dep, str) and dep.startswith("python=")]
    if not pinned:
        raise ValueError(f"{env_file}: no python=<version> among the dependencies")
    return pinned[0].removeprefix("python=")


def resolution_errors(env_files: list[Path], platform: str = "x86_64-manylinux_2_28") -> dict:
    """Resolve each env's pip part against the package index for its Python on a Linux cluster
    node, all at once; return ``{env_file: resolver output}`` for each env that does not
    resolve (a pin that does not exist there, or pins that conflict).

    uv's resolver answers what ``pip install --dry-run`` would, for the env's Python and the
    cluster's platform rather than this machine's, in seconds rather than the minutes pip takes
    for the LLM and LAVIS envs.
    """
    uv = Path(sys.executable).with_name("uv")
    runs = {}
    for env_file in env_files:
        command = [str(uv), "pip", "compile", "--quiet", "--no-header", "-o", "/dev/null"]
        command += ["--python-version", python_version(env_file), "--python-platform", platform]
        run = subprocess.Popen(
            [*command, "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        run.stdin.write("\n".join(pip_requirements(env_file)) + "\n")
        run.stdin.close()
        runs[env_file] = run
    outputs = {env_file: run.stdout.read() for env_file, run in runs.items()}
    return {env: outputs[env] for env, run in runs.items() if run.wait() != 0}
