// Pipelined decoding (spec_decoder_options::pipeline) and the threaded drafter decorator
// (models/drafters/threaded_drafter.h):
//   - the decorator hands the wrapped drafter every call in the caller's order, on one thread,
//     with copies of the spans (tokens, features) that the caller overwrites right after the
//     call; a payload bigger than its ring runs inline, still in order; errors come back;
//   - losslessness: at temperature 0 the pipelined loop equals plain generate() for several
//     concurrent requests joining and leaving (continuous batching), with a cancel, on the tiny
//     model with the n-gram drafter (direct and threaded), and on the default model with a
//     random trained DSpark drafter that reads target features (threaded): there the drafts
//     themselves equal the synchronous loop's, so the features reached it intact;
//   - at temperature > 0 the pipelined loop equals the synchronous one (same rng keys).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>

#include "common/error.h"
#include "engine/cpu_backend.h"
#include "engine/generator.h"
#include "engine/model.h"
#include "engine/spec/draft_batch.h"
#include "engine/spec/policy.h"
#include "engine/spec/prompt_set.h"
#include "engine/spec/spec_decoder.h"
#include "models/drafters/ngram_drafter.h"
#include "models/drafters/threaded_drafter.h"
#include "tests/caps_only_drafter.h"
#include "models/drafters/trained_drafter.h"
#include "tests/drafters/drafter_fixture.h"
#include "tests/spec/tiny_model.h"
#include "tests/test_support.h"

namespace dspark {
namespace {

using namespace std::chrono_literals;

// Logs every call it gets as text (with the token and feature values it saw) and the thread it
// ran on; propose sleeps, then drafts max_drafts copies of token slot + 1.
class logging_drafter final : public drafter {
 public:
  explicit logging_drafter(std::vector<int32_t> capture = {}, bool fail = false) : fail_(fail) {
    caps_.name = "logging";
    caps_.capture_layers = std::move(capture);
  }
  const drafter_caps& caps() const override { return caps_; }
  void begin(int32_t slot, std::span<const int32_t> p) override { add("begin " + std::to_string(slot) + list(p)); }
  void propose(std::span<const propose_request> batch, draft_batch& out) override {
    std::this_thread::sleep_for(20ms);
    if (fail_) throw std::runtime_error("drafter failed");
    std::string s = "propose";
    for (const propose_request& r : batch) {
      s += " " + std::to_string(r.slot) + ":" + std::to_string(r.context.size());
      for (int32_t k = 0; k < r.max_drafts; ++k) out.push_one_hot(r.slot, r.slot + 1);
    }
    add(s);
  }
  void on_commit(int32_t slot, const commit_info& c) override {
    std::string s = "commit " + std::to_string(slot) + list(c.tokens) + " a" + std::to_string(c.n_accepted);
    if (c.features.data)
      for (int32_t l = 0; l < c.features.n_layers; ++l)
        for (int32_t i = 0; i < c.features.n_rows; ++i)
          for (int64_t e = 0; e < c.features.n_embd; ++e) s += " " + std::to_string(static_cast<int>(c.features.row(l, i)[e]));
    add(s);
  }
  void rollback(int32_t slot, int32_t n) override { add("rollback " + std::to_string(slot) + " " + std::to_string(n)); }
  void end(int32_t slot) override { add("end " + std::to_string(slot)); }

  std::vector<std::string> log;
  std::vector<std::thread::id> threads;

 private:
  static std::string list(std::span<const int32_t> t) {
    std::string s = " [";
    for (int32_t x : t) s += std::to_string(x) + ",";
    return s + "]";
  }
  void add(std::string s) {
    log.push_back(std::move(s));
    threads.push_back(std::this_thread::get_id());
  }
  drafter_caps caps_;
  bool fail_;
};

TEST(ThreadedDrafter, CallsReachTheInnerDrafterInOrderWithCopiedPayloads) {
  auto inner = std::make_unique<logging_drafter>(std::vector<int32_t>{3});
  logging_drafter& rec = *inner;
  // Small rings, so payloads wrap around and a caller waits for room.
  threaded_drafter td(std::move(inner), {.max_slots = 2, .queue = 3, .token_ring = 8, .feature_ring = 16});
  draft_batch out({.max_slots = 2, .gamma_max = 3, .n_vocab = 10});
  std::vector<int32_t> prompt = {1, 2, 3};
  td.begin(0, prompt);
  td.begin(1, prompt);
  prompt.assign({9, 9, 9});  // the caller's buffer changes right after the call
  const std::vector<int32_t> ctx0 = {1, 2, 3, 4};
  const propose_request batch[] = {{.slot = 0, .max_drafts = 3, .context = ctx0}};
  const auto t0 = std::chrono::steady_clock::now();
  td.propose_begin(batch, out);
  // While slot 0 drafts, slot 1 commits with features (2 rows x 4 wide of a 3-row forward,
  // row0 = 1), which the caller overwrites after each call, and more tokens than fit at once.
  std::vector<float> hidden(12);
  std::vector<int32_t> toks = {5, 6, 7};
  for (int round = 0; round < 4; ++round) {
    for (size_t i = 0; i < hidden.size(); ++i) hidden[i] = static_cast<float>(100 * round + static_cast<int>(i));
    commit_info c;
    c.tokens = toks;
    c.n_accepted = round;
    c.features = {hidden.data(), 1, 2, 1, 4, 12};
    td.on_commit(1, c);
    std::fill(hidden.begin(), hidden.end(), -1.0f);
    toks[0] += 10;
  }
  const double queued_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  td.rollback(1, 3);
  const std::vector<int32_t> big(20, 2);  // bigger than the token ring: runs inline, in order
  td.end(1);
  td.begin(1, big);
  td.propose_end();
  ASSERT_EQ(out.length(0), 3);
  EXPECT_EQ(out.tokens(0)[0], 1);
  td.drain();
  const std::vector<std::string> want = {
      "begin 0 [1,2,3,]",
      "begin 1 [1,2,3,]",
      "propose 0:4",
      "commit 1 [5,6,7,] a0 4 5 6 7 8 9 10 11",
      "commit 1 [15,6,7,] a1 104 105 106 107 108 109 110 111",
      "commit 1 [25,6,7,] a2 204 205 206 207 208 209 210 211",
      "commit 1 [35,6,7,] a3 304 305 306 307 308 309 310 311",
      "rollback 1 3",
      "end 1",
      "begin 1 [2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,]",
  };
  EXPECT_EQ(rec.log, want);
  // Everything but the inline begin ran on the worker, never on this thread.
  for (size_t i = 0; i + 1 < rec.threads.size(); ++i) EXPECT_NE(rec.threads[i], std::this_thread::get_id()) << i;
  EXPECT_EQ(rec.threads.back(), std::this_thread::get_id());
  const threaded_drafter_stats s = td.stats();
  EXPECT_EQ(s.inline_calls, 1);
  EXPECT_EQ(s.proposes, 1);
  EXPECT_GE(s.propose_s, 0.015);
  EXPECT_GE(s.busy_s, s.propose_s);
  (void)queued_s;  // the commits waited for ring room behind the sleeping propose
  EXPECT_GT(s.wait_s, 0.0);
}

// A drafter that reads device features, threaded: the wrapper asks the decoder for host rows,
// since it copies them into its ring on the decoder's thread and the worker's later reads of
// device rows could not be ordered before the target's next forward.
TEST(ThreadedDrafter, AsksForHostFeaturesWhateverTheInnerReads) {
  threaded_drafter td(std::make_unique<test::caps_only_drafter>(drafter_caps{
                          .name = "device-reader", .capture_layers = {0, 2}, .reads_device_features = true}),
                      {.max_slots = 1});
  EXPECT_TRUE(td.inner().caps().reads_device_features);
  EXPECT_FALSE(td.caps().reads_device_features);
  EXPECT_EQ(td.caps().capture_layers, (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(td.caps().name, "device-reader");
}

TEST(ThreadedDrafter, ErrorsComeBackAndBadUseIsRefused) {
  threaded_drafter td(std::make_unique<logging_drafter>(std::vector<int32_t>{}, /*fail=*/true), {.max_slots = 1});
  draft_batch out({.max_slots = 1, .gamma_max = 2, .n_vocab = 4});
  const std::vector<int32_t> ctx = {1, 2};
  const propose_request batch[] = {{.slot = 0, .max_drafts = 2, .context = ctx}};
  EXPECT_THROW(td.propose(batch, out), std::runtime_error);
  EXPECT_THROW(td.begin(1, ctx), invalid_argument_error);  // slot out of range
  td.propose_begin(batch, out);
  EXPECT_THROW(td.propose_begin(batch, out), invalid_argument_error);  // one in flight at a time
  EXPECT_THROW(td.propose_end(), std::runtime_error);
  EXPECT_THROW(threaded_drafter(nullptr, {.max_slots = 1}), invalid_argument_error);
}

// Runs prompts through a spec_decoder, max_requests at a time (continuous batching); cancels
// request ids listed in cancel_at (step -> id) when that step is reached.
struct run_result {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<bool> cancelled;
  pipeline_stats stats;
  int64_t proposed = 0;
};

run_result run_all(backend& be, drafter* d, int32_t max_requests, bool pipeline,
                   const std::vector<std::vector<int32_t>>& prompts, const sampling_params& sp,
                   const std::map<int, int32_t>& cancel_at = {}, const model* m = nullptr) {
  fixed_gamma_policy pol(4);
  spec_decoder dec(be, d, pol, m ? &m->tokenizer() : nullptr, m ? m->stop_ids() : std::span<const int32_t>{},
                   {.max_requests = max_requests, .pipeline = pipeline});
  run_result out;
  out.tokens.resize(prompts.size());
  out.cancelled.resize(prompts.size());
  std::vector<int64_t> owner(static_cast<size_t>(max_requests), -1);
  size_t next = 0, done = 0;
  for (int step = 0; done < prompts.size(); ++step) {
    for (int32_t id = 0; id < max_requests && next < prompts.size(); ++id) {
      if (owner[static_cast<size_t>(id)] >= 0) continue;
      sampling_params p = sp;
      p.seed = sp.seed + next;
      owner[static_cast<size_t>(dec.add(prompts[next], p))] = static_cast<int64_t>(next);
      ++next;
    }
    if (auto it = cancel_at.find(step); it != cancel_at.end() && owner[static_cast<size_t>(it->second)] >= 0)
      dec.cancel(it->second);
    dec.step();
    for (int32_t id = 0; id < max_requests; ++id) {
      const int64_t i = owner[static_cast<size_t>(id)];
      if (i < 0 || !dec.finished(id)) continue;
      spec_result r = dec.take(id);
      out.tokens[static_cast<size_t>(i)] = r.gen.token_ids;
      out.cancelled[static_cast<size_t>(i)] = r.cancelled;
      out.proposed += r.metrics.draft_tokens_proposed();
      owner[static_cast<size_t>(id)] = -1;
      ++done;
    }
  }
  out.stats = dec.pipeline_counters();
  EXPECT_EQ(dec.pipelined(), pipeline && d != nullptr);
  return out;
}

const std::vector<std::vector<int32_t>> k_tiny_prompts = {{1, 2, 1, 2, 1}, {3, 4, 5, 3, 4, 5}, {7}, {0, 9, 11, 2},
                                                          {6, 6, 6, 6},    {10, 1, 10, 1},     {8, 2, 5}, {4, 11}};

TEST(Pipeline, TinyModelNgramGreedyEqualsPlainDecodingAcrossJoinsLeavesAndCancels) {
  const test::tiny_model tm(/*n_vocab=*/12, /*n_layer=*/2, /*seed=*/5);
  cpu_backend be(tm.cfg, tm.w, test::tiny_model::options(4));
  std::vector<std::vector<int32_t>> plain;
  const sampling_params sp{.max_tokens = 60};
  for (const auto& p : k_tiny_prompts) plain.push_back(generate(be, nullptr, {}, p, sp).token_ids);
  const std::map<int, int32_t> cancels = {{5, 1}, {12, 2}};
  for (bool threaded : {false, true}) {
    auto ng = std::make_unique<ngram_drafter>(ngram_drafter_params{.min_n = 1, .max_n = 3, .max_slots = 4});
    std::unique_ptr<drafter> d = threaded ? std::make_unique<threaded_drafter>(std::move(ng), threaded_drafter_params{.max_slots = 4})
                                          : std::unique_ptr<drafter>(std::move(ng));
    for (int32_t slots : {1, 2, 3, 4}) {
      const run_result r = run_all(be, d.get(), slots, true, k_tiny_prompts, sp);
      EXPECT_EQ(r.tokens, plain) << "threaded " << threaded << " slots " << slots;
      EXPECT_GT(r.proposed, 0);
      if (slots == 1) EXPECT_EQ(r.stats.overlapped_rounds, 0);  // batch 1: synchronous order
      if (slots >= 2) EXPECT_GT(r.stats.overlapped_rounds, r.stats.sync_rounds) << slots;
    }
    // Cancels mid-run (one of each group, steps of either parity): the cancelled requests
    // end with a prefix of their plain output, the others with all of it.
    const run_result c = run_all(be, d.get(), 3, true, k_tiny_prompts, sp, cancels);
    for (size_t i = 0; i < plain.size(); ++i) {
      if (!c.cancelled[i]) {
        EXPECT_EQ(c.tokens[i], plain[i]) << i;
        continue;
      }
      ASSERT_LE(c.tokens[i].size(), plain[i].size());
      EXPECT_TRUE(std::equal(c.tokens[i].begin(), c.tokens[i].end(), plain[i].begin())) << i;
    }
    EXPECT_EQ(std::count(c.cancelled.begin(), c.cancelled.end(), true), 2);
  }
}

TEST(Pipeline, SampledOutputEqualsTheSynchronousLoop) {
  const test::tiny_model tm(/*n_vocab=*/12, /*n_layer=*/2, /*seed=*/5);
  cpu_backend be(tm.cfg, tm.w, test::tiny_model::options(4));
  const sampling_params sp{.temperature = 0.9f, .top_k = 8, .seed = 77, .max_tokens = 50};
  ngram_drafter sync_d(ngram_drafter_params{.min_n = 1, .max_n = 3, .max_slots = 3});
  threaded_drafter pipe_d(std::make_unique<ngram_drafter>(ngram_drafter_params{.min_n = 1, .max_n = 3, .max_slots = 3}),
                          {.max_slots = 3});
  const run_result a = run_all(be, &sync_d, 3, false, k_tiny_prompts, sp);
  const run_result b = run_all(be, &pipe_d, 3, true, k_tiny_prompts, sp);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_GT(b.stats.overlapped_rounds, 0);
  EXPECT_EQ(a.stats.overlapped_rounds, 0);
}

// Records each request's drafts (keyed by its prompt), passing everything on.
class draft_log_drafter final : public drafter {
 public:
  explicit draft_log_drafter(std::unique_ptr<drafter> inner) : inner_(std::move(inner)), key_(16) {}
  const drafter_caps& caps() const override { return inner_->caps(); }
  void begin(int32_t slot, std::span<const int32_t> p) override {
    key_[static_cast<size_t>(slot)].assign(p.begin(), p.end());
    inner_->begin(slot, p);
  }
  void propose(std::span<const propose_request> batch, draft_batch& out) override {
    inner_->propose(batch, out);
    for (const propose_request& r : batch) {
      auto& v = drafts[key_[static_cast<size_t>(r.slot)]];
      for (int32_t t : out.tokens(r.slot)) v.push_back(t);
      v.push_back(-1);
    }
  }
  void on_commit(int32_t slot, const commit_info& c) override { inner_->on_commit(slot, c); }
  void rollback(int32_t slot, int32_t n) override { inner_->rollback(slot, n); }
  void end(int32_t slot) override { inner_->end(slot); }
  std::map<std::vector<int32_t>, std::vector<int32_t>> drafts;

 private:
  std::unique_ptr<drafter> inner_;
  std::vector<std::vector<int32_t>> key_;
};

TEST(Pipeline, FeatureReadingDrafterThreadedEqualsPlainAndDraftsAsSynchronous) {
  DSPARK_REQUIRE_MODEL(path);
  static const model m = load_model(path);
  cpu_backend_options o;
  o.n_seq_max = 3;
  o.n_ctx = 512;
  o.max_tokens_per_step = 64;  // prompts span several prefill chunks
  o.max_capture_layers = 5;
  cpu_backend be(m.config(), m.weights(), o);
  sampling_params sp;
  sp.max_tokens = 12;
  std::vector<std::vector<int32_t>> prompts;
  for (const char* t : {"The capital of France is", "def fibonacci(n):", "List three colours:", "Count: 1, 2, 3,"})
    prompts.push_back(encode_chat_prompt(m.tokenizer(), t));
  std::vector<std::vector<int32_t>> plain;
  for (const auto& p : prompts) plain.push_back(generate(m, be, p, sp).token_ids);
  drafter_runtime_params rp;
  rp.max_ctx = 512;
  rp.max_slots = 3;
  rp.n_threads = 1;
  const std::string dir = test::random_target_drafter(m, "dspark");
  draft_log_drafter sync_d(load_trained_drafter(dir, m.config(), m.weights(), rp));
  auto logged = std::make_unique<draft_log_drafter>(load_trained_drafter(dir, m.config(), m.weights(), rp));
  draft_log_drafter& pipe_log = *logged;
  // A small feature ring (11 rows of 5 layers x 576): the prompts' prefill chunks (20+ rows) run
  // inline, the rounds (at most 5 rows) go through it and wrap around.
  threaded_drafter pipe_d(std::move(logged), {.max_slots = 3, .feature_ring = size_t{1} << 15});
  ASSERT_FALSE(pipe_d.caps().capture_layers.empty());
  const run_result a = run_all(be, &sync_d, 3, false, prompts, sp, {}, &m);
  const run_result b = run_all(be, &pipe_d, 3, true, prompts, sp, {}, &m);
  EXPECT_EQ(a.tokens, plain);
  EXPECT_EQ(b.tokens, plain);
  EXPECT_GT(b.stats.overlapped_rounds, 0);
  EXPECT_GT(b.proposed, 0);
  pipe_d.drain();
  // The drafts depend on the features the drafter read: equal drafts, intact features.
  EXPECT_EQ(pipe_log.drafts, sync_d.drafts);
  EXPECT_GT(pipe_d.stats().inline_calls, 0);
}

}  // namespace
}  // namespace dspark
