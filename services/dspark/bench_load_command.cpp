// `dspark bench-load`: a closed-loop load generator over the serving loop (spec_decoder with
// continuous batching) at several concurrencies, for several verification policies.
//
//   dspark bench-load --model M --prompts FILE.jsonl --draft ngram --gamma 4
//       --concurrency 1,4,16,64,128,256 --policies none,fixed,threshold,scheduled,async
//       [--requests N] [--max-tokens 64] [--device cuda] [--json]
//
// At concurrency C, C clients each keep one request in flight: when a request finishes, its
// client submits the next prompt (prompts cycle through the file) in the same step. Every level
// first runs C warm-up requests (graph capture, caches), then measures N = max(--requests, 2C)
// requests. Per (policy, C):
//   aggregate tok/s   generated tokens of the measured requests / the level's wall time
//   per-user tok/s    mean over requests of (tokens - 1) / (t_end - t_first): the decode speed
//                     one user sees
//   TPOT p50/p90/p99  per request (t_end - t_first) / (tokens - 1)
//   TTFT p50, tau, mean verified drafts per request round, verify tokens per step, plan time.
// "none" is plain decoding through the same loop (no drafter).
#include "services/dspark/bench_load_command.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/model.h"
#include "engine/spec/prompt_set.h"
#include "engine/spec/spec_decoder.h"
#include "services/dspark/backend_factory.h"
#include "services/dspark/cli_args.h"
#include "services/dspark/spec_cli.h"

namespace dspark::cli {

namespace {

using clock_type = std::chrono::steady_clock;

std::vector<option_spec> load_options() {
  std::vector<option_spec> s = {
      {"model", true, false, "PATH  .gguf file or Hugging Face folder (required)"},
      {"prompts", true, false, "FILE  JSONL prompt set, {\"turns\": [...]} per line (required)"},
      {"limit", true, false, "N  prompts read from the file, cycled (default 100)"},
      {"concurrency", true, false, "LIST  clients per level (default 1,4,16,64,128,256)"},
      {"policies", true, false, "LIST  none and/or --policy names (default none,fixed,threshold,scheduled,async)"},
      {"requests", true, false, "N  measured requests per level, at least 2 x concurrency (default 16)"},
      {"max-tokens", true, false, "N  tokens per request at most (default 64)"},
      {"temperature", true, false, "T  0 = greedy (default 0)"},
      {"threads", true, false, "N  CPU threads (default: hardware cores)"},
      {"ctx", true, false, "N  context length (default 1024)"},
      device_option_spec(),
      {"json", false, false, "one JSON object per (policy, concurrency) line"},
      {"help", false, false, "this message"},
  };
  for (auto& o : spec_option_specs()) s.push_back(o);
  return s;
}

void print_help(std::FILE* out) {
  std::fprintf(out, "usage: dspark bench-load --model PATH --prompts FILE.jsonl [options]\n\noptions:\n%s",
               format_options(load_options()).c_str());
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, ',');)
    if (!t.empty()) out.push_back(t);
  return out;
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

struct level_result {
  nlohmann::json j;
};

// One closed-loop level: `warm` unmeasured requests, then `n` measured ones.
nlohmann::json run_level(spec_decoder& dec, const std::vector<std::vector<int32_t>>& prompts, const sampling_params& sp,
                         int32_t concurrency, int32_t n, size_t& next_prompt) {
  auto submit = [&](std::vector<int32_t>& live) {
    live.push_back(dec.add(prompts[next_prompt % prompts.size()], sp));
    ++next_prompt;
  };
  // Warm-up: one request per client, run to completion.
  {
    std::vector<int32_t> live;
    for (int32_t i = 0; i < concurrency; ++i) submit(live);
    dec.run();
    for (int32_t id : live) (void)dec.take(id);
  }
  const spec_metrics before = dec.metrics();
  std::vector<int32_t> live;
  int32_t submitted = 0, done = 0;
  std::vector<double> tpot, per_user, ttft;
  int64_t tokens = 0, steps = 0;
  const auto t0 = clock_type::now();
  for (; submitted < std::min(concurrency, n); ++submitted) submit(live);
  while (done < n) {
    (void)dec.step();
    ++steps;
    for (size_t i = 0; i < live.size();) {
      if (!dec.finished(live[i])) {
        ++i;
        continue;
      }
      const spec_result r = dec.take(live[i]);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
      ++done;
      const auto& st = r.gen.stats;
      tokens += st.generated_tokens;
      ttft.push_back(st.prefill_s);
      if (st.generated_tokens >= 2 && st.decode_s > 0) {
        tpot.push_back(st.decode_s / static_cast<double>(st.generated_tokens - 1));
        per_user.push_back(static_cast<double>(st.generated_tokens - 1) / st.decode_s);
      }
      if (submitted < n) {
        submit(live);
        ++submitted;
      }
    }
  }
  const double wall = std::chrono::duration<double>(clock_type::now() - t0).count();
  const spec_metrics& after = dec.metrics();
  const int64_t rounds = after.verify_steps() - before.verify_steps();
  const int64_t verified = after.draft_tokens_verified() - before.draft_tokens_verified();
  const int64_t accepted = after.draft_tokens_accepted() - before.draft_tokens_accepted();
  double mean_user = 0.0;
  for (double x : per_user) mean_user += x;
  mean_user = per_user.empty() ? 0.0 : mean_user / static_cast<double>(per_user.size());
  return {{"concurrency", concurrency},
          {"requests", n},
          {"wall_s", wall},
          {"generated_tokens", tokens},
          {"aggregate_tokens_per_s", wall > 0 ? static_cast<double>(tokens) / wall : 0.0},
          {"per_user_tokens_per_s", mean_user},
          {"tpot_ms_p50", percentile(tpot, 0.5) * 1e3},
          {"tpot_ms_p90", percentile(tpot, 0.9) * 1e3},
          {"tpot_ms_p99", percentile(tpot, 0.99) * 1e3},
          {"ttft_ms_p50", percentile(ttft, 0.5) * 1e3},
          {"steps", steps},
          {"tau", rounds > 0 ? 1.0 + static_cast<double>(accepted) / static_cast<double>(rounds) : 1.0},
          {"mean_verify_length", rounds > 0 ? static_cast<double>(verified) / static_cast<double>(rounds) : 0.0},
          {"verify_tokens_per_step", steps > 0 ? static_cast<double>(verified + rounds) / static_cast<double>(steps) : 0.0}};
}

int run(const parsed_args& a) {
  const std::string path = a.require("model");
  const std::string prompts_path = a.require("prompts");
  const int64_t limit = a.get_int("limit", 100, 1, 1 << 20);
  sampling_params sp;
  sp.max_tokens = static_cast<int32_t>(a.get_int("max-tokens", 64, 1, 1 << 20));
  sp.temperature = static_cast<float>(a.get_double("temperature", 0.0));
  validate(sp);
  std::vector<int32_t> levels;
  for (const std::string& c : split_list(a.get("concurrency").value_or("1,4,16,64,128,256"))) {
    int32_t v = 0;
    try {
      v = std::stoi(c);
    } catch (const std::exception&) {
      throw usage_error("--concurrency: '" + c + "' is not a number");
    }
    if (v < 1 || v > 1024) throw usage_error("--concurrency values must be in [1, 1024]");
    levels.push_back(v);
  }
  if (levels.empty()) throw usage_error("--concurrency needs at least one value");
  const std::vector<std::string> policies =
      split_list(a.get("policies").value_or("none,fixed,threshold,scheduled,async"));
  if (policies.empty()) throw usage_error("--policies needs at least one name");
  const int32_t min_requests = static_cast<int32_t>(a.get_int("requests", 16, 1, 1 << 20));
  const int32_t max_c = *std::max_element(levels.begin(), levels.end());
  cpu_backend_options opt;
  opt.n_threads = static_cast<int>(a.get_int("threads", 0, 0, 256));
  opt.n_seq_max = max_c;
  opt.n_ctx = static_cast<int32_t>(a.get_int("ctx", 1024, 16, 1 << 20));
  const bool json = a.has("json");
  backend_choice bc;
  bc.device = read_device(a, "bench-load");
  bc.cpu = opt;

  const model m = load_model(path);
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& t : read_first_turns(prompts_path, limit)) prompts.push_back(encode_chat_prompt(m.tokenizer(), t));
  if (prompts.empty()) throw usage_error("no prompts in " + prompts_path);
  const std::unique_ptr<backend> be_owner = make_backend(bc, m.config(), m.weights());
  backend& be = *be_owner;
  spec_setup setup = make_spec_setup(a, m, bc, max_c, &be);
  const int32_t gamma = static_cast<int32_t>(a.get_int("gamma", 4, 1, 64));
  const double threshold = a.get_double("threshold", 0.5);

  if (!json)
    std::printf("| draft | policy | C | aggregate tok/s | per-user tok/s | TPOT p50 / p90 / p99 ms | TTFT p50 ms | tau | "
                "verify len | verify tok/step |\n|---|---|---|---|---|---|---|---|---|---|\n");
  size_t next_prompt = 0;
  for (const std::string& pname : policies) {
    const bool plain = pname == "none";
    std::unique_ptr<spec_policy> pol = plain ? std::make_unique<fixed_gamma_policy>(0)
                                             : make_policy(pname, gamma, threshold, m, bc, max_c, &be, a.get("sps-profile"));
    for (int32_t c : levels) {
      spec_decoder dec(be, plain ? nullptr : setup.d.get(), *pol, &m.tokenizer(), m.stop_ids(), {.max_requests = c});
      nlohmann::json j = run_level(dec, prompts, sp, c, std::max(min_requests, 2 * c), next_prompt);
      j["draft"] = plain ? "none" : setup.draft;
      j["policy"] = plain ? "none" : pol->name();
      j["device"] = device_name(bc.device);
      j["max_tokens"] = sp.max_tokens;
      j["temperature"] = sp.temperature;
      if (json) {
        std::printf("%s\n", j.dump().c_str());
      } else {
        std::printf("| %s | %s | %d | %.1f | %.1f | %.2f / %.2f / %.2f | %.1f | %.3f | %.2f | %.1f |\n",
                    j["draft"].get<std::string>().c_str(), j["policy"].get<std::string>().c_str(), c,
                    j["aggregate_tokens_per_s"].get<double>(), j["per_user_tokens_per_s"].get<double>(),
                    j["tpot_ms_p50"].get<double>(), j["tpot_ms_p90"].get<double>(), j["tpot_ms_p99"].get<double>(),
                    j["ttft_ms_p50"].get<double>(), j["tau"].get<double>(), j["mean_verify_length"].get<double>(),
                    j["verify_tokens_per_step"].get<double>());
      }
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

int bench_load_command(std::span<const std::string> args) {
  return run_subcommand("bench-load", args, load_options(), print_help, run);
}

}  // namespace dspark::cli
