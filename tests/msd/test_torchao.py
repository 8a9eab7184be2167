"""``torchao.quantization.quantize_(model, LowbitMSDConfig())`` (torchao's own entry point, the handler registered
with ``register_quantize_module_handler``) swaps in MSDLinear layers equal to ``lowbit.msd.quantize_model``'s."""

from __future__ import annotations

import pytest
import torch

torchao = pytest.importorskip("torchao")

from torchao.quantization import quantize_  # noqa: E402
from torchao.quantization.transform_module import _QUANTIZE_CONFIG_HANDLER  # noqa: E402

from lowbit.msd import MSDConfig, MSDLinear, quantize_model  # noqa: E402
from lowbit.msd.torchao import LowbitMSDConfig, msd_linear_from_torchao  # noqa: E402


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.GELU(), torch.nn.Linear(96, 32, bias=False))


@pytest.mark.parametrize(
    "kwargs", [{}, {"passes": 3}, {"weight": "mxfp4"}, {"method": "dequant"}, {"group_size": 32}], ids=str
)
def test_quantize_swaps_in_msd_linear_like_quantize_model(kwargs: dict) -> None:
    assert _QUANTIZE_CONFIG_HANDLER[LowbitMSDConfig] is msd_linear_from_torchao
    ours, theirs = _model(), _model()
    quantize_model(ours, MSDConfig(**kwargs))
    quantize_(theirs, LowbitMSDConfig(**kwargs))
    for a, b in zip(ours, theirs, strict=True):
        assert type(a) is type(b)
        if isinstance(a, MSDLinear):
            assert a.config == b.config == MSDConfig(**kwargs)
            for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
                assert na == nb and torch.equal(ta, tb)
    x = torch.randn(5, 64)
    assert torch.equal(ours(x), theirs(x))
    quantize_(theirs, LowbitMSDConfig(**kwargs))  # already quantized: nothing left to select
    assert torch.equal(ours(x), theirs(x))


def test_filter_fn_and_bad_config() -> None:
    m = _model()
    quantize_(m, LowbitMSDConfig(), filter_fn=lambda mod, fqn: fqn == "2")
    assert [type(x).__name__ for x in m] == ["Linear", "GELU", "MSDLinear"]
    with pytest.raises(ValueError, match="passes"):
        LowbitMSDConfig(passes=0)
    with pytest.raises(ValueError, match="weight"):
        LowbitMSDConfig(weight="int4")
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        quantize_(_model(), LowbitMSDConfig(), filter_fn=lambda mod, fqn: isinstance(mod, torch.nn.GELU))
