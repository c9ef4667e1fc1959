"""The one place where method names map to implementations.

Adding a method is one new file under ``seqrerank/methods/`` plus one line here. Entries are
strings so that reading the registry (the Snakefile does, for every job) never imports torch.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MethodSpec:
    target: str
    """``module:Class`` implementing :class:`seqrerank.methods.base.Recommender`."""
    trains_on: Literal["nothing", "sequences", "candidates"] = "sequences"
    """What training consumes. A reranker that trains on ``sequences`` is trained once per
    dataset and serves both candidate modes; one that trains on ``candidates`` is trained per
    candidate source (ground truth, or each retriever), because its training examples differ."""
    features: tuple[str, ...] = ()
    """Item features (modalities) the method reads; the workflow builds those of them that the
    dataset provides and passes them to ``from_data``."""
    needs_features: bool = True
    """Whether a dataset must provide one of ``features``; ``False``: the method also ranks
    without any (ltr, whose similarity features are some among many)."""
    env: str = "retrieval"
    """The software its jobs run in: the conda env ``envs/<env>.yaml`` and the Apptainer image
    ``containers/<env>.def`` built from it."""
    item_texts: tuple[str, ...] = ()
    """Generated item texts the method reads (item-table columns that data rules write, see
    ``seqrerank.data.dataset.ITEM_TEXT_FILES``), so the workflow produces them first."""
    images: bool = False
    """Whether the method shows the item images themselves (given through ``from_data``)."""
    reads_lists: bool = False
    """Whether the method reads the exported candidate lists (``retrieved.csv``, all three
    splits) of the models named in its ``sources`` parameter (``methods.<name>.model.sources``),
    given through ``from_data``'s ``retrieved``: the workflow hands each over as the named input
    ``retrieved_<source>``."""


# Item features, and the dataset setting that provides each (for error messages).
MODALITIES = ("image", "text", "attributes")
FEATURE_SOURCES = {
    "image": "use_image: true (with images_dir or image URLs in the metadata)",
    "text": "use_text: true (item text comes from the metadata)",
    "attributes": "attributes: <item -> attribute ids JSON> (source: sequences)",
}


RETRIEVERS: dict[str, MethodSpec] = {
    "popularity": MethodSpec("seqrerank.methods.popularity:Popularity", trains_on="nothing"),
    "lrurec": MethodSpec("seqrerank.methods.lrurec:LRURec"),
    # Also a reranker: in a grid that has it in both lists, it is trained once, as a retriever.
    "bert4rec": MethodSpec("seqrerank.methods.bert4rec:BERT4Rec"),
    "vbpr": MethodSpec("seqrerank.methods.vbpr:VBPR", features=MODALITIES),
    "mmgcn": MethodSpec("seqrerank.methods.mmgcn:MMGCN", features=MODALITIES),
    "bm3": MethodSpec("seqrerank.methods.bm3:BM3", features=MODALITIES),
    # Merges the exported lists of other retrievers of the grid.
    "fusion": MethodSpec("seqrerank.methods.fusion:Fusion", trains_on="nothing", reads_lists=True),
}

RERANKERS: dict[str, MethodSpec] = {
    "bert4rec": MethodSpec("seqrerank.methods.bert4rec:BERT4Rec"),
    # LightGBM LambdaRank over list features: its sources' scores and ranks, popularity,
    # transitions, similarity in every modality the dataset has.
    "ltr": MethodSpec(
        "seqrerank.methods.ltr:LTR",
        trains_on="candidates",
        features=MODALITIES,
        needs_features=False,
        reads_lists=True,
    ),
    "qwen": MethodSpec("seqrerank.methods.qwen:Qwen", trains_on="candidates", env="llm"),
    "qwen3vl_raw_image": MethodSpec(
        "seqrerank.methods.qwen3vl:Qwen3VLRawImage", trains_on="candidates", env="llm", images=True
    ),
    "qwen3vl_caption": MethodSpec(
        "seqrerank.methods.qwen3vl:Qwen3VLCaption",
        trains_on="candidates",
        env="llm",
        item_texts=("caption",),
    ),
    "qwen3vl_semantic_summary": MethodSpec(
        "seqrerank.methods.qwen3vl:Qwen3VLSemanticSummary",
        trains_on="candidates",
        env="llm",
        item_texts=("semantic_summary",),
    ),
    "qwen3vl_semantic_summary_small": MethodSpec(
        "seqrerank.methods.qwen3vl:Qwen3VLSemanticSummarySmall",
        trains_on="candidates",
        env="llm",
        item_texts=("semantic_summary_small",),
    ),
    "vip5": MethodSpec(
        "seqrerank.methods.vip5:VIP5", trains_on="candidates", features=("image",), env="vip5"
    ),
}

MODES = ("retrieval", "ground_truth")


def method_spec(name: str) -> MethodSpec:
    spec = RETRIEVERS.get(name) or RERANKERS.get(name)
    if spec is None:
        valid = ", ".join(sorted({*RETRIEVERS, *RERANKERS}))
        raise KeyError(f"unknown method {name!r}; registered methods: {valid}")
    return spec


def load_method(name: str) -> type:
    """Import and return the class registered under ``name``."""
    module_name, class_name = method_spec(name).target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def model_parameters(name: str) -> list[str]:
    """The keyword arguments that config (``methods.<name>.model``) may give the method's class:
    those of its ``__init__`` that have a default (the others come from ``from_data``), as
    :func:`seqrerank.methods.base.check_params` reads them from the class.

    Read from the source with ``ast``, not by importing the class (which imports torch), so that
    the config check in every parse of the Snakefile stays cheap."""
    module, class_name = method_spec(name).target.split(":")
    init = _init_arguments(module, class_name)
    if init is None:  # no __init__ of its own along its bases here: nn.Module's, which takes none
        return []
    positional = [*init.posonlyargs, *init.args]
    defaulted = positional[len(positional) - len(init.defaults) :]
    keywords = [arg.arg for arg in defaulted if arg not in init.posonlyargs]
    pairs = zip(init.kwonlyargs, init.kw_defaults, strict=True)
    return keywords + [arg.arg for arg, default in pairs if default is not None]


def _init_arguments(module: str, class_name: str) -> ast.arguments | None:
    """The arguments of the ``__init__`` a class defines or inherits, following its bases depth
    first, left to right (the MRO, short of diamonds) through the modules of this package."""
    tree = _package_module(module)
    if tree is None:
        return None
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    if class_name not in classes:
        imported = {
            alias.asname or alias.name: (node.module, alias.name)
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and node.module
            for alias in node.names
        }
        return _init_arguments(*imported[class_name]) if class_name in imported else None
    for node in classes[class_name].body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            return node.args
    for base in classes[class_name].bases:
        init = _init_arguments(module, base.id) if isinstance(base, ast.Name) else None
        if init is not None:
            return init
    return None


@functools.cache
def _package_module(module: str) -> ast.Module | None:
    """The parsed source of a module of this package (None for any other), found without
    importing it."""
    if module.partition(".")[0] != __name__.partition(".")[0]:
        return None
    origin = importlib.util.find_spec(module).origin
    with open(origin, encoding="utf-8") as f:
        return ast.parse(f.read(), origin)
