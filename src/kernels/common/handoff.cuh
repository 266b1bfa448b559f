// handoff.cuh — the decode handoff between the split selection's merge (sm90/indexer/merge_splits.cu) and the fused
// decode attention (decode/decode_attention.cu) inside one MsaDecode run: one 64-bit entry per (token, KV head,
// topk slot), {block id in the low 32 bits, its page in the high 32}, which the merge stores and the attention CTA
// of that slot polls, instead of waiting for the whole merge grid (griddepcontrol.wait) and then reading the topk
// row and the page table, two dependent round trips. H100, msa bench 1 x 1M decode, alternating runs in two calls
// against the same code without it: 98.1-99.2 -> 97.8-98.3 us end to end (medians 98.2 / 97.9); the attention now
// sees its entry 0.2 us after the merge's last store (globaltimer per CTA).
//
// Protocol, per run: the selection kernel sets every entry to kHandoffEmpty after its own wait (so nothing the
// previous run's attention still reads is touched, and nothing the workspace held before counts); the merge, which
// starts only once the selection grid has completed, stores each slot's entry once; the attention, launched once
// the merge has passed its wait (and so after the selection's stores are visible), polls its slot until the entry
// is not empty. An entry is stored by one 8-byte store and read by one 8-byte load (single-copy atomic), so the id
// and the page always come together. The attention waits for the merge grid before it exits, keeping the stream's
// order for whatever runs next.
#ifndef MSA_KERNELS_COMMON_HANDOFF_CUH_
#define MSA_KERNELS_COMMON_HANDOFF_CUH_

#include <climits>
#include <cstdint>

namespace msa {
namespace kernels {

// Id INT_MIN: not stored yet in this run (stored ids are >= -1).
constexpr unsigned long long kHandoffEmpty = 0x80000000ull;

__device__ __forceinline__ unsigned long long handoff_pack(int id, int page) {
  return (static_cast<unsigned long long>(static_cast<unsigned>(page)) << 32) | static_cast<unsigned>(id);
}
__device__ __forceinline__ int handoff_id(unsigned long long e) { return static_cast<int>(static_cast<unsigned>(e)); }
__device__ __forceinline__ int handoff_page(unsigned long long e) { return static_cast<int>(e >> 32); }

__device__ __forceinline__ void handoff_store(unsigned long long* p, unsigned long long v) {
  asm volatile("st.relaxed.gpu.global.b64 [%0], %1;\n" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ unsigned long long handoff_load(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.relaxed.gpu.global.b64 %0, [%1];\n" : "=l"(v) : "l"(p) : "memory");
  return v;
}
// Spins until the entry is stored; every thread that calls it gets the entry.
__device__ __forceinline__ unsigned long long handoff_wait(const unsigned long long* p) {
  unsigned long long v = handoff_load(p);
  while (handoff_id(v) == INT_MIN) v = handoff_load(p);
  return v;
}

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_COMMON_HANDOFF_CUH_
