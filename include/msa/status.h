// msa/status.h — the error type every msa operation returns.
//
// Operations never throw across the API. A failed call returns a Status whose message names the argument and the
// rule it broke (for example "topk[2, 17, 3]: block id 40 >= n_vis 33"), and a failed call writes no output.
#ifndef MSA_STATUS_H_
#define MSA_STATUS_H_

#include <string>
#include <utility>

namespace msa {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,  // an input breaks the contract; nothing was written
  kNotImplemented = 2,   // valid input that this build or device cannot run (yet)
  kCudaError = 3,        // the CUDA runtime reported an error
  kInternal = 4,         // a bug in msa
};

inline const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid argument";
    case StatusCode::kNotImplemented: return "not implemented";
    case StatusCode::kCudaError: return "cuda error";
    case StatusCode::kInternal: return "internal error";
  }
  return "unknown";
}

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return Status(StatusCode::kInvalidArgument, std::move(m)); }
  static Status NotImplemented(std::string m) { return Status(StatusCode::kNotImplemented, std::move(m)); }
  static Status CudaError(std::string m) { return Status(StatusCode::kCudaError, std::move(m)); }
  static Status Internal(std::string m) { return Status(StatusCode::kInternal, std::move(m)); }

  bool ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid argument: <message>", or "ok".
  std::string to_string() const {
    return ok() ? std::string("ok") : std::string(status_code_name(code_)) + ": " + message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

}  // namespace msa

// Returns the Status of `expr` from the enclosing function when it is not ok.
#define MSA_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::msa::Status msa_status_ = (expr);        \
    if (!msa_status_.ok()) return msa_status_; \
  } while (0)

#endif  // MSA_STATUS_H_
