// fevo::error, the one exception type of the library, and the checks that raise it.
#pragma once

#include "config.hpp"

#include <sstream>
#include <stdexcept>
#include <string>

namespace fevo {

/// Thrown for every bad call: mismatched shapes, a zero extent, a null pointer, a bad tau,
/// and (in backends) failures of the underlying runtime. The message names what is wrong.
class error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {
template <class... Parts>
[[noreturn]] inline void fail(const Parts&... parts) {
  std::ostringstream os;
  os << "fevo: ";
  (os << ... << parts);
  throw ::fevo::error(os.str());
}
}  // namespace detail

}  // namespace fevo

/// Checks a precondition at the public boundary; the message parts are streamed, so they may be
/// numbers and strings: FEVO_EXPECTS(n > 0, "extent(0) is ", n).
#define FEVO_EXPECTS(cond, ...)                                \
  do {                                                         \
    if (!(cond)) ::fevo::detail::fail(__VA_ARGS__);            \
  } while (0)
