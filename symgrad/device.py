"""Device interop: results returned where theta lives, in the caller's array type."""
from __future__ import annotations

from typing import Any

__all__ = ["as_caller"]


def as_caller(out: Any, like: Any) -> Any:
    """A numba-cuda device array ``out`` as the caller's array type (``like``'s), without a copy:
    a CuPy theta gets CuPy results, so that NumPy functions and operators dispatch to the GPU
    (how the optimizers run there unchanged); a PyTorch one gets tensors."""
    lib = type(like).__module__.split(".")[0]
    if lib == "cupy":
        import cupy
        return cupy.asarray(out)
    if lib == "torch":
        import torch
        return torch.as_tensor(out, device="cuda")
    return out
