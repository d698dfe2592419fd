"""The line searches on closed-form functions: the conditions they promise hold at the step returned."""
from __future__ import annotations

import numpy as np
import pytest

from symgrad.optim import armijo, strong_wolfe, truncated_cg


def rosenbrock(x):
    f = 100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2
    g = np.array([-400 * x[0] * (x[1] - x[0] ** 2) - 2 * (1 - x[0]), 200 * (x[1] - x[0] ** 2)])
    return f, g


@pytest.mark.parametrize("x0, c2", [((-1.2, 1.0), 0.9), ((-1.2, 1.0), 0.1), ((0.5, -0.3), 0.9),
                                    ((2.0, 2.0), 0.1)])
@pytest.mark.parametrize("step", [1.0, 1e-3, 50.0])
def test_strong_wolfe_conditions_hold(x0, c2, step):
    x = np.array(x0)
    f0, g0 = rosenbrock(x)
    p = -g0
    r = strong_wolfe(lambda a: rosenbrock(x + a * p), p, f0, g0, step=step, c1=1e-4, c2=c2)
    assert r.ok
    f, g = rosenbrock(x + r.step * p)
    assert r.f == f and np.array_equal(r.g, g)
    assert f <= f0 + 1e-4 * r.step * (g0 @ p)
    assert abs(g @ p) <= c2 * abs(g0 @ p)


def test_armijo_backtracks_and_refuses_ascent():
    x = np.array([-1.2, 1.0])
    f0, g0 = rosenbrock(x)
    p = -g0
    r = armijo(lambda a: rosenbrock(x + a * p)[0], lambda a: rosenbrock(x + a * p), f0, g0, float(g0 @ p))
    assert r.ok and r.step < 1 and r.f <= f0 + 1e-4 * r.step * (g0 @ p) and r.trials > 1
    bad = armijo(lambda a: rosenbrock(x - a * p)[0], lambda a: rosenbrock(x - a * p), f0, g0, float(-g0 @ p))
    assert not bad.ok and bad.step == 0


def test_non_finite_trials_shrink_the_step():
    def f(a):
        return np.inf if a > 0.3 else (a - 0.2) ** 2, np.array([2 * (a - 0.2)])
    r = strong_wolfe(lambda a: f(a), np.array([1.0]), 0.04, np.array([-0.4]), step=1.0)
    assert r.ok and r.step <= 0.3 and np.isfinite(r.f)


def test_truncated_cg_solves_spd_and_stops_at_negative_curvature():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 8))
    spd = a @ a.T + 8 * np.eye(8)
    g = rng.normal(size=8)
    r = truncated_cg(lambda v: spd @ v, g, tol=1e-12, max_iter=100)
    np.testing.assert_allclose(r.x, -np.linalg.solve(spd, g), rtol=1e-9)
    assert np.array_equal(r.saved[-1], r.x)
    assert not any(np.array_equal(a, b) for a, b in zip(r.saved, r.saved[1:]))   # each iterate saved once
    r1 = truncated_cg(lambda v: 2 * v, np.array([1.0, 2.0]), tol=1e-12, max_iter=10)   # converges at a mark
    assert len(r1.saved) == 1
    assert not r.negative_curvature and r.model_decrease(g) == pytest.approx(0.5 * r.x @ spd @ r.x + g @ r.x)
    indefinite = np.diag([1.0, -1.0])
    r = truncated_cg(lambda v: indefinite @ v, np.array([0.0, 1.0]), tol=1e-12, max_iter=10)
    assert r.negative_curvature and np.array_equal(r.x, [0.0, -1.0])   # -g: no iterate yet
