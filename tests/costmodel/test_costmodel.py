import json

import pytest

from lowbit.cli import main
from lowbit.costmodel import PRESETS, get_hardware, get_model, kv_bytes_per_element, linear_cost, load_hardware
from lowbit.costmodel.kvcache import decode_attention_cost
from lowbit.costmodel.linear import WEIGHT_BYTES, CostParams
from lowbit.costmodel.tables import kv_bytes_table, linear_table

ASCEND, H100 = PRESETS["ascend-910b"], PRESETS["h100-sxm"]


def test_kv_bytes_reproduce_two_and_a_half():
    assert kv_bytes_per_element("int8", "dequant (decoupled)") == 5.0
    assert kv_bytes_per_element("int8", "msd (passes stream KV)") == 2.0
    assert (
        kv_bytes_per_element("int8", "dequant (decoupled)") / kv_bytes_per_element("int8", "msd (passes stream KV)")
        == 2.5
    )
    assert (
        kv_bytes_per_element("int8", "dequant (decoupled)") / kv_bytes_per_element("int8", "msd (passes stacked)")
        == 5.0
    )
    assert kv_bytes_per_element("mxfp4", "dequant (fused)") == 0.5 + 1 / 32
    _, rows = kv_bytes_table()
    assert rows[2][3] == 2.5
    with pytest.raises(ValueError, match="scheme"):
        kv_bytes_per_element("int8", "magic")


def test_decode_traffic_ratio_is_b_plus_4_over_b_on_decoupled_hardware():
    for weight in ("int8", "mxfp4"):
        hw = ASCEND if weight == "int8" else PRESETS["ascend-950pr"]
        dq = linear_cost(hw, 1, 8192, 8192, weight=weight)
        ms = linear_cost(hw, 1, 8192, 8192, weight=weight, scheme="msd")
        bw = WEIGHT_BYTES[weight]
        assert dq.bytes / ms.bytes == pytest.approx((bw + 4) / bw, rel=2e-3)
    # fused GPU dequant reads the weight once: about 1x
    assert linear_cost(H100, 1, 8192, 8192).bytes / linear_cost(H100, 1, 8192, 8192, scheme="msd").bytes == (
        pytest.approx(1.0, rel=2e-3)
    )


def test_two_int8_passes_cost_one_bf16_gemm_of_matrix_time():
    dq = linear_cost(ASCEND, 4096, 4096, 4096)
    ms = linear_cost(ASCEND, 4096, 4096, 4096, scheme="msd")
    assert ASCEND.p8 == 2 * ASCEND.p16
    assert ms.t_matrix == pytest.approx(dq.t_matrix)
    assert ms.ops[-1].bound == "matrix"


def test_msd_speedup_shrinks_from_decode_to_prefill_on_ascend():
    model = get_model("llama-3-8b")
    header, rows = linear_table([ASCEND], model, weights=("int8",), ms=(1, 4096))
    speedups = [r[header.index("MSD speedup")] for r in rows]
    assert speedups[0] > 4.5 and speedups[1] < speedups[0]


def test_mxfp4_msd_needs_native_mxfp4():
    with pytest.raises(ValueError, match="no native MXFP4"):
        linear_cost(H100, 1, 64, 64, weight="mxfp4", scheme="msd")
    with pytest.raises(ValueError, match="no native MXFP4"):
        decode_attention_cost(H100, get_model("qwen3-8b").attention, 128, kv_format="mxfp4", scheme="msd")


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="m must be"):
        linear_cost(ASCEND, 0, 64, 64)
    with pytest.raises(ValueError, match="weight"):
        linear_cost(ASCEND, 1, 64, 64, weight="int3")
    with pytest.raises(ValueError, match="scheme"):
        linear_cost(ASCEND, 1, 64, 64, scheme="fast")
    with pytest.raises(ValueError, match="passes"):
        CostParams(passes=0)
    with pytest.raises(ValueError, match="seq_k"):
        decode_attention_cost(ASCEND, get_model("llama-3-8b").attention, 0)
    with pytest.raises(ValueError, match="unknown model"):
        get_model("gpt-5")
    with pytest.raises(ValueError, match="unknown hardware"):
        get_hardware("tpu-v9")


def test_attention_traffic_and_mla_cache():
    mla = get_model("deepseek-v3").attention
    assert mla.kv_elements_per_token == 576  # V is the first 512 dims of the latent: stored once
    llama = get_model("llama-3-8b").attention
    stream = CostParams(stack_passes=False)
    dq = decode_attention_cost(ASCEND, llama, 32768)
    ms = decode_attention_cost(ASCEND, llama, 32768, scheme="msd", params=stream)
    assert dq.bytes / ms.bytes == pytest.approx(2.5, rel=0.01)  # GQA decode is KV-bound: the 2.5x shows up
    assert dq.latency / ms.latency > 2.0


def test_routed_experts_use_uniform_routing():
    ds = get_model("deepseek-v3")
    routed = [(lin, m, c) for lin, m, c in ds.linears_at(1) if lin.routed]
    assert all(m == 1 for _, m, _ in routed) and routed[0][2] == 8 * 2  # 8 experts x (gate, up)
    routed = [(lin, m, c) for lin, m, c in ds.linears_at(4096) if lin.routed]
    assert routed[0][2] == 256 * 2 and routed[0][1] == 128


def test_hardware_toml(tmp_path):
    good = tmp_path / "npu.toml"
    good.write_text(
        '[hardware]\nname = "npu"\nbf16_tflops = 100.0\nint8_tops = 200.0\nhbm_tbps = 1.0\n'
        "vector_tops = 5.0\ndecoupled = true\nmxfp4_tflops = 400.0\n"
    )
    hw = load_hardware(good)
    assert hw.status == "user" and hw.p4 == 4e14 and get_hardware(str(good)) == hw
    for text, match in [
        ('[hardware]\nname = "x"\n', "missing hardware keys"),
        (
            '[hardware]\nname="x"\nbf16_tflops=1\nint8_tops=1\nhbm_tbps=1\nvector_tops=1\ndecoupled=true\nfoo=1\n',
            "unknown hardware keys",
        ),
        (
            '[hardware]\nname="x"\nbf16_tflops=-1\nint8_tops=1\nhbm_tbps=1\nvector_tops=1\ndecoupled=true\n',
            "bf16_tflops must be a positive",
        ),
        ("[hardware\n", "not valid TOML"),
        ("name = 1\n", r"expected a \[hardware\] table"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ValueError, match=match):
            load_hardware(bad)


def test_cost_cli_tables_plot_and_json(tmp_path, capsys):
    png, js = tmp_path / "cost.png", tmp_path / "cost.json"
    code = main(["cost", "--model", "qwen3-8b", "--hardware", "ascend-910b,h200", "--ms", "1,64", "--seqs", "4096",
                 "--plot", str(png), "--json", str(js)])  # fmt: skip
    assert code == 0 and png.stat().st_size > 1000
    text = capsys.readouterr().out
    assert "2.5" in text and "qwen3-8b" in text
    data = json.loads(js.read_text())
    assert {"hardware", "linear", "kv_bytes", "attention"} <= set(data)
    assert main(["cost", "--hardware", "nope"]) == 2


def test_cost_cli_leaves_the_cpu_calibration_to_the_lab(capsys):
    assert main(["cost", "--hardware", "cpu"]) == 2  # calibrating this CPU is `lowbit cost-check`
    assert "lowbit cost-check" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["cost", "--compare-cpu"])
