"""The compiled MSD decode operator (``lowbit.msd.native``): it builds here, it gives the torch-call path's bits,
and where it cannot be built ``decode_op="auto"`` says so and ``decode_op="fused"`` raises.

The reference for its bits is the torch-call decode path (``kernels._msd_int8_decode``), itself tested against
the float64 ``lowbit.msd.matmul`` and the general path (``test_kernels.py``, ``test_generate_decode_path.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lowbit.msd import MSDConfig, MSDLinear, native, schemes
from lowbit.msd import kernels as kn
from lowbit.msd.isa import Int8Profile, int8_profile
from lowbit.msd.kernels import DECODE_MAX_ROWS, pack_int8_weight

ROOT = Path(__file__).resolve().parents[2]
FBGEMM = int8_profile("fbgemm")
needs_fbgemm = pytest.mark.skipif(not isinstance(FBGEMM, Int8Profile), reason=f"fbgemm not exact here: {FBGEMM}")
HAS_COMPILER = shutil.which(os.environ.get("CXX", "c++")) is not None


def _layers(k: int, n: int, *, bias: bool, passes: int = 2, seed: int = 0) -> tuple[MSDLinear, MSDLinear]:
    gen = torch.Generator().manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=gen) * 0.05)
        if bias:
            lin.bias.copy_(torch.randn(n, generator=gen))
    fused = MSDLinear.from_linear(lin, MSDConfig(passes=passes, kernel="fbgemm", decode_op="fused"))
    plain = MSDLinear.from_linear(lin, MSDConfig(passes=passes, kernel="fbgemm", decode_op="torch"))
    return fused, plain


@needs_fbgemm
@pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler on PATH")
def test_the_operator_builds_and_passes_its_self_check() -> None:
    status = native.decode_op_status()
    assert status.available, status.reason
    op, reason = kn.fused_decode_op()
    assert op is not None, reason


@needs_fbgemm
@pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler on PATH")
@pytest.mark.parametrize("passes", [1, 2, 3])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("k", [1, 7, 256, 1000])
def test_fused_decode_gives_the_torch_path_bits(k: int, bias: bool, passes: int) -> None:
    fused, plain = _layers(k, 40, bias=bias, passes=passes, seed=k)
    gen = torch.Generator().manual_seed(1 + k)
    with torch.no_grad():
        for m in (1, 2, 5, 8, DECODE_MAX_ROWS):
            x = torch.randn(m, k, generator=gen) * torch.logspace(-3, 3, m).unsqueeze(1)
            x[0, : min(k, 8)] = torch.tensor([127.0, 2.5, -2.5, 0.5, -0.5, 1.5, 63.5, -126.5])[: min(k, 8)]
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                xd = x.to(dtype)
                want = plain(xd)
                got = fused(xd)
                assert got.dtype == want.dtype == dtype
                assert torch.equal(got, want), (m, dtype)
                # and the float64 reference of the same decomposition, within the MSD bound
                ref = plain.reference_forward(xd)
                assert torch.allclose(got.double(), ref, rtol=1e-2, atol=1e-2 * ref.abs().max().item() + 1e-30)


@needs_fbgemm
@pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler on PATH")
def test_rows_the_operator_declines_run_the_general_path() -> None:
    fused, plain = _layers(64, 16, bias=True)
    x = torch.randn(4, 64)
    x[1] = 0.0  # zero row
    x[2, 3] = float("nan")
    x[3] *= 1e-25  # max |x| below 2^-60
    with torch.no_grad():
        got, want = fused(x), plain(x)
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))
    assert got[2].isnan().all() and torch.equal(got[1], fused.bias)
    op, _ = kn.fused_decode_op()
    assert op is not None
    packed = fused._scheme._segments["fbgemm"][0][2]
    for rows in (0, 64):  # fbgemm and the GEMV
        declined = op(x, packed, 2, FBGEMM, None, gemv_max_rows=rows)
        assert declined.shape == (0,)  # the operator's "run the general path" answer


@needs_fbgemm
@pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler on PATH")
def test_operator_rejects_bad_arguments() -> None:
    op, _ = kn.fused_decode_op()
    assert op is not None
    packed = pack_int8_weight(torch.ones(4, 8, dtype=torch.int8), torch.ones(4), "fbgemm")
    h, rows, sums, scale = packed.handle, packed.rows, packed.row_sums, packed.scale

    def call(x, comps=2, qmax=127, zp=128, isa=op.isa, rows=rows, sums=sums, bias=None):
        return op.gemv(x, rows, sums, scale, comps, qmax, zp, bias, isa)

    for run in (call, lambda x, comps=2, qmax=127, zp=128: op.fbgemm(x, h, comps, qmax, zp, None)):
        with pytest.raises(RuntimeError, match="must be \\[M, K\\]"):
            run(torch.ones(8))
        with pytest.raises(RuntimeError, match="comps must be"):
            run(torch.ones(1, 8), comps=0)
        with pytest.raises(RuntimeError, match="qmax must be"):
            run(torch.ones(1, 8), qmax=200)
        with pytest.raises(RuntimeError, match="zero_point 300 does not keep"):
            run(torch.ones(1, 8), zp=300)
    with pytest.raises(RuntimeError, match="isa must be 0"):
        call(torch.ones(1, 8), isa=3)
    with pytest.raises(RuntimeError, match="rows has K=8, the activations K=9"):
        call(torch.ones(1, 9))
    with pytest.raises(RuntimeError, match="row_sums must be"):
        call(torch.ones(1, 8), sums=sums[:3])
    with pytest.raises(RuntimeError, match="rows must be a contiguous int8"):
        call(torch.ones(1, 8), rows=rows.float())
    with pytest.raises(RuntimeError, match="bias has 3 entries, N=4"):
        call(torch.ones(1, 8), bias=torch.ones(3))
    if max(native.gemv_isas()) < 2:
        with pytest.raises(RuntimeError, match="not supported by this CPU"):
            call(torch.ones(1, 8), isa=2)


@needs_fbgemm
def test_auto_warns_and_runs_the_torch_calls_when_the_operator_is_unavailable(monkeypatch) -> None:
    monkeypatch.setattr(schemes, "fused_decode_op", lambda: (None, "no compiler (simulated)"))
    schemes._warn_fused_unavailable.cache_clear()
    lin = nn.Linear(32, 8)
    auto = MSDLinear.from_linear(lin, MSDConfig(kernel="fbgemm"))
    plain = MSDLinear.from_linear(lin, MSDConfig(kernel="fbgemm", decode_op="torch"))
    x = torch.randn(1, 32)
    with pytest.warns(RuntimeWarning, match="no compiler \\(simulated\\)"), torch.no_grad():
        y = auto(x)
    with torch.no_grad():
        assert torch.equal(y, plain(x))
    with pytest.raises(RuntimeError, match=r"decode_op='fused'.*no compiler \(simulated\)"):
        MSDLinear.from_linear(lin, MSDConfig(kernel="fbgemm", decode_op="fused"))
    schemes._warn_fused_unavailable.cache_clear()


def test_torch_decode_op_never_builds(monkeypatch) -> None:
    def boom() -> None:
        raise AssertionError("decode_op='torch' must not load the operator")

    monkeypatch.setattr(schemes, "fused_decode_op", boom)
    lin = MSDLinear.from_linear(nn.Linear(16, 4), MSDConfig(decode_op="torch"))
    with torch.no_grad():
        lin(torch.randn(1, 16))


def test_config_validates_decode_op() -> None:
    with pytest.raises(ValueError, match="decode_op must be one of"):
        MSDConfig(decode_op="fast")
    with pytest.raises(ValueError, match="runs on the fbgemm kernel"):
        MSDConfig(kernel="onednn", decode_op="fused")
    cfg = MSDConfig(decode_op="torch")
    assert MSDConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in MSDConfig().to_dict().items() if k != "decode_op"}  # a checkpoint from before
    assert MSDConfig.from_dict(old).decode_op == "auto"


def test_a_failed_build_is_reported_not_raised(tmp_path: Path) -> None:
    """A broken compiler (``CXX=false``) in a fresh cache: the status says why, nothing raises, and
    ``decode_op="auto"`` still gives the torch path's results."""
    code = (
        "import json, torch, warnings\n"
        "from lowbit.msd import native, MSDConfig, MSDLinear\n"
        "s = native.decode_op_status()\n"
        "lin = MSDLinear.from_linear(torch.nn.Linear(16, 4), MSDConfig())\n"
        "ref = MSDLinear.from_linear(torch.nn.Linear(16, 4), MSDConfig(decode_op='torch'))\n"
        "ref.load_state_dict(lin.state_dict())\n"
        "x = torch.randn(1, 16)\n"
        "with warnings.catch_warnings(record=True) as w, torch.no_grad():\n"
        "    warnings.simplefilter('always')\n"
        "    same = torch.equal(lin(x), ref(x))\n"
        "print(json.dumps({'available': s.available, 'reason': s.reason, 'same': same,\n"
        "                  'warned': [str(m.message) for m in w]}))\n"
    )
    env = {**os.environ, "CXX": "false", "LOWBIT_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["available"] is False and out["reason"]
    assert out["same"] is True
    if isinstance(FBGEMM, Int8Profile):
        assert any("compiled MSD decode operator is unavailable" in m for m in out["warned"]), out
    assert (tmp_path / "cache" / "native").is_dir()  # it wrote only under LOWBIT_CACHE_DIR


def test_extension_name_tracks_the_source_and_torch() -> None:
    name = native.extension_name()
    assert name.startswith("lowbit_msd_decode_") and len(name) == len("lowbit_msd_decode_") + 16
    assert native.SOURCE.is_file()
    assert "-ffp-contract=off" in native.CFLAGS and not any("-ffast-math" in f or "-march" in f for f in native.CFLAGS)


def test_cache_root_honours_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path / "a"))
    assert native.cache_root() == tmp_path / "a"
    monkeypatch.delenv("LOWBIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert native.cache_root() == tmp_path / "x" / "lowbit"


def test_layers_pickle_and_copy_after_a_fused_decode() -> None:
    """``torch.save`` of a whole module and ``copy.deepcopy`` work after decode steps ran the compiled operator
    (it is looked up again, not pickled), and give the same outputs."""
    import copy
    import io

    layer = MSDLinear.from_linear(nn.Linear(64, 32), MSDConfig())
    x = torch.randn(1, 64)
    with torch.no_grad():
        y = layer(x)
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    with torch.no_grad():
        assert torch.equal(loaded(x), y)
        assert torch.equal(copy.deepcopy(layer)(x), y)


# ---------------------------------------------------------------------------------------------------------------
# the GEMV of the decode operator, on every instruction set this CPU runs
# ---------------------------------------------------------------------------------------------------------------

GEMV_ISAS = native.gemv_isas() if HAS_COMPILER else ()
needs_gemv = pytest.mark.skipif(not GEMV_ISAS, reason="the compiled operator is unavailable")


def _gemv_reference(a: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, zp: int) -> torch.Tensor:
    """``float32(float32(Σ (a - zp)·q) · scale)`` with the sums in int64 (exact, no int8 kernel involved)."""
    sums = (a.to(torch.int64) - zp) @ q.to(torch.int64).t()
    return sums.to(torch.float32) * scale


@needs_gemv
@pytest.mark.parametrize("isa", GEMV_ISAS, ids=lambda i: native.GEMV_ISAS[i])
@pytest.mark.parametrize(("r", "k", "n"), [(1, 1, 1), (2, 7, 3), (3, 63, 5), (4, 64, 4), (5, 65, 9), (9, 203, 67)])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("top", [255, 127], ids=["u8", "u7"])  # u7: the AVX2 kernel's vpmaddubsw path
def test_gemv_sums_are_exact_on_every_isa(isa: int, r: int, k: int, n: int, threads: int, top: int) -> None:
    gen = torch.Generator().manual_seed(r * 1000 + k)
    q = torch.randint(-127, 128, (n, k), generator=gen, dtype=torch.int8)
    q[0] = 127  # extreme rows: all +127 or all -127 weights against all-255 / all-1 activations
    if n > 1:
        q[1] = -127
    a = torch.randint(0, top + 1, (r, k), generator=gen, dtype=torch.uint8)
    a[0] = top
    q[0, ::3] = -128  # int8's most negative value: still no saturation in any kernel
    scale = torch.rand(n, generator=gen) * 1e-3 + 1e-6
    gemv = native.gemv_int8_op()
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = gemv(a, q, q.sum(1, dtype=torch.int32), scale, top // 2 + 1, isa)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(got, _gemv_reference(a, q, scale, top // 2 + 1))


@needs_gemv
@pytest.mark.parametrize("isa", GEMV_ISAS, ids=lambda i: native.GEMV_ISAS[i])
def test_gemv_sums_wrap_exactly_at_the_longest_k(isa: int) -> None:
    """At K = MAX_K the raw sum Σ u·q (u up to 255) leaves int32; the result Σ (u - 128)·q does not, and the
    wrapping 32-bit arithmetic gives it exactly."""
    k = kn.MAX_K
    q = torch.full((3, k), 127, dtype=torch.int8)
    q[1] = -127
    q[2, ::2] = -127
    a = torch.full((2, k), 255, dtype=torch.uint8)
    a[1] = 1  # u - 128 = -127
    scale = torch.ones(3)
    got = native.gemv_int8_op()(a, q, q.sum(1, dtype=torch.int32), scale, 128, isa)
    want = _gemv_reference(a, q, scale, 128)
    assert torch.equal(got, want)
    assert float(want.abs().max()) == float(torch.tensor(127 * 127 * k, dtype=torch.float32))


@needs_fbgemm
@needs_gemv
@pytest.mark.parametrize("k", [203, 4099])
def test_gemv_matches_fbgemm_bit_for_bit(k: int) -> None:
    """The GEMV's epilogue is fbgemm's: ``float32(sum)`` rounds once sums beyond 2^24 (K = 4099 with full-range
    components reaches ~6.6e7), then one float32 product with the channel scale."""
    gen = torch.Generator().manual_seed(k)
    n = 37
    q = torch.randint(-127, 128, (n, k), generator=gen, dtype=torch.int8)
    q[:4] = 127
    packed = pack_int8_weight(q, torch.rand(n, generator=gen) * 0.01 + 1e-4, "fbgemm")
    c = torch.randint(-FBGEMM.qmax, FBGEMM.qmax + 1, (4, k), generator=gen).to(torch.float32)
    c[0] = FBGEMM.qmax
    want = kn.gemm_with_profile(c, packed, FBGEMM)
    sums = c[:1].to(torch.int64) @ q[:4].to(torch.int64).t()
    assert int(sums.abs().min()) > 2**24 or k < 1000  # float32(sum) rounds here
    a = (c + FBGEMM.zero_point).to(torch.uint8)
    for isa in GEMV_ISAS:
        got = native.gemv_int8_op()(a, packed.rows, packed.row_sums, packed.scale, FBGEMM.zero_point, isa)
        assert torch.equal(got, want), native.GEMV_ISAS[isa]


@needs_fbgemm
@needs_gemv
@pytest.mark.parametrize("isa", GEMV_ISAS, ids=lambda i: native.GEMV_ISAS[i])
def test_decode_on_every_gemv_isa_gives_the_torch_path_bits(isa: int) -> None:
    fused, plain = _layers(1000, 70, bias=True, passes=2, seed=5)
    op, _ = kn.fused_decode_op()
    assert op is not None
    packed = fused._scheme._segments["fbgemm"][0][2]
    gen = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for m in (1, 2, 3, 8):
            x = torch.randn(m, 1000, generator=gen) * torch.logspace(-2, 2, m).unsqueeze(1)
            want = plain(x)
            for rows in (0, 64):
                got = op(x, packed, FBGEMM.passes_for(2), FBGEMM, fused.bias, isa=isa, gemv_max_rows=rows)
                assert torch.equal(got, want), (m, rows)


@needs_fbgemm
@needs_gemv
def test_layers_run_the_gemv_at_decode_and_fbgemm_above() -> None:
    """Which kernel runs is visible in the profiler: the GEMV adds no fbgemm call for comps·M <= gemv_max_rows."""
    from torch.profiler import profile

    fused, plain = _layers(256, 32, bias=False)
    comps = FBGEMM.passes_for(2)
    op, _ = kn.fused_decode_op()
    assert op is not None and op.gemv_max_rows == kn.GEMV_MAX_ROWS[op.isa] >= comps
    for m, fbgemm_calls in ((1, 0), (op.gemv_max_rows // comps + 1, 1)):
        x = torch.randn(m, 256)
        with profile() as prof, torch.no_grad():
            got = fused(x)
        names = [e.key for e in prof.key_averages()]
        assert sum("linear_with_input_q_dq" in name for name in names) == fbgemm_calls, names
        with torch.no_grad():
            assert torch.equal(got, plain(x))
