// Decode attention straight from a paged KV cache, on the CPU.
//
// One query token per sequence attends over its first context_lens[b] cached tokens,
// found through its block table. No gather copy of K/V, no padding to the longest
// sequence: each (sequence, kv head) pair reads its keys and values once, computes the
// scores of the query heads that share that kv head (grouped-query attention), a
// softmax in float32, and the weighted sum of values. Parallel over (sequence, kv head).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

template <typename scalar_t>
void decode_kernel(
    const scalar_t* q,          // [B, Hq, D]
    const scalar_t* k_cache,    // [NB, BS, Hkv, D]
    const scalar_t* v_cache,    // [NB, BS, Hkv, D]
    const int64_t* block_table, // [B, max_blocks]
    const int64_t* context_lens,// [B]
    scalar_t* out,              // [B, Hq, D]
    int64_t B, int64_t Hq, int64_t Hkv, int64_t D, int64_t BS, int64_t max_blocks,
    float scale) {
  const int64_t G = Hq / Hkv;
  at::parallel_for(0, B * Hkv, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> qf(G * D), acc(G * D), scores;
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t b = idx / Hkv, h = idx % Hkv;
      const int64_t L = context_lens[b];
      const int64_t* table = block_table + b * max_blocks;
      for (int64_t g = 0; g < G; ++g)
        for (int64_t d = 0; d < D; ++d)
          qf[g * D + d] = static_cast<float>(q[(b * Hq + h * G + g) * D + d]) * scale;
      scores.assign(G * L, 0.f);
      for (int64_t t = 0; t < L; ++t) {
        const scalar_t* kp = k_cache + ((table[t / BS] * BS + t % BS) * Hkv + h) * D;
        for (int64_t g = 0; g < G; ++g) {
          float s = 0.f;
          const float* qg = qf.data() + g * D;
          for (int64_t d = 0; d < D; ++d) s += qg[d] * static_cast<float>(kp[d]);
          scores[g * L + t] = s;
        }
      }
      for (int64_t g = 0; g < G; ++g) {
        float* sg = scores.data() + g * L;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t t = 0; t < L; ++t) m = std::max(m, sg[t]);
        float sum = 0.f;
        for (int64_t t = 0; t < L; ++t) { sg[t] = std::exp(sg[t] - m); sum += sg[t]; }
        const float inv = 1.f / sum;
        for (int64_t t = 0; t < L; ++t) sg[t] *= inv;
      }
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t t = 0; t < L; ++t) {
        const scalar_t* vp = v_cache + ((table[t / BS] * BS + t % BS) * Hkv + h) * D;
        for (int64_t g = 0; g < G; ++g) {
          const float p = scores[g * L + t];
          float* ag = acc.data() + g * D;
          for (int64_t d = 0; d < D; ++d) ag[d] += p * static_cast<float>(vp[d]);
        }
      }
      for (int64_t g = 0; g < G; ++g)
        for (int64_t d = 0; d < D; ++d)
          out[(b * Hq + h * G + g) * D + d] = static_cast<scalar_t>(acc[g * D + d]);
    }
  });
}

}  // namespace

torch::Tensor paged_decode_attention(
    torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache,
    torch::Tensor block_table, torch::Tensor context_lens, double scale) {
  TORCH_CHECK(q.is_contiguous() && k_cache.is_contiguous() && v_cache.is_contiguous(),
              "q and the caches must be contiguous");
  TORCH_CHECK(block_table.scalar_type() == torch::kLong && context_lens.scalar_type() == torch::kLong,
              "block_table and context_lens must be int64");
  auto bt = block_table.contiguous();
  auto cl = context_lens.contiguous();
  const int64_t B = q.size(0), Hq = q.size(1), D = q.size(2);
  const int64_t BS = k_cache.size(1), Hkv = k_cache.size(2);
  TORCH_CHECK(k_cache.size(3) == D && Hq % Hkv == 0, "head shapes do not match");
  auto out = torch::empty_like(q);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, q.scalar_type(), "paged_decode_attention", [&] {
    decode_kernel<scalar_t>(
        q.data_ptr<scalar_t>(), k_cache.data_ptr<scalar_t>(), v_cache.data_ptr<scalar_t>(),
        bt.data_ptr<int64_t>(), cl.data_ptr<int64_t>(), out.data_ptr<scalar_t>(),
        B, Hq, Hkv, D, BS, bt.size(1), static_cast<float>(scale));
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paged_decode_attention", &paged_decode_attention,
        "Decode attention over a paged KV cache (CPU)");
}
