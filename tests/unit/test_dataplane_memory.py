"""The data plane's allocator setting: glibc takes it, once per process."""

from __future__ import annotations

import ctypes
import sys

import pytest

from workers.dataplane import memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_allocator_keeps_stream_buffers_and_the_setting_is_made_once() -> None:
    try:
        ctypes.CDLL(None).mallopt  # noqa: B018
    except AttributeError:
        pytest.skip("a C library without mallopt")
    assert memory.keep_stream_buffers() is True
    assert memory.keep_stream_buffers() is True
    assert memory._done == [True]
