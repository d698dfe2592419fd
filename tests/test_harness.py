"""The optimizer benchmark harness: problems against NumPy, the protocol's shared starts, costs,
targets, the report files, recorded failures, user problems and the command line."""
from __future__ import annotations

import csv
import importlib.util
import math
import re
import sys

import numpy as np
import pytest

import symgrad as sg
from symgrad import harness as H
from symgrad.cli import main as cli_main
from symgrad.harness import command, methods, problems, protocol
from symgrad.optim import HISTORY_FIELDS

try:
    from . import reference_conv as C   # type: ignore[attr-defined]
except ImportError:   # pragma: no cover - run from the tests folder
    import reference_conv as C   # type: ignore[no-redef]

SKLEARN = ("logistic", "softmax", "digits_mlp", "autoencoder", "digits_cnn", "digits_resnet")


# ----------------------------------------------------------------------------- problems

def _mlp(p: dict, x: np.ndarray, layers: int) -> np.ndarray:
    for i in range(1, layers + 1):
        x = x @ p[f"l{i}.W"].T + p[f"l{i}.b"]
        x = np.tanh(x) if i < layers else x
    return x


def _bce(z: np.ndarray, t: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0, z) - t * z))


def _ce(z: np.ndarray, y: np.ndarray) -> float:
    m = z.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(1))
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def _l2(p: dict, layers: int) -> float:
    return sum(float((p[f"l{i}.W"] ** 2).sum()) for i in range(1, layers + 1))


def numpy_objective(name: str, p: dict, data: tuple) -> float:
    """Each built-in objective written independently in NumPy."""
    if name == "rosenbrock":
        return 100 * (p["y"] - p["x"] ** 2) ** 2 + (1 - p["x"]) ** 2
    if name == "quadratic":
        q, d = problems.quadratic_matrix()
        e = np.array([p[f"w{i}"] for i in range(len(d))]) - 1
        return 0.5 * e @ (q @ np.diag(d) @ q.T) @ e
    x, t = data
    if name == "logistic":
        return _bce(x @ p["W"].T + p["b"], t) + 1e-3 * float((p["W"] ** 2).sum())
    if name == "softmax":
        return _ce(_mlp(p, x, 1), t) + 1e-3 * _l2(p, 1)
    if name == "digits_mlp":
        return _ce(_mlp(p, x, 2), t) + 1e-4 * _l2(p, 2)
    if name == "spirals":
        return _bce(_mlp(p, x, 3), t) + 1e-4 * _l2(p, 3)
    if name == "sine":
        return float(np.mean((_mlp(p, x, 2) - t) ** 2))
    if name == "digits_cnn":
        relu = lambda z: np.maximum(z, 0)   # noqa: E731
        h = C.np_max_pool(relu(C.np_conv(x, p["c1.W"], p["c1.b"], (1, 1), [(1, 1)] * 2, (1, 1))), (2, 2), (2, 2), 0)
        h = C.np_max_pool(relu(C.np_conv(h, p["c2.W"], p["c2.b"], (1, 1), [(1, 1)] * 2, (1, 1))), (2, 2), (2, 2), 0)
        z = relu(h.reshape(len(x), -1) @ p["f1.W"].T + p["f1.b"]) @ p["f2.W"].T + p["f2.b"]
        return _ce(z, t)
    if name == "digits_resnet":
        def conv(h, k):
            return C.np_conv(h, p[f"{k}.W"], p[f"{k}.b"], (1, 1), [(1, 1)] * 2, (1, 1))
        h = np.maximum(conv(x, "stem"), 0)
        for k in (1, 2):
            h = np.maximum(h + conv(np.maximum(conv(h, f"b{k}a"), 0), f"b{k}b"), 0)
        return _ce(h.mean(axis=(2, 3)) @ p["fc.W"].T + p["fc.b"], t)
    assert name == "autoencoder"
    return float(np.mean((_mlp(p, x, 4) - t) ** 2))


@pytest.mark.parametrize("name", list(problems.PROBLEMS))
def test_builtin_problem_matches_numpy(name):
    if name in SKLEARN:
        pytest.importorskip("sklearn")
    prob = H.get_problem(name)
    inst = prob.build()
    model = inst.model
    th0 = inst.theta0(0)
    assert np.array_equal(th0, inst.theta0(0)) and not np.array_equal(th0, inst.theta0(1))
    params = {k: np.array(v) for k, v in model.unflatten(th0).items()}
    f = model.loss(th0, *inst.train)
    assert f == pytest.approx(numpy_objective(name, params, inst.train), rel=1e-12)
    v = np.random.default_rng(0).normal(size=model.n_params)   # the gradient along a random direction
    h = 1e-8 if name.startswith("digits_") and name != "digits_mlp" else 1e-5   # relu kinks: a short step
    slope = (model.loss(th0 + h * v, *inst.train) - model.loss(th0 - h * v, *inst.train)) / (2 * h)
    assert model.grad(th0, *inst.train) @ v == pytest.approx(slope, rel=1e-6, abs=1e-9)
    if inst.heldout is not None:   # features standardized with the train rows' statistics only
        x_tr, x_te = inst.train[0], inst.heldout[0]
        assert np.allclose(x_tr.mean(0), 0, atol=1e-12) and not np.allclose(x_te.mean(0), 0, atol=1e-3)
        assert len(x_te) == pytest.approx(0.25 * len(x_tr), rel=0.02)   # 80/20
        assert model.loss(th0, *inst.heldout) == pytest.approx(
            numpy_objective(name, params, inst.heldout), rel=1e-12)
    if inst.accuracy is not None:
        assert 0 <= inst.accuracy(model, th0, inst.train) <= 1
    if inst.torch_loss is not None and importlib.util.find_spec("torch") is not None:
        import torch
        data = tuple(torch.as_tensor(a) for a in inst.train)
        ft = float(inst.torch_loss(torch.tensor(th0, dtype=torch.float64), data))
        assert ft == pytest.approx(f, rel=1e-12)


def test_quadratic_is_rotated_with_condition_1e4():
    inst = H.get_problem("quadratic").build()
    q, d = problems.quadratic_matrix()
    a = q @ np.diag(d) @ q.T
    assert np.linalg.cond(a) == pytest.approx(1e4, rel=1e-6)
    assert np.abs(a - np.diag(np.diag(a))).max() > 1   # not diagonal
    w = np.random.default_rng(3).normal(size=len(d))
    np.testing.assert_allclose(inst.model.grad(w), a @ (w - 1), rtol=1e-12, atol=1e-12)
    assert inst.model.data_names == () and inst.train == ()


@pytest.mark.parametrize("name", H.DATASETS)
def test_datasets_split_and_standardize(name):
    if name in ("breast_cancer", "digits"):
        pytest.importorskip("sklearn")
    (xt, yt), (xh, yh) = H.dataset(name)
    assert len(xt) == len(yt) and len(xh) == len(yh) and len(xh) == pytest.approx(0.25 * len(xt), rel=0.02)
    sd = xt.std(0)
    assert np.allclose(xt.mean(0), 0, atol=1e-12) and np.allclose(sd[sd > 0], 1)
    (xt2, _), _ = H.dataset(name)
    assert np.array_equal(xt, xt2)   # the split is fixed
    with pytest.raises(ValueError, match="unknown dataset"):
        H.dataset("mnist")


def test_sklearn_problems_name_the_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        H.get_problem("logistic").build()


# ----------------------------------------------------------------------------- a tiny user problem

def _tiny() -> H.Instance:
    rng = np.random.default_rng(0)
    x_all = rng.normal(size=(50, 3))
    y_all = x_all @ np.array([[1.0], [-2.0], [0.5]]) + 0.3 + 0.1 * rng.normal(size=(50, 1))
    x, t = sg.input("x", 3), sg.target("t", 1)
    o = sg.dense(x, 1, name="fc")
    model = sg.compile(sg.mse(o, t), output=o)

    def torch_loss(theta, data):
        import torch
        p = H.torch_params(model, theta)
        return torch.nn.functional.mse_loss(data[0] @ p["fc.W"].T + p["fc.b"], data[1])

    def within(m, theta, data):   # a made-up "accuracy": predictions within 0.2
        return float(np.mean(np.abs(m.predict(theta, data[0]) - data[1]) < 0.2))

    return H.Instance(model, (x_all[:40], y_all[:40]), (x_all[40:], y_all[40:]),
                      lambda seed: np.random.default_rng(seed).normal(size=4), within, torch_loss)


TINY = H.Problem("tiny", _tiny, "least squares, 3 features", max_iter=40, tol=1e-7,
                 options={"gd": {"lr": 0.3}, "adam": {"lr": 0.1}})


@pytest.fixture(scope="module")
def bench():
    """One small benchmark shared by the protocol and report tests: a Problem object and a
    registered name; a method that fails (no Gauss-Newton split on Rosenbrock), one that diverges."""
    pytest.importorskip("torch")
    return H.run_benchmark([TINY, "rosenbrock"],
                           ["gd", "lbfgs", "newton_cg", "levenberg_marquardt", "scipy:BFGS", "scipy:Newton-CG",
                            "torch:Adam", "torch:LBFGS"],
                           seeds=[3, 5], max_iter=30, threads=1, progress=False)


def test_every_method_starts_from_the_seed_theta0(bench, monkeypatch):
    for res in bench.results:
        inst = res.problem.build()
        for seed in bench.seeds:
            f0 = inst.model.loss(inst.theta0(seed), *inst.train)
            starts = [r.history[0]["loss"] for r in res.runs if r.seed == seed and r.history]
            assert len(starts) >= 7 and all(s == pytest.approx(f0, rel=1e-12) for s in starts)
    seen = []

    def spy(method, instance, objective, theta0, **kw):
        seen.append((method, kw["seed"], kw["max_iter"], theta0.copy()))
        return methods.Trace(({**dict.fromkeys(HISTORY_FIELDS, 0.0), "loss": 1.0},), theta0, "stopped", "spy")

    monkeypatch.setattr(protocol, "run_method", spy)
    H.run_benchmark([TINY], ["gd", "adam", "scipy:BFGS"], seeds=[0, 7], progress=False)
    runs = [s for s in seen if s[2] != 1]   # max_iter=1: the warm-up calls
    assert {(m, s) for m, s, _, _ in runs} == {(m, s) for m in ("gd", "adam", "scipy:BFGS") for s in (0, 7)}
    for seed in (0, 7):
        starts = [th for _, s, _, th in runs if s == seed]
        assert all(np.array_equal(th, starts[0]) for th in starts)
        np.testing.assert_array_equal(starts[0], _tiny().theta0(seed))


def test_runs_are_recorded_with_status_and_counts(bench):
    tiny = next(r for r in bench.results if r.problem.name == "tiny")
    assert {r.method for r in tiny.runs} == set(bench.methods) and len(tiny.runs) == 16
    by = {(r.method, r.seed): r for r in tiny.runs}
    for m in ("lbfgs", "newton_cg", "levenberg_marquardt", "scipy:BFGS", "scipy:Newton-CG", "torch:LBFGS"):
        assert by[m, 3].status == "converged", (m, by[m, 3].message)
    assert by["gd", 3].status == "stopped" and "max_iter" in by["gd", 3].message
    assert by["newton_cg", 3].final("n_hvp") > 0 and by["scipy:Newton-CG", 3].final("n_hvp") > 0
    assert by["levenberg_marquardt", 3].final("n_gnvp") > 0
    for r in tiny.runs:
        assert tuple(r.history[0])[:len(HISTORY_FIELDS)] == HISTORY_FIELDS
        assert [h["iteration"] for h in r.history] == list(range(len(r.history)))
        assert all(a["time"] <= b["time"] and a["grad_equiv"] <= b["grad_equiv"]
                   for a, b in zip(r.history, r.history[1:]))
        assert 0 <= r.heldout_accuracy <= 1 and 0 <= r.train_accuracy <= 1
    inst = _tiny()
    r = by["lbfgs", 5]
    assert r.heldout_loss == pytest.approx(inst.model.loss(r.theta, *inst.heldout), rel=1e-12)


def test_failures_are_recorded_not_hidden(bench, tmp_path):
    ros = next(r for r in bench.results if r.problem.name == "rosenbrock")
    lm = [r for r in ros.runs if r.method == "levenberg_marquardt"]
    assert len(lm) == 2 and all(r.status == "failed" and "gnvp needs a split" in r.message for r in lm)
    assert all(r.history == () and r.theta is None and math.isnan(r.heldout_loss) for r in lm)
    text = H.summary_markdown(bench)
    assert "`levenberg_marquardt` failed: GraphError: gnvp needs a split" in text and "(seeds 3, 5)" in text
    row = next(r for r in H.summary_rows(ros, bench.methods) if r["method"] == "levenberg_marquardt")
    assert row["converged"] == "0/2" and row["iterations"] == "-"
    # divergence: gd far beyond 2/L keeps the last finite iterate and says so
    res = H.run_benchmark([TINY], ["gd"], seeds=1, options={"gd": {"lr": 50.0}}, max_iter=500, progress=False)
    run = res.results[0].runs[0]
    assert run.status == "diverged" and "last finite iterate" in run.message
    assert math.isfinite(run.final("loss")) and np.all(np.isfinite(run.theta))


def test_methods_that_cannot_run_are_skipped_with_a_reason(monkeypatch):
    real = methods.importlib.util.find_spec
    monkeypatch.setattr(methods.importlib.util, "find_spec", lambda n: None if n == "torch" else real(n))
    res = H.run_benchmark([TINY], ["gd", "torch:Adam"], seeds=1, max_iter=3, progress=False)
    assert res.results[0].skipped == {"torch:Adam": "PyTorch is not installed (pip install torch)"}
    assert [r.method for r in res.results[0].runs] == ["gd"]
    assert "`torch:Adam` skipped: PyTorch is not installed" in H.summary_markdown(res)


def test_torch_adam_follows_symgrad_adam(bench):
    """The same objective (the problem's PyTorch form) and the same update: the iterates agree."""
    tiny = next(r for r in bench.results if r.problem.name == "tiny")
    inst = _tiny()
    obj = inst.model.bind(*inst.train)
    ours = methods.run_method("adam", inst, obj, inst.theta0(3), max_iter=15, tol=0.0, time_limit=None, seed=3,
                              options={"lr": 0.1})
    theirs = next(r for r in tiny.runs if r.method == "torch:Adam" and r.seed == 3)
    assert theirs.options["lr"] == 0.1   # adam's per-problem lr, taken over
    np.testing.assert_allclose([h["loss"] for h in theirs.history[:16]], [h["loss"] for h in ours.history],
                               rtol=1e-10)
    assert theirs.history[15]["grad_equiv"] == 15 and theirs.history[15]["n_grad"] == 15


# ----------------------------------------------------------------------------- costs and targets

def test_grad_equivalents_from_counts_and_ratios():
    rec = {"n_loss": 2.0, "n_grad": 3.0, "n_hvp": 4.0, "n_gnvp": 0.0, "n_jacobian": 0.0}
    assert H.grad_equivalents(rec, {"loss": 0.5, "grad": 1.0, "hvp": 1.5}) == pytest.approx(3 + 1 + 6)
    with pytest.raises(ValueError, match="no cost ratio for 'hvp'"):
        H.grad_equivalents(rec, {"loss": 0.5, "grad": 1.0})


def test_benchmark_costs_use_the_measured_ratios(bench):
    for res in bench.results:
        assert res.ratios["grad"] == 1.0 and res.grad_seconds > 0
        assert all(v > 0 for v in res.ratios.values())
        for r in res.runs:
            ratios = {"grad": 1.0} if r.method.startswith("torch:") else res.ratios
            for h in r.history:
                assert h["grad_equiv"] == pytest.approx(H.grad_equivalents(h, ratios))
    tiny = next(r for r in bench.results if r.problem.name == "tiny")
    assert {"loss", "grad", "hvp", "gnvp"} <= set(tiny.ratios)   # every kind the runs used


def test_cost_ratios_measure_each_kind():
    inst = _tiny()
    obj = inst.model.bind(*inst.train)
    ratios, seconds = H.cost_ratios(obj, inst.theta0(0), ["grad", "loss", "jacobian"], repeats=3)
    assert list(ratios) == ["grad", "loss", "jacobian"] and ratios["grad"] == 1.0 and seconds > 0
    assert all(v > 0 for v in ratios.values())
    with pytest.raises(ValueError, match="unknown kernel kind"):
        H.cost_ratios(obj, inst.theta0(0), ["hessian"])


def test_reach_target_and_time_to_target(bench):
    hist = [{"loss": 5.0, "time": 0.0}, {"loss": 2.0, "time": 0.5}, {"loss": 1.0, "time": 0.9}]
    assert H.reach_target(hist, 2.0)["time"] == 0.5
    assert H.reach_target(hist, 0.5) is None
    for res in bench.results:
        for seed in bench.seeds:
            runs = [r for r in res.runs if r.seed == seed and r.history]
            f0 = runs[0].history[0]["loss"]
            f_best = min(h["loss"] for r in runs for h in r.history)
            assert res.targets[seed] == pytest.approx(f_best + 1e-3 * (f0 - f_best))
            for r in runs:
                hit = H.reach_target(r.history, res.targets[seed])
                if hit:
                    assert (r.time_to_target, r.iterations_to_target) == (hit["time"], hit["iteration"])
                else:
                    assert math.isnan(r.time_to_target) and math.isnan(r.iterations_to_target)
    res = H.run_benchmark([TINY], ["gd"], seeds=1, max_iter=5, targets={"tiny": 1e9}, progress=False)
    assert res.results[0].targets == {0: 1e9} and res.results[0].runs[0].iterations_to_target == 0


# ----------------------------------------------------------------------------- report

def test_report_files(bench, tmp_path):
    pytest.importorskip("matplotlib")
    written = bench.write(tmp_path)
    runs = list(csv.DictReader(open(tmp_path / "runs.csv")))
    assert len(runs) == sum(len(r.runs) for r in bench.results)
    assert {r["status"] for r in runs} >= {"converged", "stopped", "failed"}
    one = tmp_path / "runs" / "tiny" / "scipy-BFGS__seed3.csv"
    rows = list(csv.DictReader(open(one)))
    run = next(r for r in bench.results[0].runs if r.method == "scipy:BFGS" and r.seed == 3)
    assert tuple(rows[0]) == H.RUN_FIELDS and len(rows) == len(run.history)
    assert float(rows[-1]["loss"]) == run.final("loss") and rows[0]["problem"] == "tiny"
    summary = (tmp_path / "summary.md").read_text()
    assert "| " + " | ".join(H.SUMMARY_COLUMNS) + " |" in summary
    for m in bench.methods:
        assert f"| {m} |" in summary
    assert "threads: Numba 1, BLAS 1" in summary and "![tiny" in summary
    for name in ("tiny.png", "rosenbrock.png"):
        assert (tmp_path / name).stat().st_size > 10_000 and str(tmp_path / name) in written
    out = tmp_path / "noplots"
    bench.write(out, plots=False)
    assert not list(out.glob("*.png")) and "![" not in (out / "summary.md").read_text()


def test_summary_rows_are_medians_over_seeds(bench):
    tiny = next(r for r in bench.results if r.problem.name == "tiny")
    rows = {r["method"]: r for r in H.summary_rows(tiny, bench.methods)}
    lb = [r for r in tiny.runs if r.method == "lbfgs"]
    assert rows["lbfgs"]["converged"] == "2/2"
    assert float(rows["lbfgs"]["iterations"]) == np.median([r.final("iteration") for r in lb])
    assert rows["gd"]["held-out acc"].endswith("%")


# ----------------------------------------------------------------------------- user problems, options

def test_user_defined_problem_registration():
    p = H.Problem("tiny_registered", _tiny)
    try:
        assert H.register(p) is p and H.get_problem("tiny_registered") is p
        with pytest.raises(ValueError, match="already registered"):
            H.register(H.Problem("tiny_registered", _tiny))
        H.register(H.Problem("tiny_registered", _tiny, "new"), replace=True)
        assert H.get_problem("tiny_registered").description == "new"
    finally:
        problems.PROBLEMS.pop("tiny_registered", None)
    with pytest.raises(ValueError, match="problem name"):
        H.Problem("a,b", _tiny)
    with pytest.raises(ValueError, match="unknown problem 'nope'"):
        H.get_problem("nope")
    with pytest.raises(ValueError, match=r"init\(0\) returned shape"):
        H.Instance(_tiny().model, (), init=lambda s: np.zeros(3)).theta0(0)


def test_methods_options_and_groups():
    assert H.resolve_methods(["LBFGS", "scipy", "lbfgs"]) == ("lbfgs", *H.SCIPY)
    assert H.resolve_methods(["default"]) == H.DEFAULT_METHODS
    with pytest.raises(ValueError, match="unknown method 'adamw'"):
        H.resolve_methods(["adamw"])
    prob = H.get_problem("spirals")
    assert H.method_options(prob, "torch:Adam")["lr"] == prob.options["adam"]["lr"]
    assert H.method_options(prob, "torch:Adam", {"lr": 0.5})["lr"] == 0.5
    assert H.method_options(prob, "scipy:L-BFGS-B") == {"ftol": 0.0, "gtol": 0.0}
    H.check_options("lbfgs", {"history_size": 3, "batch_size": None})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['xtol'\] for scipy:BFGS"):
        H.check_options("scipy:BFGS", {"xtol": 1.0})
    if H.unavailable("torch:SGD") is None:
        with pytest.raises(ValueError, match=r"unknown option\(s\) \['beta'\] for torch:SGD"):
            H.check_options("torch:SGD", {"beta": 1.0})


def test_parse_option():
    assert command.parse_option("adam.lr=0.01") == ("adam", "lr", 0.01)
    assert command.parse_option("BFGS.line_search=armijo") == ("bfgs", "line_search", "armijo")
    assert command.parse_option("adam.betas=(0.9, 0.99)") == ("adam", "betas", (0.9, 0.99))
    assert command.parse_option("torch:lbfgs.history_size=20") == ("torch:LBFGS", "history_size", 20)
    for bad, match in [("adam.lr", "METHOD.NAME=VALUE"), ("lr=0.1", "METHOD.NAME=VALUE"),
                       ("scipy.gtol=1", "is a group"), ("adamw.lr=1", "unknown method")]:
        with pytest.raises(ValueError, match=match):
            command.parse_option(bad)


def test_pinned_threads_states_and_restores():
    import numba
    before = numba.get_num_threads()
    with H.pinned_threads(1) as note:
        assert numba.get_num_threads() == 1 and note.startswith("Numba 1, BLAS 1")
    assert numba.get_num_threads() == before
    with pytest.raises(ValueError, match="threads=0"):
        with H.pinned_threads(0):
            pass


# ----------------------------------------------------------------------------- command line

PROBLEM_FILE = """
import numpy as np
import symgrad as sg
from symgrad.harness import Instance, Problem, register

def build():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    T = X @ np.array([[1.0], [2.0]])
    x, t = sg.input("x", 2), sg.target("t", 1)
    o = sg.dense(x, 1, name="fc")
    return Instance(sg.compile(sg.mse(o, t), output=o), (X, T))

line = register(Problem("line", build, "y = x1 + 2 x2", options={"gd": {"lr": 0.1}}))
line2 = Problem("line2", build)
"""


@pytest.fixture
def problem_file(tmp_path):
    """A user's problem file; running it registers "line" (removed again afterwards)."""
    path = tmp_path / "my_problems.py"
    path.write_text(PROBLEM_FILE)
    yield path
    problems.PROBLEMS.pop("line", None)


def test_problems_from_a_file(problem_file):
    # two problems of one file: it runs once (a second run would register "line" twice)
    both = command.load_problems(f"{problem_file}:line,{problem_file}:line2")
    assert [p.name for p in both] == ["line", "line2"]
    problems.PROBLEMS.pop("line")
    assert [p.name for p in command.load_problems(str(problem_file))] == ["line", "line2"]
    assert command.load_problems("rosenbrock,line") == [H.get_problem("rosenbrock"), H.get_problem("line")]


def test_cli_bench_quick(problem_file, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli_main(["bench", "--quick", "--problems", f"rosenbrock,{problem_file}:line", "--methods", "gd,lbfgs",
                   "--max-iter", "20", "--threads", "1", "--option", "lbfgs.history_size=3", "--out", str(out),
                   "--quiet", "--no-plots"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "## rosenbrock" in text and "## line" in text and "| lbfgs |" in text and "seeds: 0, 1" in text
    assert "`gd` options: lr=0.1" in text and "`lbfgs` options: history_size=3" in text
    assert len(list((out / "runs" / "rosenbrock").glob("*.csv"))) == 4 and (out / "summary.md").is_file()
    problems.PROBLEMS.pop("line")
    assert cli_main(["bench", "--problems", f"{problem_file}:nothing", "--quiet"]) == 2
    assert "defines no Problem named 'nothing'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--problems", "nope"], "unknown problem 'nope'"),
    (["--methods", "adamw"], "unknown method 'adamw'"),
    (["--option", "adam.lr"], "expected METHOD.NAME=VALUE"),
    (["--option", "adam.learning_rate=1"], r"unknown option\(s\) \['learning_rate'\] for adam"),
    (["--option", "lbfgs.history_size=3", "--methods", "adam"], r"options given for method\(s\) not run"),
    (["--seeds", "two"], "--seeds 'two'"),
    (["--target", "rosenbrock"], "expected PROBLEM=LOSS"),
    (["--target", "sine=0.1", "--problems", "rosenbrock"], r"targets given for problem\(s\) not run"),
    (["--problems", "missing.py"], "no such file"),
])
def test_cli_bad_arguments(argv, message, capsys):
    rc = cli_main(["bench", "--quiet", "--no-plots", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("symgrad: ")
    assert re.search(message, err), err
