// A downstream program: selects blocks for one 3-block request through the installed msa library.
#include <cstdint>
#include <cstdio>
#include <vector>

#include <msa/msa.h>

int main() {
  const std::int64_t L = 300, pages = 3;
  std::vector<std::uint16_t> iq(4 * 128, 0x3f80), ik(pages * 128 * 128, 0x3f80);  // bf16 1.0
  std::vector<std::int32_t> page_table = {2, 0, 1}, cu = {0, 1}, seq = {static_cast<std::int32_t>(L)};
  std::vector<std::int32_t> topk(4 * 16, 7);
  msa::IndexPrefillArgs a;
  a.index_q = msa::make_tensor(iq.data(), msa::DType::kBF16, {1, 4, 128});
  a.index_k_cache = msa::make_tensor(ik.data(), msa::DType::kBF16, {pages, 128, 128});
  a.page_table = msa::make_tensor(page_table.data(), msa::DType::kInt32, {1, 3});
  a.cu_seqlens_q = msa::make_tensor(cu.data(), msa::DType::kInt32, {2});
  a.seq_lens_k = msa::make_tensor(seq.data(), msa::DType::kInt32, {1});
  a.topk = msa::make_tensor(topk.data(), msa::DType::kInt32, {4, 1, 16});
  const msa::Status st = msa::index_select_prefill(a);
  if (!st.ok()) {
    std::printf("error: %s\n", st.to_string().c_str());
    return 1;
  }
  // The query sits at position 299 (block 2): n_vis = 3 <= 16, so the selection is [0, 1, 2, -1, ...].
  for (int g = 0; g < 4; ++g)
    for (int s = 0; s < 16; ++s)
      if (topk[g * 16 + s] != (s < 3 ? s : -1)) {
        std::printf("unexpected topk[%d, 0, %d] = %d\n", g, s, topk[g * 16 + s]);
        return 1;
      }
  std::printf("msa %s consumer ok\n", msa::version());
  return 0;
}
