"""The optimizers on device vectors: every method runs unchanged on a CuPy-like theta, keeps its
vectors on the device and brings back only scalars (dense matrix methods: their factorization).

``DeviceArray`` (tests/optim/device_double.py) stands in for CuPy and refuses implicit host
conversion; the results must equal the NumPy run's bit for bit, since the same operations run.
"""
from __future__ import annotations

import numpy as np
import pytest

import symgrad as sg
from symgrad.optim import METHODS

from device_double import DeviceArray, DeviceObjective

#: methods whose dense matrix (Hessian, Gauss-Newton, output Jacobian) is factored on the host
DENSE = {"newton": {}, "gauss_newton": {"solver": "dense"}, "levenberg_marquardt": {"solver": "jacobian"}}


@pytest.mark.parametrize("method", sorted(METHODS) + ["gauss_newton dense", "levenberg_marquardt jacobian"])
def test_every_method_runs_on_device_vectors(sine, method):
    name, _, solver = method.partition(" ")
    options = {"solver": solver} if solver else {}
    opts = dict(max_iter=4, tol=0, **options)
    if METHODS[name].stochastic:
        opts["batch_size"] = 16
    host = sg.optim.minimize(sine.model, sine.theta0, *sine.data, method=name, **opts)
    DeviceArray.host_copies = 0
    dev = sg.optim.minimize(DeviceObjective(sine.model.bind(*sine.data)), DeviceArray(sine.theta0),
                            method=name, **opts)
    assert isinstance(dev.theta, DeviceArray)
    assert np.array_equal(dev.theta.get(), host.theta)
    assert (dev.loss, dev.n_iter, dev.status, dev.counts) == (host.loss, host.n_iter, host.status, host.counts)
    dense = name in DENSE and solver == DENSE[name].get("solver", "")
    if not dense:
        assert DeviceArray.host_copies == 1   # only ours, above: the method copied no vector to the host


def test_the_double_refuses_implicit_host_conversion():
    a = DeviceArray(np.arange(3.0))
    with pytest.raises(TypeError, match="implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="mixed with a device array"):
        a + np.ones(3)
    assert isinstance(np.sqrt(a) + 1, DeviceArray) and isinstance(np.eye(2, like=a), DeviceArray)
    assert float(a @ a) == 5.0
