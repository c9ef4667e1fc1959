"""The HTML report: its tables and figures (unit tests), and `snakemake --report` of the demo run
(the ``demo_report`` fixture), read back from the file and rendered in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from seqrerank.comparison import RANDOM_WEIGHTS_FOOTNOTE
from seqrerank.config import validate_config
from seqrerank.registry import method_spec
from seqrerank.report.html import table
from seqrerank.report.pages import write_comparison_pages
from seqrerank.report.plots import metric_bars, training_curves
from seqrerank.report.provenance import file_digest

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "config/demo.yaml").read_text())
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# --- tables and figures -------------------------------------------------------------------------


def test_table_marks_the_best_value_per_group_and_attaches_significance_marks() -> None:
    frame = pd.DataFrame(
        {
            "split": ["val", "val", "test", "test"],
            "ndcg@10": [0.1, 0.3, 0.5, 0.2],
            "ndcg@10_sig": ["", "*", "", ""],
        }
    )
    markup = table(frame, best=["ndcg@10"], within="split")
    best = re.findall(r'<td class="number best">([^<]+)', markup)
    assert best == ["0.3000", "0.5000"]
    assert '0.3000<sup class="mark">*</sup>' in markup
    assert "ndcg@10_sig" not in markup  # the marks' column is not shown on its own


def demo_table() -> pd.DataFrame:
    cells = [  # retriever, reranker, mode, ndcg@10
        ("popularity", "none", "retrieval", 0.10),
        ("lrurec", "none", "retrieval", 0.20),
        ("lrurec", "bert4rec", "retrieval", 0.25),
        ("none", "bert4rec", "ground_truth", 0.60),
    ]
    return pd.DataFrame(
        [
            {"dataset": "d", "retriever": r, "reranker": k, "mode": m, "split": s, "ndcg@10": v}
            for r, k, m, v in cells
            for s in ("val", "test")
        ]
    )


def with_base_models(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the base-model columns of the comparison table: a random-weight qwen."""
    frame = frame.copy()
    qwen = frame["reranker"] == "qwen"
    frame["base_model"] = qwen.map({True: "results/models/tiny-qwen3", False: ""})
    frame["text_model"] = ""
    frame["random_weights"] = qwen
    return frame


def qwen_table() -> pd.DataFrame:
    """:func:`demo_table` with a qwen reranker on a random-weight base model."""
    qwen = [
        {"dataset": "d", "retriever": "lrurec", "reranker": "qwen", "mode": "retrieval",
         "split": split, "ndcg@10": 0.05}
        for split in ("val", "test")
    ]  # fmt: skip
    return with_base_models(pd.concat([demo_table(), pd.DataFrame(qwen)], ignore_index=True))


def test_the_report_marks_random_weight_rows_above_both_tables(tmp_path: Path) -> None:
    """The caveat comes before each table, the mark beside the reranker, and the comparison
    page names every row's base model."""
    qwen_table().to_csv(tmp_path / "comparison.csv", index=False)
    page, summary = tmp_path / "comparison.html", tmp_path / "summary.html"
    write_comparison_pages(
        tmp_path / "comparison.csv", ["ndcg@10"], page, summary, [tmp_path / "c.svg"]
    )
    caveat = RANDOM_WEIGHTS_FOOTNOTE.split(",")[0]
    for text in (page.read_text(), summary.read_text()):
        assert 0 <= text.index(caveat) < text.index("<table")
        assert "<td>qwen‡</td>" in text and "<td>bert4rec</td>" in text
    assert "<th>base_model</th>" in page.read_text()
    assert "<td>results/models/tiny-qwen3</td>" in page.read_text()
    assert 'class="compact"' in summary.read_text()


def test_a_report_without_random_weight_rows_has_no_caveat(tmp_path: Path) -> None:
    with_base_models(demo_table()).to_csv(tmp_path / "comparison.csv", index=False)
    page, summary = tmp_path / "comparison.html", tmp_path / "summary.html"
    write_comparison_pages(
        tmp_path / "comparison.csv", ["ndcg@10"], page, summary, [tmp_path / "c.svg"]
    )
    assert "‡" not in page.read_text() and "‡" not in summary.read_text()


def test_metric_bars_hatch_the_random_weight_cells() -> None:
    axes = metric_bars(qwen_table(), "ndcg@10").axes[0]
    labels = [label.get_text() for label in axes.get_xticklabels()]
    hatched = [label for bar, label in zip(axes.patches, labels, strict=True) if bar.get_hatch()]
    assert hatched == ["lrurec → qwen‡"]
    assert any("random-weight" in text.get_text() for text in axes.get_legend().get_texts())


def test_metric_bars_draw_every_cell_and_the_best_stage1_value_as_reference_line() -> None:
    axes = metric_bars(demo_table(), "ndcg@10").axes[0]
    assert [bar.get_height() for bar in axes.patches] == [0.10, 0.20, 0.25, 0.60]
    (reference,) = axes.get_lines()
    assert list(reference.get_ydata()) == [0.20, 0.20]
    assert "lrurec" in reference.get_label()


def test_training_curves_mark_the_best_epoch_in_both_panels() -> None:
    history = [
        {"epoch": e, "loss": 1.0 / e, "val": {"ndcg@10": v}, "best": b}
        for e, v, b in [(1, 0.1, True), (2, 0.3, True), (3, 0.2, False), (4, 0.25, False)]
    ]
    figure = training_curves(history, "ndcg@10", "model")
    for axes in figure.axes:
        curve, best_epoch = axes.get_lines()
        assert list(curve.get_xdata()) == [1, 2, 3, 4]
        assert list(best_epoch.get_xdata()) == [2, 2]
    assert list(figure.axes[1].get_lines()[0].get_ydata()) == [0.1, 0.3, 0.2, 0.25]


# --- the demo's report --------------------------------------------------------------------------


def report_results(report: Path) -> dict[str, dict]:
    """The results a Snakemake report embeds (its ``var results = {...}``), by path."""
    match = re.search(r"var results = (\{.*?\});\n", report.read_text(), flags=re.DOTALL)
    assert match, "no results in the report"
    return json.loads(match.group(1))


def embedded(result: dict) -> str:
    return base64.b64decode(result["data_uri"].split("base64,", 1)[1]).decode()


@pytest.fixture(scope="module")
def results(demo_report: Path) -> dict[str, dict]:
    return report_results(demo_report)


@pytest.fixture(scope="module")
def demo_config() -> dict:
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    return validate_config(config, REPO / "config/schema.yaml")


def by_name(results: dict[str, dict]) -> dict[str, dict]:
    return {Path(path).name: result for path, result in results.items()}


def test_report_is_one_file_that_loads_nothing_from_elsewhere(demo_report: Path) -> None:
    text = demo_report.read_text()
    assert not re.search(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=[\"']?(?:https?:)?//", text)


def test_report_holds_the_comparison_table_with_every_row(demo_run, results) -> None:
    comparison = pd.read_csv(demo_run.results / "demo/comparison.csv")
    page = embedded(by_name(results)["comparison.html"])
    rows = re.findall(r"<tr>(.*?)</tr>", page.split("<tbody>", 1)[1])
    assert len(rows) == len(comparison)
    assert 'class="sortable"' in page and "addEventListener" in page
    # The best test NDCG@10 among retrieval-mode cells is marked.
    retrieval = comparison[(comparison["split"] == "test") & (comparison["mode"] == "retrieval")]
    assert f'<td class="number best">{retrieval["ndcg@10"].max():.4f}' in page


def test_report_has_one_bar_chart_per_configured_metric(results, demo_config) -> None:
    charts = {
        name: result for name, result in by_name(results).items() if name.startswith("metric_")
    }
    assert sorted(charts) == sorted(f"metric_{m}.svg" for m in demo_config["report"]["metrics"])
    for name, chart in charts.items():
        assert chart["mime_type"] == "image/svg+xml"
        assert embedded(chart).lstrip().startswith("<?xml")
        assert name == f"metric_{chart['labels']['metric']}.svg"


def test_report_has_training_curves_of_every_trained_model(results) -> None:
    curves = sorted(
        name
        for name, result in by_name(results).items()
        if result["labels"].get("result") == "training curves"
    )
    # A method that does not train (popularity) has no curve. The demo trains candidate-list
    # rerankers once, on the ground-truth lists.
    trained = [r for r in DEMO["retrievers"] if method_spec(r).trains_on != "nothing"]
    candidate_rerankers = [r for r in DEMO["rerankers"] if method_spec(r).trains_on == "candidates"]
    assert curves == sorted(
        ["rerank_bert4rec_trained_on_sequences_seed42.svg"]
        + [f"rerank_{r}_trained_on_ground_truth_seed42.svg" for r in candidate_rerankers]
        + [f"retrieval_{retriever}_seed42.svg" for retriever in trained]
    )


def test_report_has_a_page_per_cell(demo_run, results) -> None:
    cells = {
        (r["labels"]["retriever"], r["labels"]["reranker"], r["labels"]["mode"]): embedded(r)
        for r in results.values()
        if r["labels"].get("result") == "cell"
    }
    expected = [(r, "none", "retrieval") for r in DEMO["retrievers"]]
    for reranker in DEMO["rerankers"]:
        expected += [(r, reranker, "retrieval") for r in DEMO["retrievers"]]
        expected += [("none", reranker, "ground_truth")]
    assert sorted(cells) == sorted(expected)
    page = cells[("lrurec", "bert4rec", "retrieval")]
    metrics = json.loads(
        (demo_run.results / "demo/rerank/bert4rec/retrieval/lrurec/seed42/metrics.json").read_text()
    )
    assert f"{metrics['test']['ndcg@10']:.4f}" in page
    assert f"{metrics['test']['conditional']['ndcg@10']:.4f}" in page
    assert "results/demo/retrieval/lrurec/seed42/model.pt" in page
    assert "results/demo/rerank/bert4rec/trained_on_sequences/seed42/model.pt" in page


def test_report_has_the_dataset_statistics(demo_run, results) -> None:
    names = by_name(results)
    stats = json.loads((demo_run.results / "demo/data/stats.json").read_text())
    page = embedded(names["data.html"])
    for step in stats["filters"]:
        assert f"<td>{step['step']}</td>" in page
    assert f"<td>{stats['interactions']}</td>" in page
    assert names["sequence_lengths.svg"]["mime_type"] == "image/svg+xml"


def test_report_provenance_traces_every_model_file_and_the_commit(demo_run, results) -> None:
    page = embedded(by_name(results)["provenance.html"])
    models = sorted(demo_run.results.glob("demo/*/**/model.pt"))
    # every retriever, and one model per reranker that every cell shares
    assert len(models) == len(DEMO["retrievers"]) + len(DEMO["rerankers"])
    for model in models:
        assert f"{model.relative_to(demo_run.workdir)} (sha256 {file_digest(model)})" in page
    commit = subprocess.run(
        ["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if commit:
        assert commit in page
    assert "<th>torch</th>" in page and "run: demo" in page


def test_demo_table_names_each_rows_base_model_and_marks_the_random_weight_ones(
    demo_run,
) -> None:
    """The demo's LLM and VIP5 rerankers run on the tiny_model rule's random-weight
    checkpoints: their rows say so, in the CSV and beside the reranker in comparison.md, and
    a captioned or summarised row names the model that wrote its item texts."""
    comparison = pd.read_csv(demo_run.results / "demo/comparison.csv", keep_default_na=False)
    random = comparison["reranker"].isin(
        [r for r in DEMO["rerankers"] if "model_name" in DEMO["methods"][r]["model"]]
    )
    assert random.any() and (comparison["random_weights"].astype(str) == "True").eq(random).all()
    assert comparison.loc[random, "base_model"].str.startswith("results/models/tiny-").all()
    assert (comparison.loc[~random, "base_model"] == "").all()
    caption = comparison[comparison["reranker"] == "qwen3vl_caption"]
    assert (caption["text_model"] == DEMO["captions"]["model_name"]).all()
    markdown = (demo_run.results / "demo/comparison.md").read_text()
    assert "| lrurec | qwen‡ | retrieval |" in markdown
    assert "| lrurec | bert4rec | retrieval |" in markdown
    assert RANDOM_WEIGHTS_FOOTNOTE in markdown


def test_report_benchmarks_list_every_job_of_the_run(demo_run, results) -> None:
    page = embedded(by_name(results)["benchmarks.html"])
    benchmarks = sorted(demo_run.results.glob("*/benchmarks/*.tsv"))
    trained = {path.stem for path in benchmarks if path.stem.startswith("train_retriever_")}
    assert trained == {f"train_retriever_{r}_seed42" for r in DEMO["retrievers"]}
    for path in benchmarks:
        assert f"<td>{path.stem}</td>" in page


# --- in a browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: .ci/run installs it in CI")
        pytest.skip(message)
    return path


def run_chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_report_renders_the_table_in_headless_chromium_without_script_errors(
    demo_report: Path, demo_run, chromium: str, tmp_path: Path
) -> None:
    url = demo_report.as_uri()
    loaded = run_chromium(chromium, tmp_path / "profile", "--dump-dom", url)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    console = re.findall(r"CONSOLE[^\]]*\] (.*)", loaded.stderr)
    assert console, "no console output: were the report's scripts run at all?"
    assert not [line for line in console if "Uncaught" in line], console

    # The front page, which the report's React app renders, shows the test rows of the table.
    rendered = loaded.stdout.split('<div id="app">', 1)[1]
    summary = rendered.split('<div class="seqrerank">', 1)[1].split("</table>", 1)[0]
    comparison = pd.read_csv(demo_run.results / "demo/comparison.csv")
    assert summary.count("<tr>") == 1 + (comparison["split"] == "test").sum()

    screenshot = tmp_path / "report.png"
    shot = run_chromium(
        chromium,
        tmp_path / "profile",
        f"--screenshot={screenshot}",
        "--window-size=1400,1000",
        url,
    )
    assert shot.returncode == 0, shot.stderr[-3000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one


# Measures the front page's table once the report's app has drawn it, and writes the result
# into the page, where --dump-dom shows it: the viewport's width, the table's headers' boxes,
# and every box around the table that scrolls sideways.
MEASURE_FRONT_TABLE = """
const poll = setInterval(() => {
  const table = document.querySelector("#app .seqrerank table");
  if (!table) return;
  clearInterval(poll);
  const scrolling = [];
  for (let box = table.parentElement; box; box = box.parentElement) {
    const overflow = getComputedStyle(box).overflowX;
    if (["auto", "scroll"].includes(overflow) && box.scrollWidth > box.clientWidth + 1) {
      scrolling.push(box.className || box.tagName);
    }
  }
  const headers = [...table.querySelectorAll("thead th")].map((th) => {
    const box = th.getBoundingClientRect();
    return { text: th.textContent, left: box.left, right: box.right, top: box.top };
  });
  const out = document.createElement("pre");
  out.id = "front-table-layout";
  out.textContent = JSON.stringify({ viewport: window.innerWidth, scrolling, headers });
  document.body.append(out);
}, 100);
"""


def test_report_front_page_shows_every_metric_column_at_1400_px(
    demo_report: Path, demo_config: dict, chromium: str, tmp_path: Path
) -> None:
    """In a 1400 px wide window the front page's table shows all its columns, metrics
    included, without sideways scrolling, and starts below the top of the page (Snakemake's
    page centres its content vertically, which would cut off the top of a tall table)."""
    report = demo_report.read_text()
    head, tail = report.rsplit("</body>", 1)
    measured = tmp_path / "report.html"
    measured.write_text(f"{head}<script>{MEASURE_FRONT_TABLE}</script></body>{tail}")
    loaded = run_chromium(
        chromium, tmp_path / "profile", "--window-size=1400,1000", "--dump-dom", measured.as_uri()
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    match = re.search(r'<pre id="front-table-layout">(.*?)</pre>', loaded.stdout, re.DOTALL)
    assert match, "the front page's table was not drawn"
    layout = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert layout["viewport"] == 1400
    headers = {header["text"]: header for header in layout["headers"]}
    assert set(demo_config["report"]["metrics"]) <= set(headers)
    assert layout["scrolling"] == [], layout
    for header in headers.values():
        assert 0 <= header["left"] < header["right"] <= layout["viewport"], header
        assert header["top"] >= 0, header
