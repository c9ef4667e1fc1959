"""Run every CPU benchmark: `python -m benchmarks` (what `make bench` does). The GPU benchmarks
run only on a CUDA machine and are left out here: `python -m benchmarks.gpu` (the issue's
figures on one GPU; `make gpu-check` runs it with the GPU tests), `python -m benchmarks.llm_gpu`,
`python -m benchmarks.llm_distributed_gpu` and `python -m benchmarks.vip5_gpu`."""

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
