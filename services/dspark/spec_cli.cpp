// Speculative-decoding CLI options: drafter and policy construction, stats.
#include "services/dspark/spec_cli.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <filesystem>
#include <string>

#include "engine/model.h"
#include "common/error.h"
#include "engine/spec/policy_factory.h"
#include "models/drafters/layerskip_drafter.h"
#include "models/drafters/trained_drafter.h"
#include "models/drafters/ngram_drafter.h"
#include "models/drafters/skipping_drafter.h"
#include "models/tokenizer/tokenizer.h"
#ifdef DSPARK_HAVE_CUDA
#include "models/drafters/cuda/cuda_trained_drafter.h"
#endif

namespace dspark::cli {

std::vector<option_spec> spec_option_specs() {
  return {
      {"draft", true, false,
       "none|ngram|layerskip:K|dspark:DIR|dflash:DIR|eagle3:DIR|mtp1:DIR  speculative drafter (default none)"},
      {"gamma", true, false, "G  draft tokens verified per step, [1, 64] (default 4)"},
      {"policy", true, false,
       "fixed|threshold|scheduled|async[:LAG]  drafts verified per step: all (fixed), a confidence prefix"
       " (threshold, --threshold), Algorithm 1 over the measured step-time curve (scheduled), or its"
       " asynchronous-capacity variant (async) (default fixed, or threshold when --threshold > 0)"},
      {"threshold", true, false, "C  stop a chain where its cumulative confidence < C, [0, 1] (default 0)"},
      {"sps-profile", true, false,
       "FILE  step-time profile cache for scheduled/async (default $XDG_CACHE_HOME or ~/.cache, dspark/sps-*.json)"},
      {"layerskip-cache", true, false,
       "shared|own  layerskip:K drafts on the target's own KV (shared, default where the backend can) or"
       " on a K-layer copy with its own KV (own)"},
      {"draft-threads", true, false, "N  CPU threads of a trained drafter on the CPU (default: --threads)"},
      {"draft-skip", true, false,
       "off|auto[:COST]  skip drafting for requests whose recent acceptance / confidence says it will not pay"
       " (COST = drafter time per round / verify step time, default 0.25; docs/scheduler.md). off: only"
       " time the drafter (default: no wrapper)"},
      {"draft-device", true, false,
       "auto|cpu|cuda  where a trained drafter runs: on the GPU when the target does (auto, default; the RNN"
       " Markov head always runs on the CPU)"},
      {"ngram-min", true, false, "N  shortest n-gram to match (default 1)"},
      {"ngram-max", true, false, "N  longest n-gram to match (default 4)"},
  };
}

std::unique_ptr<spec_policy> make_policy(const std::string& name, int32_t gamma, double threshold, const model& m,
                                         const backend_choice& be, int32_t max_slots, backend* target,
                                         const std::optional<std::string>& sps_path) {
  policy_build_options o;
  o.gamma = gamma;
  o.threshold = threshold;
  o.max_slots = max_slots;
  o.target = target;
  o.device = describe(be);
  o.profile_path = sps_path.value_or("");
  try {
    return make_policy_by_name(name, m.config(), o);
  } catch (const invalid_argument_error& e) {
    throw usage_error(std::string("--") + e.what());  // "--policy must be ..."
  }
}

namespace {

// The drafter and policy of the options, before any --draft-skip wrapper.
spec_setup make_unwrapped_setup(const parsed_args& a, const model& m, const backend_choice& be,
                                int32_t max_slots, backend* target) {
  spec_setup s;
  s.draft = a.get("draft").value_or("none");
  const int32_t gamma = static_cast<int32_t>(a.get_int("gamma", 4, 1, 64));
  const double threshold = a.get_double("threshold", 0.0);
  if (!(threshold >= 0.0 && threshold <= 1.0))
    throw usage_error("--threshold must be in [0, 1], got " + std::to_string(threshold));
  s.policy = make_policy(a.get("policy").value_or(threshold > 0.0 ? "threshold" : "fixed"), gamma, threshold, m,
                         be, max_slots, target, a.get("sps-profile"));
  if (s.draft == "none") return s;
  if (s.draft == "ngram") {
    ngram_drafter_params p;
    p.min_n = static_cast<int32_t>(a.get_int("ngram-min", 1, 1, 64));
    p.max_n = static_cast<int32_t>(a.get_int("ngram-max", 4, p.min_n, 64));
    p.max_slots = max_slots;
    s.d = std::make_unique<ngram_drafter>(p);
    return s;
  }
  const std::string prefix = "layerskip:";
  if (s.draft.rfind(prefix, 0) == 0) {
    const std::string k = s.draft.substr(prefix.size());
    const int64_t n_layer = m.config().n_layer;
    int64_t kv = 0;
    try {
      size_t used = 0;
      kv = std::stoll(k, &used);
      if (used != k.size()) kv = 0;
    } catch (const std::exception&) {
      kv = 0;
    }
    if (kv < 1 || kv > n_layer)
      throw usage_error("--draft layerskip:K needs K in [1, " + std::to_string(n_layer) + "], got '" + k + "'");
    layerskip_drafter_params p;
    p.n_layers = static_cast<int32_t>(kv);
    p.max_slots = max_slots;
    const std::string cache = a.get("layerskip-cache").value_or("shared");
    if (cache != "shared" && cache != "own")
      throw usage_error("--layerskip-cache must be shared or own, got '" + cache + "'");
    if (cache == "shared" && target && target->supports_forward_prefix()) p.shared_target = target;
    backend_choice dbe = be;
    dbe.cpu.n_seq_max = max_slots;
    s.d = std::make_unique<layerskip_drafter>(
        m.config(), m.weights(), p,
        [dbe](const model_config& c, const llama_weights& w) { return make_backend(dbe, c, w); });
    return s;
  }
  // Trained drafters: KIND:DIR, a folder of drafter.json + weights for this target.
  const size_t colon = s.draft.find(':');
  if (colon != std::string::npos) {
    if (const auto kind = parse_drafter_kind(s.draft.substr(0, colon))) {
      const std::string dir = s.draft.substr(colon + 1);
      if (dir.empty() || !std::filesystem::is_directory(dir))
        throw usage_error("--draft " + s.draft.substr(0, colon) + ":DIR needs a drafter folder; '" + dir +
                          "' is not a directory");
      drafter_runtime_params p;
      p.max_slots = max_slots;
      p.max_ctx = be.cpu.n_ctx > 0 ? be.cpu.n_ctx : static_cast<int32_t>(std::min<int64_t>(m.config().n_ctx_train, 4096));
      p.n_threads = static_cast<int>(a.get_int("draft-threads", be.cpu.n_threads, 0, 256));
      const std::string where = a.get("draft-device").value_or("auto");
      if (where != "auto" && where != "cpu" && where != "cuda")
        throw usage_error("--draft-device must be auto, cpu or cuda, got '" + where + "'");
      if (where == "cuda" && be.device != device_kind::cuda)
        throw usage_error("--draft-device cuda needs the target on the GPU (--device cuda)");
#ifdef DSPARK_HAVE_CUDA
      if (where != "cpu" && be.device == device_kind::cuda) {
        std::string why;
        s.d = load_trained_drafter_cuda(dir, m.config(), m.weights(), p, kind, &why);
        if (s.d) return s;
        if (where == "cuda") throw usage_error("--draft-device cuda: " + why);
        std::fprintf(stderr, "drafter: %s runs on the CPU (%s)\n", dir.c_str(), why.c_str());
      }
#endif
      s.d = load_trained_drafter(dir, m.config(), m.weights(), p, kind);
      return s;
    }
  }
  throw usage_error("--draft must be none, ngram, layerskip:K, dspark:DIR, dflash:DIR, eagle3:DIR or mtp1:DIR, got '" +
                    s.draft + "'");
}

}  // namespace

spec_setup make_spec_setup(const parsed_args& a, const model& m, const backend_choice& be,
                           int32_t max_slots, backend* target) {
  draft_skip_params p;
  bool enabled = false;
  const std::optional<std::string> skip = a.get("draft-skip");
  if (skip) {
    try {
      enabled = parse_draft_skip(*skip, p);
    } catch (const invalid_argument_error& e) {
      throw usage_error(std::string("--") + e.what());
    }
  }
  spec_setup s = make_unwrapped_setup(a, m, be, max_slots, target);
  if (skip && s.d) {
    auto wrapped = std::make_unique<skipping_drafter>(std::move(s.d), max_slots, p, enabled);
    s.skip = wrapped.get();
    s.d = std::move(wrapped);
  }
  return s;
}

spec_result run_spec_generate(const model& m, backend& be, spec_setup& s, std::span<const int32_t> prompt,
                              const sampling_params& params, const token_callback& on_token) {
  spec_result r = spec_generate(be, s.d.get(), *s.policy, m.has_tokenizer() ? &m.tokenizer() : nullptr,
                                m.stop_ids(), prompt, params, on_token);
  if (s.skip) r.metrics.add_draft_skip(s.skip->stats());
  return r;
}

nlohmann::json spec_stats_json(const spec_metrics& m) {
  nlohmann::json j;
  j["acceptance_length"] = m.acceptance_length();
  j["verify_steps"] = m.verify_steps();
  j["draft_tokens_proposed"] = m.draft_tokens_proposed();
  j["draft_tokens_verified"] = m.draft_tokens_verified();
  j["draft_tokens_accepted"] = m.draft_tokens_accepted();
  nlohmann::json cond = nlohmann::json::array();
  for (int32_t k = 0; k < m.positions(); ++k) cond.push_back(m.conditional_acceptance(k));
  j["acceptance_conditional"] = cond;
  if (const nlohmann::json full = m.to_json(); full.contains("draft_skip")) j["draft_skip"] = full["draft_skip"];
  return j;
}

void print_draft_skip(const spec_setup& s, const spec_metrics& m) {
  if (!s.skip) return;
  const draft_skip_counts& k = m.draft_skip();
  std::printf("  draft skip (%s): skipped %lld of %lld request-rounds (%lld probes), %lld drafts saved;"
              " drafter propose %.3fs + commit %.3fs\n",
              s.skip->enabled() ? "auto" : "off", static_cast<long long>(k.skipped_rounds),
              static_cast<long long>(k.request_rounds), static_cast<long long>(k.probe_rounds),
              static_cast<long long>(k.drafts_saved), k.propose_s, k.commit_s);
}

}  // namespace dspark::cli
