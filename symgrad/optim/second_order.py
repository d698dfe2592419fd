"""Methods driven by the compiled curvature kernels: Newton, Newton-CG, Gauss-Newton, Levenberg-Marquardt.

- ``newton``: the dense Hessian (P exact HVPs), factored as H + tau I with
  tau from the user's damping, raised until Cholesky succeeds when H is
  indefinite (N&W Algorithm 3.3), then a line search.
- ``newton_cg``: Hessian-free. Truncated CG on exact HVPs (or GN products)
  of H + lambda I, stopped at negative curvature or at the forcing tolerance
  min(0.5, sqrt||g||) ||g|| (N&W Algorithm 7.1); Martens' (2010) CG
  warm start, backtracking over saved CG iterates and Levenberg-Marquardt
  adaptation of lambda from the reduction ratio.
- ``gauss_newton`` and ``levenberg_marquardt``: the generalized Gauss-Newton
  matrix G = J^T H_loss J (+ penalties' Hessian) for any loss, solved by CG
  on GN products, densely from P GN products, or, for least-squares
  objectives, from the output Jacobian as a damped least-squares problem.
  Gauss-Newton takes a line search with fixed damping; Levenberg-Marquardt
  adapts the damping by Nielsen's rule and needs no line search.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import scipy.linalg

from .base import LineSearchMethod, Stop, choice, like, positive, to_host

__all__ = ["Newton", "NewtonCG", "GaussNewton", "LevenbergMarquardt", "truncated_cg", "CGResult"]


@dataclass(frozen=True)
class CGResult:
    """x ~ -A^-1 g; ``saved``: iterates at CG steps ceil(1.3^j) and the last (Martens' backtracking);
    ``residual`` = A x + g; ``negative_curvature``: stopped on d^T A d <= 0."""

    x: np.ndarray
    saved: tuple[np.ndarray, ...]
    residual: np.ndarray
    iterations: int
    negative_curvature: bool

    def model_decrease(self, g: np.ndarray) -> float:
        """q_A(x) = 1/2 x^T A x + g^T x, from the residual (no extra product)."""
        return 0.5 * float(self.x @ self.residual + g @ self.x)


def truncated_cg(apply: Callable[[np.ndarray], np.ndarray], g: np.ndarray, tol: float, max_iter: int,
                 x0: np.ndarray | None = None) -> CGResult:
    """Conjugate gradient on A x = -g from x0 (default 0), stopped at ||A x + g|| <= tol, after
    max_iter products, or at negative curvature (then the last iterate, or -g if there is none)."""
    x = np.zeros_like(g) if x0 is None else x0.copy()
    r = g.copy() if x0 is None else apply(x) + g
    d = -r
    rr = float(r @ r)
    saved, marks = [], {math.ceil(1.3 ** j) for j in range(80)}
    negative, it, last_saved = False, 0, False
    while it < max_iter and math.sqrt(rr) > tol:
        ad = apply(d)
        dad = float(d @ ad)
        if not dad > 0:
            negative = True
            if it == 0 and not np.any(x):
                x = -g.copy()   # no iterate yet: steepest descent (its residual is not tracked)
            break
        alpha = rr / dad
        x += alpha * d
        r += alpha * ad
        it += 1
        rr_new = float(r @ r)
        d = -r + (rr_new / rr) * d
        rr = rr_new
        last_saved = it in marks
        if last_saved:
            saved.append(x.copy())
    if not last_saved:   # the final iterate, unless the last step already saved it
        saved.append(x.copy())
    return CGResult(x, tuple(saved), r, it, negative)


def _forcing(g: np.ndarray, cg_tol: Any) -> float:
    gn = float(np.linalg.norm(g))
    return (min(0.5, math.sqrt(gn)) if cg_tol is None else cg_tol) * gn


def _int_option(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"option {name}={value!r}: expected a positive integer")
    return int(value)


def _solve_spd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a^-1 b for symmetric positive semi-definite a: Cholesky, or least squares if singular."""
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(a), b)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(a, b, rcond=None)[0]


class Newton(LineSearchMethod):
    """Damped Newton: p = -(H + tau I)^-1 g on the dense Hessian, tau >= damping raised until
    H + tau I is positive definite; then a line search (or the full step)."""

    uses_curvature = True
    name = "newton"
    defaults: ClassVar[dict[str, Any]] = {"damping": 0.0, "line_search": "armijo", "c1": 1e-4, "c2": 0.9,
                                          "max_params": 4096}

    def _setup(self) -> None:
        self._check_search(allow_none=True)
        self.damping = positive("damping", self.options["damping"], allow_zero=True)
        self.max_params = _int_option("max_params", self.options["max_params"])

    def step(self) -> float:
        _, g = self._value_and_grad()
        h = self.oracle.hessian(self.theta, self.max_params)   # dense: a host array, factored there
        if not np.all(np.isfinite(h)):
            raise Stop(f"{self.name}: the Hessian is not finite")
        diag = np.diag(h)
        beta = 1e-3 * max(float(np.max(np.abs(diag))), 1e-12)
        tau = self.damping if diag.min() > 0 else max(self.damping, beta - float(diag.min()))
        eye = np.eye(h.shape[0], dtype=h.dtype)
        for _ in range(60):
            try:
                factor = scipy.linalg.cho_factor(h + tau * eye)
                break
            except np.linalg.LinAlgError:
                tau = max(2 * tau, beta)
        else:
            raise Stop(f"{self.name}: no damping up to {tau:.3g} made the Hessian positive definite")
        self.info["damping"] = tau
        return self._search(like(-scipy.linalg.cho_solve(factor, to_host(g)), self.theta), 1.0)


class NewtonCG(LineSearchMethod):
    """Truncated Newton / Hessian-free (see the module doc). ``curvature``: "hvp" (exact Hessian)
    or "gnvp" (Gauss-Newton, Martens' choice for networks)."""

    uses_curvature = True
    name = "newton_cg"
    defaults: ClassVar[dict[str, Any]] = {"damping": 1e-2, "curvature": "hvp", "cg_max_iter": 250,
                                          "cg_tol": None, "cg_decay": 0.95, "adapt_damping": True,
                                          "line_search": "armijo", "c1": 1e-4, "c2": 0.9}

    def _setup(self) -> None:
        o = self.options
        self._check_search()
        self.state["damping"] = positive("damping", o["damping"], allow_zero=True)
        choice("curvature", o["curvature"], ("hvp", "gnvp"))
        if o["curvature"] == "gnvp":
            self.model._check_kind("gnvp")
        self.cg_max_iter = _int_option("cg_max_iter", o["cg_max_iter"])
        if o["cg_tol"] is not None:
            positive("cg_tol", o["cg_tol"])
        if not 0 <= o["cg_decay"] <= 1:
            raise ValueError(f"option cg_decay={o['cg_decay']!r}: expected a number in [0, 1]")
        choice("adapt_damping", o["adapt_damping"], (True, False))
        self.state["x"] = None

    def step(self) -> float:
        o, st = self.options, self.state
        f, g = self._value_and_grad()
        theta, lam = self.theta, st["damping"]
        product = self.oracle.hvp if o["curvature"] == "hvp" else self.oracle.gnvp

        def apply(v: np.ndarray) -> np.ndarray:
            return product(theta, v) + lam * v

        x0 = None if st["x"] is None or o["cg_decay"] == 0 else o["cg_decay"] * st["x"]
        cg = truncated_cg(apply, g, _forcing(g, o["cg_tol"]), self.cg_max_iter, x0)
        # Martens' backtracking: the last CG iterate, or an earlier one while that is better
        p, fp = cg.saved[-1], self.oracle.loss(theta + cg.saved[-1])
        for x in reversed(cg.saved[:-1]):
            fx = self.oracle.loss(theta + x)
            if not fx < fp:
                break
            p, fp = x, fx
        ptAp = float(p @ (cg.residual - g)) if p is cg.saved[-1] and not cg.negative_curvature \
            else float(p @ apply(p))
        q = float(g @ p) + 0.5 * (ptAp - lam * float(p @ p))   # undamped quadratic model
        rho = (fp - f) / q if q < 0 and math.isfinite(fp) else -math.inf
        if o["adapt_damping"]:
            st["damping"] = lam * 1.5 if rho < 0.25 else lam * 2 / 3 if rho > 0.75 else lam
        st["x"] = p
        self.info["damping"] = lam
        slope = float(g @ p)
        if math.isfinite(fp) and fp <= f + o["c1"] * slope:
            self.theta = theta + p
            self.t += 1
            self.info.update(ls_trials=1, lr=1.0)
            return self._value_and_grad()[0]
        st["x"] = None
        if not slope < 0:   # CG gave no descent direction (indefinite, undamped): steepest descent
            return self._search(-g, 1.0)
        return self._search(p, 0.5)   # the full step failed Armijo: backtrack from half of it


class _GaussNewtonBase(LineSearchMethod):
    """The damped Gauss-Newton system (G + lambda I) p = -g, by the ``solver`` option:
    "cg" (matrix-free on GN products), "dense" (G from P GN products) or "jacobian"
    (least-squares objectives only: G = 2/(N K) J^T J from the output Jacobian)."""

    uses_curvature = True

    solver_defaults: ClassVar[dict[str, Any]] = {"solver": "cg", "cg_max_iter": 250, "cg_tol": None,
                                                 "max_params": 4096}

    def _check_solver(self) -> None:
        o = self.options
        choice("solver", o["solver"], ("cg", "dense", "jacobian"))
        self.cg_max_iter = _int_option("cg_max_iter", o["cg_max_iter"])
        self.max_params = _int_option("max_params", o["max_params"])
        if o["cg_tol"] is not None:
            positive("cg_tol", o["cg_tol"])
        if o["solver"] == "jacobian":
            if not self.model.has_output:
                raise ValueError("option solver='jacobian' needs the model's output: "
                                 "sg.compile(loss, output=...)")
        else:
            self.model._check_kind("gnvp")

    def _linearize(self, g: np.ndarray) -> Callable[[float], tuple[np.ndarray, float]]:
        """At the current theta: a solver lam -> (p, p^T G p) for (G + lam I) p = -g."""
        o, theta = self.options, self.theta
        if o["solver"] == "dense":
            gm = self.oracle.gauss_newton(theta, self.max_params)   # dense: solved on the host
            eye, gh = np.eye(gm.shape[0], dtype=gm.dtype), to_host(g)

            def dense(lam: float) -> tuple[np.ndarray, float]:
                p = -_solve_spd(gm + lam * eye, gh)
                return like(p, theta), float(p @ gm @ p)
            return dense
        if o["solver"] == "jacobian":
            jac, r, c = self._least_squares(to_host(g))
            sj, sr = math.sqrt(c) * jac, math.sqrt(c) * r

            def jacobian(lam: float) -> tuple[np.ndarray, float]:
                a = np.vstack([sj, math.sqrt(lam) * np.eye(jac.shape[1], dtype=jac.dtype)]) if lam > 0 else sj
                b = np.concatenate([sr, np.zeros(jac.shape[1] if lam > 0 else 0, dtype=r.dtype)])
                p = -np.linalg.lstsq(a, b, rcond=None)[0]
                return like(p, theta), float(np.sum((sj @ p) ** 2))
            return jacobian

        def cg(lam: float) -> tuple[np.ndarray, float]:
            res = truncated_cg(lambda v: self.oracle.gnvp(theta, v) + lam * v, g,
                               _forcing(g, o["cg_tol"]), self.cg_max_iter)
            p = res.x
            ptAp = float(p @ (res.residual - g)) if not res.negative_curvature else float(
                p @ self.oracle.gnvp(theta, p)) + lam * float(p @ p)
            return p, ptAp - lam * float(p @ p)
        return cg

    def _least_squares(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(J, r, c) with objective = c/2 ||r||^2 and gradient = c J^T r (host arrays), verified
        here: the objective must be the mean squared error of the output against one target."""
        f, _ = self._value_and_grad()
        out = to_host(self.oracle.predict(self.theta))
        jac = to_host(self.oracle.output_jacobian(self.theta))
        c = 2.0 / out.size
        tol = 1e-8 if self.theta.dtype == np.float64 else 1e-3
        m = self.model
        for name, a in zip(m.data_names, self.oracle.objective.data):
            if m._specs[name].role == "input" or tuple(a.shape) != out.shape:
                continue
            r = (out - to_host(a)).ravel()
            if abs(f - 0.5 * c * float(r @ r)) <= tol * max(abs(f), 1e-30) and \
                    np.linalg.norm(c * (jac.T @ r) - g) <= tol * max(float(np.linalg.norm(g)), 1e-30) + 1e-300:
                return jac, r, c
        raise ValueError("option solver='jacobian' needs a least-squares objective: the mean squared error "
                         "of the model's output against a target (sg.mse(output, t), no other terms); "
                         "use solver='cg' or 'dense' (Gauss-Newton products, any loss)")


class GaussNewton(_GaussNewtonBase):
    """Generalized Gauss-Newton with fixed damping and a line search: p = -(G + damping I)^-1 g."""

    name = "gauss_newton"
    defaults: ClassVar[dict[str, Any]] = {"damping": 0.0, "line_search": "armijo", "c1": 1e-4, "c2": 0.9,
                                          **_GaussNewtonBase.solver_defaults}

    def _setup(self) -> None:
        self._check_search(allow_none=True)
        self._check_solver()
        self.damping = positive("damping", self.options["damping"], allow_zero=True)

    def step(self) -> float:
        _, g = self._value_and_grad()
        p, _ = self._linearize(g)(self.damping)
        self.info["damping"] = self.damping
        if not float(g @ p) < 0:
            p = -g
        return self._search(p, 1.0)


class LevenbergMarquardt(_GaussNewtonBase):
    """Levenberg-Marquardt on the generalized Gauss-Newton matrix: a trial p(lambda) is accepted
    when the objective decreases; lambda then shrinks by max(1/3, 1 - (2 rho - 1)^3), else it
    grows by nu (doubling each refusal) (Nielsen's rule; rho = actual / predicted decrease).
    The first lambda: ``damping``, or tau * g^T G g / g^T g."""

    name = "levenberg_marquardt"
    defaults: ClassVar[dict[str, Any]] = {"damping": None, "tau": 1e-3, "max_trials": 50,
                                          **_GaussNewtonBase.solver_defaults}

    def _setup(self) -> None:
        o = self.options
        self._check_solver()
        if o["damping"] is not None:
            positive("damping", o["damping"])
        positive("tau", o["tau"])
        self.max_trials = _int_option("max_trials", o["max_trials"])
        self.state.update(damping=o["damping"], nu=2.0)

    def step(self) -> float:
        st = self.state
        f, g = self._value_and_grad()
        solve = self._linearize(g)
        if st["damping"] is None:   # tau times G's curvature along g (tau alone if G is flat there)
            gg = float(g @ g)
            curv = float(g @ self.oracle.gnvp(self.theta, g)) / gg if gg > 0 else 0.0
            st["damping"] = self.options["tau"] * (curv if curv > 0 else 1.0)
        for trial in range(1, self.max_trials + 1):
            lam = st["damping"]
            p, pgp = solve(lam)
            predicted = -(float(g @ p) + 0.5 * pgp)
            f_new = self.oracle.loss(self.theta + p)
            rho = (f - f_new) / predicted if predicted > 0 and math.isfinite(f_new) else -math.inf
            if rho > 0:
                self.theta = self.theta + p
                self.t += 1
                st["damping"] = lam * max(1 / 3, 1 - (2 * rho - 1) ** 3)
                st["nu"] = 2.0
                self.info.update(damping=lam, ls_trials=trial, lr=1.0)
                return self._value_and_grad()[0]
            st["damping"] = lam * st["nu"]
            st["nu"] *= 2
        self.info["ls_trials"] = self.max_trials
        raise Stop(f"{self.name}: no damping up to {st['damping']:.3g} decreased the objective "
                   f"({self.max_trials} trials)")
