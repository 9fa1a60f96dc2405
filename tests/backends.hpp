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
#include <type_traits>

#include <fevo/fevo.hpp>

#include "support.hpp"
#if defined(FEVO_TEST_HAVE_CPU)
#include <fevo/cpu.hpp>
#endif

namespace fevo_test {

/// What a backend sets up for a test case: an object of its nested type `guard`, when it has one.
template <class B, class = void>
struct backend_guard {};
template <class B>
struct backend_guard<B, std::void_t<typename B::guard>> {
  typename B::guard g;
};

/// Sets the documented extra relative error of D (d_slack() in support.hpp) of backend B for the
/// lifetime of the scope, and holds B's guard; backends without one have d_relative_slack = 0.
template <class B>
struct backend_scope {
  backend_scope() { d_slack() = B::d_relative_slack; }
  ~backend_scope() { d_slack() = 0; }
  backend_guard<B> guard_;
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

/// The kernel of instruction set I, forced for the test case (the test-only selection in
/// fevo::cpu::detail), on 2 threads; the best kernel this CPU has when it cannot run I (the
/// "cpu::par: every kernel this CPU supports" test case says which ran).
template <fevo::cpu::detail::isa I>
struct cpu_kernel_backend : host_backend {
  static constexpr double d_relative_slack = fevo::cpu::D_relative_error;
  static constexpr const char* name =
      I == fevo::cpu::detail::isa::avx512 ? "fevo::cpu::par, avx512 kernel"
      : I == fevo::cpu::detail::isa::avx2 ? "fevo::cpu::par, avx2 kernel"
                                          : "fevo::cpu::par, generic kernel";
  static auto policy() { return fevo::cpu::par.threads(2); }
  static fevo::cpu::detail::isa runnable() {
    return static_cast<int>(I) <= static_cast<int>(fevo::cpu::detail::best_isa()) ? I
                                                                                  : fevo::cpu::detail::best_isa();
  }
  struct guard {
    fevo::cpu::detail::isa_override o{runnable()};
  };
};
#endif

/// Every backend that reads host memory and is built into this test executable.
using host_backends = std::tuple<seq_backend
#if defined(FEVO_TEST_HAVE_CPU)
                                 ,
                                 cpu_par_backend, cpu_par_1_thread_backend, cpu_par_2_threads_backend,
                                 // cpu_par_backend runs the best kernel; the others forced:
                                 cpu_kernel_backend<fevo::cpu::detail::isa::generic>
#if FEVO_CPU_X86_DISPATCH
                                 ,
                                 cpu_kernel_backend<fevo::cpu::detail::isa::avx2>
#endif
#endif
                                 >;

}  // namespace fevo_test
