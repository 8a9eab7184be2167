"""quantize_model swaps the selected nn.Linear layers in place."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowbit.msd.config import MSDConfig
from lowbit.msd.linear import MSDLinear
from lowbit.msd.quantize_model import quantize_model, quantized_layers


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 8)))


def test_quantizes_every_linear_by_default_in_place() -> None:
    model = _model()
    x = torch.randn(5, 32)
    with torch.no_grad():
        y = model(x)
    out = quantize_model(model, MSDConfig())
    assert out is model
    assert set(quantized_layers(model)) == {"0", "2.0", "2.1"}
    with torch.no_grad():
        assert float((model(x) - y).norm() / y.norm()) < 2e-2  # INT8 weight error only


def test_filter_fn_selects_layers() -> None:
    model = _model()
    quantize_model(model, MSDConfig(weight="mxfp4"), filter_fn=lambda name, m: name.startswith("2."))
    assert isinstance(model[0], nn.Linear) and not isinstance(model[0], MSDLinear)
    assert all(m.config.weight == "mxfp4" for m in quantized_layers(model).values())
    quantize_model(model, MSDConfig())  # already-quantized layers are left alone
    assert quantized_layers(model)["2.0"].config.weight == "mxfp4"


def test_errors() -> None:
    with pytest.raises(TypeError, match="model"):
        quantize_model("model", MSDConfig())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config"):
        quantize_model(_model(), {"weight": "int8"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="itself"):
        quantize_model(nn.Linear(4, 4), MSDConfig())
