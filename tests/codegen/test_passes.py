"""The lowering's passes and backends on small models, reading the kernel IR they produce (no
kernel is compiled here)."""
from __future__ import annotations

import dataclasses

import pytest

import symgrad as sg
from codegen.kernel_ir import Call, Loop, walk_refs
from codegen.lower import PASSES
from codegen.targets import CPU, CUDA
from codegen.target_cpu import CpuBackend
from codegen.target_cuda import CudaFused, CudaStaged
from symgrad.ir import IRError


def _mlp(width: int, backend=CPU):  # type: ignore[no-untyped-def]
    x, t = sg.input("x", 3), sg.target("t", 2)
    h = sg.dense(sg.dense(x, width, "tanh", name="l1"), width, "relu", name="l2")
    o = sg.dense(h, 2, name="o")
    return sg.compile(sg.mse(o, t) + 1e-3 * sg.sum(sg.square(sg.param("s", 2, init="ones"))), output=o,
                      backend=backend)


def _calls(stmts) -> list[Call]:  # type: ignore[no-untyped-def]
    out = []
    for s in stmts:
        if isinstance(s, Call):
            out.append(s)
        elif isinstance(s, Loop):
            out += _calls(s.body)
    return out


def test_every_pass_runs_and_is_timed() -> None:
    low = _mlp(4)._lowered("value_and_grad")
    assert tuple(low.timings) == PASSES == ("classify", "storage", "emission", "fusion", "finishing")


def test_cpu_contractions_are_library_calls_and_the_gradient_is_copied_in_one_loop() -> None:
    low = _mlp(4)._lowered("value_and_grad")
    helpers = {c.fn for c in _calls(low.chunks.body)}
    assert helpers <= {"dot_nn", "dot_nt", "dot_tn", "dot_tt", "add_into"} and "dot_nt" in helpers
    # no contraction is left as a loop reading a weight matrix inside the row loop
    assert not [r for kind, r, _ in walk_refs(low.chunks.body) if kind == "read" and r.name in ("l1_W", "l2_W")]
    copies = [s for s in low.finish.body if isinstance(s, Loop) and s.comment.startswith("grad:")]
    # the batch sums (every parameter but s) in one loop; s's gradient is not a batch sum
    assert [c.comment for c in copies] == ["grad:l1.W .. grad:o.b: their sums, in order", "grad:s"]
    assert copies[0].stop.const == _mlp(4).n_params - 2


@pytest.mark.filterwarnings("ignore:backend='cuda'")
def test_the_cuda_target_picks_a_fused_or_a_staged_backend() -> None:
    narrow, wide = _mlp(4, CUDA), _mlp(4, dataclasses.replace(CUDA, gemm_min_work_per_row=8, gemm_min_depth=2))
    assert not narrow._lowered("value_and_grad").staged
    assert wide._lowered("value_and_grad").staged


@pytest.mark.filterwarnings("ignore:backend='cuda'")
def test_a_fused_thread_that_would_hold_too_much_is_refused_by_name() -> None:
    with pytest.raises(IRError, match="'relu'.*local arrays to 34 elements"):
        _mlp(16, dataclasses.replace(CUDA, local_max=20))


def test_every_backend_implements_every_hook() -> None:
    from codegen.targets import Backend
    for cls in (CpuBackend, CudaFused, CudaStaged):
        for hook in ("alloc", "gemm", "close_rows", "result", "chunk_kernels"):
            assert getattr(cls, hook) is not getattr(Backend, hook), (cls, hook)
    assert CudaStaged.gemm is not CudaFused.gemm and CudaStaged.close_rows is not CudaFused.close_rows
