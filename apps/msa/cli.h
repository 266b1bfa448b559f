// cli.h — the subcommands of the `msa` tool and their small shared helpers.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "msa/status.h"

namespace msa {
namespace cli {

// --name value / --flag options after the subcommand. Unknown options are reported by the subcommand.
struct Options {
  std::map<std::string, std::string> values;
  std::vector<std::string> errors;
  bool has(const std::string& k) const { return values.count(k) != 0; }
  std::int64_t get_int(const std::string& k, std::int64_t def);
  std::string get(const std::string& k, const std::string& def) const;
};
Options parse_options(int argc, char** argv, int first);

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run_demo(Options& opts);
}  // namespace cli
namespace testing {
struct Problem;
}
namespace cli {
// The GPU leg of the demo (demo_gpu.cpp): whether it can run here, and the run itself (times in seconds, including
// the first calls' one-time setup).
bool gpu_pipeline_available();
Status run_pipeline_gpu(testing::Problem& p, double* t_index, double* t_attn);
int run_check(Options& opts);
int run_bench(Options& opts);

}  // namespace cli
}  // namespace msa
