// dspark: the command-line entry point, a dispatcher over subcommands (commands.h).
//
//   dspark --help
//   dspark generate --model PATH --prompt TEXT [options]     (dspark generate --help)
#include <array>
#include <cstdio>
#include <string>
#include <vector>

#include "services/dspark/bench_load_command.h"
#include "services/dspark/bench_spec_command.h"
#include "services/dspark/commands.h"
#include "services/dspark/eval_command.h"
#include "services/dspark/serve_command.h"

namespace dspark::cli {

std::span<const command> all_commands() {
  static const std::array<command, 9> k_commands = {{
      {"generate", "generate a continuation of one prompt, streamed to stdout", generate_command},
      {"bench-spec", "speculative decoding on a prompt set: acceptance and speedup", bench_spec_command},
      {"bench-load", "closed-loop load per policy and concurrency: aggregate/per-user tok/s, TPOT", bench_load_command},
      {"eval", "drafter acceptance per dataset: tau, per-position acceptance, verify rate, ECE", eval_command},
      {"gateway", "OpenAI-compatible HTTP API in front of a running server", gateway_command},
      {"serve", "the server in one process: intake, verifier, drafter actors (ZeroMQ clients)", serve_command},
      {"verifier", "server part: the target model, scheduler and KV (separate process)", verifier_command},
      {"drafter", "server part: one drafter service; start, stop or swap it while serving", drafter_command},
      {"intake", "server part: the client ROUTER, admission and tokenization", intake_command},
  }};
  return k_commands;
}

}  // namespace dspark::cli

namespace {

void print_usage(std::FILE* out) {
  std::fprintf(out,
               "DSpark Runtime: LLM inference with speculative decoding.\n\n"
               "usage: dspark <command> [options]   (dspark <command> --help for its options)\n\n"
               "commands:\n");
  for (const auto& c : dspark::cli::all_commands())
    std::fprintf(out, "  %-12.*s %.*s\n", static_cast<int>(c.name.size()), c.name.data(),
                 static_cast<int>(c.summary.size()), c.summary.data());
  std::fprintf(out, "\nexit codes: 0 success, 1 model or runtime error, 2 bad arguments\n");
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    print_usage(stderr);
    return 2;
  }
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_usage(stdout);
    return 0;
  }
  for (const auto& c : dspark::cli::all_commands())
    if (args[0] == c.name) return c.run(std::span<const std::string>(args).subspan(1));
  std::fprintf(stderr, "dspark: unknown command '%s'\n\n", args[0].c_str());
  print_usage(stderr);
  return 2;
}
