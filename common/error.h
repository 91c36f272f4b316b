// Error types shared by the engine library.
//
// Loaders and parsers throw these with a message that names the offending value and the
// valid range; services catch them at the boundary and turn them into an exit code or an
// error reply. Library code never calls exit().
#pragma once

#include <stdexcept>
#include <string>

namespace dspark {

// A model or data file is malformed, truncated, or of an unsupported kind.
struct format_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A caller passed an invalid argument (sampling parameters, prompt too long, ...).
struct invalid_argument_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace dspark
