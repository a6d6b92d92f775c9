// The instruction-set paths, listed once. Every per-ISA piece of the core — the kernel declarations, the
// dispatch switches, the self-tests, the names info() reports — is generated from these lists, so adding
// an ISA is one line here, its translation unit kernels/<name>.cc and, in CMakeLists.txt, its name in the
// architecture's list and its EFFNET_FLAGS_<name> line.
#pragma once

#include <string>

// X(name, Enum, lanes, cpu_has_it): `name` is the ISA's namespace, translation unit and EFFNET_ISA value;
// `lanes` its fp32 vector width; `cpu_has_it` the run-time check (an expression). SIMD paths are listed
// slowest first; automatic selection tries them fastest first.
#define EFFNET_X86_SIMD_ISAS(X)                                                             \
  X(avx2, kAvx2, 8, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))        \
  X(avx512, kAvx512, 16, __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"))
#define EFFNET_ARM_SIMD_ISAS(X) X(neon, kNeon, 4, true)  // NEON is baseline on aarch64

// Every path any build knows (its name parses everywhere; isa_supported() says where it runs).
#define EFFNET_ISAS(X) X(scalar, kScalar, 1, true) EFFNET_X86_SIMD_ISAS(X) EFFNET_ARM_SIMD_ISAS(X)

// The SIMD paths compiled into this build: their kernels exist here.
#if defined(__x86_64__) || defined(_M_X64)
#define EFFNET_SIMD_ISAS(X) EFFNET_X86_SIMD_ISAS(X)
#elif defined(__aarch64__)
#define EFFNET_SIMD_ISAS(X) EFFNET_ARM_SIMD_ISAS(X)
#else
#define EFFNET_SIMD_ISAS(X)
#endif

namespace effnet {

#define EFFNET_ISA_ENUM(name, e, lanes, has) e,
enum class Isa { EFFNET_ISAS(EFFNET_ISA_ENUM) };
#undef EFFNET_ISA_ENUM

#define EFFNET_ISA_VALUE(name, e, lanes, has) Isa::e,
inline constexpr Isa kAllIsas[] = {EFFNET_ISAS(EFFNET_ISA_VALUE)};  // every known path, in list order
#undef EFFNET_ISA_VALUE

// x86-64 picks AVX-512F > AVX2+FMA > scalar at run time from CPU features; aarch64 uses NEON. A SIMD path
// is chosen automatically only after its self-tests (depthwise, squeeze-excitation, GEMM) agree with the
// scalar path on this CPU. EFFNET_ISA=<name> forces one (tests use it).
const char* isa_name(Isa isa);
int isa_lanes(Isa isa);              // fp32 lanes per vector (1: scalar)
bool isa_supported(Isa isa);         // can this CPU/build run it?
Isa best_isa();                      // the fastest supported path that passes its self-tests
const std::string& isa_note();       // why a supported path was passed over ("" when none was)
Isa parse_isa(const char* name);     // throws std::invalid_argument for unknown/unsupported names
Isa default_isa();                   // EFFNET_ISA if set (validated), else best_isa(); read once
const std::string& isa_names();      // every known name, comma-separated ("scalar, avx2, ...")

// The self-tests best_isa() runs (each against the scalar path on small awkward shapes); false with the
// reason in *why.
bool dwconv_self_test(Isa isa, std::string* why);
bool se_self_test(Isa isa, std::string* why);
bool gemm_self_test(Isa isa, std::string* why);

}  // namespace effnet
