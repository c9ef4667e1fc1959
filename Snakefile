# Two-stage sequential recommendation: the whole dataset x retriever x reranker x mode grid.
# Run `snakemake --configfile config/demo.yaml` for the built-in demo; see README.md.
from pathlib import Path

from snakemake.utils import min_version

from seqrerank.config import validate_config

min_version("9.0")


# The default grid, read only when no --configfile is given: Snakemake would otherwise merge a
# command-line config into it, and e.g. the demo would gain config.yaml's Beauty dataset.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# The schema in its place in the workflow folder, whose rules/ the check of `resources` reads.
# Not snakemake.utils.validate: it raises at the first error and reads a fixed schema file,
# while this lists every error at once and checks each `methods.<name>.model` against the
# method's own keyword arguments (the same Draft 2020-12 validator, defaults filled in too).
validate_config(config, Path(workflow.basedir, "config/schema.yaml"), source="config")


# `snakemake --report results/<run>/report.html`: its front page (rules/report.smk has the rest).
report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/aggregate.smk"
include: "rules/data.smk"
include: "rules/features.smk"
include: "rules/item_text.smk"
include: "rules/models.smk"
include: "rules/retrieval.smk"
include: "rules/rerank.smk"
include: "rules/report.smk"


# The default target; it lives here because Snakemake ignores `default_target` in included files.
rule all:
    input:
        f"results/{RUN}/comparison.md",
        report_files(),
