"""``symgrad.optim``: first- and second-order optimizers on the flat parameter vector.

>>> res = sg.optim.minimize(model, theta0, X, T, method="newton_cg", tol=1e-8)
>>> res.theta, res.loss, res.converged, res.message, res.history[-1]

Every method is also a class (``METHODS[name]``, e.g. ``sg.optim.Adam``)
with ``step()`` and ``state`` for hand-written loops. All of them call the
compiled kernels through a counting oracle, so each history record says how
many loss, gradient, HVP, Gauss-Newton and Jacobian evaluations the run has
made.
"""
from __future__ import annotations

from . import schedules
from .base import Diverged, LineSearchMethod, Optimizer, Stop
from .first_order import GD, SGD, Adagrad, Adam, Momentum, Nesterov, RMSProp
from .linesearch import armijo, strong_wolfe
from .minimize import HISTORY_FIELDS, METHODS, STATUSES, OptimizeResult, minimize, run
from .quasi_newton import BFGS, CG, LBFGS
from .schedules import Constant, Cosine, Exponential, StepDecay
from .second_order import GaussNewton, LevenbergMarquardt, Newton, NewtonCG, truncated_cg

__all__ = [
    "minimize", "run", "OptimizeResult", "METHODS", "HISTORY_FIELDS", "STATUSES", "Optimizer", "LineSearchMethod",
    "Stop", "Diverged", "GD", "SGD", "Momentum", "Nesterov", "Adagrad", "RMSProp", "Adam", "Newton",
    "NewtonCG", "BFGS", "LBFGS", "CG", "GaussNewton", "LevenbergMarquardt", "armijo", "strong_wolfe",
    "truncated_cg", "schedules", "Constant", "StepDecay", "Cosine", "Exponential",
]
