"""Run every benchmark: `python -m benchmarks` (what `make bench` does). The GPU benchmarks
(`python -m benchmarks.llm_gpu`, `python -m benchmarks.llm_distributed_gpu`,
`python -m benchmarks.vip5_gpu`) run only on a CUDA machine and are left out here."""

from benchmarks import (
    dry_run_scale,
    llm_scoring,
    multimodal_beauty,
    retrieval_beauty,
    vip5_scoring,
)

if __name__ == "__main__":
    retrieval_beauty.main()
    multimodal_beauty.main()
    llm_scoring.main()
    vip5_scoring.main()
    dry_run_scale.main()
