// The driver's bad-input errors: each names what is wrong, and main() turns any of them into one
// line on stderr and exit status 2.
#pragma once

#include <stdexcept>

namespace fevo_paper {

/// Base of the errors a user's input causes (settings, data, model choice).
class input_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace fevo_paper
