// A small command-line option parser shared by the dspark subcommands.
//
// Options are "--name VALUE", "--name=VALUE" or, for flags, "--name". Unknown options, missing
// values, repeated non-repeatable options and malformed numbers throw usage_error, which the
// dispatcher turns into exit code 2.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace dspark::cli {

struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct option_spec {
  std::string name;      // without the leading "--"
  bool takes_value = true;
  bool repeatable = false;
  std::string help;      // one line for --help; "VALUE" placeholders included
};

class parsed_args {
 public:
  bool has(const std::string& name) const { return values_.count(name) > 0; }
  // The option's value, or nullopt when absent.
  std::optional<std::string> get(const std::string& name) const;
  const std::vector<std::string>& all(const std::string& name) const;
  std::string require(const std::string& name) const;  // usage_error when absent
  // Numeric getters: usage_error naming the option and the range when malformed or outside.
  int64_t get_int(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) const;
  uint64_t get_u64(const std::string& name, uint64_t fallback) const;
  double get_double(const std::string& name, double fallback) const;

 private:
  friend parsed_args parse_args(std::span<const std::string>, const std::vector<option_spec>&);
  std::map<std::string, std::vector<std::string>> values_;
};

// Parses `args` (the subcommand's arguments, without the program and subcommand names).
parsed_args parse_args(std::span<const std::string> args, const std::vector<option_spec>& specs);

// "  --name VALUE   help" lines for a usage message.
std::string format_options(const std::vector<option_spec>& specs);

// Runs a subcommand with the exit-code rules every `dspark` command shares (commands.h):
// --help prints `help` to stdout (0); usage_error prints the message and the help to stderr
// (2); invalid_argument_error (2); format_error, a file that cannot be loaded (1); any other
// exception (1). Messages are prefixed "dspark NAME: ".
int run_subcommand(const char* name, std::span<const std::string> args, const std::vector<option_spec>& specs,
                   void (*help)(std::FILE*), const std::function<int(const parsed_args&)>& body);

}  // namespace dspark::cli
