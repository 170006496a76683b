import os

# One BLAS thread per process, set before numpy loads: the platform's
# concurrency is its processes (web workers, Celery's), and a BLAS thread pool
# in each of them fights the others for the cores: a shared-model refit's sums
# took 14 times the CPU with two threads on a busy two-core machine
# (docs/performance.md). An operator's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from oo_ml.celery import app as celery_app  # noqa: E402

__all__ = ("celery_app",)
