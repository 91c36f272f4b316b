// The scheduler and kv_manager actors (actor_protocols.h) and verifier_core's split step over an
// asynchronous admission port: FIFO admission under a KV budget through the actors, the queue
// limit and the too-large refusal, the shared-block credit, a release (finish or cancel) making
// room for the next admission, the handover of a queue to a replacement scheduler, and a request
// cancelled while its admission is under way (its reservation goes back, the other request
// still equals plain generate()); no admission round trip while the head cannot fit.
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

TEST_F(AdmissionActors, HandoverGivesTheWholeQueueInOrder) {
  start({8, 16, 1024, 0}, 16);
  for (uint64_t id : {4, 2, 7}) EXPECT_EQ(enqueue(req(id, 8, 8)), queue_verdict::queued);
  std::vector<uint64_t> got;
  self_->request(sched_, caf::infinite, handover_atom::value)
      .receive(
          [&](admitted_batch& b) {
            for (const auto& w : b.requests) got.push_back(w.id);
          },
          [&](caf::error& e) { ADD_FAILURE() << to_string(e); });
  EXPECT_EQ(got, (ids{4, 2, 7}));
  EXPECT_EQ(queued(), 0);
  EXPECT_EQ(usage().used, 0);  // handed over, not admitted: nothing reserved
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

// verifier_core on a tiny model (2 slots, n_ctx 64) over a deferred_admission, submits and
// cancels as frames from one intake, done messages collected by key.
struct split_core {
  explicit split_core(uint64_t seed, int32_t kv_blocks = 0) : tm(16, 2, seed), be(tm.cfg, tm.w, backend_options()) {
    verifier_options vo;
    vo.max_requests = 2;
    vo.kv_blocks = kv_blocks;
    auto pol = std::make_unique<fixed_gamma_policy>(0);
    kvp = verifier_core::kv_params(vo, be, *pol);
    auto p = std::make_unique<deferred_admission>(kvp);
    port = p.get();
    auto sink = [this](const std::string&, const std::string& frame) {
      msg::engine_message m = msg::decode_engine_message(frame);
      if (auto* d = std::get_if<msg::request_done>(&m)) done[d->key] = *d;
    };
    v = std::make_unique<verifier_core>(be, nullptr, std::move(pol), nullptr, std::span<const int32_t>{}, vo, sink,
                                        std::move(p));
  }
  static cpu_backend_options backend_options() {
    cpu_backend_options o = dspark::test::tiny_model::options(2);
    o.n_ctx = 64;
    return o;
  }
  void submit(uint64_t key, const std::vector<int32_t>& prompt) {
    msg::submit_request s;
    s.key = key;
    s.prompt = prompt;
    s.params.max_tokens = 6;
    msg::encode(s, frame);
    v->handle("intake", frame);
  }
  void cancel(uint64_t key) {
    msg::encode(msg::cancel_request{key}, frame);
    v->handle("intake", frame);
  }
  // What the scheduler answers to the admit the core asks now.
  std::vector<waiting_request> ask() {
    const verifier_core::admission_ask a = v->begin_admission();
    return port->answer(a.free_slots, a.shared_credit);
  }
  void run_to_end() {
    for (int guard = 0; v->busy(); ++guard) {
      ASSERT_LT(guard, 100);
      v->run_step();
    }
  }
  // Plain generate() of `prompt` for 6 tokens on a fresh backend.
  std::vector<int32_t> reference(const std::vector<int32_t>& prompt) const {
    cpu_backend cold(tm.cfg, tm.w, dspark::test::tiny_model::options(1));
    sampling_params sp;
    sp.max_tokens = 6;
    return generate(cold, nullptr, {}, prompt, sp).token_ids;
  }

  dspark::test::tiny_model tm;
  cpu_backend be;
  kv_manager_params kvp;
  deferred_admission* port = nullptr;
  std::unique_ptr<verifier_core> v;
  std::map<uint64_t, msg::request_done> done;
  std::string frame;
};

TEST(VerifierSplitStep, CancelWhileAdmissionIsUnderWayReleasesTheReservation) {
  split_core c(7);
  deferred_admission& q = *c.port;
  verifier_core& v = *c.v;
  EXPECT_THROW(v.step(), invalid_argument_error);  // an asynchronous port needs the split step
  const std::vector<int32_t> prompts[] = {{1, 2, 3, 4, 5}, {5, 4, 3, 2, 1, 0}};
  c.submit(0, prompts[0]);
  c.submit(1, prompts[1]);
  ASSERT_TRUE(v.wants_admission());
  EXPECT_EQ(v.free_slots(), 2);
  // The scheduler takes admit(2, credit): both requests leave its queue, KV reserved ...
  std::vector<waiting_request> batch = c.ask();
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(v.status().kv_blocks_used, kv_blocks_for(c.kvp, 5, 6) + kv_blocks_for(c.kvp, 6, 6));
  // ... and before its answer reaches the verifier, request 0 is cancelled: done at once, the
  // remove reaches the scheduler too late to matter.
  c.cancel(0);
  ASSERT_EQ(c.done.count(0), 1u);
  EXPECT_EQ(c.done[0].reason, msg::end_reason::cancelled);
  EXPECT_EQ(c.done[0].stats.prompt_tokens, 5);
  EXPECT_EQ(q.removed, std::vector<uint64_t>{1});  // verifier id 1 = key 0
  v.start_admitted(batch);
  EXPECT_EQ(q.released, std::vector<uint64_t>{1});  // not started: its reservation goes back
  EXPECT_EQ(v.status().active_requests, 1);
  EXPECT_FALSE(v.wants_admission());
  c.run_to_end();
  ASSERT_EQ(c.done.count(1), 1u);
  EXPECT_EQ(c.done[1].token_ids, c.reference(prompts[1]));
  EXPECT_EQ(v.status().kv_blocks_used, 0);
  EXPECT_EQ(q.released, (std::vector<uint64_t>{1, 2}));
}

// A KV budget of one request (1 block of 16 positions): after an admission that started fewer
// than it could, the split step asks again only once something may let the head in (a release,
// a waiting request cancelled), counting a cancel that happened while the answer was on its way.
TEST(VerifierSplitStep, NoAdmissionRoundTripWhileTheHeadCannotFit) {
  split_core c(9, /*kv_blocks=*/1);
  verifier_core& v = *c.v;
  ASSERT_EQ(kv_blocks_for(c.kvp, 5, 6), 1);
  const std::vector<int32_t> prompts[] = {{1, 2, 3, 4, 5}, {2, 3, 4, 5, 6}, {5, 4, 3, 2, 1}};
  for (uint64_t k = 0; k < 3; ++k) c.submit(k, prompts[k]);
  // Room for 2 slots, KV for 1: request 0 starts; while the answer travels, request 1 (waiting)
  // is cancelled, so the next step asks again ...
  ASSERT_TRUE(v.wants_admission());
  std::vector<waiting_request> b = c.ask();
  ASSERT_EQ(b.size(), 1u);
  c.cancel(1);
  v.start_admitted(b);
  EXPECT_TRUE(v.wants_admission());
  // ... and gets nothing (request 2 does not fit beside 0): no more asking while 0 runs.
  b = c.ask();
  EXPECT_TRUE(b.empty());
  v.start_admitted(b);
  EXPECT_FALSE(v.wants_admission());
  while (!c.done.count(0)) {
    v.run_step();
    if (!c.done.count(0)) {
      EXPECT_FALSE(v.wants_admission());
    }
  }
  EXPECT_TRUE(v.wants_admission());  // 0's blocks came back
  b = c.ask();
  EXPECT_EQ(b.size(), 1u);
  v.start_admitted(b);
  c.run_to_end();
  EXPECT_EQ(c.done[1].reason, msg::end_reason::cancelled);
  for (uint64_t k : {0, 2}) EXPECT_EQ(c.done[k].token_ids, c.reference(prompts[k])) << k;
  EXPECT_EQ(v.status().kv_blocks_used, 0);
}

}  // namespace
}  // namespace dspark::actors
