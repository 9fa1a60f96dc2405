// fevo: how the weights of a network's conv filters evolve during training.
// The core: views, element types, the accumulator, the public calls and fevo::seq.
// Host compiler only is enough; no third-party dependency.
#pragma once

#include "config.hpp"
#include "error.hpp"
#include "element.hpp"
#include "view.hpp"
#include "accumulator.hpp"
#include "results.hpp"
#include "layer_info.hpp"
#include "compute.hpp"
#include "seq.hpp"
