"""Benchmark problems: a compiled model, its data split, seeded starting points, optional extras.

A :class:`Problem` is cheap to declare and builds (compiles, loads data) only
when run, so the registry can list problems whose dependencies are missing.
The built-ins need no download: two parameter-only test functions, datasets
bundled with scikit-learn (features standardized with train statistics, a
fixed seeded 80/20 split), and two generated regression/classification sets.
Each also gives the same objective in PyTorch on one flat parameter tensor,
so the torch.optim reference rows optimize exactly the same function.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

import symgrad as sg
from ..model import Model

__all__ = ["Problem", "Instance", "PROBLEMS", "register", "get_problem", "dataset", "DATASETS",
           "binary_accuracy", "class_accuracy", "torch_params", "quadratic_matrix"]

Data = tuple[np.ndarray, ...]


@dataclass(frozen=True)
class Instance:
    """A built problem.

    ``init(seed)``: the starting point every method shares for that seed
    (default ``model.init``). ``accuracy(model, theta, data)``: fraction of
    correct predictions, for classifiers. ``torch_loss(theta, data)``: the
    same objective in PyTorch, ``theta`` a flat float64 tensor and ``data``
    the train arrays as tensors (labels int64); without it the torch.optim
    rows are skipped for this problem.
    """

    model: Model
    train: Data
    heldout: Data | None = None
    init: Callable[[int], np.ndarray] | None = None
    accuracy: Callable[[Model, np.ndarray, Data], float] | None = None
    torch_loss: Callable[[Any, tuple[Any, ...]], Any] | None = None

    def theta0(self, seed: int) -> np.ndarray:
        theta = self.init(seed) if self.init is not None else self.model.init(seed)
        theta = np.array(theta, dtype=self.model.dtype)
        if theta.shape != (self.model.n_params,):
            raise ValueError(f"init({seed}) returned shape {theta.shape}, expected ({self.model.n_params},)")
        return theta


@dataclass(frozen=True)
class Problem:
    """A named benchmark problem: ``build()`` returns its :class:`Instance`.

    ``max_iter``, ``tol`` (on the gradient's 2-norm) and ``time_limit``
    (seconds per run) are its defaults; ``target`` an absolute target loss
    (default: relative to the best loss any run reaches); ``options`` the
    per-method defaults, e.g. ``{"adam": {"lr": 0.01}}`` (torch:SGD and
    torch:Adam take the lr of sgd and adam).
    """

    name: str
    build: Callable[[], Instance]
    description: str = ""
    max_iter: int = 200
    tol: float = 1e-6
    time_limit: float | None = None
    target: float | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name and ":" not in self.name and "," not in self.name):
            raise ValueError(f"problem name {self.name!r}: expected a non-empty string without ',' or ':'")
        if not callable(self.build):
            raise ValueError(f"problem {self.name!r}: build must be a callable returning an Instance")


#: the registered problems by name (built-ins first)
PROBLEMS: dict[str, Problem] = {}


def register(problem: Problem, replace: bool = False) -> Problem:
    """Add a problem to :data:`PROBLEMS` (the command line's ``--problems`` names)."""
    if not isinstance(problem, Problem):
        raise TypeError(f"expected a Problem, got {type(problem).__name__}")
    if problem.name in PROBLEMS and not replace:
        raise ValueError(f"a problem named {problem.name!r} is already registered (pass replace=True)")
    PROBLEMS[problem.name] = problem
    return problem


def get_problem(name: str) -> Problem:
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; problems are {', '.join(PROBLEMS)}")
    return PROBLEMS[name]


# ----------------------------------------------------------------------------- helpers

def binary_accuracy(model: Model, theta: np.ndarray, data: Data) -> float:
    """Logit > 0 against 0/1 targets."""
    return float(np.mean((model.predict(theta, data[0])[:, 0] > 0) == (data[1][:, 0] > 0.5)))


def class_accuracy(model: Model, theta: np.ndarray, data: Data) -> float:
    """Argmax of the scores against integer labels."""
    return float(np.mean(np.argmax(model.predict(theta, data[0]), axis=1) == data[1]))


def torch_params(model: Model, theta: Any) -> dict[str, Any]:
    """Views of a flat torch tensor, one per parameter, in the model's layout."""
    out = {}
    for name, shape, off, _ in model.signature.params:
        size = math.prod(shape) if shape else 1
        out[name] = theta[off:off + size].reshape(shape)
    return out


def _split(x: np.ndarray, y: np.ndarray, heldout: float = 0.2, seed: int = 0) -> tuple[Data, Data]:
    """Seeded split, features standardized with the train rows' statistics (constant features kept 0)."""
    order = np.random.default_rng(seed).permutation(len(x))
    cut = len(x) - int(round(heldout * len(x)))
    tr, te = order[:cut], order[cut:]
    mu, sd = x[tr].mean(0), x[tr].std(0)
    sd = np.where(sd > 0, sd, 1.0)
    return ((x[tr] - mu) / sd, y[tr]), ((x[te] - mu) / sd, y[te])


def _sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn import datasets
    except ImportError as e:
        raise ImportError(f"the {name} dataset comes with scikit-learn: pip install scikit-learn") from e
    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    return np.asarray(x, dtype=np.float64), np.asarray(y)


def _breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    x, y = _sklearn("breast_cancer")
    return x, y.astype(np.float64)[:, None]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = _sklearn("digits")
    return x, y.astype(np.int64)


def _two_spirals(n: int = 150, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals of n points each (1.5 turns), labels 0/1 as a (2n, 1) target."""
    rng = np.random.default_rng(seed)
    a = np.sqrt(rng.uniform(0.0, 1.0, n)) * 3 * np.pi
    arm = np.stack([a * np.cos(a), a * np.sin(a)], axis=1) / (3 * np.pi)
    x = np.concatenate([arm, -arm]) + noise * rng.normal(size=(2 * n, 2))
    return x, np.concatenate([np.zeros(n), np.ones(n)])[:, None]


def _sine_data() -> tuple[np.ndarray, np.ndarray]:
    """250 points of sin(x) + N(0, 0.05^2) noise, x uniform on [-pi, pi]."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-np.pi, np.pi, size=(250, 1))
    return x, np.sin(x) + 0.05 * rng.normal(size=x.shape)


#: dataset name -> (features, targets) loader
_DATASETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "breast_cancer": _breast_cancer,
    "digits": _digits,
    "two_spirals": _two_spirals,
    "sine": _sine_data,
}
DATASETS = tuple(_DATASETS)


def dataset(name: str) -> tuple[Data, Data]:
    """((x, y) train, (x, y) held out) of a built-in dataset (DATASETS): a fixed seeded 80/20
    split, features standardized with the train rows' mean and deviation. breast_cancer's
    targets are (N, 1) floats 0/1, digits' integer labels 0-9 (both bundled with
    scikit-learn); two_spirals (300 points, (N, 1) targets 0/1) and sine are generated."""
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; datasets are {', '.join(DATASETS)}")
    return _split(*_DATASETS[name]())


def _mlp(x: sg.Tensor, sizes: tuple[int, ...], activation: str = "tanh") -> tuple[sg.Tensor, list[sg.Tensor]]:
    """Dense layers l1, l2, ... (activation on all but the last); returns the output and the weights."""
    h, weights = x, []
    for i, n in enumerate(sizes, 1):
        w = sg.param(f"l{i}.W", (n, h.shape[0]), init="glorot_uniform")
        h = w @ h + sg.param(f"l{i}.b", n)
        if i < len(sizes):
            h = sg.ACTIVATIONS[activation](h)
        weights.append(w)
    return h, weights


def _torch_mlp(model: Model, theta: Any, x: Any, layers: int, activation: str = "tanh") -> Any:
    import torch
    p = torch_params(model, theta)
    act = getattr(torch, activation)
    for i in range(1, layers + 1):
        x = x @ p[f"l{i}.W"].T + p[f"l{i}.b"]
        if i < layers:
            x = act(x)
    return x


def _torch_l2(model: Model, theta: Any, layers: int) -> Any:
    p = torch_params(model, theta)
    return sum((p[f"l{i}.W"] ** 2).sum() for i in range(1, layers + 1))


# ----------------------------------------------------------------------------- built-ins

def _rosenbrock() -> Instance:
    """f = 100 (y - x^2)^2 + (1 - x)^2 on two scalar parameters; no data at all."""
    x, y = sg.param("x", ()), sg.param("y", ())
    model = sg.compile(100 * sg.square(y - sg.square(x)) + sg.square(1 - x))

    def init(seed: int) -> np.ndarray:
        return np.array([-1.2, 1.0]) + np.random.default_rng(seed).uniform(-0.25, 0.25, 2)

    def torch_loss(theta: Any, data: tuple) -> Any:
        return 100 * (theta[1] - theta[0] ** 2) ** 2 + (1 - theta[0]) ** 2

    return Instance(model, (), None, init, None, torch_loss)


QUADRATIC_N = 10


def quadratic_matrix() -> tuple[np.ndarray, np.ndarray]:
    """(Q, d): the quadratic's Hessian is Q diag(d) Q^T, Q a seeded random rotation, d log-spaced
    from 1e-2 to 1e2 (condition number 1e4)."""
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(QUADRATIC_N, QUADRATIC_N)))
    return q, np.logspace(-2, 2, QUADRATIC_N)


def _quadratic() -> Instance:
    """f = 1/2 (w - 1)^T Q diag(d) Q^T (w - 1): rotated, condition number 1e4, minimum 0 at w = 1.

    The DSL broadcasts only scalars, so the ten coordinates are scalar
    parameters and each rotated coordinate z_j = sum_i Q_ij (w_i - 1) is one
    elementwise op with the rotation's entries as constants.
    """
    q, d = quadratic_matrix()
    ws = [sg.param(f"w{i}", ()) for i in range(QUADRATIC_N)]
    loss: Any = 0
    for j in range(QUADRATIC_N):
        col = [float(c) for c in q[:, j]]
        z = sg.elementwise(f"z{j}", lambda *w, c=col: sum(ci * (wi - 1) for ci, wi in zip(c, w)))(*ws)
        loss = loss + (0.5 * float(d[j])) * sg.square(z)
    model = sg.compile(loss)
    a = q @ np.diag(d) @ q.T

    def torch_loss(theta: Any, data: tuple) -> Any:
        import torch
        e = theta - 1
        return 0.5 * e @ torch.as_tensor(a) @ e

    return Instance(model, (), None, lambda seed: np.random.default_rng(seed).normal(size=QUADRATIC_N),
                    None, torch_loss)


LOGISTIC_L2 = 1e-3


def _logistic() -> Instance:
    """L2 logistic regression on breast-cancer (30 features): mean BCE of the logit + 1e-3 |W|^2."""
    train, test = dataset("breast_cancer")
    d = train[0].shape[1]
    x, t = sg.input("x", d), sg.target("t", 1)
    w, b = sg.param("W", (1, d), init="zeros"), sg.param("b", 1)
    o = w @ x + b
    model = sg.compile(sg.bce_with_logits(o, t) + LOGISTIC_L2 * sg.l2(w), output=o)

    def torch_loss(theta: Any, data: tuple) -> Any:
        import torch
        p = torch_params(model, theta)
        z = data[0] @ p["W"].T + p["b"]
        bce = torch.nn.functional.binary_cross_entropy_with_logits(z, data[1])
        return bce + LOGISTIC_L2 * (p["W"] ** 2).sum()

    def init(seed: int) -> np.ndarray:   # zeros would give every seed the same start
        return np.random.default_rng(seed).normal(scale=0.1, size=model.n_params)

    return Instance(model, train, test, init, binary_accuracy, torch_loss)


def _classifier(sizes: tuple[int, ...], l2: float) -> Callable[[], Instance]:
    """Softmax cross-entropy + l2 |W|^2 on digits (64 features, 10 classes) through dense layers."""

    def build() -> Instance:
        train, test = dataset("digits")
        x, y = sg.input("x", 64), sg.labels("y", 10)
        o, weights = _mlp(x, sizes)
        penalty: Any = sum(sg.l2(w) for w in weights)
        model = sg.compile(sg.softmax_cross_entropy(o, y) + l2 * penalty, output=o)

        def torch_loss(theta: Any, data: tuple) -> Any:
            import torch
            z = _torch_mlp(model, theta, data[0], len(sizes))
            return torch.nn.functional.cross_entropy(z, data[1]) + l2 * _torch_l2(model, theta, len(sizes))

        return Instance(model, train, test, None, class_accuracy, torch_loss)

    return build


SPIRALS_L2 = 1e-4


def _spirals() -> Instance:
    """A 2-16-16-1 tanh network classifying two spirals: BCE of the logit + 1e-4 sum |W|^2."""
    train, test = dataset("two_spirals")
    x, t = sg.input("x", 2), sg.target("t", 1)
    o, weights = _mlp(x, (16, 16, 1))
    model = sg.compile(sg.bce_with_logits(o, t) + SPIRALS_L2 * sum(sg.l2(w) for w in weights), output=o)

    def torch_loss(theta: Any, data: tuple) -> Any:
        import torch
        z = _torch_mlp(model, theta, data[0], 3)
        return torch.nn.functional.binary_cross_entropy_with_logits(z, data[1]) + \
            SPIRALS_L2 * _torch_l2(model, theta, 3)

    return Instance(model, train, test, None, binary_accuracy, torch_loss)


def _sine() -> Instance:
    """A 1-5-1 tanh network fitting sin(x) on [-pi, pi] (200 noisy train points): MSE."""
    (xt, yt), (xh, yh) = dataset("sine")
    x, t = sg.input("x", 1), sg.target("t", 1)
    o, _ = _mlp(x, (5, 1))
    model = sg.compile(sg.mse(o, t), output=o)

    def torch_loss(theta: Any, data: tuple) -> Any:
        import torch
        return torch.nn.functional.mse_loss(_torch_mlp(model, theta, data[0], 2), data[1])

    return Instance(model, (xt, yt), (xh, yh), None, None, torch_loss)


def _autoencoder() -> Instance:
    """A 64-32-8-32-64 tanh autoencoder of the (standardized) digits: MSE of the reconstruction."""
    (xt, _), (xh, _) = dataset("digits")
    x, t = sg.input("x", 64), sg.target("t", 64)
    o, _ = _mlp(x, (32, 8, 32, 64))
    model = sg.compile(sg.mse(o, t), output=o)

    def torch_loss(theta: Any, data: tuple) -> Any:
        import torch
        return torch.nn.functional.mse_loss(_torch_mlp(model, theta, data[0], 4), data[1])

    return Instance(model, (xt, xt), (xh, xh), None, None, torch_loss)


def _digit_images(data: Data) -> Data:
    """The standardized 64 features as (1, 8, 8) images."""
    return (data[0].reshape(-1, 1, 8, 8),) + tuple(data[1:])


def _digits_cnn() -> Instance:
    """LeNet-style: conv3x3 (pad 1) 1->6 relu, max-pool 2, conv3x3 (pad 1) 6->16 relu, max-pool 2,
    64-32-10 dense (relu), softmax cross-entropy, on the 8x8 digits."""
    train, test = (_digit_images(d) for d in dataset("digits"))
    img, y = sg.input("img", (1, 8, 8)), sg.labels("y", 10)
    h = sg.max_pool2d(sg.conv2d(img, 6, 3, padding=1, activation="relu", name="c1"), 2)
    h = sg.max_pool2d(sg.conv2d(h, 16, 3, padding=1, activation="relu", name="c2"), 2)
    o = sg.dense(sg.dense(sg.flatten(h), 32, "relu", name="f1"), 10, name="f2")
    model = sg.compile(sg.softmax_cross_entropy(o, y), output=o)

    def torch_loss(theta: Any, data: tuple) -> Any:
        import torch.nn.functional as F
        p = torch_params(model, theta)
        h = F.max_pool2d(F.relu(F.conv2d(data[0], p["c1.W"], p["c1.b"], padding=1)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, p["c2.W"], p["c2.b"], padding=1)), 2)
        z = F.relu(h.flatten(1) @ p["f1.W"].T + p["f1.b"]) @ p["f2.W"].T + p["f2.b"]
        return F.cross_entropy(z, data[1])

    return Instance(model, train, test, None, class_accuracy, torch_loss)


def _digits_resnet() -> Instance:
    """conv3x3 1->8 relu, two residual blocks h + conv3x3(relu(conv3x3(h))) (then relu), global
    average pooling, dense 8->10, softmax cross-entropy, on the 8x8 digits."""
    train, test = (_digit_images(d) for d in dataset("digits"))
    img, y = sg.input("img", (1, 8, 8)), sg.labels("y", 10)
    h = sg.conv2d(img, 8, 3, padding=1, activation="relu", name="stem")
    for k in (1, 2):
        r = sg.conv2d(sg.conv2d(h, 8, 3, padding=1, activation="relu", name=f"b{k}a"), 8, 3, padding=1, name=f"b{k}b")
        h = sg.relu(h + r)
    o = sg.dense(sg.global_avg_pool(h), 10, name="fc")
    model = sg.compile(sg.softmax_cross_entropy(o, y), output=o)

    def torch_loss(theta: Any, data: tuple) -> Any:
        import torch.nn.functional as F
        p = torch_params(model, theta)
        h = F.relu(F.conv2d(data[0], p["stem.W"], p["stem.b"], padding=1))
        for k in (1, 2):
            r = F.relu(F.conv2d(h, p[f"b{k}a.W"], p[f"b{k}a.b"], padding=1))
            h = F.relu(h + F.conv2d(r, p[f"b{k}b.W"], p[f"b{k}b.b"], padding=1))
        return F.cross_entropy(h.mean(dim=(2, 3)) @ p["fc.W"].T + p["fc.b"], data[1])

    return Instance(model, train, test, None, class_accuracy, torch_loss)


def _lrs(gd: float, momentum: float, nesterov: float, adagrad: float, rmsprop: float,
         adam: float) -> dict[str, dict[str, float]]:
    """Per-problem learning rates of the first-order methods (sgd runs full-batch: gd's)."""
    return {"gd": {"lr": gd}, "sgd": {"lr": gd}, "momentum": {"lr": momentum}, "nesterov": {"lr": nesterov},
            "adagrad": {"lr": adagrad}, "rmsprop": {"lr": rmsprop}, "adam": {"lr": adam}}


# Learning rates: for each problem and first-order method, the best of 1e-4, 3e-4, 1e-3, ..., 1, 3 by
# the median final training loss over seeds 0-2 after the problem's max_iter (5 s per run at most),
# rates that diverged on any seed excluded. Everything else runs with the method's defaults.
for _p in (
    Problem("rosenbrock", _rosenbrock,
            "Rosenbrock in 2-D, a parameter-only graph; start (-1.2, 1) + U(-0.25, 0.25)",
            max_iter=2000, tol=1e-8, time_limit=10.0, options=_lrs(1e-3, 1e-3, 1e-3, 1.0, 3e-3, 0.3)),
    Problem("quadratic", _quadratic, "rotated quadratic, 10 scalar parameters, condition number 1e4",
            max_iter=2000, tol=1e-8, time_limit=10.0, options=_lrs(1e-2, 3e-2, 1e-2, 0.3, 3e-3, 0.3)),
    Problem("logistic", _logistic, "L2 logistic regression (1e-3 |W|^2) on breast cancer, 30 features",
            max_iter=500, tol=1e-8, time_limit=10.0, options=_lrs(3.0, 3.0, 3.0, 1.0, 3e-2, 1.0)),
    Problem("softmax", _classifier((10,), 1e-3),
            "softmax regression + 1e-3 |W|^2 on digits, 64 features, 10 classes",
            max_iter=500, tol=1e-7, time_limit=10.0, options=_lrs(3.0, 3.0, 3.0, 0.3, 1e-2, 0.3)),
    Problem("digits_mlp", _classifier((32, 10), 1e-4),
            "64-32-10 tanh MLP on digits, softmax cross-entropy + 1e-4 sum |W|^2",
            max_iter=300, tol=1e-6, time_limit=10.0, options=_lrs(3.0, 3.0, 3.0, 0.1, 1e-2, 0.3)),
    Problem("spirals", _spirals, "2-16-16-1 tanh MLP on two spirals, BCE of the logit + 1e-4 sum |W|^2",
            max_iter=2000, tol=1e-6, time_limit=10.0, options=_lrs(1.0, 1.0, 0.3, 0.3, 1e-2, 1e-2)),
    Problem("sine", _sine, "1-5-1 tanh MLP fitting sin(x) + noise on [-pi, pi], MSE",
            max_iter=2000, tol=1e-8, time_limit=10.0, options=_lrs(0.3, 0.3, 0.1, 1.0, 1e-3, 1e-2)),
    Problem("autoencoder", _autoencoder, "64-32-8-32-64 tanh autoencoder of the digits, MSE",
            max_iter=300, tol=1e-6, time_limit=15.0, options=_lrs(3.0, 1.0, 1.0, 0.1, 1e-2, 3e-2)),
):
    register(_p)

# The CNNs' learning rates are digits_mlp's (not swept for them yet).
for _p in (
    Problem("digits_cnn", _digits_cnn, "LeNet-style CNN on the 8x8 digits: two conv3x3 + max-pool, 64-32-10 dense",
            max_iter=100, tol=1e-6, time_limit=30.0, options=_lrs(3.0, 3.0, 3.0, 0.1, 1e-2, 0.3)),
    Problem("digits_resnet", _digits_resnet,
            "residual CNN on the 8x8 digits: conv3x3 stem, two residual blocks, global average pooling",
            max_iter=100, tol=1e-6, time_limit=30.0, options=_lrs(3.0, 3.0, 3.0, 0.1, 1e-2, 0.3)),
):
    register(_p)
