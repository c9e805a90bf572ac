"""Task functions for the benchmarks, importable by workers (benchmarks/ is on their path)."""


def increment(x: int) -> int:
    return x + 1
