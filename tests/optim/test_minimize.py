"""Every method converges to the known optimum of a strictly convex problem; the driver's
history, stopping rules, divergence handling, reproducibility and bad options."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize

import symgrad as sg
from symgrad.model import DataError
from symgrad.optim import HISTORY_FIELDS, METHODS, minimize, schedules


def close_to_optimum(res, p, loss_rtol, theta_atol):
    assert math.isfinite(res.loss)
    assert abs(res.loss - p.f_star) <= loss_rtol * abs(p.f_star), (res.method, res.loss, p.f_star, res.message)
    assert np.max(np.abs(res.theta - p.theta_star)) <= theta_atol, (res.method, res.message)


# method -> (options, max_iter, tol, loss rtol, theta atol): second-order and quasi-Newton methods to
# gradient norm 1e-9; first-order ones as close as their fixed budget gets on this conditioning
CONVERGENCE = {
    "newton": ({}, 15, 1e-10, 1e-12, 1e-8),
    "newton_cg": ({}, 50, 1e-9, 1e-12, 1e-7),
    "newton_cg_gn": ({"curvature": "gnvp"}, 50, 1e-9, 1e-12, 1e-7),
    "bfgs": ({}, 200, 1e-9, 1e-12, 1e-7),
    "lbfgs": ({}, 300, 1e-9, 1e-12, 1e-7),
    "cg": ({}, 1000, 1e-9, 1e-12, 1e-7),
    "gauss_newton": ({}, 50, 1e-9, 1e-12, 1e-7),
    "gauss_newton_dense": ({"solver": "dense"}, 50, 1e-9, 1e-12, 1e-7),
    "levenberg_marquardt": ({}, 100, 1e-9, 1e-12, 1e-7),
    "levenberg_marquardt_dense": ({"solver": "dense"}, 100, 1e-9, 1e-12, 1e-7),
    "gd": ({"lr": 1.0}, 3000, 1e-7, 1e-10, 1e-5),
    "sgd": ({"lr": 1.0}, 3000, 1e-7, 1e-10, 1e-5),
    "momentum": ({"lr": 0.3}, 2000, 1e-7, 1e-10, 1e-5),
    "nesterov": ({"lr": 0.3}, 2000, 1e-7, 1e-10, 1e-5),
    "adagrad": ({"lr": 0.5}, 3000, 1e-7, 1e-8, 1e-3),
    "rmsprop": ({"lr": 0.01, "schedule": schedules.Exponential(0.997)}, 3000, 1e-7, 1e-6, 1e-2),
    "adam": ({"lr": 0.05, "schedule": schedules.Exponential(0.997)}, 3000, 1e-7, 1e-8, 1e-3),
}


@pytest.mark.parametrize("case", CONVERGENCE)
def test_converges_on_strictly_convex_problem(logreg, case):
    options, max_iter, tol, loss_rtol, theta_atol = CONVERGENCE[case]
    method = case.removesuffix("_gn").removesuffix("_dense")
    res = minimize(logreg.model, logreg.theta0, *logreg.data, method=method, max_iter=max_iter, tol=tol,
                   **options)
    close_to_optimum(res, logreg, loss_rtol, theta_atol)
    assert np.all(np.isfinite(res.theta))


def test_every_method_is_tested():
    assert {c.removesuffix("_gn").removesuffix("_dense") for c in CONVERGENCE} == set(METHODS)


def test_newton_reaches_1e10_within_15_iterations(logreg):
    res = minimize(logreg.model, logreg.theta0, *logreg.data, method="newton", max_iter=15, tol=1e-10)
    assert res.converged and res.status == "converged" and res.grad_norm <= 1e-10 and res.n_iter <= 15, res.message
    # quadratic convergence: the last steps square the gradient norm (roughly)
    g = [r["grad_norm"] for r in res.history]
    assert g[-1] < 1e-3 * g[-2] or g[-2] < 1e-6


@pytest.mark.parametrize("method, scipy_method", [("lbfgs", "L-BFGS-B"), ("bfgs", "BFGS")])
def test_quasi_newton_matches_scipy(logreg, method, scipy_method):
    fun, jac, _ = logreg.model.scipy_objective(*logreg.data)
    ref = scipy.optimize.minimize(fun, logreg.theta0, jac=jac, method=scipy_method,
                                  options={"gtol": 1e-10, "maxiter": 1000} if scipy_method == "BFGS"
                                  else {"gtol": 1e-10, "ftol": 1e-15, "maxiter": 1000})
    res = minimize(logreg.model, logreg.theta0, *logreg.data, method=method, tol=1e-9)
    assert res.converged, res.message
    assert abs(res.loss - ref.fun) <= 1e-8 * abs(ref.fun)


def test_history_records_costs(logreg):
    p = logreg
    res = minimize(p.model, p.theta0, *p.data, method="newton_cg", tol=1e-9, max_iter=50)
    h = res.history
    assert [r["iteration"] for r in h] == list(range(res.n_iter + 1))
    assert all(tuple(r) == HISTORY_FIELDS for r in h)
    for key in ("time", "n_grad", "n_hvp", "n_loss", "ls_trials"):
        assert all(a[key] <= b[key] for a, b in zip(h, h[1:])), key   # cumulative
    assert h[-1]["n_hvp"] > 0 and h[-1]["n_gnvp"] == 0
    assert h[0]["loss"] == pytest.approx(p.model.loss(p.theta0, *p.data))
    assert h[-1]["loss"] == res.loss and h[-1]["grad_norm"] == res.grad_norm
    assert res.counts == {k[2:]: h[-1][k] for k in h[-1] if k.startswith("n_")}
    # every line-search step: one gradient per iteration at least, losses never increase
    assert all(b["loss"] <= a["loss"] for a, b in zip(h, h[1:]))
    # newton: P HVPs per iteration for the dense Hessian
    r2 = minimize(p.model, p.theta0, *p.data, method="newton", max_iter=3, tol=0)
    assert r2.history[-1]["n_hvp"] == 3 * p.model.n_params


def test_minibatch_counts_in_full_data_passes(logreg):
    p = logreg
    res = minimize(p.model, p.theta0, *p.data, method="sgd", lr=0.5, batch_size=32, max_iter=4, tol=0)
    n = p.data[0].shape[0]
    assert res.n_iter == 4
    assert res.counts["grad"] == pytest.approx(4.0)             # 4 epochs of B/N each
    assert len(res.history) == 5 and res.history[1]["n_grad"] == pytest.approx(1.0)
    # the recorded loss is the full-data objective at the iterate
    assert res.history[-1]["loss"] == pytest.approx(p.model.loss(res.theta, *p.data), rel=1e-12)
    assert -(-n // 32) == 10


def test_sgd_is_reproducible_with_a_seed(logreg):
    p = logreg

    def run(seed):
        return minimize(p.model, p.theta0, *p.data, method="adam", lr=0.05, batch_size=50, seed=seed,
                        max_iter=5, tol=0)

    a, b, c = run(3), run(3), run(4)
    assert np.array_equal(a.theta, b.theta)
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    assert not np.array_equal(a.theta, c.theta)


def test_divergence_returns_last_finite_iterate():
    rng = np.random.default_rng(2)
    X, T = rng.normal(size=(40, 3)), rng.normal(size=(40, 1))
    x, t = sg.input("x", 3), sg.target("t", 1)
    o = sg.dense(x, 1, name="fc")
    model = sg.compile(sg.mse(o, t), output=o)
    res = minimize(model, model.init(0), X, T, method="gd", lr=50.0, max_iter=2000)
    assert not res.converged and res.status == "diverged"
    assert "finite" in res.message and "iteration" in res.message
    assert np.all(np.isfinite(res.theta)) and math.isfinite(res.loss)
    assert res.loss == pytest.approx(model.loss(res.theta, X, T))
    assert all(math.isfinite(r["loss"]) for r in res.history)


def test_class_step_loop_equals_minimize(logreg):
    p = logreg
    opt = sg.optim.Adam(p.model, p.theta0, *p.data, lr=0.05)
    for _ in range(7):
        f = opt.step()
        assert math.isfinite(f)
    res = minimize(p.model, p.theta0, *p.data, method="adam", lr=0.05, max_iter=7, tol=0)
    assert np.array_equal(opt.theta, res.theta)
    assert set(opt.state) == {"m", "a"} and opt.t == 7


def test_first_order_updates_match_pytorch_forms(logreg):
    """The course's forms (velocity as displacement; Nesterov after the change of variables)
    give torch.optim's iterates for a constant lr, written here in PyTorch's form."""
    p = logreg
    obj = p.model.bind(*p.data)
    lr, mu = 0.2, 0.9
    th, buf = p.theta0.copy(), np.zeros_like(p.theta0)
    for _ in range(6):   # torch.optim.SGD(momentum=mu, nesterov=True)
        g = obj.value_and_grad(th)[1]
        buf = mu * buf + g
        th = th - lr * (g + mu * buf)
    res = minimize(p.model, p.theta0, *p.data, method="nesterov", lr=lr, momentum=mu, max_iter=6, tol=0)
    np.testing.assert_allclose(res.theta, th, rtol=1e-12, atol=1e-14)
    th, sq = p.theta0.copy(), np.zeros_like(p.theta0)
    for _ in range(6):   # torch.optim.RMSprop(alpha=0.99, eps=1e-8, momentum=0)
        g = obj.value_and_grad(th)[1]
        sq = 0.99 * sq + 0.01 * g * g
        th = th - lr * g / (np.sqrt(sq) + 1e-8)
    res = minimize(p.model, p.theta0, *p.data, method="rmsprop", lr=lr, max_iter=6, tol=0)
    np.testing.assert_allclose(res.theta, th, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("schedule, expected", [
    (schedules.Constant(), [0.1, 0.1, 0.1, 0.1]),
    (schedules.StepDecay(2, gamma=0.5), [0.1, 0.1, 0.05, 0.05]),
    (schedules.Exponential(0.5), [0.1, 0.05, 0.025, 0.0125]),
    (schedules.Cosine(2), [0.1, 0.05, 0.0, 0.0]),
])
def test_schedules_drive_the_learning_rate(logreg, schedule, expected):
    p = logreg
    res = minimize(p.model, p.theta0, *p.data, method="gd", lr=0.1, schedule=schedule, max_iter=4, tol=0)
    np.testing.assert_allclose([r["lr"] for r in res.history[1:]], expected, atol=1e-15)


def test_callback_and_time_limit(logreg):
    p = logreg
    seen = []
    res = minimize(p.model, p.theta0, *p.data, method="gd", lr=0.1, max_iter=100, tol=0,
                   callback=lambda r: seen.append(r["iteration"]) or r["iteration"] == 3)
    assert seen == [1, 2, 3] and res.n_iter == 3 and "callback" in res.message and res.status == "callback"
    res = minimize(p.model, p.theta0, *p.data, method="gd", lr=0.1, max_iter=10 ** 6, tol=0, time_limit=0.05)
    assert "time_limit" in res.message and res.history[-1]["time"] >= 0.05 and res.status == "time_limit"


def test_least_squares_jacobian_solver_equals_gauss_newton_products(sine):
    """LM on the output Jacobian (damped least squares) takes the same steps as LM on dense
    GN products: two independent routes to the same matrix."""
    p = sine
    a = minimize(p.model, p.theta0, *p.data, method="levenberg_marquardt", solver="jacobian", max_iter=5, tol=0)
    b = minimize(p.model, p.theta0, *p.data, method="levenberg_marquardt", solver="dense", max_iter=5, tol=0)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-7, atol=1e-9)
    assert a.counts["jacobian"] > 0 and a.counts["gnvp"] <= 1 and b.counts["gnvp"] >= 5 * p.model.n_params
    # and it fits: LM drives the sine fit far below its starting loss
    res = minimize(p.model, p.theta0, *p.data, method="levenberg_marquardt", solver="jacobian", max_iter=200,
                   tol=1e-10)
    assert res.loss < 1e-3 * res.history[0]["loss"]


def test_jacobian_solver_refuses_a_non_least_squares_objective(logreg):
    p = logreg
    with pytest.raises(ValueError, match="least-squares objective"):
        minimize(p.model, p.theta0, *p.data, method="gauss_newton", solver="jacobian", max_iter=2)


def test_newton_on_an_indefinite_hessian_still_descends(sine):
    """Far from a minimum the network's Hessian is indefinite: the damping fallback makes
    H + tau I positive definite and every step decreases the loss."""
    p = sine
    H = p.model.hessian(p.theta0, *p.data)
    assert np.linalg.eigvalsh(H).min() < 0
    res = minimize(p.model, p.theta0, *p.data, method="newton", max_iter=20, tol=0)
    losses = [r["loss"] for r in res.history]
    assert all(b <= a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.5 * losses[0]
    assert res.history[1]["damping"] > 0


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "adamw"}, "unknown method 'adamw'"),
    ({"method": "adam", "learning_rate": 0.1}, r"unknown option\(s\) \['learning_rate'\] for method 'adam'"),
    ({"method": "sgd", "lr": 0.0}, "option lr=0.0"),
    ({"method": "adam", "lr": -1}, "option lr=-1"),
    ({"method": "momentum", "momentum": 1.5}, "option momentum=1.5"),
    ({"method": "adam", "betas": (0.9,)}, "option betas"),
    ({"method": "lbfgs", "history_size": 0}, "option history_size=0"),
    ({"method": "bfgs", "line_search": "exact"}, "option line_search='exact'"),
    ({"method": "newton_cg", "curvature": "fisher"}, "option curvature='fisher'"),
    ({"method": "gauss_newton", "solver": "qr"}, "option solver='qr'"),
    ({"method": "lbfgs", "max_iter": 0}, "max_iter=0"),
    ({"method": "lbfgs", "tol": -1.0}, "tol=-1.0"),
    ({"method": "newton", "batch_size": 10}, "method 'newton' is full-batch"),
    ({"method": "sgd", "batch_size": 0}, "batch_size=0"),
    ({"method": "gd", "schedule": "linear"}, "schedule"),
])
def test_bad_options(logreg, kwargs, match):
    p = logreg
    with pytest.raises(ValueError, match=match):
        minimize(p.model, p.theta0, *p.data, **kwargs)


def test_bad_data_and_theta(logreg):
    p = logreg
    X, T = p.data
    with pytest.raises(DataError, match="data 'x'"):
        minimize(p.model, p.theta0, X[:, :3], T)
    with pytest.raises(DataError, match="theta"):
        minimize(p.model, p.theta0[:-1], X, T)
    with pytest.raises(DataError, match="'t' has 299 samples"):
        minimize(p.model, p.theta0, X, T[:-1])
    with pytest.raises(TypeError, match="compiled symgrad Model"):
        minimize(object(), p.theta0, X, T)


def test_a_method_that_cannot_go_on_keeps_its_last_record(logreg):
    """Gauss-Newton with tol=0 runs into floating-point precision and stops: the result is the
    last recorded iterate, and n_iter counts records."""
    p = logreg
    res = minimize(p.model, p.theta0, *p.data, method="gauss_newton", tol=0, max_iter=300)
    assert res.status == "stopped" and not res.converged
    assert res.n_iter == len(res.history) - 1
    assert res.loss == res.history[-1]["loss"] and res.grad_norm == res.history[-1]["grad_norm"]
    # the failed attempt's kernel calls were made: the result charges them, the last record cannot
    assert all(res.counts[k[2:]] >= v for k, v in res.history[-1].items() if k.startswith("n_"))


def test_convergence_wins_over_a_callback_stop(logreg):
    p = logreg
    one = minimize(p.model, p.theta0, *p.data, method="newton", max_iter=1, tol=0)
    g1 = one.history[1]["grad_norm"]
    res = minimize(p.model, p.theta0, *p.data, method="newton", max_iter=10, tol=1.01 * g1,
                   callback=lambda r: True)
    assert res.status == "converged" and res.converged and res.n_iter == 1


def test_options_accept_numpy_numbers_and_check_c2_only_for_strong_wolfe(logreg):
    p = logreg
    res = minimize(p.model, p.theta0, *p.data, method="momentum", lr=np.float64(0.1), momentum=np.int64(0),
                   max_iter=2, tol=0)
    assert res.n_iter == 2
    res = minimize(p.model, p.theta0, *p.data, method="newton", c1=0.95, max_iter=2, tol=0)
    assert res.n_iter == 2
    with pytest.raises(ValueError, match="c1=0.95, c2=0.9"):
        minimize(p.model, p.theta0, *p.data, method="lbfgs", c1=0.95)


def test_full_step_newton_may_climb_on_its_way():
    """Pure Newton on Rosenbrock raises f and ||g|| at its first step, then converges: the
    no-progress stop applies to Armijo searches only."""
    import symgrad as sg
    x = sg.input("x", 1)
    a, b = sg.param("a", 1, init="zeros"), sg.param("b", 1, init="zeros")
    rosen = sg.elementwise("rosen", lambda p, q: (1 - p) ** 2 + 100 * (q - p ** 2) ** 2)
    model = sg.compile(sg.sum(rosen(a, b)) + 0 * sg.sum(x))
    res = minimize(model, np.array([-1.2, 1.0]), np.zeros((4, 1)), method="newton", line_search=None,
                   max_iter=50, tol=1e-10)
    assert res.status == "converged" and res.n_iter <= 10
    np.testing.assert_allclose(res.theta, [1.0, 1.0], atol=1e-8)
    assert max(h["loss"] for h in res.history) > res.history[0]["loss"]   # it did climb


def test_curvature_methods_warn_once_on_a_piecewise_linear_objective(recwarn):
    import warnings
    x, y = sg.input("x", 4), sg.labels("y", 3)
    model = sg.compile(sg.multiclass_hinge(sg.dense(x, 3, name="l"), y))
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(20, 4)), np.arange(20) % 3
    assert model.piecewise_linear == "margin"
    with pytest.warns(RuntimeWarning, match=r"newton: .*piecewise linear.*through margin"):
        minimize(model, model.init(0), X, Y, method="newton", max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # once per model; first-order methods never warn
        minimize(model, model.init(0), X, Y, method="newton_cg", max_iter=2)
        minimize(model, model.init(0), X, Y, method="lbfgs", max_iter=2)
        smooth = sg.compile(sg.softmax_cross_entropy(sg.dense(x, 3, name="l"), y))
        assert smooth.piecewise_linear == ""
        minimize(smooth, smooth.init(0), X, Y, method="newton", max_iter=2)
