// The dspark subcommands. Each takes its own arguments (after the subcommand name) and returns
// the process exit code: 0 success, 1 model or runtime error, 2 bad arguments. Each prints its
// own messages; none throws.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace dspark::cli {

struct command {
  std::string_view name;
  std::string_view summary;  // one line for `dspark --help`
  int (*run)(std::span<const std::string> args);
};

// `dspark generate`: one prompt, streamed continuation (generate_command.cpp).
int generate_command(std::span<const std::string> args);

// `dspark gateway`: the OpenAI-compatible HTTP gateway (gateway_command.cpp).
int gateway_command(std::span<const std::string> args);

// Every subcommand, in the order `dspark --help` lists them.
std::span<const command> all_commands();

}  // namespace dspark::cli
