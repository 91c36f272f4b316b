// `dspark serve` and the split-process commands `dspark verifier`, `dspark drafter`,
// `dspark intake` (serve_command.cpp): one server (actors/server.h) with the roles each runs,
// configured by --config FILE (config/server_config.h) plus command-line overrides.
#pragma once

#include <span>
#include <string>

namespace dspark::cli {

int serve_command(std::span<const std::string> args);     // every role, one process
int verifier_command(std::span<const std::string> args);  // the verifier (target model, scheduler, KV)
int drafter_command(std::span<const std::string> args);   // one drafter service
int intake_command(std::span<const std::string> args);    // the client-facing intake

}  // namespace dspark::cli
