// The check of tau, the threshold of S and Z, shared by everything that takes one: the compute
// entry points, the recorder, run_writer and the fevo command.
#pragma once

#include "../config.hpp"

#include <limits>

#include "../error.hpp"

namespace fevo::detail {

/// Requires tau to be finite and non-negative and returns it in CT (a compute type), where it must
/// be finite too. `where` is streamed before the message and says whose tau it is ("recorder: ",
/// a layer, "--" for the command's --tau):
///   "<where>tau must be finite and non-negative, got -1"
///   "<where>tau 1e+300 is not finite in the compute type (32-bit float)"
///   "<where>tau 1e-50 rounds to 0 in the compute type (32-bit float, ...); pass 0 to ..."
template <class CT = double, class Where>
CT check_tau(double tau, const Where& where) {
  FEVO_EXPECTS(tau == tau && tau >= 0 && tau <= std::numeric_limits<double>::max(), where,
               "tau must be finite and non-negative, got ", tau);
  const CT t = static_cast<CT>(tau);
  FEVO_EXPECTS(t <= std::numeric_limits<CT>::max(), where, "tau ", tau,
               " is not finite in the compute type (", sizeof(CT) * 8, "-bit float)");
  // A positive tau that rounds to 0 would silently count every change, however small.
  FEVO_EXPECTS(tau == 0 || t > 0, where, "tau ", tau, " rounds to 0 in the compute type (", sizeof(CT) * 8,
               "-bit float, whose smallest positive value is ", double(std::numeric_limits<CT>::denorm_min()),
               "); pass 0 to count every change");
  return t;
}

}  // namespace fevo::detail
