"""read_regular allocates what the file holds, not its limit (1 GiB for a model): CPython's
read(n) allocates n bytes before it reads. The 1 GiB block was more than a small Pi may
allocate, and under qemu-user (make test-arm64) allocating it and shrinking it to the model's
size corrupted the heap: the "2-thread" segfault of Classifier was this."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from device.classifier import MAX_MODEL_BYTES
from device.errors import ModelError
from device.safe_open import MiB, read_regular


def peak_while(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_small_file_under_a_large_limit_allocates_little(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"m" * 100_000)
    data, peak = peak_while(lambda: read_regular(path, what="model", error=ModelError,
                                                 limit_bytes=MAX_MODEL_BYTES))
    assert data == b"m" * 100_000
    assert peak < 2 * MiB, f"read_regular allocated {peak} bytes for a 100 kB file"


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc (a file whose size says 0)")
def test_a_file_whose_size_says_zero_is_still_read_whole():
    data = read_regular("/proc/self/status", what="config file", error=ModelError, limit_bytes=MiB)
    assert b"Pid:" in data


def test_the_limit_still_holds_when_reading_past_the_size(tmp_path):
    # /proc files have no size: the read goes on past fstat's 0 and stops at the limit
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux /proc (a file whose size says 0)")
    with pytest.raises(ModelError, match="too large"):
        read_regular("/proc/self/status", what="config file", error=ModelError, limit_bytes=8)
