// The scheduler and kv_manager actors (actor_protocols.h) and verifier_core's split step over an
// asynchronous admission port: FIFO admission under a KV budget through the actors, the queue
// limit and the too-large refusal, the shared-block credit, a release (finish or cancel) making
// room for the next admission, and a request cancelled while its admission is under way (its
// reservation goes back, the other request still equals plain generate()).
#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <variant>

#include <caf/all.hpp>

#include "actors/actors.h"
#include "engine/generator.h"
#include "engine/spec/policy.h"
#include "messages/engine_messages.h"
#include "tests/spec/tiny_model.h"

namespace dspark::actors {
namespace {

waiting_request req(uint64_t id, int32_t prompt, int32_t max_tokens) {
  waiting_request w;
  w.peer = std::string(1, 'p');
  w.id = id;
  w.req.key = id;
  w.req.prompt.assign(static_cast<size_t>(prompt), 1);
  w.req.params.max_tokens = max_tokens;
  return w;
}

class AdmissionActors : public ::testing::Test {
 protected:
  AdmissionActors() : sys_(config()), self_(sys_) {}
  ~AdmissionActors() override {
    for (auto a : {caf::actor_cast<caf::actor>(sched_), caf::actor_cast<caf::actor>(kv_)}) {
      if (!a) continue;
      self_->send_exit(a, caf::exit_reason::user_shutdown);
      self_->wait_for(a);
    }
  }
  static caf::actor_system_config& config() {
    static caf::actor_system_config c;
    c.set("scheduler.max-threads", 2);
    return c;
  }
  void start(const kv_manager_params& p, int32_t max_waiting) {
    kv_ = spawn_kv_manager(sys_, p);
    sched_ = spawn_scheduler(sys_, p, max_waiting, kv_);
  }
  queue_verdict enqueue(waiting_request w) {
    int32_t v = -1;
    self_->request(sched_, caf::infinite, enqueue_atom::value, std::move(w))
        .receive([&](int32_t r) { v = r; }, [&](caf::error& e) { ADD_FAILURE() << to_string(e); });
    return static_cast<queue_verdict>(v);
  }
  std::vector<uint64_t> admit(int32_t free_slots, int32_t credit) {
    std::vector<uint64_t> ids;
    self_->request(sched_, caf::infinite, admit_atom::value, free_slots, credit)
        .receive(
            [&](admitted_batch& b) {
              for (const auto& w : b.requests) ids.push_back(w.id);
            },
            [&](caf::error& e) { ADD_FAILURE() << to_string(e); });
    return ids;
  }
  kv_usage usage() {
    kv_usage u;
    self_->request(kv_, caf::infinite, usage_atom::value)
        .receive([&](const kv_usage& r) { u = r; }, [&](caf::error& e) { ADD_FAILURE() << to_string(e); });
    return u;
  }
  int32_t queued() {
    int32_t n = -1;
    self_->request(sched_, caf::infinite, queued_atom::value)
        .receive([&](int32_t r) { n = r; }, [&](caf::error& e) { ADD_FAILURE() << to_string(e); });
    return n;
  }

  caf::actor_system sys_;
  caf::scoped_actor self_;
  kv_manager_actor kv_;
  scheduler_actor sched_;
};

using ids = std::vector<uint64_t>;

TEST_F(AdmissionActors, FifoAdmissionUnderAKvBudget) {
  start({8, 16, 1024, 0}, 3);
  EXPECT_EQ(enqueue(req(1, 16, 16)), queue_verdict::queued);      // 2 blocks
  EXPECT_EQ(enqueue(req(2, 64, 64)), queue_verdict::queued);      // 8 blocks
  EXPECT_EQ(enqueue(req(3, 8, 8)), queue_verdict::queued);        // 1 block, behind 2
  EXPECT_EQ(enqueue(req(4, 8, 8)), queue_verdict::overloaded);    // max_waiting 3
  EXPECT_EQ(enqueue(req(9, 100, 100)), queue_verdict::too_large); // 13 blocks > 8
  EXPECT_EQ(admit(4, 0), ids{1});
  EXPECT_EQ(usage().used, 2);
  EXPECT_EQ(admit(4, 0), ids{});  // 2 does not fit beside 1, and 3 waits behind it
  EXPECT_EQ(queued(), 2);
  self_->send(kv_, release_atom::value, uint64_t{1});  // 1 finished or was cancelled
  EXPECT_EQ(admit(0, 0), ids{});                       // no free slot
  EXPECT_EQ(admit(4, 0), ids{2});
  EXPECT_EQ(usage().used, 8);
  self_->send(sched_, remove_atom::value, uint64_t{3});  // cancelled while waiting
  EXPECT_EQ(queued(), 0);
  self_->send(kv_, release_atom::value, uint64_t{2});
  const kv_usage u = usage();
  EXPECT_EQ(u.total, 8);
  EXPECT_EQ(u.used, 0);
}

TEST_F(AdmissionActors, SharedCreditAdmitsMoreAndEndsWithTheLastRequest) {
  start({8, 16, 1024, 0}, 16);
  EXPECT_EQ(enqueue(req(1, 64, 32)), queue_verdict::queued);  // 6 blocks each
  EXPECT_EQ(enqueue(req(2, 64, 32)), queue_verdict::queued);
  EXPECT_EQ(admit(2, 0), ids{1});  // 12 > 8
  EXPECT_EQ(admit(2, 4), ids{2});  // 12 <= 8 + 4: the running requests share 4 blocks
  kv_usage u = usage();
  EXPECT_EQ(u.used, 12);
  EXPECT_EQ(u.shared, 4);
  self_->send(kv_, release_atom::value, uint64_t{1});
  self_->send(kv_, release_atom::value, uint64_t{2});
  u = usage();
  EXPECT_EQ(u.used, 0);
  EXPECT_EQ(u.shared, 0);
}

// An admission_port whose admit answers only when the test says so (as the scheduler actor's
// reply arrives later), over a local scheduler and kv_manager.
class deferred_admission final : public admission_port {
 public:
  explicit deferred_admission(const kv_manager_params& p) : local_(p, 64) {}
  void enqueue(waiting_request w, verdict_fn done) override { local_.enqueue(std::move(w), std::move(done)); }
  void remove(uint64_t id) override {
    removed.push_back(id);
    local_.remove(id);
  }
  void release(uint64_t id) override {
    released.push_back(id);
    local_.release(id);
  }
  void usage(usage_fn done) override { local_.usage(std::move(done)); }
  kv_usage last_usage() const override { return local_.last_usage(); }
  bool admit_now(int32_t, int32_t, std::vector<waiting_request>&) override { return false; }
  // The scheduler's answer to an admit(free_slots, credit) sent earlier.
  std::vector<waiting_request> answer(int32_t free_slots, int32_t credit) {
    std::vector<waiting_request> out;
    local_.admit_now(free_slots, credit, out);
    return out;
  }
  std::vector<uint64_t> removed, released;

 private:
  local_admission local_;
};

TEST(VerifierSplitStep, CancelWhileAdmissionIsUnderWayReleasesTheReservation) {
  using dspark::test::tiny_model;
  tiny_model tm(/*n_vocab=*/16, /*n_layer=*/2, /*seed=*/7);
  cpu_backend_options o = tiny_model::options(2);
  o.n_ctx = 64;
  cpu_backend be(tm.cfg, tm.w, o);
  std::map<uint64_t, msg::request_done> done;
  auto sink = [&](const std::string&, const std::string& frame) {
    msg::engine_message m = msg::decode_engine_message(frame);
    if (auto* d = std::get_if<msg::request_done>(&m)) done[d->key] = *d;
  };
  verifier_options vo;
  vo.max_requests = 2;
  auto pol = std::make_unique<fixed_gamma_policy>(0);
  const kv_manager_params kvp = verifier_core::kv_params(vo, be, *pol);
  auto port = std::make_unique<deferred_admission>(kvp);
  deferred_admission& q = *port;
  verifier_core v(be, nullptr, std::move(pol), nullptr, {}, vo, sink, std::move(port));
  EXPECT_THROW(v.step(), invalid_argument_error);  // an asynchronous port needs the split step

  const std::vector<int32_t> prompts[] = {{1, 2, 3, 4, 5}, {5, 4, 3, 2, 1, 0}};
  std::string frame;
  for (uint64_t k = 0; k < 2; ++k) {
    msg::submit_request s;
    s.key = k;
    s.prompt = prompts[k];
    s.params.max_tokens = 6;
    msg::encode(s, frame);
    v.handle("intake", frame);
  }
  ASSERT_TRUE(v.wants_admission());
  EXPECT_EQ(v.free_slots(), 2);
  // The scheduler takes admit(2, credit): both requests leave its queue, KV reserved ...
  const verifier_core::admission_ask ask = v.begin_admission();
  std::vector<waiting_request> batch = q.answer(ask.free_slots, ask.shared_credit);
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(v.status().kv_blocks_used, kv_blocks_for(kvp, 5, 6) + kv_blocks_for(kvp, 6, 6));
  // ... and before its answer reaches the verifier, request 0 is cancelled: done at once, the
  // remove reaches the scheduler too late to matter.
  msg::encode(msg::cancel_request{0}, frame);
  v.handle("intake", frame);
  ASSERT_EQ(done.count(0), 1u);
  EXPECT_EQ(done[0].reason, msg::end_reason::cancelled);
  EXPECT_EQ(done[0].stats.prompt_tokens, 5);
  EXPECT_EQ(q.removed, std::vector<uint64_t>{1});  // verifier id 1 = key 0
  v.start_admitted(batch);
  EXPECT_EQ(q.released, std::vector<uint64_t>{1});  // not started: its reservation goes back
  EXPECT_EQ(v.status().active_requests, 1);
  EXPECT_FALSE(v.wants_admission());
  for (int guard = 0; v.busy(); ++guard) {
    ASSERT_LT(guard, 100);
    v.run_step();
  }
  ASSERT_EQ(done.count(1), 1u);
  cpu_backend cold(tm.cfg, tm.w, tiny_model::options(1));
  sampling_params sp;
  sp.max_tokens = 6;
  EXPECT_EQ(done[1].token_ids, generate(cold, nullptr, {}, prompts[1], sp).token_ids);
  EXPECT_EQ(v.status().kv_blocks_used, 0);
  EXPECT_EQ(q.released, (std::vector<uint64_t>{1, 2}));
}

// A KV budget of one request (1 block of 16 positions): after an admission that started fewer
// than it could, the split step asks again only once something may let the head in (a release,
// a waiting request cancelled), counting a cancel that happened while the answer was on its way.
TEST(VerifierSplitStep, NoAdmissionRoundTripWhileTheHeadCannotFit) {
  using dspark::test::tiny_model;
  tiny_model tm(/*n_vocab=*/16, /*n_layer=*/2, /*seed=*/9);
  cpu_backend_options o = tiny_model::options(2);
  o.n_ctx = 64;
  cpu_backend be(tm.cfg, tm.w, o);
  std::map<uint64_t, msg::request_done> done;
  auto sink = [&](const std::string&, const std::string& frame) {
    msg::engine_message m = msg::decode_engine_message(frame);
    if (auto* d = std::get_if<msg::request_done>(&m)) done[d->key] = *d;
  };
  verifier_options vo;
  vo.max_requests = 2;
  vo.kv_blocks = 1;
  auto pol = std::make_unique<fixed_gamma_policy>(0);
  const kv_manager_params kvp = verifier_core::kv_params(vo, be, *pol);
  ASSERT_EQ(kv_blocks_for(kvp, 5, 6), 1);
  auto port = std::make_unique<deferred_admission>(kvp);
  deferred_admission& q = *port;
  verifier_core v(be, nullptr, std::move(pol), nullptr, {}, vo, sink, std::move(port));
  const std::vector<int32_t> prompts[] = {{1, 2, 3, 4, 5}, {2, 3, 4, 5, 6}, {5, 4, 3, 2, 1}};
  std::string frame;
  for (uint64_t k = 0; k < 3; ++k) {
    msg::submit_request s;
    s.key = k;
    s.prompt = prompts[k];
    s.params.max_tokens = 6;
    msg::encode(s, frame);
    v.handle("intake", frame);
  }
  auto admit = [&] {
    const verifier_core::admission_ask a = v.begin_admission();
    std::vector<waiting_request> b = q.answer(a.free_slots, a.shared_credit);
    const size_t n = b.size();
    v.start_admitted(b);
    return n;
  };
  // Room for 2 slots, KV for 1: request 0 starts; while the answer travels, request 1 (waiting)
  // is cancelled, so the next step asks again ...
  ASSERT_TRUE(v.wants_admission());
  const verifier_core::admission_ask a = v.begin_admission();
  std::vector<waiting_request> b = q.answer(a.free_slots, a.shared_credit);
  ASSERT_EQ(b.size(), 1u);
  msg::encode(msg::cancel_request{1}, frame);
  v.handle("intake", frame);
  v.start_admitted(b);
  EXPECT_TRUE(v.wants_admission());
  // ... and gets nothing (request 2 does not fit beside 0): no more asking while 0 runs.
  EXPECT_EQ(admit(), 0u);
  EXPECT_FALSE(v.wants_admission());
  while (!done.count(0)) {
    v.run_step();
    if (!done.count(0)) {
      EXPECT_FALSE(v.wants_admission());
    }
  }
  EXPECT_TRUE(v.wants_admission());  // 0's blocks came back
  EXPECT_EQ(admit(), 1u);
  for (int guard = 0; v.busy(); ++guard) {
    ASSERT_LT(guard, 100);
    v.run_step();
  }
  sampling_params sp;
  sp.max_tokens = 6;
  EXPECT_EQ(done[1].reason, msg::end_reason::cancelled);
  for (uint64_t k : {0, 2}) {
    cpu_backend cold(tm.cfg, tm.w, tiny_model::options(1));
    EXPECT_EQ(done[k].token_ids, generate(cold, nullptr, {}, prompts[k], sp).token_ids) << k;
  }
  EXPECT_EQ(v.status().kv_blocks_used, 0);
}

}  // namespace
}  // namespace dspark::actors
