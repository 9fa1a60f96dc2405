// The third-party headers fevo's host components include, included here first as system headers,
// so that all_components' warnings-as-errors apply to fevo's own headers only (which, unlike in a
// usual imported target, are not on a system include path in that build).
#pragma once
#pragma GCC system_header

#include <nlohmann/json.hpp>
#include <thrust/copy.h>
#include <thrust/device_vector.h>
#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/system_error.h>
#include <unsupported/Eigen/CXX11/Tensor>
#include <xtensor/xarray.hpp>
#include <xtensor/xexpression.hpp>
#include <xtensor/xutils.hpp>
#include <zip.h>
