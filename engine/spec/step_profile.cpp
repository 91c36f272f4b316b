// SPS(R, B) profiling and its JSON cache.
#include "engine/spec/step_profile.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace dspark {

namespace {

std::vector<int32_t> row_sequences(int32_t max_sequences) {
  std::vector<int32_t> s;
  for (int32_t v = 1; v < max_sequences; v *= 2) s.push_back(v);
  s.push_back(max_sequences);
  return s;
}

// B values of the diagonal in (from, to]: dense up to 16, then every 8th, and `to` itself.
void diagonal_points(int32_t from, int32_t to, std::vector<int32_t>& out) {
  for (int32_t b = from + 1; b <= to; ++b)
    if (b <= 16 || b % 8 == 0 || b == to) out.push_back(b);
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
  if (o.tokens_per_sequence < 1 || o.tokens_per_sequence > 257)
    throw invalid_argument_error("step profile: tokens_per_sequence " + std::to_string(o.tokens_per_sequence) +
                                 " out of range [1, 257]");
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

std::vector<step_profile::row> step_profile_grid(const step_profile_options& opt, int32_t n_seq_max) {
  check_options(opt);
  // A row needs at least one token a sequence.
  const int32_t top = std::min({opt.max_sequences, n_seq_max, opt.max_tokens});
  if (top < 1) throw invalid_argument_error("step profile: the backend has no sequence slots");
  const std::vector<int32_t> seqs = row_sequences(top);
  std::vector<step_profile::row> rows;
  int32_t prev = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const int32_t s = seqs[i];
    step_profile::row r;
    r.sequences = s;
    diagonal_points(prev, s, r.batch_tokens);
    const bool last = i + 1 == seqs.size();
    const int32_t hi =
        last ? opt.max_tokens
             : static_cast<int32_t>(std::min<int64_t>(opt.max_tokens, static_cast<int64_t>(s) * opt.tokens_per_sequence));
    const int32_t step = std::max(1, std::min(16, s / 4));
    for (int32_t b = s + step; b < hi; b += step) r.batch_tokens.push_back(b);
    if (hi > s) r.batch_tokens.push_back(hi);
    rows.push_back(std::move(r));
    prev = s;
  }
  return rows;
}

int32_t step_profile_growth(const std::vector<step_profile::row>& rows) {
  int32_t per_seq = 1;
  for (const step_profile::row& r : rows)
    per_seq = std::max(per_seq, (r.batch_tokens.back() + r.sequences - 1) / r.sequences);
  return per_seq;
}

sps_table step_profile::table(int32_t context) const {
  if (context_lengths.empty() || rows.empty()) throw invalid_argument_error("step profile: empty profile");
  size_t best = 0;
  for (size_t c = 1; c < context_lengths.size(); ++c)
    if (std::abs(context_lengths[c] - context) < std::abs(context_lengths[best] - context)) best = c;
  std::vector<sps_table::row> out;
  std::vector<int32_t> diag_b;  // the diagonal points of the rows so far (B <= their S)
  std::vector<double> diag_s;
  for (const row& r : rows) {
    std::vector<int32_t> bs = diag_b;
    std::vector<double> ts = diag_s;
    const std::vector<double>& t = r.step_s[best];
    for (size_t k = 0; k < r.batch_tokens.size(); ++k) {
      bs.push_back(r.batch_tokens[k]);
      ts.push_back(t[k]);
      if (r.batch_tokens[k] <= r.sequences) {
        diag_b.push_back(r.batch_tokens[k]);
        diag_s.push_back(t[k]);
      }
    }
    std::vector<double> sps(static_cast<size_t>(bs.back()) + 1, 0.0);
    size_t k = 0;
    for (int32_t b = 1; b <= bs.back(); ++b) {
      while (k + 1 < bs.size() && bs[k + 1] <= b) ++k;
      double s = ts[k];
      if (bs[k] < b && k + 1 < bs.size()) {
        const double w = static_cast<double>(b - bs[k]) / (bs[k + 1] - bs[k]);
        s = (1.0 - w) * ts[k] + w * ts[k + 1];
      }
      sps[static_cast<size_t>(b)] = 1.0 / s;
    }
    out.push_back({r.sequences, std::move(sps)});
  }
  return sps_table(std::move(out));
}

std::string step_profile::to_json() const {
  nlohmann::json j;
  j["format"] = "dspark-step-profile";
  j["version"] = 2;
  j["key"] = key;
  j["context_lengths"] = context_lengths;
  nlohmann::json rs = nlohmann::json::array();
  for (const row& r : rows) rs.push_back({{"sequences", r.sequences}, {"batch_tokens", r.batch_tokens}, {"step_s", r.step_s}});
  j["rows"] = std::move(rs);
  return j.dump(1);
}

step_profile step_profile::from_json(const std::string& text) {
  step_profile p;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    if (j.at("format") != "dspark-step-profile" || j.at("version") != 2)
      throw invalid_argument_error("step profile: not a dspark-step-profile version 2 file");
    p.key = j.at("key").get<std::string>();
    p.context_lengths = j.at("context_lengths").get<std::vector<int32_t>>();
    for (const nlohmann::json& r : j.at("rows"))
      p.rows.push_back({r.at("sequences").get<int32_t>(), r.at("batch_tokens").get<std::vector<int32_t>>(),
                        r.at("step_s").get<std::vector<std::vector<double>>>()});
  } catch (const nlohmann::json::exception& e) {
    throw invalid_argument_error(std::string("step profile: malformed JSON: ") + e.what());
  }
  if (p.context_lengths.empty() || p.rows.empty()) throw invalid_argument_error("step profile: sizes disagree");
  int32_t prev_s = 0, prev_b = 0;
  for (const row& r : p.rows) {
    if (r.sequences <= prev_s) throw invalid_argument_error("step profile: row sequence counts must increase");
    if (r.batch_tokens.empty() || r.step_s.size() != p.context_lengths.size())
      throw invalid_argument_error("step profile: sizes disagree");
    // A row's points continue the diagonal of the rows before it.
    for (size_t i = 0; i < r.batch_tokens.size(); ++i)
      if (r.batch_tokens[i] <= (i == 0 ? prev_b : r.batch_tokens[i - 1]))
        throw invalid_argument_error("step profile: batch_tokens must be positive and increasing");
    for (const auto& t : r.step_s) {
      if (t.size() != r.batch_tokens.size()) throw invalid_argument_error("step profile: sizes disagree");
      for (double s : t)
        if (!(s > 0.0) || !std::isfinite(s)) throw invalid_argument_error("step profile: step times must be > 0");
    }
    prev_s = r.sequences;
    prev_b = std::min(r.sequences, r.batch_tokens.back());
  }
  return p;
}

step_profile measure_step_profile(backend& be, const step_profile_options& opt, const std::string& key) {
  check_options(opt);
  const backend_limits& lim = be.limits();
  if (opt.max_tokens > lim.max_tokens_per_step || opt.max_tokens > lim.max_logit_rows)
    throw invalid_argument_error("step profile: max_tokens " + std::to_string(opt.max_tokens) +
                                 " exceeds the backend's per-step limits");
  step_profile p;
  p.key = key;
  p.context_lengths = opt.context_lengths;
  p.rows = step_profile_grid(opt, lim.n_seq_max);
  const int32_t n_seq = p.rows.back().sequences;

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
  const std::function<double()> now = opt.now ? opt.now : [] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  };
  const int32_t per_seq = step_profile_growth(p.rows);
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
    for (step_profile::row& r : p.rows) {
      std::vector<double> row;
      for (const int32_t b : r.batch_tokens) {
        const int32_t used = std::min(b, r.sequences);
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
          const double t0 = now();
          const forward_output o = be.forward(fb);
          const double dt = now() - t0;
          if (o.status != forward_status::ok) throw invalid_argument_error("step profile: out of KV while profiling");
          for (int32_t i = 0; i < used; ++i) be.truncate(seqs.ids[static_cast<size_t>(i)], ctx);
          if (rep >= opt.warmup) times.push_back(dt);
        }
        row.push_back(median(std::move(times)));
      }
      r.step_s.push_back(std::move(row));
    }
  }
  return p;
}

namespace {

bool same_grid(const step_profile& p, const step_profile_options& opt, int32_t n_seq_max) {
  const std::vector<step_profile::row> g = step_profile_grid(opt, n_seq_max);
  if (g.size() != p.rows.size()) return false;
  for (size_t i = 0; i < g.size(); ++i)
    if (g[i].sequences != p.rows[i].sequences || g[i].batch_tokens != p.rows[i].batch_tokens) return false;
  return true;
}

}  // namespace

step_profile load_or_measure_step_profile(backend& be, const step_profile_options& opt, const std::string& key,
                                          const std::string& path) {
  {
    std::ifstream in(path);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      try {
        step_profile p = step_profile::from_json(ss.str());
        if (p.key == key && p.context_lengths == opt.context_lengths && same_grid(p, opt, be.limits().n_seq_max))
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
