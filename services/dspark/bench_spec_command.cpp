// `dspark bench-spec`: runs a prompt set (first turn of each JSONL line, chat template) with plain
// decoding and with a drafter in the same process, and reports the acceptance length tau,
// per-position acceptance, how many outputs are identical, and the speedup.
//
//   dspark bench-spec --model M --draft ngram --prompts /work/shared/data/mbpp.jsonl
//       --limit 20 --gamma 4 --max-tokens 64 [--json]
//
// Speedup = plain wall time / speculative wall time over the whole set (prefill included);
// decode speedup compares tokens/s after the first token. Plain decoding runs one request at a
// time; with --batch B the speculative run decodes B requests per step (then the speedup also
// contains batching). At temperature 0 the outputs must be identical where the backend's rows
// are batch-invariant (--precision f32); the count is printed as a check.
#include <algorithm>
#include <chrono>
#include <memory>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/generator.h"
#include "engine/model.h"
#include "engine/spec/prompt_set.h"
#include "engine/spec/spec_decoder.h"
#include "models/drafters/threaded_drafter.h"
#include "services/dspark/backend_factory.h"
#include "services/dspark/bench_spec_command.h"
#include "services/dspark/cli_args.h"
#include "services/dspark/spec_cli.h"

namespace dspark::cli {

namespace {

using clock_type = std::chrono::steady_clock;

double since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

std::vector<option_spec> bench_options() {
  std::vector<option_spec> s = {
      {"model", true, false, "PATH  .gguf file or Hugging Face folder (required)"},
      {"prompts", true, false, "FILE  JSONL prompt set, {\"turns\": [...]} per line (required)"},
      {"limit", true, false, "N  prompts to run, the first N (default 20)"},
      {"max-tokens", true, false, "N  tokens per prompt at most (default 64)"},
      {"temperature", true, false, "T  0 = greedy (default 0)"},
      {"seed", true, false, "S  sampling seed; prompt i uses S + i (default 0)"},
      {"batch", true, false, "B  speculative requests decoded together (default 1)"},
      {"pipeline", true, false,
       "on|off  draft one group of requests on a drafter thread while the target verifies the other"
       " (spec_decoder_options::pipeline; default off)"},
      {"threads", true, false, "N  CPU threads (default: hardware cores)"},
      {"ctx", true, false, "N  context length (default 2048)"},
      {"precision", true, false, "q8|f32  activation precision of quantized matmuls (default q8)"},
      device_option_spec(),  // --device cpu|cuda (backend_factory.h)
      {"json", false, false, "print one JSON object"},
      {"help", false, false, "this message"},
  };
  for (auto& o : spec_option_specs()) s.push_back(o);
  return s;
}

void print_help(std::FILE* out) {
  std::fprintf(out,
               "usage: dspark bench-spec --model PATH --prompts FILE.jsonl --draft D [options]\n\noptions:\n%s",
               format_options(bench_options()).c_str());
}

int run(const parsed_args& a) {
  const std::string path = a.require("model");
  const std::string prompts_path = a.require("prompts");
  const int64_t limit = a.get_int("limit", 20, 1, 1 << 20);
  sampling_params sp;
  sp.max_tokens = static_cast<int32_t>(a.get_int("max-tokens", 64, 1, 1 << 20));
  sp.temperature = static_cast<float>(a.get_double("temperature", 0.0));
  const uint64_t seed = a.get_u64("seed", 0);
  validate(sp);
  const int32_t batch = static_cast<int32_t>(a.get_int("batch", 1, 1, 256));
  cpu_backend_options opt;
  opt.n_threads = static_cast<int>(a.get_int("threads", 0, 0, 256));
  opt.n_seq_max = batch;
  opt.n_ctx = static_cast<int32_t>(a.get_int("ctx", 2048, 16, 1 << 20));
  const std::string precision = a.get("precision").value_or("q8");
  if (precision != "q8" && precision != "f32") throw usage_error("--precision must be q8 or f32, got '" + precision + "'");
  opt.precision = precision == "f32" ? matmul_precision::f32_activations : matmul_precision::q8_activations;
  const bool json = a.has("json");
  backend_choice bc;
  bc.device = read_device(a, "bench-spec");
  bc.cpu = opt;

  const model m = load_model(path);
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& t : read_first_turns(prompts_path, limit)) prompts.push_back(encode_chat_prompt(m.tokenizer(), t));
  const std::unique_ptr<backend> be_owner = make_backend(bc, m.config(), m.weights());
  backend& be = *be_owner;
  spec_setup setup = make_spec_setup(a, m, bc, batch, &be);
  const std::string pipe_arg = a.get("pipeline").value_or("off");
  if (pipe_arg != "on" && pipe_arg != "off") throw usage_error("--pipeline must be on or off, got '" + pipe_arg + "'");
  // Pipelined: the drafter runs on a thread of its own (threaded_drafter.h).
  threaded_drafter* threaded = nullptr;
  if (pipe_arg == "on" && setup.d) {
    if (setup.d->caps().shares_target)
      throw usage_error("--pipeline on: " + setup.d->caps().name +
                        " drafts on the target's KV; use --layerskip-cache own");
    auto w = std::make_unique<threaded_drafter>(std::move(setup.d), threaded_drafter_params{.max_slots = batch});
    threaded = w.get();
    setup.d = std::move(w);
  }

  // Plain decoding, one prompt at a time.
  std::vector<generation_result> plain;
  double plain_decode_s = 0.0;
  int64_t plain_tokens = 0;
  const auto t_plain = clock_type::now();
  for (size_t i = 0; i < prompts.size(); ++i) {
    sampling_params p = sp;
    p.seed = seed + i;
    plain.push_back(generate(m, be, prompts[i], p));
    plain_decode_s += plain.back().stats.decode_s;
    plain_tokens += plain.back().stats.generated_tokens;
  }
  const double plain_s = since(t_plain);

  // Speculative decoding, `batch` requests at a time.
  spec_decoder dec(be, setup.d.get(), *setup.policy, &m.tokenizer(), m.stop_ids(), {.max_requests = batch, .pipeline = threaded != nullptr});
  const auto t_spec = clock_type::now();
  sampling_params base = sp;
  base.seed = seed;
  const std::vector<spec_result> spec = spec_generate_all(dec, prompts, base, /*per_prompt_seed=*/true);
  const double spec_s = since(t_spec);
  double spec_decode_s = 0.0;
  int64_t spec_tokens = 0, identical = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    spec_decode_s += spec[i].gen.stats.decode_s;
    spec_tokens += spec[i].gen.stats.generated_tokens;
    identical += spec[i].gen.token_ids == plain[i].token_ids;
  }
  spec_metrics mt = dec.metrics();
  mt.set_wall_seconds(spec_s);
  if (setup.skip) mt.add_draft_skip(setup.skip->stats());

  const double plain_decode_tps = plain_decode_s > 0 ? (plain_tokens - static_cast<double>(prompts.size())) / plain_decode_s : 0;
  const double spec_decode_tps = spec_decode_s > 0 ? (spec_tokens - static_cast<double>(prompts.size())) / spec_decode_s : 0;
  nlohmann::json j = mt.to_json();
  j["draft"] = setup.draft;
  j["policy"] = setup.policy->name();
  j["prompts"] = prompts.size();
  j["identical_outputs"] = identical;
  j["plain_s"] = plain_s;
  j["spec_s"] = spec_s;
  j["plain_tokens_per_s"] = plain_s > 0 ? plain_tokens / plain_s : 0;
  j["spec_tokens_per_s"] = spec_s > 0 ? spec_tokens / spec_s : 0;
  j["speedup"] = spec_s > 0 ? plain_s / spec_s : 0;
  j["plain_decode_tokens_per_s"] = plain_decode_tps;
  j["spec_decode_tokens_per_s"] = spec_decode_tps;
  j["decode_speedup"] = plain_decode_tps > 0 ? spec_decode_tps / plain_decode_tps : 0;
  j["batch"] = batch;
  const pipeline_stats& ps = dec.pipeline_counters();
  j["pipeline"] = {{"on", threaded != nullptr},
                   {"overlapped_rounds", ps.overlapped_rounds},
                   {"sync_rounds", ps.sync_rounds},
                   {"propose_wait_s", ps.propose_wait_s},
                   {"verify_s", ps.verify_s}};
  if (threaded) {
    // Drafter time hidden behind the decoder's own work: the worker's busy time minus the time
    // the decoder waited for it.
    const threaded_drafter_stats ts = threaded->stats();
    j["pipeline"]["drafter_busy_s"] = ts.busy_s;
    j["pipeline"]["drafter_propose_s"] = ts.propose_s;
    j["pipeline"]["drafter_wait_s"] = ts.wait_s;
    j["pipeline"]["hidden_fraction"] = ts.busy_s > 0 ? std::max(0.0, ts.busy_s - ts.wait_s) / ts.busy_s : 0.0;
  }
  j["device"] = device_name(bc.device);
  j["threads"] = cpu_threads(bc);
  j["precision"] = precision;
  if (json) {
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("bench-spec: %zu prompts from %s, max %d tokens, T %.2f, draft %s, policy %s, batch %d, %s\n",
              prompts.size(), prompts_path.c_str(), sp.max_tokens, static_cast<double>(sp.temperature),
              setup.draft.c_str(), setup.policy->name().c_str(), batch, describe(bc).c_str());
  std::printf("  tau (acceptance length)  %.3f   over %lld verify steps\n", mt.acceptance_length(),
              static_cast<long long>(mt.verify_steps()));
  std::printf("  drafts proposed %lld, verified %lld, accepted %lld (rate %.3f)\n",
              static_cast<long long>(mt.draft_tokens_proposed()), static_cast<long long>(mt.draft_tokens_verified()),
              static_cast<long long>(mt.draft_tokens_accepted()), mt.acceptance_rate());
  std::printf("  per position  conditional / unconditional acceptance:\n");
  for (int32_t k = 0; k < mt.positions(); ++k)
    std::printf("    k=%d  %.3f / %.3f  (reached %lld)\n", k + 1, mt.conditional_acceptance(k),
                mt.unconditional_acceptance(k), static_cast<long long>(mt.reached_at(k)));
  print_draft_skip(setup, mt);
  std::printf("  identical to plain decoding: %lld / %zu\n", static_cast<long long>(identical), prompts.size());
  std::printf("  plain %.2fs (%.1f tok/s, decode %.1f tok/s) | spec %.2fs (%.1f tok/s, decode %.1f tok/s)\n", plain_s,
              j["plain_tokens_per_s"].get<double>(), plain_decode_tps, spec_s, j["spec_tokens_per_s"].get<double>(),
              spec_decode_tps);
  std::printf("  speedup %.2fx (decode %.2fx), mean TTFT %.0f ms, TPOT %.1f ms\n", j["speedup"].get<double>(),
              j["decode_speedup"].get<double>(), mt.mean_ttft_s() * 1e3, mt.mean_tpot_s() * 1e3);
  std::printf("  pipeline %s: %lld overlapped / %lld synchronous rounds, decoder waited %.2fs for drafts, verify %.2fs",
              threaded ? "on" : "off", static_cast<long long>(ps.overlapped_rounds),
              static_cast<long long>(ps.sync_rounds), ps.propose_wait_s, ps.verify_s);
  if (threaded)
    std::printf(", drafter busy %.2fs, hidden %.0f%%", j["pipeline"]["drafter_busy_s"].get<double>(),
                100.0 * j["pipeline"]["hidden_fraction"].get<double>());
  std::printf("\n");
  return 0;
}

}  // namespace

int bench_spec_command(std::span<const std::string> args) {
  return run_subcommand("bench-spec", args, bench_options(), print_help, run);
}

}  // namespace dspark::cli
