// `dspark bench-spec`: acceptance and speedup of a drafter over a prompt set
// (bench_spec_command.cpp).
#pragma once

#include <span>
#include <string>

namespace dspark::cli {

// Runs the subcommand on its arguments; returns the exit code (0 ok, 1 runtime error, 2 usage).
int bench_spec_command(std::span<const std::string> args);

}  // namespace dspark::cli
