"""The tests' own shared code: importing it is cheap, what it computes is computed once."""

import importlib.util
import os

import helpers
import pytest

from alexnet_tf import data as data_lib


def test_importing_helpers_computes_no_dataset_statistics(monkeypatch):
    """Collecting any test module imports helpers; the bundled statistics wait for the
    first tiny config and are computed once per session after that."""

    def refuse(*args, **kwargs):
        raise AssertionError("dataset statistics computed at import")

    monkeypatch.setattr(data_lib, "dataset_stats", refuse)
    spec = importlib.util.spec_from_file_location("helpers_fresh", helpers.__file__)
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)  # fails here if the import computes them
    assert "data.stats_path" not in fresh.TINY
    with pytest.raises(AssertionError, match="computed at import"):
        fresh.tiny()  # the first tiny config is where they are computed
    monkeypatch.undo()
    path = helpers.bundled_stats()
    config = helpers.tiny()
    assert config.data.stats_path == path == helpers.bundled_stats() and os.path.isfile(path)
    size = config.data.resize_size
    assert data_lib.Stats.load(path).mean_image.shape == (size, size, 3)
