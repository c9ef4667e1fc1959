"""Where a dataset's files are, by name: the prepared dataset's files and folders, and the demo's
raw files. Kept apart from the code that reads them (numpy, pandas) because the workflow's grid,
which every SLURM job parses, needs only the names."""

# The files of a prepared dataset (written by seqrerank.data.prepare), by role.
DATASET_FILES = {
    "train": "train.txt",
    "val": "val.txt",
    "test": "test.txt",
    "items": "items.csv",
    "stats": "stats.json",
}
IMAGES_FOLDER = "images"
# Item texts that data rules generate into their own files beside items.csv (column -> file).
ITEM_TEXT_FILES = {
    "caption": "captions.csv",
    "semantic_summary": "semantic_summaries.csv",
    "semantic_summary_small": "semantic_summaries_small.csv",
}
# The demo generator's Amazon category (ratings_Demo.csv, meta_Demo.json.gz).
DEMO_CATEGORY = "Demo"
