// numeric.h — host conversions between bf16/fp16/fp8 (e4m3) bit patterns and float, and a fixed-order dot product.
//
// Conversions round to nearest even and keep NaN a NaN (fp8 e4m3 has no infinity: values beyond its range
// saturate to +-448); the dot product sums 8 interleaved lanes and then the lanes
// in a fixed order, so the result is the same on every machine and compiler that honours IEEE float.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace msa {
namespace ref {

inline float bf16_to_float(std::uint16_t h) {
  std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

inline float round_to_bf16(float f) { return bf16_to_float(float_to_bf16(f)); }

inline float fp16_to_float(std::uint16_t h) {
  const std::uint32_t sign = (h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t man = h & 0x3ffu;
  float f;
  if (exp == 0) {
    f = std::ldexp(static_cast<float>(man), -24);  // zero or subnormal
  } else if (exp == 31) {
    f = man ? NAN : INFINITY;
  } else {
    std::uint32_t u = ((exp + 112u) << 23) | (man << 13);
    std::memcpy(&f, &u, 4);
  }
  return sign ? -f : f;
}

inline std::uint16_t float_to_fp16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const float a = std::fabs(f);
  if (std::isnan(f)) return static_cast<std::uint16_t>(sign | 0x7e00u);
  if (a >= 65520.0f) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (a < 6.103515625e-05f) {  // subnormal range: quantum 2^-24, round to nearest even
    const float q = std::nearbyint(a * 16777216.0f);
    return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(q));
  }
  std::uint32_t v;
  std::memcpy(&v, &a, 4);
  v += 0xfffu + ((v >> 13) & 1u);  // round mantissa to 10 bits, nearest even
  const std::uint32_t exp = (v >> 23) - 112u;
  return static_cast<std::uint16_t>(sign | (exp << 10) | ((v >> 13) & 0x3ffu));
}

// OCP fp8 e4m3 ("e4m3fn"): 1 sign, 4 exponent (bias 7), 3 mantissa bits; exponent 15 with mantissa 7 is NaN, there
// is no infinity; largest finite 448, smallest subnormal 2^-9. Every e4m3 value is exact in bf16 and in float.
inline float fp8_e4m3_decode(std::uint8_t h) {
  const std::uint32_t exp = (h >> 3) & 0xfu, man = h & 0x7u;
  float f;
  if (exp == 0xfu && man == 0x7u) {
    f = NAN;
  } else if (exp == 0) {
    f = std::ldexp(static_cast<float>(man), -9);  // zero or subnormal
  } else {
    f = std::ldexp(static_cast<float>(8 + man), static_cast<int>(exp) - 10);
  }
  return (h & 0x80u) ? -f : f;
}

// The same through a table of all 256 codes (the reference's index loads convert every element they read).
inline float fp8_e4m3_to_float(std::uint8_t h) {
  struct Table {
    float v[256];
    Table() {
      for (int c = 0; c < 256; ++c) v[c] = fp8_e4m3_decode(static_cast<std::uint8_t>(c));
    }
  };
  static const Table table;
  return table.v[h];
}

// Round to nearest even; |f| beyond 448 (and +-inf) saturates to +-448; NaN stays NaN.
inline std::uint8_t float_to_fp8_e4m3(float f) {
  const std::uint8_t sign = std::signbit(f) ? 0x80u : 0x00u;
  if (std::isnan(f)) return static_cast<std::uint8_t>(sign | 0x7fu);
  const float a = std::fabs(f);
  if (a >= 448.0f) return static_cast<std::uint8_t>(sign | 0x7eu);
  if (a < 0.015625f) {  // subnormal range (below 2^-6): quantum 2^-9; 2^-6 itself rounds up into the normal range
    const float q = std::nearbyint(a * 512.0f);
    return static_cast<std::uint8_t>(sign | static_cast<std::uint8_t>(q));
  }
  int e = 0;
  const float m = std::frexp(a, &e);                 // a = m * 2^e, m in [0.5, 1)
  float q = std::nearbyint(m * 16.0f);               // 8 .. 16: the 1.xxx significand in eighths
  if (q == 16.0f) { q = 8.0f; ++e; }
  const int biased = e - 1 + 7;                      // a = (q / 8) * 2^(e - 1)
  if (biased > 15 || (biased == 15 && q > 14.0f)) return static_cast<std::uint8_t>(sign | 0x7eu);
  return static_cast<std::uint8_t>(sign | (biased << 3) | (static_cast<int>(q) - 8));
}

template <typename Acc>
inline Acc dot128(const float* a, const float* b) {
  Acc lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int d = 0; d < 128; d += 8)
    for (int l = 0; l < 8; ++l) lane[l] += static_cast<Acc>(a[d + l]) * static_cast<Acc>(b[d + l]);
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

}  // namespace ref
}  // namespace msa
