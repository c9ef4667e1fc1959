"""Data preparation: raw sources -> filtered, reindexed, leave-one-out split datasets."""
