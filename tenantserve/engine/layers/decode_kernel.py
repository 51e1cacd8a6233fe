"""The C++ decode-attention kernel (`csrc/paged_attention.cpp`), compiled on first use.

PyTorch's SDPA needs the decode batch's K/V gathered out of the paged cache and padded to
the longest sequence; the kernel reads them in place through the block tables. It is
built with torch's cpp_extension (a C++ compiler and ninja) into torch's extension cache
the first time an engine starts on a machine; where it cannot be built, the engine falls
back to the SDPA path and says so once in the log.

The build directory is per CPU capability (`-march=native` code from an AVX-512 host
would crash an AVX2 one sharing the cache). Builds are serialized by an `flock`, which
the kernel releases when a process dies; under it, a lock file torch's own build baton
left behind (a process killed mid-build) is stale and removed, so one killed start can
not hang every later one.
"""

from __future__ import annotations

import fcntl
import functools
import logging
from collections.abc import Callable
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DecodeKernel = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor
]
SOURCE = Path(__file__).parent / "csrc" / "paged_attention.cpp"
NAME = "tenantserve_paged_attention"


def build_directory() -> Path:
    """Where this machine's build lives: torch's extension cache, per CPU capability."""
    from torch.utils.cpp_extension import get_default_build_root

    capability = torch.backends.cpu.get_cpu_capability().lower()
    return Path(get_default_build_root()) / f"{NAME}-{capability}"


@functools.cache
def load_decode_kernel() -> DecodeKernel | None:
    """paged_decode_attention(q [B,Hq,D], k_cache, v_cache, block_table [B,nb] int64,
    context_lens [B] int64, scale) -> [B,Hq,D]; None if it cannot be built here."""
    logger.info("loading the decode-attention kernel (compiled on first use here, ~30 s)")
    try:
        from torch.utils.cpp_extension import load

        build = build_directory()
        build.mkdir(parents=True, exist_ok=True)
        with (build.parent / f"{build.name}.flock").open("w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # released with this process, however it ends
            (build / "lock").unlink(missing_ok=True)  # torch's baton: stale if still here
            module = load(
                name=NAME,
                sources=[str(SOURCE)],
                extra_cflags=["-O3", "-march=native", "-fopenmp"],
                extra_ldflags=["-fopenmp"],
                build_directory=str(build),
                verbose=False,
            )
    except Exception as e:  # no compiler, no ninja, a build error: fall back, loudly
        logger.warning("decode attention kernel unavailable (%s); using SDPA", e)
        return None
    kernel: DecodeKernel = module.paged_decode_attention
    return kernel
