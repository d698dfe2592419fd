"""The lowering choices of codegen.ops.index_map and codegen.ops.einsum.rows_plan, read from the
maps and the derived programs (no kernel is compiled here)."""
from __future__ import annotations

import symgrad as sg
from codegen.ops.einsum import rows_plan
from codegen.ops.index_map import _gather_form
from symgrad.ops.index_map import AxisMap, Map
from symgrad.program import build_forward
from symgrad.derived import gradient


def test_stride_one_windows_invert_into_a_gather_and_strides_or_flattens_do_not():
    windows = Map((2, 3, 3, 4, 4), (2, 6, 6), (AxisMap((1, 0, 0, 0, 0)), AxisMap((0, 1, 0, 1, 0)),
                                               AxisMap((0, 0, 1, 0, 1))))
    pivots, free = _gather_form(windows)
    assert pivots == {0: (0, 1), 1: (3, 1), 2: (4, 1)} and free == [1, 2]   # solve for the positions, sum the taps
    strided = Map((2, 3, 2), (2, 6), (AxisMap((1, 0, 0)), AxisMap((0, 1, 2))))
    assert _gather_form(strided) == ({0: (0, 1), 1: (1, 1)}, [2])            # the tap has coefficient 1
    only_stride = Map((3,), (6,), (AxisMap((2,)),))
    assert _gather_form(only_stride) is None                                 # needs a division: scatter
    flatten = Map((6, 4, 4), (96,), (AxisMap((16, 4, 1)),))
    assert _gather_form(flatten) is None                                     # 24 candidates per element
    diagonal = Map((3,), (3, 3), (AxisMap((1,)), AxisMap((1,))))
    assert _gather_form(diagonal) is None                                    # one axis feeds two


def test_a_big_convolution_is_one_product_per_sample_in_every_direction():
    x = sg.input("x", (3, 10, 10))
    h = sg.conv2d(x, 8, 3, padding=1, name="c")
    fwd = build_forward(sg.sum(h * h))
    adj = gradient(fwd.program).program
    plans = {a.out.name: rows_plan(a) for a in adj.body if a.op.__class__.__name__ == "Einsum"}
    z = next(p for n, p in plans.items() if n == "c_z")
    assert z[3:] == (8, 27, 100, False, False, 0)            # W (8, 27) @ windows_r (27, 100), per sample
    dW = next(p for n, p in plans.items() if n.startswith("d_c_W"))
    assert dW[8] == 2 and dW[3:6] == (8, 100, 27)            # sum over samples of dz_r (8, 100) @ windows_r^T
    small = build_forward(sg.sum(sg.conv2d(sg.input("y", (1, 4, 4)), 2, 2, name="s")))
    assert all(rows_plan(a) is None for a in small.program.body)   # a small product stays loops
