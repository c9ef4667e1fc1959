"""Models from the hub on offline compute nodes: the download_models rule fetches what the config
names into the model cache (here from a stand-in for the hub on 127.0.0.1), and a job then loads
it offline; a model missing from the cache is an error that names it and the rule."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import run_snakemake, serving, snakemake_env, tiny_model

from seqrerank.hub import HUB_MODELS, ModelNotCachedError, from_cache, is_hub_id

pytestmark = pytest.mark.usefixtures("tiny_models")

STAND_IN = "stand-in/tiny-qwen3"
COMMIT = "0" * 40


class StandInHub(BaseHTTPRequestHandler):
    """What snapshot_download asks of the hub, for one repository: a folder of files."""

    folder: Path

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if f"/api/models/{STAND_IN}/tree/" in self.path:
            files = [
                {"type": "file", "path": p.name, "size": p.stat().st_size, "oid": COMMIT}
                for p in sorted(self.folder.iterdir())
            ]
            self.reply(json.dumps(files).encode(), content_type="application/json")
        elif self.path.startswith(f"/api/models/{STAND_IN}/revision/"):
            info = {"id": STAND_IN, "sha": COMMIT, "siblings": []}
            self.reply(json.dumps(info).encode(), content_type="application/json")
        elif self.path.startswith(f"/{STAND_IN}/resolve/"):
            name = self.path.split("/resolve/", 1)[1].split("/", 1)[1].split("?")[0]
            self.reply((self.folder / name).read_bytes())
        else:
            self.send_error(404)

    def do_HEAD(self) -> None:
        self.head_only = True
        self.do_GET()

    def reply(self, body: bytes, content_type: str = "application/octet-stream") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.end_headers()
        if not getattr(self, "head_only", False):
            self.wfile.write(body)


@pytest.fixture
def hub() -> str:
    """The endpoint of a stand-in hub that serves the tiny Qwen3 checkpoint as STAND_IN."""
    handler = type("Handler", (StandInHub,), {"folder": Path(tiny_model("qwen3"))})
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as httpd:
        yield f"http://127.0.0.1:{httpd.server_port}"


def load_offline(cache: Path, model: str) -> subprocess.CompletedProcess:
    """A job's loading of ``model`` as the workflow runs it: from the cache, offline."""
    code = (
        "import sys\n"
        "from seqrerank.hub import use_cache\n"
        "use_cache(sys.argv[1])\n"
        "from seqrerank.llm.loading import LoadSettings, load_pretrained\n"
        "model, tokenizer = load_pretrained(LoadSettings(model_name=sys.argv[2]))\n"
        "print(type(model).__name__, tokenizer('Hello, world!').input_ids)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(cache), model],
        capture_output=True,
        text=True,
        env={**snakemake_env(), "HF_ENDPOINT": "http://127.0.0.1:9"},  # nothing listens there
    )


def test_the_download_rule_fetches_the_configs_models_and_jobs_load_them_offline(
    hub: str, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    config = {
        "run": "hub",
        "datasets": {"a": {"source": "synthetic"}},
        "retrievers": ["popularity"],
        "rerankers": ["qwen"],
        "methods": {"qwen": {"model": {"model_name": STAND_IN}}},
        "model_cache": str(cache),
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    args = [HUB_MODELS, "--cores", "1", "--configfile", tmp_path / "config.yaml"]
    with pytest.MonkeyPatch.context() as patch:  # the rule fetches from the stand-in hub
        patch.setenv("HF_ENDPOINT", hub)
        result = run_snakemake(*args, "--directory", tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    fetched = json.loads((tmp_path / HUB_MODELS).read_text())
    assert list(fetched) == [STAND_IN]
    assert Path(fetched[STAND_IN], "model.safetensors").exists()

    loaded = load_offline(cache, STAND_IN)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split()[0] == "Qwen3ForCausalLM"
    assert "[9707, 11, 1879, 0]" in loaded.stdout  # the real Qwen vocabulary came along


def test_a_model_missing_from_the_cache_names_itself_and_the_rule(tmp_path: Path) -> None:
    loaded = load_offline(tmp_path / "empty", "Qwen/Qwen2.5-1.5B-Instruct")
    assert loaded.returncode != 0
    message = loaded.stderr.split("ModelNotCachedError: ", 1)[1]
    assert message.startswith("Qwen/Qwen2.5-1.5B-Instruct is not in the model cache")
    assert str(tmp_path / "empty") in message and "download_models" in message


def test_only_hub_models_are_fetched() -> None:
    assert is_hub_id("Qwen/Qwen2.5-7B-Instruct") and is_hub_id("t5-small")
    for local in ("/models/qwen", "./qwen", "results/models/tiny-qwen3", "~/qwen", None, ""):
        assert not is_hub_id(local)


def test_other_failures_to_load_are_not_called_missing_models(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(OSError, match="disk full") as error, from_cache("org/model"):
        raise OSError("disk full")
    assert not isinstance(error.value, ModelNotCachedError)
