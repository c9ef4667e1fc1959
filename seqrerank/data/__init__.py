"""Data preparation: raw sources -> filtered, reindexed, leave-one-out split datasets."""

from seqrerank.data.prepare import prepare_dataset

__all__ = ["prepare_dataset"]
