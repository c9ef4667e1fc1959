# The report's pages and figures come from the grid (seqrerank.report.entries); here each entry
# becomes a report() file: its caption, category and labels in the HTML report.
from seqrerank.report.entries import cell_pages, training_figures

REPORT = f"results/{RUN}/report"
REPORT_METRICS = config["report"]["metrics"]
CELL_PAGES = cell_pages(GRID, REPORT)
TRAINING_FIGURES = training_figures(GRID, REPORT)


def reported(entry):
    return report(entry["path"], **{key: v for key, v in entry.items() if key != "path"})


def report_files():
    """Everything the report shows; `rule all` asks for it so that the report is complete."""
    return [
        *rules.report_comparison.output,
        *expand(rules.report_dataset.output, dataset=GRID.datasets),
        *rules.plot_training.output,
        *rules.report_cells.output,
        *rules.report_benchmarks.output,
        *rules.report_provenance.output,
    ]
