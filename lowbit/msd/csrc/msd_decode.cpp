// lowbit: the MSD INT8 decode step as one torch operator (lowbit.msd.native builds it; docs/msd-inference.md).
//
// lowbit_msd::decode(x [M, K], packed fbgemm weight, comps, qmax, zero_point, bias?) and
// lowbit_msd::decode_gemv(x [M, K], rows, row_sums, scale, comps, qmax, zero_point, bias?, isa) compute exactly what
// lowbit.msd.kernels._msd_int8_decode computes with ~12 torch calls from Python, bit for bit:
//   a_r   = max_j |x_rj|                      (a row with NaN, or a_r outside [2^-60, 2^60], returns an empty
//                                              tensor: the caller runs the general path)
//   inv_r = float32(float32(1 / a_r) * qmax)
//   w_0   = float32(x_rj * inv_r);  c_i = RNE(w_i);  w_{i+1} = float32(float32(w_i - c_i) * 2·qmax)
//   c_{comps-1} = RNE(w_{comps-1})
//   o_i   = float32(float32(c_i · qᵀ) · scale)  (the exact int32 product, converted, times the channel scale)
//   y     = (...((o_0 + float32(α_1·o_1)) + float32(α_2·o_2)) ...) / inv  (+ bias),  α_i = float32((2·qmax)^-i)
// Every float operation is a single IEEE float32 operation: the file is compiled with -ffp-contract=off and
// without -ffast-math, so nothing is fused or reassociated. RNE(w) is (w + 1.5·2^23) - 1.5·2^23, exact round to
// nearest even for |w| < 2^22 (here |w| <= qmax + 1); it vectorises where std::nearbyint does not without SSE4.1.
//
// The products c_i · qᵀ run on one of two kernels, which give the same int32 sums:
// * decode_gemv (the caller uses it for a few rows, comps·M <= kernels.GEMV_MAX_ROWS): lowbit's own GEMV over the stored row-major INT8 weight `rows` [N, K]. Every weight
//   row is read once for all comps·M activation rows (fbgemm's GEMM reads its packed weight once per call too,
//   but costs ~1.1x its 1-row time with 2 rows). Activations enter as u = c + zero_point in [0, 255]; the sum is
//   Σ u·q - zero_point·Σ q (`row_sums`), in wrapping 32-bit arithmetic, exact because the true result fits int32
//   (|c|, |q| <= 127, K <= 133144). `isa` picks the instructions: 2 = AVX-512 VNNI (vpdpbusd adds each u8·s8
//   product straight into an int32 lane: no saturation), 1 = AVX2 (vpmaddubsw when every u <= 127, the 7-bit
//   components CPUs without VNNI use, whose int16 pair sums then stay below 2^15; otherwise both operands
//   widened to int16 first, then vpmaddwd), 0 = portable C++. All give identical sums; the epilogue is shared.
// * decode: fbgemm's quantized::linear_with_input_q_dq_qweight_dq_output_fp32 on the packed weight, with the
//   components as integer-valued float32 (its float output is float32(float32(sum) · scale), the same o_i).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/quantized/PackedParams.h>

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace {

using PackedWeight = c10::intrusive_ptr<LinearPackedParamsBase>;

constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23
constexpr int kGroup = 4;                   // activation rows per pass over a block of weight rows
constexpr int64_t kBlock = 4;               // weight rows per block

inline float round_half_even(float w) {
  const float shifted = w + kRoundMagic;  // two roundings; not folded without -ffast-math / -fassociative-math
  return shifted - kRoundMagic;
}

// ------------------------------------------------------------------------------------------------- GEMV kernels
// sums[r * ld + n] = Σ_k a[r·k + kk] · w[n·k + kk] (mod 2^32) for r < rows, n in [n0, n1).

// The lane sums of four vectors at once, [Σ a, Σ b, Σ c, Σ d] (wrapping int32 adds, so any order gives the same
// result): interleave and add pairs within each 128-bit lane, then add the four lanes.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) inline __m128i reduce4_vnni(__m512i a, __m512i b, __m512i c,
                                                                                 __m512i d) {
  const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
  const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
  const __m512i abcd = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
  const __m256i half = _mm256_add_epi32(_mm512_castsi512_si256(abcd), _mm512_extracti64x4_epi64(abcd, 1));
  return _mm_add_epi32(_mm256_castsi256_si128(half), _mm256_extracti128_si256(half, 1));
}

template <int G>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void dots_vnni_group(const uint8_t* a, const int8_t* w,
                                                                              int64_t k, int64_t n0, int64_t n1,
                                                                              int32_t* sums, int64_t ld) {
  constexpr int64_t kBlock = G <= 2 ? 8 : 4;  // weight rows read together: more rows, more loads in flight
  const int64_t kfull = k & ~int64_t(63);
  const int64_t rest = k - kfull;
  const __mmask64 tail = rest ? (~__mmask64(0) >> (64 - rest)) : 0;
  int64_t n = n0;
  for (; n + kBlock <= n1; n += kBlock) {
    __m512i acc[kBlock][G];
    for (int j = 0; j < kBlock; ++j)
      for (int r = 0; r < G; ++r) acc[j][r] = _mm512_setzero_si512();
    const int8_t* wn = w + n * k;
    for (int64_t kk = 0; kk < kfull; kk += 64) {
      __m512i av[G];
      for (int r = 0; r < G; ++r) av[r] = _mm512_loadu_si512(a + r * k + kk);
      for (int j = 0; j < kBlock; ++j) {
        const __m512i wv = _mm512_loadu_si512(wn + j * k + kk);
        for (int r = 0; r < G; ++r) acc[j][r] = _mm512_dpbusd_epi32(acc[j][r], av[r], wv);
      }
    }
    if (rest) {
      __m512i av[G];
      for (int r = 0; r < G; ++r) av[r] = _mm512_maskz_loadu_epi8(tail, a + r * k + kfull);
      for (int j = 0; j < kBlock; ++j) {
        const __m512i wv = _mm512_maskz_loadu_epi8(tail, wn + j * k + kfull);
        for (int r = 0; r < G; ++r) acc[j][r] = _mm512_dpbusd_epi32(acc[j][r], av[r], wv);
      }
    }
    for (int r = 0; r < G; ++r) {
      for (int j = 0; j < kBlock; j += 4) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(sums + r * ld + n + j),
                         reduce4_vnni(acc[j][r], acc[j + 1][r], acc[j + 2][r], acc[j + 3][r]));
      }
    }
  }
  for (; n < n1; ++n) {
    __m512i acc[G];
    for (int r = 0; r < G; ++r) acc[r] = _mm512_setzero_si512();
    const int8_t* wn = w + n * k;
    for (int64_t kk = 0; kk < kfull; kk += 64) {
      const __m512i wv = _mm512_loadu_si512(wn + kk);
      for (int r = 0; r < G; ++r) acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_loadu_si512(a + r * k + kk), wv);
    }
    if (rest) {
      const __m512i wv = _mm512_maskz_loadu_epi8(tail, wn + kfull);
      for (int r = 0; r < G; ++r)
        acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_maskz_loadu_epi8(tail, a + r * k + kfull), wv);
    }
    for (int r = 0; r < G; ++r) sums[r * ld + n] = _mm512_reduce_add_epi32(acc[r]);
  }
}

__attribute__((target("avx2"))) inline int32_t hsum_avx2(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// sums[r·ld] = the lanes of acc[r] plus the products of columns [kfull, k) (wrapping 32-bit arithmetic)
template <int G>
__attribute__((target("avx2"))) void finish_avx2(const __m256i* acc, const uint8_t* a, const int8_t* wn, int64_t k,
                                                 int64_t kfull, int32_t* sums, int64_t ld) {
  for (int r = 0; r < G; ++r) {
    uint32_t s = static_cast<uint32_t>(hsum_avx2(acc[r]));
    for (int64_t kk = kfull; kk < k; ++kk) s += static_cast<uint32_t>(a[r * k + kk] * static_cast<int32_t>(wn[kk]));
    sums[r * ld] = static_cast<int32_t>(s);
  }
}

template <int G>
__attribute__((target("avx2"))) void dots_avx2_group(const uint8_t* a, const int8_t* w, int64_t k, int64_t n0,
                                                     int64_t n1, int32_t* sums, int64_t ld, bool narrow) {
  // narrow (every u <= 127): vpmaddubsw adds pairs of u8·s8 products into int16, at most 2·127·127 = 32258, so it
  // never saturates; vpmaddwd with ones widens the pairs to int32. Otherwise both operands are widened to int16
  // first (vpmovzxbw / vpmovsxbw) and vpmaddwd adds pairs of at most 255·127 into int32.
  const int64_t kstep = narrow ? 32 : 16;
  const int64_t kfull = k - k % kstep;
  const __m256i ones = _mm256_set1_epi16(1);
  int64_t n = n0;
  for (; n + kBlock <= n1; n += kBlock) {
    __m256i acc[kBlock][G];
    for (int j = 0; j < kBlock; ++j)
      for (int r = 0; r < G; ++r) acc[j][r] = _mm256_setzero_si256();
    const int8_t* wn = w + n * k;
    if (narrow) {
      for (int64_t kk = 0; kk < kfull; kk += 32) {
        __m256i av[G];
        for (int r = 0; r < G; ++r) av[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + r * k + kk));
        for (int j = 0; j < kBlock; ++j) {
          const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wn + j * k + kk));
          for (int r = 0; r < G; ++r)
            acc[j][r] = _mm256_add_epi32(acc[j][r], _mm256_madd_epi16(_mm256_maddubs_epi16(av[r], wv), ones));
        }
      }
    } else {
      for (int64_t kk = 0; kk < kfull; kk += 16) {
        __m256i av[G];
        for (int r = 0; r < G; ++r)
          av[r] = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + r * k + kk)));
        for (int j = 0; j < kBlock; ++j) {
          const __m256i wv =
              _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wn + j * k + kk)));
          for (int r = 0; r < G; ++r) acc[j][r] = _mm256_add_epi32(acc[j][r], _mm256_madd_epi16(av[r], wv));
        }
      }
    }
    for (int j = 0; j < kBlock; ++j) finish_avx2<G>(acc[j], a, w + (n + j) * k, k, kfull, sums + n + j, ld);
  }
  for (; n < n1; ++n) {
    __m256i acc[G];
    for (int r = 0; r < G; ++r) acc[r] = _mm256_setzero_si256();
    const int8_t* wn = w + n * k;
    for (int64_t kk = 0; kk < kfull; kk += kstep) {
      if (narrow) {
        const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wn + kk));
        for (int r = 0; r < G; ++r) {
          const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + r * k + kk));
          acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(_mm256_maddubs_epi16(av, wv), ones));
        }
      } else {
        const __m256i wv = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wn + kk)));
        for (int r = 0; r < G; ++r) {
          const __m256i av =
              _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + r * k + kk)));
          acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(av, wv));
        }
      }
    }
    finish_avx2<G>(acc, a, wn, k, kfull, sums + n, ld);
  }
}

void dots_portable(const uint8_t* a, int rows, const int8_t* w, int64_t k, int64_t n0, int64_t n1, int32_t* sums,
                   int64_t ld) {
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* wn = w + n * k;
    for (int r = 0; r < rows; ++r) {
      uint32_t s = 0;
      for (int64_t kk = 0; kk < k; ++kk) s += static_cast<uint32_t>(a[r * k + kk] * static_cast<int32_t>(wn[kk]));
      sums[r * ld + n] = static_cast<int32_t>(s);
    }
  }
}

template <int G>
void dots_group(int isa, const uint8_t* a, const int8_t* w, int64_t k, int64_t n0, int64_t n1, int32_t* sums,
                int64_t ld, bool narrow) {
  if (isa == 2) {
    dots_vnni_group<G>(a, w, k, n0, n1, sums, ld);
  } else if (isa == 1) {
    dots_avx2_group<G>(a, w, k, n0, n1, sums, ld, narrow);
  } else {
    dots_portable(a, G, w, k, n0, n1, sums, ld);
  }
}

// All `rows` activation rows against weight rows [n0, n1): blocks of weight rows, each read once from memory and
// then from cache by every group of kGroup activation rows. `narrow`: every activation byte is at most 127.
void dots(int isa, const uint8_t* a, int64_t rows, const int8_t* w, int64_t k, int64_t n0, int64_t n1,
          int32_t* sums, int64_t ld, bool narrow) {
  const int64_t span = rows <= kGroup ? n1 - n0 : 16;
  for (int64_t b = n0; b < n1; b += span) {
    const int64_t e = std::min(n1, b + span);
    for (int64_t r = 0; r < rows; r += kGroup) {
      const uint8_t* ar = a + r * k;
      int32_t* sr = sums + r * ld;
      switch (std::min<int64_t>(kGroup, rows - r)) {
        case 1: dots_group<1>(isa, ar, w, k, b, e, sr, ld, narrow); break;
        case 2: dots_group<2>(isa, ar, w, k, b, e, sr, ld, narrow); break;
        case 3: dots_group<3>(isa, ar, w, k, b, e, sr, ld, narrow); break;
        default: dots_group<4>(isa, ar, w, k, b, e, sr, ld, narrow); break;
      }
    }
  }
}

int max_isa() {
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vnni")) {
    return 2;
  }
  return __builtin_cpu_supports("avx2") ? 1 : 0;
}

void check_isa(int64_t isa, const char* who) {
  TORCH_CHECK(isa >= 0 && isa <= 2, who, ": isa must be 0 (portable), 1 (AVX2) or 2 (AVX-512 VNNI), got ", isa);
  TORCH_CHECK(isa <= max_isa(), who, ": isa ", isa, " is not supported by this CPU (at most ", max_isa(), ")");
}

void check_rows(const at::Tensor& rows, const at::Tensor& row_sums, const at::Tensor& scale, int64_t k,
                const char* who) {
  TORCH_CHECK(rows.dim() == 2 && rows.scalar_type() == at::kChar && rows.is_contiguous() && rows.device().is_cpu(),
              who, ": rows must be a contiguous int8 [N, K] CPU tensor");
  TORCH_CHECK(rows.size(1) == k, who, ": rows has K=", rows.size(1), ", the activations K=", k);
  const int64_t n = rows.size(0);
  TORCH_CHECK(row_sums.dim() == 1 && row_sums.size(0) == n && row_sums.scalar_type() == at::kInt &&
                  row_sums.is_contiguous(),
              who, ": row_sums must be a contiguous int32 [N] tensor");
  TORCH_CHECK(scale.dim() == 1 && scale.size(0) == n && scale.scalar_type() == at::kFloat && scale.is_contiguous(),
              who, ": scale must be a contiguous float32 [N] tensor");
}

// o[r·n + j] = float32(float32(s) · scale[j]) with s = sums[r·n + j] - zero_point·row_sums[j] (mod 2^32)
inline float product(const int32_t* sums, const int32_t* row_sums, const float* scale, int64_t zp, int64_t j) {
  const uint32_t s = static_cast<uint32_t>(sums[j]) - static_cast<uint32_t>(zp) * static_cast<uint32_t>(row_sums[j]);
  return static_cast<float>(static_cast<int32_t>(s)) * scale[j];
}

// ------------------------------------------------------------------------------------------------- operators

at::Tensor gemv_int8(const at::Tensor& a_in, const at::Tensor& rows, const at::Tensor& row_sums,
                     const at::Tensor& scale, int64_t zero_point, int64_t isa) {
  const char* who = "lowbit_msd::gemv_int8";
  check_isa(isa, who);
  TORCH_CHECK(a_in.dim() == 2 && a_in.scalar_type() == at::kByte && a_in.device().is_cpu(), who,
              ": a must be a uint8 [R, K] CPU tensor");
  TORCH_CHECK(zero_point >= 0 && zero_point <= 255, who, ": zero_point must be in [0, 255], got ", zero_point);
  const at::Tensor a = a_in.contiguous();
  const int64_t r = a.size(0), k = a.size(1);
  check_rows(rows, row_sums, scale, k, who);
  const int64_t n = rows.size(0);
  at::Tensor sums = at::empty({r, n}, a.options().dtype(at::kInt));
  at::Tensor out = at::empty({r, n}, a.options().dtype(at::kFloat));
  if (r == 0 || n == 0) return out;
  const uint8_t* ap = a.data_ptr<uint8_t>();
  const int8_t* wp = rows.data_ptr<int8_t>();
  int32_t* sp = sums.data_ptr<int32_t>();
  const int32_t* rs = row_sums.data_ptr<int32_t>();
  const float* sc = scale.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const bool narrow = a.max().item<uint8_t>() <= 127;
  at::parallel_for(0, n, 64, [&](int64_t b, int64_t e) {
    dots(static_cast<int>(isa), ap, r, wp, k, b, e, sp, n, narrow);
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = b; j < e; ++j) op[i * n + j] = product(sp + i * n, rs, sc, zero_point, j);
  });
  return out;
}

at::Tensor fbgemm_linear_fp32(const at::Tensor& a, int64_t zero_point, const PackedWeight& w) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("quantized::linear_with_input_q_dq_qweight_dq_output_fp32", "")
                       .typed<at::Tensor(at::Tensor, double, int64_t, const PackedWeight&)>();
  return op.call(a, 1.0, zero_point, w);
}

// The whole decode step; `w` (fbgemm) when `gemv` is false, `rows`/`row_sums`/`scale`/`isa` when it is true.
at::Tensor decode_impl(const char* who, const at::Tensor& x_in, const PackedWeight* w, const at::Tensor* rows_p,
                       const at::Tensor* row_sums_p, const at::Tensor* scale_p, int64_t comps, int64_t qmax,
                       int64_t zero_point, const std::optional<at::Tensor>& bias, int64_t isa, bool gemv) {
  TORCH_CHECK(x_in.dim() == 2, who, ": x must be [M, K], got ", x_in.dim(), " dimensions");
  TORCH_CHECK(x_in.device().is_cpu(), who, ": x must be on the CPU");
  TORCH_CHECK(comps >= 1 && comps <= 8, who, ": comps must be in [1, 8], got ", comps);
  TORCH_CHECK(qmax >= 1 && qmax <= 127, who, ": qmax must be in [1, 127], got ", qmax);
  TORCH_CHECK(zero_point >= qmax && zero_point + qmax <= 255, who, ": zero_point ", zero_point,
              " does not keep components of [-qmax, qmax] in [0, 255]");
  if (gemv) check_isa(isa, who);
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const int64_t m = x.size(0), k = x.size(1);
  TORCH_CHECK(m >= 1 && k >= 1, who, ": x must be non-empty, got [", m, ", ", k, "]");
  if (gemv) check_rows(*rows_p, *row_sums_p, *scale_p, k, who);
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
  // components, row (i·m + r): float32 for fbgemm, u = c + zero_point as uint8 for the GEMV
  at::Tensor buf = at::empty({comps * m, k}, x.options().dtype(gemv ? at::kByte : at::kFloat));
  std::vector<float> work(static_cast<size_t>(k));
  const float step = static_cast<float>(2 * qmax);
  const float zpf = static_cast<float>(zero_point);
  for (int64_t r = 0; r < m; ++r) {
    const float* row = xp + r * k;
    const float s = invp[r];
    float* last = work.data();
    for (int64_t j = 0; j < k; ++j) last[j] = row[j] * s;
    for (int64_t i = 0; i < comps; ++i) {
      const bool final = i + 1 == comps;
      if (gemv) {
        uint8_t* comp = buf.data_ptr<uint8_t>() + (i * m + r) * k;
        for (int64_t j = 0; j < k; ++j) {
          const float c = round_half_even(last[j]);
          comp[j] = static_cast<uint8_t>(static_cast<int32_t>(c + zpf));  // exact: small integers
          if (!final) last[j] = (last[j] - c) * step;
        }
      } else {
        float* comp = buf.data_ptr<float>() + (i * m + r) * k;
        for (int64_t j = 0; j < k; ++j) {
          const float c = round_half_even(last[j]);
          comp[j] = c;
          if (!final) last[j] = (last[j] - c) * step;
        }
      }
    }
  }
  std::vector<float> alpha(static_cast<size_t>(comps));
  for (int64_t i = 0; i < comps; ++i) alpha[i] = static_cast<float>(std::pow(static_cast<double>(step), -double(i)));
  at::Tensor bias_f;
  if (bias.has_value()) {
    bias_f = bias->to(at::kFloat).contiguous();
    TORCH_CHECK(bias_f.dim() == 1, who, ": bias must be 1-D");
  }
  const float* bp = bias.has_value() ? bias_f.data_ptr<float>() : nullptr;
  if (gemv) {
    const at::Tensor& rows = *rows_p;
    const at::Tensor& row_sums = *row_sums_p;
    const at::Tensor& scale = *scale_p;
    const int64_t n = rows.size(0);
    if (bp != nullptr) TORCH_CHECK(bias_f.size(0) == n, who, ": bias has ", bias_f.size(0), " entries, N=", n);
    at::Tensor sums = at::empty({comps * m, n}, x.options().dtype(at::kInt));
    at::Tensor y = at::empty({m, n}, x.options());
    const uint8_t* ap = buf.data_ptr<uint8_t>();
    const int8_t* wp = rows.data_ptr<int8_t>();
    int32_t* sp = sums.data_ptr<int32_t>();
    const int32_t* rs = row_sums.data_ptr<int32_t>();
    const float* sc = scale.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    at::parallel_for(0, n, 64, [&](int64_t b, int64_t e) {
      dots(static_cast<int>(isa), ap, comps * m, wp, k, b, e, sp, n, zero_point + qmax <= 127);
      for (int64_t r = 0; r < m; ++r) {
        float* yr = yp + r * n;
        const float v = invp[r];
        for (int64_t j = b; j < e; ++j) yr[j] = product(sp + r * n, rs, sc, zero_point, j);
        for (int64_t i = 1; i < comps; ++i) {
          const int32_t* si = sp + (i * m + r) * n;
          const float al = alpha[i];
          for (int64_t j = b; j < e; ++j) {
            const float t = product(si, rs, sc, zero_point, j) * al;
            yr[j] = yr[j] + t;
          }
        }
        for (int64_t j = b; j < e; ++j) yr[j] = yr[j] / v;
        if (bp != nullptr)
          for (int64_t j = b; j < e; ++j) yr[j] = bp[j] + yr[j];
      }
    });
    return y;
  }
  at::Tensor out = fbgemm_linear_fp32(buf, zero_point, *w);
  std::vector<at::Tensor> parts = out.chunk(comps);
  at::Tensor y = parts[0];
  for (int64_t i = 1; i < comps; ++i) y.add_(parts[i].mul_(static_cast<double>(alpha[i])));
  if (!bias.has_value()) return y.div_(inv);
  return at::addcdiv(bias_f, y, inv);
}

// Two operators, so that the GEMV's callers do not pass the packed fbgemm weight: converting that TorchBind object
// from Python costs ~20 µs a call (measured: this operator declining a zero row, 25 µs with it, ~5 µs without).
at::Tensor decode(const at::Tensor& x, const PackedWeight& w, int64_t comps, int64_t qmax, int64_t zero_point,
                  const std::optional<at::Tensor>& bias) {
  return decode_impl("lowbit_msd::decode", x, &w, nullptr, nullptr, nullptr, comps, qmax, zero_point, bias, 0, false);
}

at::Tensor decode_gemv(const at::Tensor& x, const at::Tensor& rows, const at::Tensor& row_sums, const at::Tensor& scale,
                       int64_t comps, int64_t qmax, int64_t zero_point, const std::optional<at::Tensor>& bias,
                       int64_t isa) {
  return decode_impl("lowbit_msd::decode_gemv", x, nullptr, &rows, &row_sums, &scale, comps, qmax, zero_point, bias,
                     isa, true);
}

int64_t gemv_max_isa() { return max_isa(); }

}  // namespace

TORCH_LIBRARY(lowbit_msd, m) {
  m.def(
      "decode(Tensor x, __torch__.torch.classes.quantized.LinearPackedParamsBase w, int comps, int qmax, "
      "int zero_point, Tensor? bias) -> Tensor");
  m.def(
      "decode_gemv(Tensor x, Tensor rows, Tensor row_sums, Tensor scale, int comps, int qmax, int zero_point, "
      "Tensor? bias, int isa) -> Tensor");
  m.def("gemv_int8(Tensor a, Tensor rows, Tensor row_sums, Tensor scale, int zero_point, int isa) -> Tensor");
  m.def("gemv_max_isa() -> int", &gemv_max_isa);
}

TORCH_LIBRARY_IMPL(lowbit_msd, CPU, m) {
  m.impl("decode", &decode);
  m.impl("decode_gemv", &decode_gemv);
  m.impl("gemv_int8", &gemv_int8);
}
