"""``lungseg serve`` hands its flags to each worker as ``LUNGSEG_*`` variables: whatever
the settings, a worker reads back the same ones."""

from __future__ import annotations

import os
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from lungseg.serve.settings import ServeSettings

settings_strategy = st.builds(
    ServeSettings,
    model=st.none() | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1),
    max_slice_mb=st.floats(0.001, 1e5, allow_nan=False),
    max_volume_mb=st.floats(0.001, 1e6, allow_nan=False),
    threads=st.integers(0, 256),
    infection=st.booleans(),
    max_jobs=st.integers(1, 64),
    max_queue=st.integers(0, 1000),
    max_slices=st.integers(1, 100_000),
    max_voxels=st.integers(1, 10**12),
)


@given(settings_strategy)
def test_settings_survive_the_trip_to_a_worker(settings: ServeSettings) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LUNGSEG_")}
    with mock.patch.dict(os.environ, {**clean, **settings.to_env()}, clear=True):
        assert ServeSettings.from_env() == settings


def test_no_variables_give_the_defaults() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LUNGSEG_")}
    with mock.patch.dict(os.environ, clean, clear=True):
        assert ServeSettings.from_env() == ServeSettings()
