// Python pickles (PyTorch checkpoints: .pt, .pth, .ckpt, .bin from torch.save) are recognised by
// every fevo::io reader and refused with a message that says how to convert them: loading a
// pickle runs whatever code it names, so fevo never unpickles. Dependency-free.
#pragma once

#include "../config.hpp"

#include <cstddef>
#include <string>

#include "../error.hpp"

namespace fevo::io {

/// The error for a pickle file: says that fevo never unpickles it and how to convert it.
inline ::fevo::error open_error_for_pickle(const std::string& path) {
  return ::fevo::error(
      "fevo: " + path +
      ": is a Python pickle (a PyTorch checkpoint: .pt, .pth, .ckpt); fevo never unpickles files, "
      "since loading a pickle can run arbitrary code. Convert it to safetensors in Python, after "
      "loading the weights into your model (torch.load(path, weights_only=True)): "
      "safetensors.torch.save_file(model.state_dict(), path)");
}

/// Whether a file's first `n` bytes are those of a pickle: the PROTO opcode (0x80) of protocol 2
/// to 5, as torch.save's legacy format and pickle.dump write.
inline bool starts_like_pickle(const unsigned char* p, std::size_t n) {
  return n >= 2 && p[0] == 0x80 && p[1] >= 2 && p[1] <= 5;
}

/// Whether a zip archive's member name is one of torch.save's zip format (ARCHIVE/data.pkl and its
/// companions, whatever the file's extension).
inline bool is_torch_zip_member(const std::string& name) {
  const auto ends = [&](const char* s) {
    const std::string t(s);
    return name.size() >= t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0;
  };
  return ends(".pkl") || ends("/version") || ends("/byteorder");
}

}  // namespace fevo::io
