"""What GPUs this machine has, as CuPy sees them (nothing when CuPy or a GPU is missing)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPUInfo:
    count: int = 0
    model: str = ""
    memory_bytes: int = 0
    """Memory of the first device."""


def detect_gpus() -> GPUInfo:
    try:
        import cupy
    except Exception:  # noqa: BLE001 (not installed, or a broken CUDA install: no GPU to offer)
        return GPUInfo()
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count == 0:
            return GPUInfo()
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        return GPUInfo(count, name.decode() if isinstance(name, bytes) else str(name), int(props["totalGlobalMem"]))
    except Exception:  # noqa: BLE001 (CUDARuntimeError without a driver or device)
        return GPUInfo()
