// lowbit: the MSD INT8 decode step as one torch operator (lowbit.msd.native builds it; docs/msd-inference.md).
//
// lowbit_msd::decode_fbgemm(x [M, K], packed fbgemm weight, comps, qmax, zero_point, bias?) computes exactly what
// lowbit.msd.kernels._msd_int8_decode computes with ~12 torch calls from Python, bit for bit:
//   a_r   = max_j |x_rj|                      (a row with NaN, or a_r outside [2^-60, 2^60], returns an empty
//                                              tensor: the caller runs the general path)
//   inv_r = float32(float32(1 / a_r) * qmax)
//   w_0   = float32(x_rj * inv_r);  c_i = RNE(w_i);  w_{i+1} = float32(float32(w_i - c_i) * 2·qmax)
//   c_{comps-1} = RNE(w_{comps-1})
//   out   = quantized::linear_with_input_q_dq_qweight_dq_output_fp32([c_0; ...; c_{comps-1}], 1.0, zero_point, w)
//   y     = (out_0 + (2·qmax)^-1 · out_1 + ...) / inv     (the same ATen add_/div_/addcdiv calls as Python)
// Every float operation is a single IEEE float32 operation: the file is compiled with -ffp-contract=off and
// without -ffast-math, so nothing is fused or reassociated. RNE(w) is (w + 1.5·2^23) - 1.5·2^23, exact round to
// nearest even for |w| < 2^22 (here |w| <= qmax + 1); it vectorises where std::nearbyint does not without SSE4.1.
#include <torch/extension.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/quantized/PackedParams.h>

#include <cmath>
#include <cstdint>

namespace {

using PackedWeight = c10::intrusive_ptr<LinearPackedParamsBase>;

constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23

inline float round_half_even(float w) {
  const float shifted = w + kRoundMagic;  // two roundings; not folded without -ffast-math / -fassociative-math
  return shifted - kRoundMagic;
}

at::Tensor fbgemm_linear_fp32(const at::Tensor& a, int64_t zero_point, const PackedWeight& w) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("quantized::linear_with_input_q_dq_qweight_dq_output_fp32", "")
                       .typed<at::Tensor(at::Tensor, double, int64_t, const PackedWeight&)>();
  return op.call(a, 1.0, zero_point, w);
}

at::Tensor decode_fbgemm(const at::Tensor& x_in, const PackedWeight& w, int64_t comps, int64_t qmax,
                         int64_t zero_point, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x_in.dim() == 2, "lowbit_msd::decode_fbgemm: x must be [M, K], got ", x_in.dim(), " dimensions");
  TORCH_CHECK(x_in.device().is_cpu(), "lowbit_msd::decode_fbgemm: x must be on the CPU");
  TORCH_CHECK(comps >= 1 && comps <= 8, "lowbit_msd::decode_fbgemm: comps must be in [1, 8], got ", comps);
  TORCH_CHECK(qmax >= 1 && qmax <= 127, "lowbit_msd::decode_fbgemm: qmax must be in [1, 127], got ", qmax);
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const int64_t m = x.size(0), k = x.size(1);
  TORCH_CHECK(m >= 1 && k >= 1, "lowbit_msd::decode_fbgemm: x must be non-empty, got [", m, ", ", k, "]");
  const float* xp = x.data_ptr<float>();
  at::Tensor inv = at::empty({m, 1}, x.options());
  float* invp = inv.data_ptr<float>();
  const float lo = std::ldexp(1.0f, -60), hi = std::ldexp(1.0f, 60);
  for (int64_t r = 0; r < m; ++r) {
    const float* row = xp + r * k;
    float amax = 0.0f;
    bool nan = false;
    for (int64_t j = 0; j < k; ++j) {
      const float v = std::fabs(row[j]);
      nan |= v != v;
      amax = v > amax ? v : amax;
    }
    if (nan || !(amax >= lo && amax <= hi)) return at::empty({0}, x.options());
    const float reciprocal = 1.0f / amax;
    invp[r] = reciprocal * static_cast<float>(qmax);
  }
  at::Tensor buf = at::empty({comps, m, k}, x.options());
  float* bp = buf.data_ptr<float>();
  const float step = static_cast<float>(2 * qmax);
  for (int64_t r = 0; r < m; ++r) {
    const float* row = xp + r * k;
    const float s = invp[r];
    float* last = bp + ((comps - 1) * m + r) * k;
    for (int64_t j = 0; j < k; ++j) last[j] = row[j] * s;
    for (int64_t i = 0; i + 1 < comps; ++i) {
      float* comp = bp + (i * m + r) * k;
      for (int64_t j = 0; j < k; ++j) {
        const float c = round_half_even(last[j]);
        comp[j] = c;
        const float rest = last[j] - c;
        last[j] = rest * step;
      }
    }
    for (int64_t j = 0; j < k; ++j) last[j] = round_half_even(last[j]);
  }
  at::Tensor out = fbgemm_linear_fp32(buf.view({comps * m, k}), zero_point, w);
  std::vector<at::Tensor> parts = out.chunk(comps);
  at::Tensor y = parts[0];
  for (int64_t i = 1; i < comps; ++i) {
    y.add_(parts[i], std::pow(static_cast<double>(2 * qmax), static_cast<double>(-i)));
  }
  if (!bias.has_value()) return y.div_(inv);
  return at::addcdiv(bias->to(at::kFloat), y, inv);
}

}  // namespace

TORCH_LIBRARY(lowbit_msd, m) {
  m.def(
      "decode_fbgemm(Tensor x, __torch__.torch.classes.quantized.LinearPackedParamsBase w, int comps, int qmax, "
      "int zero_point, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(lowbit_msd, CPU, m) { m.impl("decode_fbgemm", &decode_fbgemm); }
