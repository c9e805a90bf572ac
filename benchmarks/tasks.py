"""Task functions for the benchmarks, importable by workers (benchmarks/ is on their path)."""


def increment(x: int) -> int:
    return x + 1


CPU_SECONDS: list[float] = []
"""The CPU time of each :func:`spectrum_peak` this process ran (its thread's, not the wall clock's),
for the verify benchmark to tell computing from waiting for a core."""


def spectrum_peak(seed: int, n: int = 2**18) -> float:
    """About 10-20 ms of NumPy: the highest peak of the spectrum of ``n`` Gaussian samples (an FFT, no
    BLAS threads: honest providers agree far inside ``--verify``'s tolerance)."""
    import time

    import numpy as np

    start = time.thread_time()
    x = np.random.default_rng(seed).standard_normal(n)
    peak = float(np.abs(np.fft.rfft(x)).max() / np.sqrt(n))
    CPU_SECONDS.append(time.thread_time() - start)
    return peak


def take_cpu_seconds() -> list[float]:
    """The CPU times recorded since the last call (run on each worker with ``client.run``)."""
    taken = CPU_SECONDS[:]
    del CPU_SECONDS[: len(taken)]
    return taken
