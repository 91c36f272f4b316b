// `dspark eval`: acceptance of a drafter per dataset (eval_command.cpp).
#pragma once

#include <span>
#include <string>

namespace dspark::cli {

// Runs the subcommand on its arguments; returns the exit code (0 ok, 1 runtime error, 2 usage).
int eval_command(std::span<const std::string> args);

}  // namespace dspark::cli
