// msa/params.h — the fixed geometry of MSA and the defaults of MiniMax-M3.
//
// Head dim, block size and page size are compile-time facts of the kernels; lengths, batch and k stay runtime values.
#ifndef MSA_PARAMS_H_
#define MSA_PARAMS_H_

namespace msa {

constexpr int kHeadDim = 128;         // D = D_idx for q, k, v, index_q, index_k
constexpr int kBlockSize = 128;       // one sparse KV block = one page of every cache
constexpr int kPageSize = kBlockSize;
constexpr int kDefaultTopK = 16;      // selected blocks per (query, KV head): 15 history + the local block
constexpr int kMaxTopK = 16;
constexpr int kMaxDecodeQueries = 16;  // query tokens per request in decode (1 token or MTP drafts)

// MiniMax-M3 attention geometry.
constexpr int kM3NumQHeads = 64;
constexpr int kM3NumKVHeads = 4;  // = index heads
constexpr double kDefaultSmScale = 0.08838834764831845;  // 1/sqrt(128)

}  // namespace msa

#endif  // MSA_PARAMS_H_
