// `dspark bench-load`: closed-loop load at several concurrencies for several verification
// policies: aggregate and per-user tok/s, TPOT percentiles, verify lengths
// (bench_load_command.cpp).
#pragma once

#include <span>
#include <string>

namespace dspark::cli {

// Runs the subcommand on its arguments; returns the exit code (0 ok, 1 runtime error, 2 usage).
int bench_load_command(std::span<const std::string> args);

}  // namespace dspark::cli
