"""The hot path's JSON writer (oo_ml.db.json_dumps)."""

import json

import numpy as np

from oo_ml.db import json_dumps


def test_it_writes_what_json_reads_back_the_same():
    value = {
        "candidates": [{"id": "t1", "content": "Fé", "features": {"priority": 4}}],
        "features": [[0.1, 0.30000000000000004, -1e-07, 1.0]],
        "estimates": [np.float64(0.25), np.int64(3)],
        "profile": {"preferred_hour": None, "completion_rate_30d": 0.5},
    }
    written = json_dumps(value)
    assert isinstance(written, bytes)  # orjson wrote it
    expected = {**value, "estimates": [0.25, 3]}
    assert json.loads(written) == expected


def test_what_orjson_refuses_json_writes_as_before():
    huge = {"tip_volume_30d": 10**301}  # a whole number past 64 bits
    assert json_dumps(huge) == json.dumps(huge)
