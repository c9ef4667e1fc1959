"""Run every benchmark: `python -m benchmarks` (what `make bench` does)."""

from benchmarks import dry_run_scale, multimodal_beauty, retrieval_beauty

if __name__ == "__main__":
    retrieval_beauty.main()
    multimodal_beauty.main()
    dry_run_scale.main()
