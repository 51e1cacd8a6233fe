"""A local Ray for a test module (2 CPUs, as this machine has): Serve and Ray shut down
after it. Without Ray Serve installed it skips, or fails under CI=true."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def local_ray() -> Iterator[None]:
    try:
        import ray
        from ray import serve
    except ImportError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Ray Serve is not installed: {e}")
        print(f"skipping the Ray tests: Ray Serve is not installed ({e})")
        pytest.skip(f"Ray Serve is not installed: {e}")
    ray.init(num_cpus=2, log_to_driver=False)
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()
