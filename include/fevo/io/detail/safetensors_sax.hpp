// The SAX handler that parses a safetensors header (safetensors.hpp): exactly the format's schema,
// duplicate keys refused at every level (JSON libraries keep one of them silently), the first
// problem reported as a message. Part of fevo::io; include <fevo/io/safetensors.hpp>.
#pragma once

#include "../../config.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace fevo::io {

namespace detail {

/// SAX handler for the header: accepts exactly the safetensors schema, rejects duplicate keys
/// at every level, and stops at the first problem with a message (no DOM is built; nesting
/// deeper than the schema is refused at once, so a hostile header cannot recurse deeply).
class safetensors_sax {
 public:
  using json = nlohmann::json;
  struct raw_tensor {
    std::string name;
    std::string dtype;
    std::vector<std::uint64_t> shape, offsets;
    bool has_dtype = false, has_shape = false, has_offsets = false;
  };
  std::vector<raw_tensor> tensors;
  std::map<std::string, std::string> metadata;
  std::string error;      ///< the first problem found (without file name)
  std::string error_tensor;  ///< the tensor it concerns, if any

  bool null() { return scalar("null"); }
  bool boolean(bool) { return scalar("a boolean"); }
  bool number_integer(json::number_integer_t v) {
    if (v < 0) return fail_value("a negative number (" + std::to_string(v) + ")");
    return number(std::uint64_t(v));
  }
  bool number_unsigned(json::number_unsigned_t v) { return number(v); }
  bool number_float(json::number_float_t, const json::string_t& s) {
    return fail_value("a non-integer number (" + s + ")");
  }
  bool binary(json::binary_t&) { return scalar("binary data"); }
  bool string(json::string_t& s) {
    switch (state_) {
      case in_metadata:
        metadata.emplace(key_, s);
        return true;
      case in_tensor:
        if (key_ == "dtype") {
          tensors.back().dtype = s;
          return true;
        }
        return fail_value("a string (\"" + s + "\")");
      default:
        return scalar("a string");
    }
  }
  bool start_object(std::size_t) {
    switch (state_) {
      case start:
        state_ = in_root;
        return true;
      case in_root:
        if (key_ == "__metadata__") {
          state_ = in_metadata;
          seen_.clear();
          return true;
        }
        state_ = in_tensor;
        seen_.clear();
        tensors.push_back(raw_tensor{});
        tensors.back().name = key_;
        return true;
      default:
        return fail_value("an object");
    }
  }
  bool key(json::string_t& k) {
    switch (state_) {
      case in_root:
        if (!root_keys_.insert(k).second) {
          return k == "__metadata__" ? fail("\"__metadata__\" appears twice")
                                     : fail_tensor(k, "duplicate tensor name: the name appears "
                                                      "more than once in the header");
        }
        break;
      case in_metadata:
        if (!seen_.insert(k).second)
          return fail("__metadata__: duplicate key '" + k + "'");
        break;
      case in_tensor:
        if (!seen_.insert(k).second)
          return fail_tensor(tensors.back().name, "duplicate key '" + k + "' in its entry");
        if (k != "dtype" && k != "shape" && k != "data_offsets")
          return fail_tensor(tensors.back().name,
                             "unknown key '" + k + "' (an entry has dtype, shape, data_offsets)");
        break;
      default:
        break;
    }
    key_ = k;
    return true;
  }
  bool end_object() {
    switch (state_) {
      case in_root:
        state_ = done;
        return true;
      case in_metadata:
        state_ = in_root;
        return true;
      case in_tensor: {
        const raw_tensor& t = tensors.back();
        const char* missing = !seen_.count("dtype")          ? "dtype"
                              : !seen_.count("shape")        ? "shape"
                              : !seen_.count("data_offsets") ? "data_offsets"
                                                             : nullptr;
        if (missing)
          return fail_tensor(t.name, std::string("its entry has no '") + missing + "' key");
        state_ = in_root;
        return true;
      }
      default:
        return fail("unexpected end of object");
    }
  }
  bool start_array(std::size_t) {
    if (state_ == in_tensor && (key_ == "shape" || key_ == "data_offsets")) {
      state_ = in_array;
      return true;
    }
    return fail_value("an array");
  }
  bool end_array() {
    if (state_ != in_array) return fail("unexpected end of array");
    state_ = in_tensor;
    raw_tensor& t = tensors.back();
    if (key_ == "data_offsets") {
      t.has_offsets = true;
      if (t.offsets.size() != 2)
        return fail_tensor(t.name, "data_offsets has " + std::to_string(t.offsets.size()) +
                                       " elements; it must be [begin, end]");
    } else {
      t.has_shape = true;
    }
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const json::exception& ex) {
    std::string what = ex.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 7: syntax error ..."
    const auto colon = what.find(": ");
    if (colon != std::string::npos) what = what.substr(colon + 2);
    return fail("header is not valid JSON (at byte " + std::to_string(position) + "): " + what);
  }

 private:
  enum state_t { start, in_root, in_metadata, in_tensor, in_array, done };
  state_t state_ = start;
  std::string key_;
  std::unordered_set<std::string> root_keys_, seen_;

  bool fail(std::string m) {
    if (error.empty()) error = std::move(m);
    return false;
  }
  bool fail_tensor(const std::string& name, std::string m) {
    if (error.empty()) error_tensor = name;
    return fail(std::move(m));
  }
  /// A value of the wrong kind where the schema wants something else.
  bool fail_value(const std::string& what) {
    switch (state_) {
      case start:
        return fail("header is " + what + ", not a JSON object");
      case in_root:
        if (key_ == "__metadata__") return fail("__metadata__ is " + what + ", not an object");
        return fail_tensor(key_, "its entry is " + what + ", not an object");
      case in_metadata:
        return fail("__metadata__ value of key '" + key_ + "' is " + what +
                    "; metadata values must be strings");
      case in_tensor:
        if (key_ == "dtype") return fail_tensor(tensors.back().name, "dtype is " + what + ", not a string");
        return fail_tensor(tensors.back().name, key_ + " is " + what + ", not an array of integers");
      case in_array:
        return fail_tensor(tensors.back().name, key_ + " contains " + what +
                                                    "; it must hold non-negative integers");
      default:
        return fail("unexpected " + what + " after the header object");
    }
  }
  bool scalar(const char* what) { return fail_value(what); }
  bool number(std::uint64_t v) {
    if (state_ != in_array) return fail_value("a number");
    raw_tensor& t = tensors.back();
    auto& dst = key_ == "shape" ? t.shape : t.offsets;
    dst.push_back(v);
    return true;
  }
};

}  // namespace detail

}  // namespace fevo::io
