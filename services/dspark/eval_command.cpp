// `dspark eval`: how well a drafter's proposals survive verification, per dataset, with the
// DeepSpec metrics (method doc 7):
//
//   dspark eval --model M --draft dspark:DIR --prompts gsm8k.jsonl,mbpp.jsonl [--limit 50]
//       [--temperature 1] [--gamma 7] [--max-tokens 256] [--batch 8] [--check-lossless] [--json]
//       [--record-rounds TRACE.jsonl]
//
// Per dataset (the file stem names it): tau (acceptance length, bonus included), the
// conditional and unconditional acceptance at every draft position, the verify rate
// (useful share of verified tokens = sum tau / (verified drafts + rounds)) and, for drafters
// with a confidence head, the per-position ECE of the cumulative confidence against the
// accepted-prefix indicator (engine/spec/metrics.h). --check-lossless (temperature 0 only)
// also runs plain decoding and counts outputs that are token-identical.
// Prompt i of a dataset is sampled with seed S + i, so runs are reproducible.
#include <cstdio>
#include <exception>
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/generator.h"
#include "engine/model.h"
#include "engine/spec/prompt_set.h"
#include "engine/spec/spec_decoder.h"
#include "models/drafters/recording_drafter.h"
#include "services/dspark/backend_factory.h"
#include "services/dspark/cli_args.h"
#include "services/dspark/eval_command.h"
#include "services/dspark/spec_cli.h"

namespace dspark::cli {

namespace {

std::vector<option_spec> eval_options() {
  std::vector<option_spec> s = {
      {"model", true, false, "PATH  .gguf file or Hugging Face folder (required)"},
      {"prompts", true, false, "FILE[,FILE...]  JSONL prompt sets, {\"turns\": [...]} per line (required)"},
      {"limit", true, false, "N  prompts per dataset, the first N (default 50)"},
      {"max-tokens", true, false, "N  tokens per prompt at most (default 256)"},
      {"temperature", true, false, "T  0 = greedy (default 0)"},
      {"top-p", true, false, "P  nucleus filtering of target and draft (default 1)"},
      {"seed", true, false, "S  prompt i of a dataset uses S + i (default 980406)"},
      {"batch", true, false, "B  requests decoded together (default 1, as DeepSpec)"},
      {"threads", true, false, "N  CPU threads (default: hardware cores)"},
      {"ctx", true, false, "N  context length (default 2048)"},
      device_option_spec(),
      {"check-lossless", false, false, "also run plain decoding and count identical outputs (temperature 0)"},
      {"record-rounds", true, false,
       "FILE  write every request's rounds (proposed confidences, verified, accepted) as a JSONL round trace"
       " (models/drafters/round_trace.h; replayed by --draft replay:FILE in bench_load)"},
      {"json", false, false, "print one JSON object"},
      {"help", false, false, "this message"},
  };
  for (auto& o : spec_option_specs()) s.push_back(o);
  return s;
}

void print_help(std::FILE* out) {
  std::fprintf(out, "usage: dspark eval --model PATH --draft D --prompts FILE[,FILE...] [options]\n\noptions:\n%s",
               format_options(eval_options()).c_str());
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t end = s.find(',', start);
    const std::string part = s.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!part.empty()) out.push_back(part);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (out.empty()) throw usage_error("--prompts needs at least one file");
  return out;
}

struct dataset_result {
  std::string name;
  size_t prompts = 0;
  spec_metrics metrics;
  int64_t identical = -1;  // -1: not checked
};

// Runs one dataset through the speculative decoder, `batch` requests at a time.
dataset_result run_dataset(const std::string& path, int64_t limit, const sampling_params& sp, uint64_t seed,
                           int32_t batch, bool check, const model& m, backend& be, spec_setup& setup) {
  dataset_result r;
  r.name = std::filesystem::path(path).stem().string();
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& t : read_first_turns(path, limit)) prompts.push_back(encode_chat_prompt(m.tokenizer(), t));
  r.prompts = prompts.size();
  spec_decoder dec(be, setup.d.get(), *setup.policy, &m.tokenizer(), m.stop_ids(), {.max_requests = batch});
  sampling_params base = sp;
  base.seed = seed;
  const draft_skip_counts before = setup.skip ? setup.skip->stats() : draft_skip_counts{};
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<spec_result> res = spec_generate_all(dec, prompts, base, /*per_prompt_seed=*/true);
  r.metrics = dec.metrics();
  r.metrics.set_wall_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  if (setup.skip) {  // this dataset's share of the drafter's running counts
    draft_skip_counts d = setup.skip->stats();
    d.request_rounds -= before.request_rounds;
    d.skipped_rounds -= before.skipped_rounds;
    d.probe_rounds -= before.probe_rounds;
    d.drafts_saved -= before.drafts_saved;
    d.propose_s -= before.propose_s;
    d.commit_s -= before.commit_s;
    r.metrics.add_draft_skip(d);
  }
  if (check) {
    r.identical = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      sampling_params p = sp;
      p.seed = seed + i;
      r.identical += generate(m, be, prompts[i], p).token_ids == res[i].gen.token_ids;
    }
  }
  return r;
}

nlohmann::json dataset_json(const dataset_result& d) {
  const spec_metrics& mt = d.metrics;
  nlohmann::json j = mt.to_json();
  j["prompts"] = d.prompts;
  const double denom = static_cast<double>(mt.draft_tokens_verified() + mt.verify_steps());
  j["verify_rate"] = denom > 0 ? static_cast<double>(mt.round_tokens()) / denom : 0.0;
  j["drafts_verified_per_round"] =
      mt.verify_steps() ? static_cast<double>(mt.draft_tokens_verified()) / mt.verify_steps() : 0.0;
  if (d.identical >= 0) j["identical_outputs"] = d.identical;
  return j;
}

int run(const parsed_args& a) {
  const std::string path = a.require("model");
  const std::vector<std::string> files = split_commas(a.require("prompts"));
  const int64_t limit = a.get_int("limit", 50, 1, 1 << 20);
  sampling_params sp;
  sp.max_tokens = static_cast<int32_t>(a.get_int("max-tokens", 256, 1, 1 << 20));
  sp.temperature = static_cast<float>(a.get_double("temperature", 0.0));
  sp.top_p = static_cast<float>(a.get_double("top-p", 1.0));
  validate(sp);
  const uint64_t seed = a.get_u64("seed", 980406);
  const int32_t batch = static_cast<int32_t>(a.get_int("batch", 1, 1, 256));
  const bool check = a.has("check-lossless");
  if (check && sp.temperature != 0.0f) throw usage_error("--check-lossless needs --temperature 0");
  cpu_backend_options opt;
  opt.n_threads = static_cast<int>(a.get_int("threads", 0, 0, 256));
  opt.n_seq_max = batch;
  opt.n_ctx = static_cast<int32_t>(a.get_int("ctx", 2048, 16, 1 << 20));
  backend_choice bc;
  bc.device = read_device(a, "eval");
  bc.cpu = opt;

  const model m = load_model(path);
  const std::unique_ptr<backend> be_owner = make_backend(bc, m.config(), m.weights());
  spec_setup setup = make_spec_setup(a, m, bc, batch, be_owner.get());
  if (const std::optional<std::string> rec = a.get("record-rounds")) {
    if (!setup.d) throw usage_error("--record-rounds needs a drafter (--draft)");
    const std::string note = "dspark eval, draft " + setup.draft + ", policy " + setup.policy->name() + ", T " +
                             std::to_string(sp.temperature) + ", max " + std::to_string(sp.max_tokens) + " tokens, " +
                             describe(bc);
    setup.d = std::make_unique<recording_drafter>(std::move(setup.d), batch, setup.policy->draft_budget(), *rec, note);
  }
  std::vector<dataset_result> results;
  for (const std::string& f : files)
    results.push_back(run_dataset(f, limit, sp, seed, batch, check, m, *be_owner, setup));

  nlohmann::json j;
  j["draft"] = setup.draft;
  j["policy"] = setup.policy->name();
  j["temperature"] = sp.temperature;
  j["max_tokens"] = sp.max_tokens;
  j["batch"] = batch;
  j["device"] = device_name(bc.device);
  double tau_sum = 0.0;
  for (const dataset_result& d : results) {
    j["datasets"][d.name] = dataset_json(d);
    tau_sum += d.metrics.acceptance_length();
  }
  j["macro_acceptance_length"] = results.empty() ? 0.0 : tau_sum / static_cast<double>(results.size());
  if (a.has("json")) {
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("eval: draft %s, policy %s, T %.2f, max %d tokens, batch %d, %s\n", setup.draft.c_str(),
              setup.policy->name().c_str(), static_cast<double>(sp.temperature), sp.max_tokens, batch,
              describe(bc).c_str());
  for (const dataset_result& d : results) {
    const spec_metrics& mt = d.metrics;
    const nlohmann::json dj = dataset_json(d);
    std::printf("\n%s (%zu prompts): tau %.3f over %lld rounds, verify rate %.3f, %.2f drafts verified/round\n",
                d.name.c_str(), d.prompts, mt.acceptance_length(), static_cast<long long>(mt.verify_steps()),
                dj["verify_rate"].get<double>(), dj["drafts_verified_per_round"].get<double>());
    std::printf("  k   conditional  unconditional  ECE(cumprod conf)\n");
    for (int32_t k = 0; k < mt.positions(); ++k) {
      if (mt.verified_at(k) == 0) continue;
      std::printf("  %-3d %.3f        %.3f", k + 1, mt.conditional_acceptance(k), mt.unconditional_acceptance(k));
      if (mt.calibrated_at(k) > 0) std::printf("          %.4f", mt.expected_calibration_error(k));
      std::printf("\n");
    }
    std::printf("  %.1f tokens/s\n", mt.tokens_per_s());
    print_draft_skip(setup, mt);
    if (d.identical >= 0)
      std::printf("  identical to plain decoding: %lld / %zu\n", static_cast<long long>(d.identical), d.prompts);
  }
  std::printf("\nmacro tau over %zu datasets: %.3f\n", results.size(), j["macro_acceptance_length"].get<double>());
  return 0;
}

}  // namespace

int eval_command(std::span<const std::string> args) {
  return run_subcommand("eval", args, eval_options(), print_help, run);
}

}  // namespace dspark::cli
