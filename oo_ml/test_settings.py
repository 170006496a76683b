"""The test suite's settings: the platform's own, with a key and a cache of its
own given through the environment (before the settings read it), so the
production rule against the built-in key stays as it is. Processes the tests
start (gunicorn, Celery workers) inherit both.
"""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-suite-only-" + "k3y-" * 12)
# Per process, cleared between tests (conftest), so no test inherits another's
# failed logins or tokens.
os.environ.setdefault("OO_ML_CACHE_URL", "locmem://")

from oo_ml.settings import *  # noqa: E402, F403
