// Strict number parsing for CLI and config values: the whole string must be the number.
#pragma once

#include <exception>
#include <optional>
#include <string>
#include <type_traits>

namespace dspark {

// v as an int32_t (std::stoi) or a double (std::stod), or nullopt when v is empty, not a
// number, out of range, or has anything after the number ("4x", "0.5 ").
template <class T>
std::optional<T> whole_number(const std::string& v) {
  static_assert(std::is_same_v<T, double> || std::is_same_v<T, int32_t>, "whole_number: int32_t or double");
  size_t used = 0;
  T x{};
  try {
    if constexpr (std::is_same_v<T, double>)
      x = std::stod(v, &used);
    else
      x = std::stoi(v, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (used == 0 || used != v.size()) return std::nullopt;
  return x;
}

}  // namespace dspark
