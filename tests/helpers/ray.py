"""A local Ray for a test module (2 CPUs, as this machine has): Serve and Ray shut down
after it. Without Ray Serve installed it skips, or fails under CI=true."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers.services import unavailable


@contextmanager
def local_ray() -> Iterator[None]:
    try:
        import ray
        from ray import serve
    except ImportError as e:
        unavailable(f"Ray Serve is not installed ({e})")
    ray.init(num_cpus=2, log_to_driver=False)
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()
