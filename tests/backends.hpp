// The backends the shared test body (backend_body.hpp) runs against, in one list.
//
// A backend, as the body sees it, is a type with
//   static constexpr const char* name;    printed with every failure
//   static auto policy();                 the policy object passed to fevo::compute & co.
//   template <class T> static auto upload(fevo::filter_view<const T> host);
//                                         an object whose .view() is the same weights as the
//                                         policy reads them (host backends: the host view itself;
//                                         a device backend copies into its memory space and
//                                         keeps the copy alive for the object's lifetime)
//
// To add a backend: define its type (deriving from host_backend when it reads host memory) and
//   - if it is built into the same test executable, append it to host_backends below;
//   - otherwise give it its own test .cpp that does
//       #define FEVO_TEST_BACKENDS std::tuple<my_backend>
//       #include "backend_body.hpp"
//     and add that .cpp as an executable in tests/CMakeLists.txt.
#pragma once

#include <tuple>

#include <fevo/fevo.hpp>

#include "support.hpp"
#if defined(FEVO_TEST_HAVE_CPU)
#include <fevo/cpu.hpp>
#endif

namespace fevo_test {

/// Sets the documented extra relative error of D (d_slack() in support.hpp) of backend B for the
/// lifetime of the scope; backends without one have d_relative_slack = 0.
template <class B>
struct backend_scope {
  backend_scope() { d_slack() = B::d_relative_slack; }
  ~backend_scope() { d_slack() = 0; }
};

/// For backends that read host memory: upload() hands the host view through unchanged.
struct host_backend {
  static constexpr double d_relative_slack = 0;
  template <class T>
  struct borrowed {
    fevo::filter_view<const T> v;
    fevo::filter_view<const T> view() const { return v; }
  };
  template <class T>
  static borrowed<T> upload(fevo::filter_view<const T> host) {
    return {host};
  }
};

struct seq_backend : host_backend {
  static constexpr const char* name = "fevo::seq";
  static auto policy() { return fevo::seq; }
};

#if defined(FEVO_TEST_HAVE_CPU)
// The fevo::cpu::par backends run the kernel fevo::cpu picks for this CPU, or in fevo_test_backends
// the one FEVO_TEST_CPU_KERNEL names (test_backends.cpp; ctest's cpu.kernel.* tests).
struct cpu_par_backend : host_backend {
  static constexpr double d_relative_slack = fevo::cpu::D_relative_error;
  static constexpr const char* name = "fevo::cpu::par";
  static auto policy() { return fevo::cpu::par; }
};
struct cpu_par_1_thread_backend : host_backend {
  static constexpr double d_relative_slack = fevo::cpu::D_relative_error;
  static constexpr const char* name = "fevo::cpu::par.threads(1)";
  static auto policy() { return fevo::cpu::par.threads(1); }
};
struct cpu_par_2_threads_backend : host_backend {
  static constexpr double d_relative_slack = fevo::cpu::D_relative_error;
  static constexpr const char* name = "fevo::cpu::par.threads(2)";
  static auto policy() { return fevo::cpu::par.threads(2); }
};
#endif

/// Every backend that reads host memory and is built into this test executable.
using host_backends = std::tuple<seq_backend
#if defined(FEVO_TEST_HAVE_CPU)
                                 ,
                                 cpu_par_backend, cpu_par_1_thread_backend, cpu_par_2_threads_backend
#endif
                                 >;

}  // namespace fevo_test
