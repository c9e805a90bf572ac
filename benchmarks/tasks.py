"""Task functions for the benchmarks, importable by workers (benchmarks/ is on their path)."""


def increment(x: int) -> int:
    return x + 1


def spectrum_peak(seed: int, n: int = 2**18) -> float:
    """About 20 ms of NumPy: the highest peak of the spectrum of ``n`` Gaussian samples (an FFT, no
    BLAS threads: honest providers agree far inside ``--verify``'s tolerance)."""
    import numpy as np

    x = np.random.default_rng(seed).standard_normal(n)
    return float(np.abs(np.fft.rfft(x)).max() / np.sqrt(n))
