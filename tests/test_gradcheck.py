"""sg.gradcheck: the course notes' check, with a step that works at any weight scale."""
from __future__ import annotations

import numpy as np

import symgrad as sg


def _softmax_model(std):
    x, y = sg.input("x", 8), sg.labels("y", 4)
    model = sg.compile(sg.softmax_cross_entropy(sg.dense(x, 4, name="l", init=("normal", std)), y))
    rng = np.random.default_rng(0)
    return model, rng.normal(size=(30, 8)), rng.integers(0, 4, 30)


def test_correct_gradients_pass_at_every_weight_scale():
    for std in (1e-6, 1e-4, 1.0, 30.0):   # small weights made the relative step round to zero
        model, X, Y = _softmax_model(std)
        assert sg.gradcheck(model, model.init(0), X, Y) < 1e-6, std


def test_a_wrong_gradient_is_reported_with_the_notes_error_measure():
    model, X, Y = _softmax_model(1e-4)
    theta = model.init(0)

    class OnePercentOff:
        dtype = model.dtype

        def grad(self, t, *d):
            return model.grad(t, *d) * 1.01

        def loss(self, t, *d):
            return model.loss(t, *d)
    err = sg.gradcheck(OnePercentOff(), theta, X, Y)
    assert abs(err - 0.01 / 2.01) < 1e-5      # |A - 1.01 A| / (|A| + |1.01 A|)
    assert sg.gradcheck(OnePercentOff(), theta, X, Y, indices=[0, 3]) <= err
