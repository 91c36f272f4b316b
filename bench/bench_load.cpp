// bench_load: closed-loop load at several concurrencies for several verification policies,
// on a real model or on an 8B shape with synthetic random weights (docs/scheduler.md, "Load
// benchmark"; the loop itself is engine/spec/load_loop.h).
//
//   bench_load (--model PATH --prompts FILE.jsonl | --synthetic qwen3-8b|llama3-8b|smollm2-135m|tiny)
//              [--device cpu|cuda] [--draft SPEC] [--gamma 7] [--threshold 0.5]
//              [--policies none,fixed,threshold,scheduled,async] [--mtp1 SPEC]
//              [--concurrency 1,4,16,64,128,256] [--requests N] [--seconds S] [--warmup N | --warmup-waves W]
//              [--max-tokens 64] [--min-tokens 32] [--prompt-count 64] [--prompt-tokens 128]
//              [--prefill-chunk 256] [--ctx N] [--threads N] [--sps-profile FILE] [--seed S]
//              [--jsonl FILE] [--md FILE] [--label-prefix P] [--synthetic-text echo|random]
//
// Drafters (SPEC): none, ngram, layerskip:K (on the target's KV), dspark|dflash|eagle3|mtp1:DIR
// (trained, host CPU), or replay:TRACE.jsonl[,layers=N][,logits=all|last][,features=F]: replayed acceptance
// from a recorded round trace against the target's own greedy continuations
// (models/drafters/replay_drafter.h; the draft pass is charged as N target layers, and with
// features=F the capture of F target layers and their host gather as a trained drafter's). Policies:
// none (plain decoding through the same loop), fixed[:G], threshold[:T], scheduled, async[:LAG]
// (scheduled/async profile SPS(R, B) at start-up, cached in --sps-profile). --mtp1 SPEC adds a run
// labelled "mtp1": fixed gamma 1 with that drafter (the MTP-1-like baseline).
//
// Per (run, concurrency) one JSON line (--jsonl, appended) and one markdown row (stdout, and
// --md): aggregate and per-user tok/s, TPOT p50/p90/p99, TTFT p50, tau, mean verify length,
// verify tokens per step, scheduler time per step, oracle misses (replay); each row's "label" is
// --label-prefix + the policy entry (or "mtp1"). Greedy decoding;
// prompts cycle, from the first at every level of every run (and a replay drafter's records
// with them), so the runs of a level serve the same requests in the same order and differ only
// by policy; request i's max_tokens is drawn once from [--min-tokens, --max-tokens]
// (different lengths keep the closed loop from marching in lock-step waves). Progress and
// the time each level took go to stderr. The window opens after --warmup finished requests
// (default one wave, C) or --warmup-waves W waves (W x C): each level starts a fresh decoder, so
// several waves put the speculation gate's start-up (its first close and reprobe) before it.
// --synthetic-text echo (default) gives the synthetic model a bf16-robust greedy text, so
// replay oracles do not miss (models/arch/synthetic_model.h).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/cpu_backend.h"
#include "engine/model.h"
#include "engine/spec/counter_rng.h"
#include "engine/spec/load_loop.h"
#include "engine/spec/policy_factory.h"
#include "engine/spec/prompt_set.h"
#include "engine/spec/spec_gate.h"
#include "engine/spec/timed_policy.h"
#include "models/arch/synthetic_model.h"
#include "models/drafters/drafter_config.h"
#include "models/drafters/layerskip_drafter.h"
#include "models/drafters/skipping_drafter.h"
#include "models/drafters/ngram_drafter.h"
#include "models/drafters/replay_drafter.h"
#include "models/drafters/trained_drafter.h"
#ifdef DSPARK_HAVE_CUDA
#include "engine/cuda/cuda_backend.h"
#include "models/drafters/cuda/cuda_trained_drafter.h"
#endif

namespace {

using namespace dspark;
using clock_type = std::chrono::steady_clock;

struct bench_args {
  std::string model, synthetic, prompts, device = "cpu", draft = "none", mtp1, policies = "none,fixed,threshold,scheduled,async";
  std::string sps_profile, jsonl, md, label_prefix, synth_text = "echo", draft_skip = "off", spec_gate = "off";
  bool shared_prefill = true;
  bool fused_prefill = true;
  std::vector<int32_t> concurrency = {1, 4, 16, 64, 128, 256};
  int32_t gamma = 7, requests = 0, warmup = -1, warmup_waves = 0, max_tokens = 64, min_tokens = -1, prompt_count = 64, prompt_tokens = 128;
  int32_t prefill_chunk = 256, ctx = 0, threads = 0;
  double threshold = 0.5, seconds = 5.0;
  uint64_t seed = 1234;
};

// Prints `why` and the usage to stderr and exits 2; an empty `why` (--help): the usage to
// stdout, exit 0.
[[noreturn]] void usage(const std::string& why) {
  std::fprintf(why.empty() ? stdout : stderr,
               "%s%susage: bench_load (--model PATH --prompts FILE.jsonl | --synthetic qwen3-8b|llama3-8b|smollm2-135m|tiny)\n"
               "  [--device cpu|cuda] [--draft none|ngram|layerskip:K|KIND:DIR|replay:TRACE[,layers=N][,logits=all|last][,features=F]]\n"
               "  [--gamma 7] [--threshold 0.5] [--policies none,fixed[:G],threshold[:T],scheduled,async[:LAG]] [--mtp1 SPEC]\n"
               "  [--concurrency 1,4,16,64,128,256] [--requests N] [--seconds 5] [--warmup N | --warmup-waves W] [--max-tokens 64]\n"
               "  [--min-tokens N] [--prompt-count 64] [--prompt-tokens 128] [--prefill-chunk 256] [--ctx N]\n"
               "  [--threads N] [--sps-profile FILE] [--seed S] [--jsonl FILE] [--md FILE] [--label-prefix P]\n"
               "  [--draft-skip off|auto[:COST]]  (wraps the --draft drafter of every policy run, not mtp1; auto: cost measured)\n"
               "  [--spec-gate off|auto[:BUDGET][:pool=N]|N]  (speculation off where it does not pay, for threshold/scheduled/async runs;\n"
               "                             engine/spec/spec_gate.h)\n"
               "  [--synthetic-text echo|random] [--shared-prefill on|off]  (off: one prefill forward per joining\n"
               "                             prompt, the loop before 2026-12-06, for A/B runs)\n"
               "  [--fused-prefill on|off]  (on, the default: while requests decode, the step's prompt chunks\n"
               "                             ride in the verify forward; off: a forward of their own, for A/B runs)\n",
               why.empty() ? "" : ("bench_load: " + why).c_str(), why.empty() ? "" : "\n");
  std::exit(why.empty() ? 0 : 2);
}

int32_t to_int(const std::string& k, const std::string& v, int64_t lo, int64_t hi) {
  size_t used = 0;
  long long x = 0;
  try {
    x = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty() || x < lo || x > hi)
    usage(k + " needs an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" + v + "'");
  return static_cast<int32_t>(x);
}

double to_double(const std::string& k, const std::string& v) {
  size_t used = 0;
  double x = 0;
  try {
    x = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty() || !(x >= 0)) usage(k + " needs a number >= 0, got '" + v + "'");
  return x;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, sep);)
    if (!t.empty()) out.push_back(t);
  return out;
}

bench_args parse(int argc, char** argv) {
  bench_args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--help" || k == "-h") usage("");
    if (i + 1 >= argc) usage("option " + k + " needs a value");
    const std::string v = argv[++i];
    if (k == "--model") a.model = v;
    else if (k == "--synthetic") a.synthetic = v;
    else if (k == "--prompts") a.prompts = v;
    else if (k == "--device") a.device = v;
    else if (k == "--draft") a.draft = v;
    else if (k == "--mtp1") a.mtp1 = v;
    else if (k == "--policies") a.policies = v;
    else if (k == "--sps-profile") a.sps_profile = v;
    else if (k == "--jsonl") a.jsonl = v;
    else if (k == "--md") a.md = v;
    else if (k == "--label-prefix") a.label_prefix = v;
    else if (k == "--draft-skip") a.draft_skip = v;
    else if (k == "--spec-gate") a.spec_gate = v;
    else if (k == "--synthetic-text") a.synth_text = v;
    else if (k == "--shared-prefill") {
      if (v != "on" && v != "off") usage("--shared-prefill must be on or off");
      a.shared_prefill = v == "on";
    } else if (k == "--fused-prefill") {
      if (v != "on" && v != "off") usage("--fused-prefill must be on or off");
      a.fused_prefill = v == "on";
    }
    else if (k == "--gamma") a.gamma = to_int(k, v, 1, 64);
    else if (k == "--requests") a.requests = to_int(k, v, 1, 1 << 20);
    else if (k == "--warmup") a.warmup = to_int(k, v, 0, 1 << 20);
    else if (k == "--warmup-waves") a.warmup_waves = to_int(k, v, 1, 64);
    else if (k == "--max-tokens") a.max_tokens = to_int(k, v, 1, 1 << 16);
    else if (k == "--min-tokens") a.min_tokens = to_int(k, v, 1, 1 << 16);
    else if (k == "--prompt-count") a.prompt_count = to_int(k, v, 1, 1 << 16);
    else if (k == "--prompt-tokens") a.prompt_tokens = to_int(k, v, 2, 1 << 16);
    else if (k == "--prefill-chunk") a.prefill_chunk = to_int(k, v, 1, 1 << 16);
    else if (k == "--ctx") a.ctx = to_int(k, v, 16, 1 << 20);
    else if (k == "--threads") a.threads = to_int(k, v, 0, 1024);
    else if (k == "--seed") a.seed = static_cast<uint64_t>(to_int(k, v, 0, 1 << 30));
    else if (k == "--threshold") a.threshold = to_double(k, v);
    else if (k == "--seconds") a.seconds = to_double(k, v);
    else if (k == "--concurrency") {
      a.concurrency.clear();
      for (const std::string& c : split(v, ',')) a.concurrency.push_back(to_int(k, c, 1, 1024));
    } else {
      usage("unknown option " + k);
    }
  }
  if (a.model.empty() == a.synthetic.empty()) usage("give exactly one of --model and --synthetic");
  if (!a.model.empty() && a.prompts.empty()) usage("--model needs --prompts");
  if (a.device != "cpu" && a.device != "cuda") usage("--device must be cpu or cuda");
  if (a.concurrency.empty()) usage("--concurrency needs at least one value");
  if (a.min_tokens < 0) a.min_tokens = std::max(1, a.max_tokens / 2);
  if (a.min_tokens > a.max_tokens) usage("--min-tokens must not exceed --max-tokens");
  if (a.threshold > 1.0) usage("--threshold must be in [0, 1]");
  if (a.synth_text != "echo" && a.synth_text != "random") usage("--synthetic-text must be echo or random");
  return a;
}

// The target: a loaded model file or a synthetic shape, with prompts and the backend.
struct target {
  std::optional<model> file;
  std::unique_ptr<synthetic_model> synth;
  const model_config* cfg = nullptr;
  const llama_weights* w = nullptr;
  const tokenizer* tok = nullptr;
  std::vector<int32_t> stop_ids;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int32_t> max_tokens;  // per prompt
  std::unique_ptr<backend> be;
  std::string name;
};

std::unique_ptr<backend> make_target_backend(const bench_args& a, const target& t, int32_t n_seq, int32_t n_ctx,
                                             int32_t max_step) {
  if (a.device == "cuda") {
#ifdef DSPARK_HAVE_CUDA
    cuda::cuda_backend_options o;
    o.n_seq_max = n_seq;
    o.n_ctx = n_ctx;
    o.max_tokens_per_step = max_step;
    return std::make_unique<cuda::cuda_backend>(*t.cfg, *t.w, o);
#else
    throw std::runtime_error("this binary was built without CUDA");
#endif
  }
  cpu_backend_options o;
  o.n_threads = a.threads;
  o.n_seq_max = n_seq;
  o.n_ctx = n_ctx;
  o.max_tokens_per_step = max_step;
  return std::make_unique<cpu_backend>(*t.cfg, *t.w, o);
}

double seconds_since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

void load_target(const bench_args& a, target& t) {
  const auto t0 = clock_type::now();
  uint64_t h = splitmix64_mix(a.seed);
  auto next = [&h](int64_t n) {  // deterministic draws in [0, n)
    h = splitmix64_mix(h);
    return static_cast<int64_t>(h % static_cast<uint64_t>(n));
  };
  if (!a.synthetic.empty()) {
    t.synth = make_synthetic_model(a.synthetic, a.seed, 4096,
                                   a.synth_text == "echo" ? synthetic_text::echo : synthetic_text::random);
    t.cfg = &t.synth->config;
    t.w = &t.synth->weights;
    t.name = "synthetic " + a.synthetic + " (" + a.synth_text + ")";
    const int32_t lo = std::max(1, a.prompt_tokens / 2);
    for (int32_t i = 0; i < a.prompt_count; ++i) {
      std::vector<int32_t> p(static_cast<size_t>(lo + next(a.prompt_tokens - lo + 1)));
      for (int32_t& x : p) x = static_cast<int32_t>(next(t.cfg->n_vocab));
      t.prompts.push_back(std::move(p));
    }
  } else {
    t.file.emplace(load_model(a.model));
    t.cfg = &t.file->config();
    t.w = &t.file->weights();
    t.tok = &t.file->tokenizer();
    t.stop_ids = t.file->stop_ids();
    t.name = t.cfg->name;
    for (const std::string& s : read_first_turns(a.prompts, a.prompt_count)) t.prompts.push_back(encode_chat_prompt(*t.tok, s));
    if (t.prompts.empty()) usage("no prompts in " + a.prompts);
  }
  for (size_t i = 0; i < t.prompts.size(); ++i)
    t.max_tokens.push_back(a.min_tokens + static_cast<int32_t>(next(a.max_tokens - a.min_tokens + 1)));
  size_t longest = 0;
  for (const auto& p : t.prompts) longest = std::max(longest, p.size());
  const int32_t n_seq = *std::max_element(a.concurrency.begin(), a.concurrency.end());
  const int32_t n_ctx = a.ctx > 0 ? a.ctx : static_cast<int32_t>(longest) + a.max_tokens + a.gamma + 16;
  const int32_t max_step = std::max({512, n_seq * (a.gamma + 1), a.prefill_chunk});
  const double t_weights = seconds_since(t0);
  t.be = make_target_backend(a, t, n_seq, n_ctx, max_step);
  std::fprintf(stderr, "bench_load: %s, %zu prompts (longest %zu), context %d, steps of up to %d tokens; weights %.1f s, backend %.1f s\n",
               t.name.c_str(), t.prompts.size(), longest, n_ctx, max_step, t_weights, seconds_since(t0) - t_weights);
}

// Drafters by SPEC; the replay oracles are computed once, on first use.
struct drafter_maker {
  const bench_args& a;
  target& t;
  int32_t max_slots;
  std::optional<std::vector<replay_oracle>> oracles;

  std::unique_ptr<drafter> make(const std::string& spec) {
    if (spec == "none") return nullptr;
    if (spec == "ngram") return std::make_unique<ngram_drafter>(ngram_drafter_params{1, 4, max_slots});
    if (spec.rfind("layerskip:", 0) == 0) {
      layerskip_drafter_params p;
      p.n_layers = to_int("layerskip:K", spec.substr(10), 1, t.cfg->n_layer);
      p.max_slots = max_slots;
      p.shared_target = t.be.get();
      return std::make_unique<layerskip_drafter>(*t.cfg, *t.w, p, nullptr);
    }
    if (spec.rfind("replay:", 0) == 0) {
      const replay_spec r = parse_replay_spec(spec);
      if (!oracles) {
        const auto t0 = clock_type::now();
        sampling_params sp;
        sp.max_tokens = a.max_tokens;
        oracles = compute_replay_oracles(*t.be, t.prompts, sp, t.tok, t.stop_ids,
                                         std::min<int32_t>(max_slots, static_cast<int32_t>(t.prompts.size())));
        std::fprintf(stderr, "bench_load: replay oracles (plain greedy decoding of %zu prompts) %.1f s\n", t.prompts.size(),
                     seconds_since(t0));
      }
      replay_drafter_params p;
      p.max_slots = max_slots;
      p.n_layers = r.n_layers;
      p.all_logits = r.all_logits;
      p.target = t.be.get();
      if (r.feature_layers > 0) {
        p.capture_layers = spread_capture_layers(static_cast<int32_t>(t.cfg->n_layer), r.feature_layers);
        p.n_embd = t.cfg->n_embd;
        p.device_features = r.device_features;
      }
      return std::make_unique<replay_drafter>(read_round_trace(r.trace_path), *oracles, t.cfg->n_vocab, p);
    }
    const size_t colon = spec.find(':');
    if (colon != std::string::npos && t.file)
      if (const auto kind = parse_drafter_kind(spec.substr(0, colon))) {
        drafter_runtime_params p;
        p.max_slots = max_slots;
        p.max_ctx = t.be->limits().n_ctx;
        p.n_threads = a.threads;
#ifdef DSPARK_HAVE_CUDA
        // Trained drafters draft on the GPU next to a GPU target (the RNN head stays on the host).
        if (a.device == "cuda") {
          std::string why;
          if (auto d = load_trained_drafter_cuda(spec.substr(colon + 1), *t.cfg, *t.w, p, kind, &why)) return d;
          std::fprintf(stderr, "bench_load: %s drafts on the CPU (%s)\n", spec.c_str(), why.c_str());
        }
#endif
        return load_trained_drafter(spec.substr(colon + 1), *t.cfg, *t.w, p, kind);
      }
    usage("--draft/--mtp1: unknown drafter '" + spec + "' (trained KIND:DIR needs --model)");
  }
};

// One run: a drafter with a policy, over every concurrency level.
struct run_spec {
  std::string label, policy_name, draft_spec;
  int32_t gamma = 1;
  double threshold = 0.0;
};

std::vector<run_spec> plan_runs(const bench_args& a) {
  std::vector<run_spec> runs;
  for (const std::string& p : split(a.policies, ',')) {
    run_spec r{p, p, a.draft, a.gamma, a.threshold};
    const size_t colon = p.find(':');
    const std::string head = p.substr(0, colon);
    const std::string arg = colon == std::string::npos ? "" : p.substr(colon + 1);
    if (head == "none") {
      r.draft_spec = "none";
      r.policy_name = "none";
    } else if (head == "fixed" || head == "threshold") {
      r.policy_name = head;
      if (!arg.empty() && head == "fixed") r.gamma = to_int("fixed:G", arg, 1, 64);
      if (!arg.empty() && head == "threshold") r.threshold = to_double("threshold:T", arg);
    } else if (p != "scheduled" && head != "async") {
      usage("--policies: '" + p + "' is not none, fixed[:G], threshold[:T], scheduled or async[:LAG]");
    }
    if (head != "none" && a.draft == "none") usage("--policies " + p + " needs a drafter (--draft)");
    // A policy listed again (e.g. plain decoding first and last, to see drift) is its own run.
    int repeat = 1;
    for (const run_spec& q : runs) repeat += q.label == p || q.label.rfind(p + " #", 0) == 0 ? 1 : 0;
    if (repeat > 1) r.label = p + " #" + std::to_string(repeat);
    runs.push_back(r);
  }
  if (!a.mtp1.empty()) runs.push_back({"mtp1", "fixed", a.mtp1, 1, 0.0});
  if (runs.empty()) usage("--policies needs at least one name");
  return runs;
}

std::string fmt(const char* f, double x) {
  char b[64];
  std::snprintf(b, sizeof b, f, x);
  return b;
}

// "replayed % (eager steps, of them with the graph cache full)" of the window's target steps;
// "-" on a backend without graphs.
std::string graph_share(const nlohmann::json& j) {
  const int64_t replayed = j["graph_replayed"], eager = j["graph_eager"];
  const int64_t all = replayed + j["graph_captured"].get<int64_t>() + eager;
  if (all == 0) return "-";
  return fmt("%.0f%%", 100.0 * static_cast<double>(replayed) / static_cast<double>(all)) + " (" +
         std::to_string(eager) + ", " + std::to_string(j["graph_eager_cache_full"].get<int64_t>()) + ")";
}

std::string md_row(const nlohmann::json& j) {
  return "| " + j["label"].get<std::string>() + " | " + std::to_string(j["concurrency"].get<int>()) + " | " +
         fmt("%.1f", j["aggregate_tokens_per_s"]) + " | " + fmt("%.1f", j["per_user_tokens_per_s"]) + " | " +
         fmt("%.2f", j["tpot_ms_p50"]) + " / " + fmt("%.2f", j["tpot_ms_p90"]) + " / " + fmt("%.2f", j["tpot_ms_p99"]) +
         " | " + fmt("%.1f", j["ttft_ms_p50"]) + " | " + fmt("%.3f", j["tau"]) + " | " + fmt("%.2f", j["mean_verify_length"]) +
         " | " + fmt("%.1f", j["verify_tokens_per_step"]) + " | " + fmt("%.1f", j["plan_us_per_step"]) + " | " +
         std::to_string(j["oracle_misses"].get<int64_t>()) + " | " + graph_share(j) + " | " + fmt("%.1f", j["level_wall_s"]) +
         " |\n";
}

const char* k_md_header =
    "| run | C | aggregate tok/s | per-user tok/s | TPOT p50 / p90 / p99 ms | TTFT p50 ms | tau | verify len | "
    "verify tok/step | plan us/step | oracle misses | graphs replayed (eager, cache full) | level s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";

int run(const bench_args& a) {
  const std::vector<run_spec> runs = plan_runs(a);  // bad lists fail before the weights load
  draft_skip_params skip_params;
  bool skip_on = false;
  spec_gate_params gate_params;
  try {
    skip_on = parse_draft_skip(a.draft_skip, skip_params);
    gate_params = parse_spec_gate(a.spec_gate);
  } catch (const std::exception& e) {
    usage(std::string("--") + e.what());
  }
  target t;
  load_target(a, t);
  const int32_t max_c = *std::max_element(a.concurrency.begin(), a.concurrency.end());
  drafter_maker drafters{a, t, max_c, std::nullopt};
  std::ofstream jsonl;
  if (!a.jsonl.empty()) {
    jsonl.open(a.jsonl, std::ios::app);
    if (!jsonl) usage("cannot write " + a.jsonl);
  }
  std::string md = k_md_header;
  std::fputs(k_md_header, stdout);
  size_t next_prompt = 0;
  for (const run_spec& rs : runs) {
    const auto t_setup = clock_type::now();
    std::unique_ptr<drafter> d = drafters.make(rs.draft_spec);
    auto* replay = dynamic_cast<replay_drafter*>(d.get());
    // Difficulty-aware draft skipping (models/drafters/skipping_drafter.h) around the policy
    // runs' drafter: a request whose drafts the policy stops verifying stops paying for them.
    if (skip_on && d && rs.label != "mtp1") d = std::make_unique<skipping_drafter>(std::move(d), max_c, skip_params, true);
    auto* skipper = dynamic_cast<skipping_drafter*>(d.get());
    std::unique_ptr<spec_policy> inner;
    if (rs.policy_name == "none") {
      inner = std::make_unique<fixed_gamma_policy>(0);
    } else {
      policy_build_options o;
      o.gamma = rs.gamma;
      o.threshold = rs.threshold;
      o.max_slots = max_c;
      o.target = t.be.get();
      o.device = a.device;  // part of the step profile's cache key
#ifdef DSPARK_HAVE_CUDA
      if (a.device == "cuda") o.device = cuda::profile_tag();
#endif
      o.device += " bench_load";
      o.profile_path = a.sps_profile;
      inner = make_policy_by_name(rs.policy_name, *t.cfg, o);
    }
    timed_policy pol(std::move(inner));
    std::fprintf(stderr, "bench_load: run %s (%s, draft %s) set up in %.1f s\n", rs.label.c_str(), pol.name().c_str(),
                 rs.draft_spec.c_str(), seconds_since(t_setup));
    for (int32_t c : a.concurrency) {
      const auto t_level = clock_type::now();
      // Same requests at every run of the level: before 2026-12-08 the prompt cycle ran on
      // across runs and levels, so two plain runs of one level served different mixes of
      // prompt and output lengths (on SmolLM2's mixed prompts, CPU, C = 16: 141 against
      // 101 tok/s).
      next_prompt = 0;
      if (replay) replay->restart_assignment();
      // The gate serves the load-aware policies; fixed gamma and MTP-1 stay what they are.
      const bool gated = rs.policy_name == "scheduled" || rs.policy_name.rfind("async", 0) == 0 ||
                         rs.policy_name == "threshold";
      spec_decoder dec(*t.be, d.get(), pol, t.tok, t.stop_ids,
                       {.max_requests = c,
                        .prefill_chunk = a.prefill_chunk,
                        .gate = gated ? gate_params : spec_gate_params{},
                        .shared_prefill = a.shared_prefill,
                        .fused_prefill = a.fused_prefill});
      scheduler_stats s0, s1;
      int64_t miss0 = 0, miss1 = 0;
      draft_skip_stats k0, k1;
      double verify0 = 0.0, verify1 = 0.0;
      // The gate inside the measured window (its start-up usually falls in the warm-up waves,
      // a reprobe may not): closes, reopens and closed steps, and its step clock at both ends so
      // the ring's windows (end_step) can be placed inside or before it.
      spec_gate_stats gate0, gate1;
      int64_t gate_step0 = 0, gate_step1 = 0;
      graph_launch_stats graphs0, graphs1;  // the target's CUDA-graph use inside the window
      load_level_options lo;
      lo.concurrency = c;
      lo.warmup_requests = a.warmup_waves > 0 ? a.warmup_waves * c : a.warmup;
      lo.measured_requests = a.requests > 0 ? a.requests : 2 * c;
      lo.max_seconds = a.seconds;
      lo.params.max_tokens = a.max_tokens;
      lo.max_tokens = t.max_tokens;
      lo.on_window_open = [&] {
        s0 = pol.stats();
        miss0 = replay ? replay->oracle_misses() : 0;
        if (skipper) k0 = skipper->stats();
        verify0 = dec.pipeline_counters().verify_s;
        gate0 = dec.gate().stats();
        gate_step0 = dec.gate().observed_steps();
        graphs0 = t.be->graph_stats();
      };
      lo.on_window_close = [&] {
        s1 = pol.stats();
        miss1 = replay ? replay->oracle_misses() : 0;
        if (skipper) k1 = skipper->stats();
        verify1 = dec.pipeline_counters().verify_s;
        gate1 = dec.gate().stats();
        gate_step1 = dec.gate().observed_steps();
        graphs1 = t.be->graph_stats();
      };
      const load_level_result res = run_load_level(dec, t.prompts, next_prompt, lo);
      const int64_t plans = s1.plans - s0.plans;
      nlohmann::json j = res.to_json();
      j["label"] = a.label_prefix + rs.label;
      j["policy"] = rs.policy_name == "none" ? "none" : pol.name();
      j["draft"] = rs.draft_spec;
      j["replayed_acceptance"] = replay != nullptr;
      j["model"] = t.name;
      j["device"] = a.device;
      j["max_tokens"] = a.max_tokens;
      j["min_tokens"] = a.min_tokens;
      j["verify_tokens_per_step"] = plans ? static_cast<double>(s1.budget_sum - s0.budget_sum) / static_cast<double>(plans) : 0.0;
      j["plan_us_per_step"] = plans ? (s1.plan_seconds - s0.plan_seconds) / static_cast<double>(plans) * 1e6 : 0.0;
      j["oracle_misses"] = miss1 - miss0;
      j["graph_replayed"] = graphs1.replayed - graphs0.replayed;
      j["graph_captured"] = graphs1.captured - graphs0.captured;
      j["graph_eager"] = graphs1.eager - graphs0.eager;
      j["graph_eager_cache_full"] = graphs1.eager_cache_full - graphs0.eager_cache_full;
      j["graphs_held"] = graphs1.graphs;
      j["gemm_shapes_timed"] = graphs1.gemm_shapes_timed - graphs0.gemm_shapes_timed;
      j["gemm_timing_ms"] = graphs1.gemm_timing_ms - graphs0.gemm_timing_ms;
      j["shared_prefill"] = a.shared_prefill;
      j["fused_prefill"] = a.fused_prefill;
      j["warmup_requests"] = lo.warmup_requests < 0 ? c : lo.warmup_requests;
      // Where a step's time goes: the verify forwards (plan, forward, commit) against the whole
      // step; the rest is prefill, drafting and the loop's own bookkeeping.
      j["step_ms"] = res.steps ? res.window_s / static_cast<double>(res.steps) * 1e3 : 0.0;
      j["verify_ms_per_step"] = res.steps ? (verify1 - verify0) / static_cast<double>(res.steps) * 1e3 : 0.0;
      if (skipper) {
        const int64_t rounds = k1.request_rounds - k0.request_rounds;
        j["draft_skip"] = a.draft_skip;
        j["draft_skip_rate"] = rounds > 0 ? static_cast<double>(k1.skipped_rounds - k0.skipped_rounds) / rounds : 0.0;
        j["draft_cost_used"] = skipper->rule().params().draft_cost;  // measured ("auto") or fixed
      }
      if (gated && gate_params.mode != spec_gate_mode::off) {
        const spec_gate_stats& g = dec.gate().stats();
        j["spec_gate"] = a.spec_gate;
        j["gate_closes"] = g.closes;
        j["gate_reopens"] = g.reopens;
        j["gate_closed_steps"] = g.closed_steps;
        j["gate_detached"] = g.detached;
        j["gate_plain_admitted"] = g.plain_admitted;
        j["gate_last_gain"] = g.last_gain;
        j["gate_last_cost"] = g.last_cost;
        j["gate_plain_scale"] = g.plain_scale;
        j["gate_reprobe_interval"] = g.reprobe_interval;
        j["gate_probe_loss"] = g.probe_loss;
        j["gate_windows"] = g.windows;
        j["gate_window_first_step"] = gate_step0;
        j["gate_window_last_step"] = gate_step1;
        j["gate_window_closes"] = gate1.closes - gate0.closes;
        j["gate_window_reopens"] = gate1.reopens - gate0.reopens;
        j["gate_window_closed_steps"] = gate1.closed_steps - gate0.closed_steps;
        j["gate_idle_windows"] = g.idle_windows;
        j["gate_close_gain"] = g.close_gain;
        j["gate_close_cost"] = g.close_cost;
        j["gate_close_window_steps"] = g.close_window_steps;
        j["gate_close_window_request_steps"] = g.close_window_request_steps;
        j["gate_close_open_steps"] = g.close_open_steps;
        // The last decided windows, for diagnosing closes: drafting share, G, o, the verdict.
        nlohmann::json wins = nlohmann::json::array();
        for (const spec_gate_window& w : dec.gate().recent_windows())
          wins.push_back({{"end_step", w.end_step}, {"steps", w.steps}, {"request_steps", w.request_steps},
                          {"drafting_steps", w.drafting_steps}, {"accepted", w.accepted}, {"step_s", w.step_s},
                          {"drafter_s", w.drafter_s}, {"prefill_s", w.prefill_s}, {"plain_s", w.plain_s},
                          {"gain", w.gain}, {"cost", w.cost}, {"pooled_gain", w.pooled_gain},
                          {"pooled_cost", w.pooled_cost}, {"pooled", w.pooled}, {"closed", w.closed},
                          {"probing", w.probing}});
        j["gate_recent_windows"] = std::move(wins);
      }
      j["level_wall_s"] = seconds_since(t_level);
      if (jsonl) jsonl << j.dump() << '\n' << std::flush;
      const std::string row = md_row(j);
      md += row;
      std::fputs(row.c_str(), stdout);
      std::fflush(stdout);
    }
  }
  if (!a.md.empty()) {
    std::ofstream f(a.md);
    f << md;
    if (!f) usage("cannot write " + a.md);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bench_args a = parse(argc, argv);
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_load: %s\n", e.what());
    return 1;
  }
}
