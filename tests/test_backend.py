"""funkcije.backend: array namespaces and host/device moves. GPU tests are marked `gpu`
and skip cleanly without CuPy or a CUDA device."""
import importlib.util

import numpy as np
import pytest

from funkcije import backend

HAS_CUPY = importlib.util.find_spec("cupy") is not None
gpu = pytest.mark.skipif(not (HAS_CUPY and backend.gpu_available()), reason="needs CuPy and a CUDA device")


def test_namespace_of_numpy_arrays_and_scalars():
    x = np.ones(3)
    assert backend.namespace(x) is np
    assert backend.namespace(x, None, 2.0, np.float32(1)) is np
    assert backend.namespace() is np
    with pytest.raises(TypeError, match="not an array"):
        backend.namespace([1, 2])


def test_namespace_follows_the_array_api_standard():
    xps = pytest.importorskip("array_api_strict")
    a = xps.asarray([1.0, 2.0])
    assert backend.namespace(a) is xps
    with pytest.raises(TypeError, match="mixed"):
        backend.namespace(a, np.ones(2))


def test_to_device_cpu_keeps_arrays_and_rebuilds_containers():
    w = np.arange(4.0)
    moved = backend.to_device({"W": w, "list": [w, (w, "s")], "n": 3}, "cpu")
    assert moved["W"] is w and moved["list"][0] is w and moved["list"][1][0] is w
    assert moved["list"][1][1] == "s" and moved["n"] == 3
    assert isinstance(moved["list"][1], tuple)
    assert backend.device_of(w) == "cpu"


def test_bad_device_and_missing_cupy_are_clear(monkeypatch):
    with pytest.raises(ValueError, match="device must be one of"):
        backend.to_device(np.ones(2), "tpu")
    import builtins

    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == "cupy" or name.startswith("cupy."):
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    with pytest.raises(ImportError, match=r"to_device: CuPy is not installed.*\.\[gpu\]"):
        backend.to_device(np.ones(2), "gpu")
    assert backend.gpu_available() is False


@gpu
def test_round_trip_through_the_gpu():
    import cupy

    x = {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}
    g = backend.to_device(x, "gpu")
    assert isinstance(g["a"], cupy.ndarray) and backend.device_of(g["a"]) == "gpu"
    assert backend.namespace(g["a"]) is cupy
    back = backend.to_device(g, "cpu")
    np.testing.assert_array_equal(back["a"], x["a"])
    with pytest.raises(TypeError, match="mixed"):
        backend.namespace(g["a"], x["a"])
