// SPS(B) profiling and its JSON cache.
#include "engine/spec/step_profile.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace dspark {

namespace {

std::vector<int32_t> grid(int32_t max_tokens) {
  std::vector<int32_t> b;
  for (int32_t v = 1; v <= std::min(max_tokens, 16); ++v) b.push_back(v);
  for (int32_t v = 24; v <= max_tokens; v += 8) b.push_back(v);
  if (b.back() != max_tokens) b.push_back(max_tokens);
  return b;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void check_options(const step_profile_options& o) {
  if (o.max_tokens < 1 || o.max_tokens > 8192)
    throw invalid_argument_error("step profile: max_tokens " + std::to_string(o.max_tokens) + " out of range [1, 8192]");
  if (o.context_lengths.empty()) throw invalid_argument_error("step profile: no context lengths");
  for (int32_t c : o.context_lengths)
    if (c < 1) throw invalid_argument_error("step profile: context length " + std::to_string(c) + " must be >= 1");
  if (o.max_sequences < 1) throw invalid_argument_error("step profile: max_sequences must be >= 1");
  if (o.repeats < 1 || o.warmup < 0) throw invalid_argument_error("step profile: repeats >= 1 and warmup >= 0 required");
}

// Sequences opened for the profile, freed on every exit path.
struct open_sequences {
  backend& be;
  std::vector<int32_t> ids;
  ~open_sequences() {
    for (int32_t s : ids) be.free_sequence(s);
  }
};

}  // namespace

sps_table step_profile::table(int32_t context) const {
  if (context_lengths.empty() || batch_tokens.empty())
    throw invalid_argument_error("step profile: empty profile");
  size_t best = 0;
  for (size_t c = 1; c < context_lengths.size(); ++c)
    if (std::abs(context_lengths[c] - context) < std::abs(context_lengths[best] - context)) best = c;
  const std::vector<double>& t = step_s[best];
  std::vector<double> sps(static_cast<size_t>(batch_tokens.back()) + 1, 0.0);
  size_t k = 0;
  for (int32_t b = 1; b <= batch_tokens.back(); ++b) {
    while (k + 1 < batch_tokens.size() && batch_tokens[k + 1] <= b) ++k;
    double s = t[k];
    if (batch_tokens[k] < b && k + 1 < batch_tokens.size()) {
      const double w = static_cast<double>(b - batch_tokens[k]) / (batch_tokens[k + 1] - batch_tokens[k]);
      s = (1.0 - w) * t[k] + w * t[k + 1];
    }
    sps[static_cast<size_t>(b)] = 1.0 / s;
  }
  return sps_table(std::move(sps));
}

std::string step_profile::to_json() const {
  nlohmann::json j;
  j["format"] = "dspark-step-profile";
  j["version"] = 1;
  j["key"] = key;
  j["context_lengths"] = context_lengths;
  j["batch_tokens"] = batch_tokens;
  j["step_s"] = step_s;
  return j.dump(1);
}

step_profile step_profile::from_json(const std::string& text) {
  step_profile p;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    if (j.at("format") != "dspark-step-profile" || j.at("version") != 1)
      throw invalid_argument_error("step profile: not a dspark-step-profile version 1 file");
    p.key = j.at("key").get<std::string>();
    p.context_lengths = j.at("context_lengths").get<std::vector<int32_t>>();
    p.batch_tokens = j.at("batch_tokens").get<std::vector<int32_t>>();
    p.step_s = j.at("step_s").get<std::vector<std::vector<double>>>();
  } catch (const nlohmann::json::exception& e) {
    throw invalid_argument_error(std::string("step profile: malformed JSON: ") + e.what());
  }
  if (p.context_lengths.empty() || p.batch_tokens.empty() || p.step_s.size() != p.context_lengths.size())
    throw invalid_argument_error("step profile: sizes disagree");
  for (size_t i = 0; i < p.batch_tokens.size(); ++i)
    if (p.batch_tokens[i] < 1 || (i > 0 && p.batch_tokens[i] <= p.batch_tokens[i - 1]))
      throw invalid_argument_error("step profile: batch_tokens must be positive and increasing");
  for (const auto& row : p.step_s) {
    if (row.size() != p.batch_tokens.size()) throw invalid_argument_error("step profile: sizes disagree");
    for (double s : row)
      if (!(s > 0.0) || !std::isfinite(s)) throw invalid_argument_error("step profile: step times must be > 0");
  }
  return p;
}

step_profile measure_step_profile(backend& be, const step_profile_options& opt, const std::string& key) {
  check_options(opt);
  const backend_limits& lim = be.limits();
  const int32_t n_seq = std::min(opt.max_sequences, lim.n_seq_max);
  if (n_seq < 1) throw invalid_argument_error("step profile: the backend has no sequence slots");
  if (opt.max_tokens > lim.max_tokens_per_step || opt.max_tokens > lim.max_logit_rows)
    throw invalid_argument_error("step profile: max_tokens " + std::to_string(opt.max_tokens) +
                                 " exceeds the backend's per-step limits");
  step_profile p;
  p.key = key;
  p.context_lengths = opt.context_lengths;
  p.batch_tokens = grid(opt.max_tokens);

  open_sequences seqs{be, {}};
  for (int32_t i = 0; i < n_seq; ++i) {
    const std::optional<int32_t> s = be.open_sequence();
    if (!s) throw invalid_argument_error("step profile: could not open " + std::to_string(n_seq) + " sequences");
    seqs.ids.push_back(*s);
  }
  // Token ids do not change the cost; any valid ids do (away from the special tokens at the
  // start of real vocabularies when there is room).
  std::vector<int32_t> tokens(static_cast<size_t>(std::max(opt.max_tokens, 256)));
  const int64_t first = lim.n_vocab > 200 ? 100 : 0;
  for (size_t i = 0; i < tokens.size(); ++i)
    tokens[i] = static_cast<int32_t>(first + static_cast<int64_t>(i) % (lim.n_vocab - first));
  std::vector<batch_sequence> bs;
  using clock = std::chrono::steady_clock;
  // A step of B tokens spreads them over min(B, n_seq) sequences: each grows by at most
  // ceil(max_tokens / n_seq) tokens past the context (one when B <= n_seq).
  const int32_t per_seq = (opt.max_tokens + n_seq - 1) / n_seq;
  for (const int32_t ctx : opt.context_lengths) {
    if (ctx + per_seq > lim.n_ctx)
      throw invalid_argument_error("step profile: context " + std::to_string(ctx) + " + " + std::to_string(per_seq) +
                                   " tokens per sequence exceeds n_ctx " + std::to_string(lim.n_ctx));
    // Prefill every sequence to ctx (in chunks the backend accepts), without logits.
    for (int32_t s : seqs.ids) {
      be.truncate(s, 0);
      for (int32_t done = 0; done < ctx;) {
        const int32_t n = std::min({ctx - done, lim.max_tokens_per_step, static_cast<int32_t>(tokens.size())});
        const batch_sequence one{s, n, 0};
        const forward_output o = be.forward({std::span<const int32_t>(tokens.data(), static_cast<size_t>(n)),
                                            std::span<const batch_sequence>(&one, 1), {}});
        if (o.status != forward_status::ok) throw invalid_argument_error("step profile: out of KV during prefill");
        done += n;
      }
    }
    std::vector<double> row;
    for (const int32_t b : p.batch_tokens) {
      const int32_t used = std::min(b, n_seq);
      bs.clear();
      for (int32_t i = 0; i < used; ++i) {
        const int32_t n = b / used + (i < b % used ? 1 : 0);
        bs.push_back({seqs.ids[static_cast<size_t>(i)], n, n});
      }
      // Timed as greedy serving runs it: argmax ids come back, not the logit rows (a sampled
      // batch also copies its rows; at 256 rows of a 152K vocabulary that is 155 MB).
      const forward_batch fb{std::span<const int32_t>(tokens.data(), static_cast<size_t>(b)), bs, {},
                             row_outputs::argmax};
      std::vector<double> times;
      for (int32_t rep = 0; rep < opt.warmup + opt.repeats; ++rep) {
        const auto t0 = clock::now();
        const forward_output o = be.forward(fb);
        const double dt = std::chrono::duration<double>(clock::now() - t0).count();
        if (o.status != forward_status::ok) throw invalid_argument_error("step profile: out of KV while profiling");
        for (int32_t i = 0; i < used; ++i) be.truncate(seqs.ids[static_cast<size_t>(i)], ctx);
        if (rep >= opt.warmup) times.push_back(dt);
      }
      row.push_back(median(std::move(times)));
    }
    p.step_s.push_back(std::move(row));
  }
  return p;
}

step_profile load_or_measure_step_profile(backend& be, const step_profile_options& opt, const std::string& key,
                                          const std::string& path) {
  {
    std::ifstream in(path);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      try {
        step_profile p = step_profile::from_json(ss.str());
        if (p.key == key && p.context_lengths == opt.context_lengths && p.batch_tokens == grid(opt.max_tokens))
          return p;
      } catch (const invalid_argument_error&) {
        // A corrupt cache is re-measured and overwritten.
      }
    }
  }
  step_profile p = measure_step_profile(be, opt, key);
  std::ofstream out(path);
  if (out) out << p.to_json();
  return p;
}

}  // namespace dspark
