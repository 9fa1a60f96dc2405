// fevo::cpu::par compiled without GCC/Clang vector extensions (FEVO_CPU_NO_VECTOR_EXTENSIONS, as
// for a compiler without them): the generic kernel on plain arrays of floats, through the shared
// backend body.
#include <string>

#include "backends.hpp"

#define FEVO_TEST_BACKENDS std::tuple<::fevo_test::cpu_par_backend>
#include "backend_body.hpp"

TEST_CASE("cpu::par without vector extensions runs the generic kernel alone", "[cpu][isa]") {
  CHECK(std::string(fevo::cpu::instruction_set()) == "generic");
  CHECK(fevo::cpu::detail::supported_isas().size() == 1);
  CHECK(FEVO_CPU_X86_DISPATCH == 0);
  CHECK(FEVO_CPU_VECTOR_EXTENSIONS == 0);
}
