"""``otsr bench``: speed of the trainer loops (``speed``) and quality of the trained maps (``quality``)."""

from otsr.bench.speed import (
    BenchConfig,
    RandomImages,
    configs,
    loader_throughput,
    markdown,
    matmul_peak,
    pack,
    run_suite,
    time_loop,
    write_readme,
)

__all__ = ["BenchConfig", "RandomImages", "configs", "loader_throughput", "markdown", "matmul_peak", "pack",
           "run_suite", "time_loop", "write_readme"]
