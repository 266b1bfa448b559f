// main.cpp — the `msa` command-line tool: demo, bench, check, help.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "cli.h"
#include "msa/msa.h"

namespace msa {
namespace cli {

Options parse_options(int argc, char** argv, int first) {
  Options o;
  for (int i = first; i < argc; ++i) {
    const char* a = argv[i];
    if (std::strncmp(a, "--", 2) != 0) {
      o.errors.push_back(std::string("unexpected argument '") + a + "'");
      continue;
    }
    std::string key(a + 2), value = "1";
    const auto eq = key.find('=');
    if (eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
    } else if (i + 1 < argc && std::strncmp(argv[i + 1], "--", 2) != 0) {
      value = argv[++i];
    }
    o.values[key] = value;
  }
  return o;
}

std::int64_t Options::get_int(const std::string& k, std::int64_t def) {
  auto it = values.find(k);
  if (it == values.end()) return def;
  char* end = nullptr;
  const long long v = std::strtoll(it->second.c_str(), &end, 10);
  if (end == it->second.c_str() || *end != '\0') {
    errors.push_back("--" + k + " expects an integer, got '" + it->second + "'");
    return def;
  }
  return v;
}

std::string Options::get(const std::string& k, const std::string& def) const {
  auto it = values.find(k);
  return it == values.end() ? def : it->second;
}

}  // namespace cli
}  // namespace msa

namespace {

void print_help() {
  std::printf(
      "msa %s — MiniMax Sparse Attention for NVIDIA Hopper, with a CPU implementation\n\n"
      "usage: msa <command> [options]\n\n"
      "commands:\n"
      "  demo    run the full MSA pipeline (index selection -> sparse attention) on a synthetic long-context\n"
      "          problem with planted needle blocks; report needle recall, error against dense attention,\n"
      "          phase times and attention FLOPs saved\n"
      "            --tokens N     tokens per request (default 128K on the GPU, 4096 on the CPU)\n"
      "            --batch B      requests (default 1)\n"
      "            --needles K    planted needle blocks per request, 1..15 (default 8)\n"
      "            --device D     auto | cpu | cuda (default auto: cuda when its kernels and an sm_90 GPU exist)\n"
      "            --sample S     query tokens compared with dense attention on the CPU (default 32 GPU / 128 CPU)\n"
      "            --seed S       random seed (default 1)\n"
      "  bench   time one MSA layer on the GPU: per-phase and end-to-end times against the FLOP and byte floors\n"
      "            --mode M       prefill | decode (default prefill)\n"
      "            --tokens N     tokens per request: prefill length / decode context (default 128K / 1M)\n"
      "            --batch B      requests (default 1)\n"
      "            --queries Q    decode query tokens per request, 1..16 (default 1)\n"
      "            --heads H      query heads (default 64); --kv-heads G (default 4); --topk K (default 16)\n"
      "            --iters I      timed graph replays per phase (median reported)\n"
      "            --values V     tiled (default: a 2^22-value pool, repeating every 256 pages) | distinct\n"
      "            --pages P      strided (default: block i at page 7919 i mod pages) | shuffled (random permutation)\n"
      "                           | ordered (block i at page i)\n"
      "            --index-dtype T  bf16 (default) | fp8 (index_q and the index-K cache in e4m3)\n"
      "            --json FILE    also write the results as JSON\n"
      "  check   self-check of the CPU implementation (selection contract, dense equivalence, combine, k2q CSR)\n"
      "  help    this text (also --help, -h)\n",
      msa::version());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_help();
    return 2;
  }
  const std::string cmd = argv[1];
  if (cmd == "help" || cmd == "--help" || cmd == "-h") {
    print_help();
    return 0;
  }
  msa::cli::Options opts = msa::cli::parse_options(argc, argv, 2);
  if (opts.has("help")) {
    print_help();
    return 0;
  }
  if (cmd == "demo") return msa::cli::run_demo(opts);
  if (cmd == "check") return msa::cli::run_check(opts);
  if (cmd == "bench") return msa::cli::run_bench(opts);
  std::fprintf(stderr, "msa: unknown command '%s' (try msa --help)\n", cmd.c_str());
  return 2;
}
