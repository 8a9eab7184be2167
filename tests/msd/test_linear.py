"""MSDLinear and MSDConfig: fast path against the float64 reference, dtypes, shapes, errors, state_dict."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowbit import formats
from lowbit.msd import matmul, matmul_error_bound, matmul_reference
from lowbit.msd.config import MSDConfig
from lowbit.msd.isa import Int8Profile, int8_profile
from lowbit.msd.kernels import available_int8_kernels
from lowbit.msd.linear import MSDLinear

# kernels with an exact profile on this CPU (and under the ISA cap in force, see test_isa_caps.py)
EXACT = tuple(k for k in available_int8_kernels() if isinstance(int8_profile(k), Int8Profile))
INEXACT = tuple(k for k in available_int8_kernels() if k not in EXACT)


def _linear(k: int, n: int, seed: int, bias: bool = True) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.normal_(0, 0.02)
    return lin


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("kernel", INEXACT)
def test_a_kernel_without_an_exact_path_here_raises_clearly(kernel: str) -> None:
    with pytest.raises(RuntimeError, match=f"{kernel}.*cannot run exactly here"):
        MSDLinear(16, 8, config=MSDConfig(kernel=kernel))
    assert MSDLinear(16, 8, config=MSDConfig(kernel="auto")).kernel != kernel


@pytest.mark.parametrize("kernel", EXACT)
def test_int8_msd_matches_reference_within_bound(kernel: str) -> None:
    lin = _linear(320, 48, 0, bias=False)
    layer = MSDLinear.from_linear(lin, MSDConfig(kernel=kernel))
    x = torch.randn(2, 7, 320)
    y = layer(x)
    assert y.shape == (2, 7, 48) and y.dtype == torch.float32
    wq = layer.weight_quantized()
    exact = matmul_reference(x, wq)
    bound = matmul_error_bound(x, wq, passes=2)
    assert ((y.double() - exact).abs() <= bound * 1.01 + 1e-30).all()
    assert _rel(y, layer.reference_forward(x)) < 1e-5  # the float64 reference MSD, same decomposition rule


def test_int8_weights_are_formats_quantize_int() -> None:
    lin = _linear(64, 16, 1)
    layer = MSDLinear.from_linear(lin, MSDConfig())
    ref = formats.quantize_int(lin.weight.detach(), 8, "channel")
    assert torch.equal(layer.qweight, ref.q)
    assert torch.equal(layer.weight_scale, ref.scale.reshape(16, 1))
    assert torch.equal(layer.bias, lin.bias.detach())


def test_int8_groups_match_reference() -> None:
    lin = _linear(256, 24, 2)
    layer = MSDLinear.from_linear(lin, MSDConfig(group_size=64))
    assert layer.weight_scale.shape == (24, 4)
    x = torch.randn(5, 256)
    wq = layer.weight_quantized()
    bound = matmul_error_bound(x, wq, passes=2) + 1e-6 * lin.bias.detach().abs().max()
    assert ((layer(x).double() - matmul_reference(x, wq) - lin.bias.detach().double()).abs() <= bound * 1.01).all()


def test_mxfp4_msd_matches_reference_msd() -> None:
    lin = _linear(200, 40, 3)  # K not a multiple of 32: padded blocks
    layer = MSDLinear.from_linear(lin, MSDConfig(weight="mxfp4"))
    x = torch.randn(6, 200)
    x[2, :32] *= 1e-6  # a block far below the row maximum: several exponent bands
    y = layer(x)
    ref = matmul(x, layer.weight_quantized(), passes=2, accumulate=torch.float64) + lin.bias.detach().double()
    assert _rel(y, ref) < 1e-6
    assert _rel(y, layer.reference_forward(x)) < 1e-6
    exact = matmul_reference(x, layer.weight_quantized()) + lin.bias.detach().double()
    assert _rel(y, exact) < 0.05  # two MXFP4 activation passes (msd.md §8: about 1.4e-2)


def test_mxfp4_storage_is_4_25_bits_per_weight() -> None:
    layer = MSDLinear.from_linear(_linear(256, 64, 4, bias=False), MSDConfig(weight="mxfp4"))
    assert layer.memory_bytes()["stored"] * 8 == 64 * 256 * 4.25


@pytest.mark.parametrize("weight", ["int8", "mxfp4"])
def test_dequant_method_is_the_exact_dequantized_product(weight: str) -> None:
    lin = _linear(128, 32, 5)
    layer = MSDLinear.from_linear(lin, MSDConfig(weight=weight, method="dequant"))
    x = torch.randn(3, 128)
    assert layer.kernel == "dequant"
    assert _rel(layer(x), layer.reference_forward(x)) < 1e-6
    yb = layer(x.to(torch.bfloat16))
    assert yb.dtype == torch.bfloat16


def test_bfloat16_input_returns_bfloat16() -> None:
    layer = MSDLinear.from_linear(_linear(64, 8, 6), MSDConfig())
    x = torch.randn(4, 64).to(torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16
    assert _rel(y.float(), layer.reference_forward(x).float()) < 1e-2


def test_state_dict_round_trip_rebuilds_the_kernels() -> None:
    for cfg in (MSDConfig(), MSDConfig(weight="mxfp4"), MSDConfig(group_size=32)):
        layer = MSDLinear.from_linear(_linear(64, 8, 7), cfg)
        fresh = MSDLinear(64, 8, bias=True, config=cfg)
        fresh.load_state_dict(layer.state_dict())
        x = torch.randn(3, 64)
        assert torch.equal(fresh(x), layer(x))


def test_auto_kernel_dispatch_gives_the_same_numbers_as_each_backend() -> None:
    from lowbit.msd.kernels import AUTO_SMALL_ROWS

    lin = _linear(128, 40, 10)
    auto = MSDLinear.from_linear(lin, MSDConfig())
    big = AUTO_SMALL_ROWS // 2 + 1  # p·M = 2·big rows: above the threshold
    kernels = {p.kernel for p in auto._scheme.kernels}
    for m in (1, 3, big):
        x = torch.randn(m, 128)
        single = MSDLinear.from_linear(lin, MSDConfig(kernel=auto.kernel_for(m)))
        assert torch.equal(auto(x), single(x))
        for other in kernels:  # every backend auto holds gives the same bits at every M
            assert torch.equal(auto(x), MSDLinear.from_linear(lin, MSDConfig(kernel=other))(x))
    if "fbgemm" in kernels and "int_mm" in kernels:
        assert auto.kernel == "auto(fbgemm|int_mm)"
        assert auto.kernel_for(1) == "fbgemm" and auto.kernel_for(big) == "int_mm"


def test_auto_keeps_one_prepacked_copy_of_the_weight() -> None:
    """kernel="auto" prepacks one backend (issue 12: two copies doubled the weight memory); its int_mm path for large
    M multiplies a view of the stored qweight, without a copy."""
    lin = _linear(128, 40, 10)
    auto = MSDLinear.from_linear(lin, MSDConfig())
    assert auto.memory_bytes()["prepacked"] == sum(p.kernel != "int_mm" for p in auto._scheme.kernels) * 128 * 40
    assert auto.memory_bytes()["prepacked"] <= 128 * 40
    assert sum(p.kernel in ("fbgemm", "onednn") for p in auto._scheme.kernels) <= 1
    for segments in auto._scheme._segments.values():
        for _, _, packed in segments:
            if packed.kernel == "int_mm":
                assert packed.handle.untyped_storage().data_ptr() == auto.qweight.untyped_storage().data_ptr()
    configs = [MSDConfig(group_size=32)]
    if "int_mm" in EXACT:
        assert MSDLinear.from_linear(lin, MSDConfig(kernel="int_mm")).memory_bytes()["prepacked"] == 0
        configs.append(MSDConfig(kernel="int_mm", group_size=32))
    for cfg in configs:  # per-group K-segments (int_mm on strided views of the stored weight)
        layer = MSDLinear.from_linear(lin, cfg)
        x = torch.randn(300, 128)
        assert torch.equal(layer(x)[:5], layer(x[:5]))
        y64 = layer.reference_forward(x)
        assert float((layer(x).double() - y64).abs().max() / y64.abs().max()) < 1e-4


def test_tune_records_a_plan_and_keeps_outputs() -> None:
    layer = MSDLinear.from_linear(_linear(128, 64, 8), MSDConfig())
    x = torch.randn(8, 128)
    before = layer(x)
    timings = layer.tune((1, 8), repeats=1)
    assert set(timings) == {1, 8} and set(layer.plan) == {1, 8}
    assert layer.stacking_for(8) in ("stacked", "split")
    assert torch.equal(layer(x), before)
    assert MSDLinear.from_linear(_linear(8, 8, 0), MSDConfig(stacking="split")).stacking_for(1) == "split"


def test_bad_input_raises() -> None:
    layer = MSDLinear.from_linear(_linear(64, 8, 9), MSDConfig())
    with pytest.raises(ValueError, match="in_features=64"):
        layer(torch.randn(2, 63))
    with pytest.raises(TypeError, match="floating"):
        layer(torch.ones(2, 64, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        MSDLinear.from_linear(nn.Conv1d(2, 2, 1), MSDConfig())
    with pytest.raises(ValueError, match="group_size"):
        MSDLinear(64, 8, config=MSDConfig(group_size=48))
    with pytest.raises(ValueError, match="NaN"):
        bad = _linear(64, 8, 0)
        with torch.no_grad():
            bad.weight[0, 0] = float("nan")
        MSDLinear.from_linear(bad, MSDConfig())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight": "int4"}, "weight"),
        ({"method": "fast"}, "method"),
        ({"passes": 0}, "passes"),
        ({"passes": True}, "passes"),
        ({"group_size": 0}, "group_size"),
        ({"weight": "mxfp4", "group_size": 32}, "group_size"),
        ({"kernel": "cuda"}, "kernel"),
        ({"stacking": "both"}, "stacking"),
        ({"act_scale_rule": "floor"}, "act_scale_rule"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MSDConfig(**kwargs)


def test_config_dict_round_trip() -> None:
    cfg = MSDConfig(weight="mxfp4", passes=3, method="dequant")
    assert MSDConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        MSDConfig.from_dict({**cfg.to_dict(), "speed": "max"})


@pytest.mark.parametrize("weight", ["int8", "mxfp4"])
@pytest.mark.parametrize("method", ["msd", "dequant"])
def test_empty_batches_give_empty_outputs(weight: str, method: str) -> None:
    """An MoE expert that receives no tokens calls its linears with zero rows."""
    layer = MSDLinear.from_linear(_linear(64, 8, 9), MSDConfig(weight=weight, method=method))
    assert layer(torch.zeros(0, 64)).shape == (0, 8)
    assert layer(torch.zeros(2, 0, 64)).shape == (2, 0, 8)
    assert layer.reference_forward(torch.zeros(0, 64)).shape == (0, 8)


def test_decompose_accepts_zero_rows() -> None:
    from lowbit.msd import decompose

    for fmt in ("int8", "mxfp4", "mxfp8"):
        d = decompose(torch.zeros(0, 64), fmt, passes=2)
        assert d.reconstruct().shape == (0, 64)


def test_int8_rows_beyond_float32_scaling_match_the_reference_and_the_dequant_path() -> None:
    """Tiny rows (max|x| < 3.7e-37) used to return exactly 0; float64 rows near 1e300 and weights near 1e37 gave
    -inf/NaN where the dequant path is finite."""
    lin = _linear(128, 16, 10, bias=False)
    layer = MSDLinear.from_linear(lin, MSDConfig())
    x = torch.randn(4, 128, dtype=torch.float64)
    x[0] *= 1e-38
    x[1] *= 1e300
    x[2] *= 1e-300
    y = layer(x)
    ref = layer.reference_forward(x)
    assert y.dtype == torch.float64 and bool(torch.isfinite(y).all())
    for i in range(4):
        scale = ref[i].abs().max()  # rows near 1e300: compare after scaling (the norm itself would overflow)
        assert _rel(y[i] / scale, ref[i] / scale) < 1e-5, i
    tiny = layer(x[:1].float())
    assert (tiny != 0).any() and _rel(tiny[0], ref[0]) < 1e-4

    big = nn.Linear(128, 16, bias=False).double()
    with torch.no_grad():
        big.weight.normal_(0, 1e37)
    layer = MSDLinear.from_linear(big, MSDConfig())
    deq = MSDLinear.from_linear(big, MSDConfig(method="dequant"))
    xs = torch.randn(3, 128) * 0.01  # outputs ~1e36: finite in float32
    y, yd = layer(xs), deq(xs)
    assert bool(torch.isfinite(yd).all()) and bool(torch.isfinite(y).all())
    assert _rel(y, layer.reference_forward(xs)) < 1e-5


def test_int8_weight_beyond_float32_is_a_clear_error() -> None:
    w = nn.Linear(8, 4, bias=False).double()
    with torch.no_grad():
        w.weight.fill_(1e300)
    for weight in ("int8", "mxfp4"):
        with pytest.raises(ValueError, match="beyond float32's range"):
            MSDLinear.from_linear(w, MSDConfig(weight=weight))


def test_quantize_weight_in_row_blocks_gives_the_same_bytes(monkeypatch) -> None:
    """quantize_weight works in row blocks (bounded float64 temporaries); rows are independent, so every buffer is
    byte-identical to quantizing the whole weight at once, for every weight format."""
    import lowbit.msd.linear as linear_mod

    torch.manual_seed(3)
    w = torch.randn(37, 64) * torch.logspace(-3, 2, 37).unsqueeze(1)
    for cfg in (MSDConfig(), MSDConfig(group_size=16), MSDConfig(weight="mxfp4")):
        whole = linear_mod.quantize_weight(w, cfg)
        monkeypatch.setattr(linear_mod, "QUANTIZE_CHUNK_ELEMENTS", 64 * 5)  # 5 rows per block, a short last one
        blocks = linear_mod.quantize_weight(w, cfg)
        monkeypatch.undo()
        assert whole.keys() == blocks.keys()
        for name in whole:
            assert whole[name].dtype == blocks[name].dtype and torch.equal(whole[name], blocks[name]), (cfg, name)
    monkeypatch.setattr(linear_mod, "QUANTIZE_CHUNK_ELEMENTS", 64 * 5)
    bad = w.clone()
    bad[33, 7] = float("nan")  # in the last block
    with pytest.raises(ValueError, match="NaN or Inf"):
        linear_mod.quantize_weight(bad, MSDConfig())
    with pytest.raises(ValueError, match="does not divide"):
        linear_mod.quantize_weight(w[:, :60], MSDConfig(group_size=16))


def test_fbgemm_gives_the_same_bits_as_the_other_backends_at_any_batch_size() -> None:
    """fbgemm at 64 rows rounds as if it added the zero point first, so an unrounded last
    component 79.49999237 became 80 instead of 79 (one row in 64 differed by 16 ulp at 4096x4096). Every
    component is rounded by lowbit now: all backends agree bit for bit at every M."""
    kernels = [k for k in available_int8_kernels() if not isinstance(int8_profile(k), str)]
    if len(kernels) < 2 or "fbgemm" not in kernels:
        pytest.skip("needs fbgemm and another exact INT8 backend")
    torch.manual_seed(0)
    lin = torch.nn.Linear(4096, 4096)
    x = torch.randn(64, 4096)
    layers = {k: MSDLinear.from_linear(lin, MSDConfig(kernel=k)) for k in kernels}
    with torch.no_grad():
        for m in (1, 8, 64):
            outs = {k: layer(x[:m]) for k, layer in layers.items()}
            for k, y in outs.items():
                assert torch.equal(y, outs["fbgemm"]), (k, m)
