// remote_drafter against a scripted drafter (a raw DEALER in the test): registration and
// catch-up of live slots, proposals copied into the draft batch with their checks, the deadline
// (no answer -> no drafts, counted; repeated misses drop the drafter), late answers ignored,
// and a replacement drafter taking over.
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include "actors/remote_drafter.h"
#include "messages/drafter_messages.h"

namespace dspark::actors {
namespace {

using namespace std::chrono_literals;

// A drafter service played by the test.
struct scripted_drafter {
  zmq::socket_t s;
  // One hello, with the target layers it reads: a second hello would register it again, and
  // the reset and catch-up that follow could land in the middle of a test's script.
  scripted_drafter(zmq::context_t& ctx, const std::string& ep, const std::string& name,
                   std::vector<int32_t> capture_layers = {})
      : s(ctx, zmq::socket_type::dealer) {
    s.set(zmq::sockopt::linger, 0);
    s.connect(ep);
    std::string b;
    msg::encode(msg::drafter_hello{name, draft_dist_kind::one_hot, 0, std::move(capture_layers)}, b);
    s.send(zmq::buffer(b), zmq::send_flags::none);
  }
  std::optional<msg::drafter_message> next(std::chrono::milliseconds t = 2000ms) {
    zmq::pollitem_t it{s.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&it, 1, t) <= 0) return std::nullopt;
    zmq::message_t m;
    (void)s.recv(m);
    return msg::decode_drafter_message(m.to_string_view());
  }
  void answer(const msg::drafter_proposal& p) {
    std::string b;
    msg::encode(p, b);
    s.send(zmq::buffer(b), zmq::send_flags::none);
  }
  // The next message must be a propose; answers it with no drafts.
  void answer_next_with_nothing() {
    auto p = next();
    ASSERT_TRUE(p && std::holds_alternative<msg::drafter_propose>(*p));
    msg::drafter_proposal reply;
    reply.seq = std::get<msg::drafter_propose>(*p).seq;
    answer(reply);
  }
};

remote_drafter_options options(const std::string& ep) {
  remote_drafter_options o;
  o.endpoint = ep;
  o.max_slots = 2;
  o.n_vocab = 100;
  o.timeout = 1000ms;  // generous: ctest runs in parallel on 2 cores
  o.max_misses = 2;
  return o;
}

// Polls until the remote drafter names `name` (registration arrives asynchronously).
bool registered(remote_drafter& rd, const std::string& name) {
  for (int i = 0; i < 200; ++i) {
    rd.poll();
    if (rd.current() == name) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

draft_batch make_batch() {
  draft_batch_params p;
  p.max_slots = 2;
  p.gamma_max = 4;
  p.n_vocab = 100;
  return draft_batch(p);
}

TEST(RemoteDrafter, CatchUpThenProposeThenDeadlineThenSwap) {
  zmq::context_t ctx;
  remote_drafter rd(ctx, options("inproc://rd-test"));
  // A request is live before any drafter exists: prompt {1,2,3}, committed {4}.
  const std::vector<int32_t> prompt = {1, 2, 3};
  rd.begin(0, prompt);
  const int32_t x0 = 4;
  commit_info ci;
  ci.tokens = std::span<const int32_t>(&x0, 1);
  rd.on_commit(0, ci);
  draft_batch out = make_batch();
  const std::vector<int32_t> ctx_tokens = {1, 2, 3, 4};
  std::vector<propose_request> batch = {{0, 3, ctx_tokens, rng_key{}, nullptr}};
  rd.propose(batch, out);  // no drafter: returns at once with nothing
  EXPECT_EQ(out.length(0), 0);

  scripted_drafter a(ctx, "inproc://rd-test", "A");
  ASSERT_TRUE(registered(rd, "A"));
  // Catch-up: reset, begin(prompt), commit({x0}).
  auto m1 = a.next();
  ASSERT_TRUE(m1 && std::holds_alternative<msg::drafter_reset>(*m1));
  auto m2 = a.next();
  ASSERT_TRUE(m2 && std::holds_alternative<msg::drafter_begin>(*m2));
  EXPECT_EQ(std::get<msg::drafter_begin>(*m2).prompt, prompt);
  auto m3 = a.next();
  ASSERT_TRUE(m3 && std::holds_alternative<msg::drafter_commit>(*m3));
  EXPECT_EQ(std::get<msg::drafter_commit>(*m3).tokens, std::vector<int32_t>{x0});

  // A proposal round trip, answered from another thread while propose() waits. Four drafts
  // for a budget of 3, the third out of the vocabulary: the chain stops before it.
  std::thread answer([&] {
    auto p = a.next();
    ASSERT_TRUE(p && std::holds_alternative<msg::drafter_propose>(*p));
    const auto& pr = std::get<msg::drafter_propose>(*p);
    ASSERT_EQ(pr.items.size(), 1u);
    EXPECT_EQ(pr.items[0].context_len, 4);
    EXPECT_EQ(pr.items[0].max_drafts, 3);
    msg::drafter_proposal reply;
    reply.seq = pr.seq;
    reply.slots = {{0, {{7, 0.9f, {}, {}}, {8, 0.8f, {}, {}}, {1000, 0.7f, {}, {}}, {9, 0.5f, {}, {}}}}};
    a.answer(reply);
  });
  rd.propose(batch, out);
  answer.join();
  ASSERT_EQ(out.length(0), 2);
  EXPECT_EQ(out.tokens(0)[0], 7);
  EXPECT_EQ(out.tokens(0)[1], 8);
  EXPECT_EQ(rd.timeouts(), 0);

  // No answer: the deadline passes, nothing proposed; a second miss drops the drafter.
  out.clear();
  const auto t0 = std::chrono::steady_clock::now();
  rd.propose(batch, out);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 990ms);
  EXPECT_EQ(out.length(0), 0);
  EXPECT_EQ(rd.timeouts(), 1);
  rd.propose(batch, out);
  EXPECT_EQ(rd.timeouts(), 2);
  EXPECT_EQ(rd.current(), "");  // dropped after max_misses
  // A late answer to an old propose is ignored (the drafter is gone anyway).
  msg::drafter_proposal late;
  late.seq = 2;
  late.slots = {{0, {{5, 1.0f, {}, {}}}}};
  a.answer(late);
  out.clear();
  rd.propose(batch, out);
  EXPECT_EQ(out.length(0), 0);

  // Drafter B registers and is brought up to date the same way (context now {1,2,3,4}).
  scripted_drafter b(ctx, "inproc://rd-test", "B");
  ASSERT_TRUE(registered(rd, "B"));
  ASSERT_TRUE(std::holds_alternative<msg::drafter_reset>(*b.next()));
  auto b2 = b.next();
  ASSERT_TRUE(b2 && std::holds_alternative<msg::drafter_begin>(*b2));
  EXPECT_EQ(std::get<msg::drafter_begin>(*b2).prompt, prompt);
  rd.end(0);
  auto b3 = b.next();  // commit(x0)
  ASSERT_TRUE(b3 && std::holds_alternative<msg::drafter_commit>(*b3));
  auto b4 = b.next();
  ASSERT_TRUE(b4 && std::holds_alternative<msg::drafter_end>(*b4));
}

// A decoder built for dense distributions (a sampled drafter): the support that travels is
// rebuilt into the draft's full row, zeros elsewhere.
TEST(RemoteDrafter, DenseRowsAreRebuiltFromTheirSupport) {
  zmq::context_t ctx;
  remote_drafter_options o = options("inproc://rd-dense");
  o.dist_kind = draft_dist_kind::dense;
  remote_drafter rd(ctx, o);
  scripted_drafter a(ctx, "inproc://rd-dense", "dense");
  ASSERT_TRUE(registered(rd, "dense"));
  ASSERT_TRUE(std::holds_alternative<msg::drafter_reset>(*a.next()));
  const std::vector<int32_t> prompt = {1, 2};
  rd.begin(1, prompt);
  ASSERT_TRUE(a.next().has_value());  // begin
  draft_batch_params bp;
  bp.max_slots = 2;
  bp.gamma_max = 4;
  bp.n_vocab = 100;
  bp.kind = draft_dist_kind::dense;
  draft_batch out(bp);
  std::vector<propose_request> batch = {{1, 2, prompt, rng_key{}, nullptr}};
  std::thread answer([&] {
    auto p = a.next();
    ASSERT_TRUE(p && std::holds_alternative<msg::drafter_propose>(*p));
    msg::drafter_proposal reply;
    reply.seq = std::get<msg::drafter_propose>(*p).seq;
    reply.slots = {{1, {{12, 0.6f, {3, 12}, {0.25f, 0.75f}}, {40, 0.5f, {40, 200}, {0.5f, 0.5f}}}}};
    a.answer(reply);
  });
  rd.propose(batch, out);
  answer.join();
  ASSERT_EQ(out.length(1), 1);  // the second draft names an id outside the vocabulary: cut
  const draft_dist dd = out.dist(1, 0);
  EXPECT_EQ(dd.token, 12);
  EXPECT_FLOAT_EQ(dd.prob(12), 0.75f);
  EXPECT_FLOAT_EQ(dd.prob(3), 0.25f);
  EXPECT_FLOAT_EQ(dd.prob(5), 0.0f);
  EXPECT_FLOAT_EQ(out.confidences(1)[0], 0.6f);
}

// Co-located drafter (inproc/ipc link) and a drafter that reads features: reset names a shared
// segment, commits carry only an offset into it, the rows there are the target's, and the
// segment is refilled from offset 0 once a propose was answered.
TEST(RemoteDrafter, FeaturesGoThroughSharedMemoryOnOneHost) {
  zmq::context_t ctx;
  remote_drafter_options o = options("inproc://rd-shm");
  o.capture_layers = {0, 2};
  o.feature_shm_bytes = 1 << 16;
  remote_drafter rd(ctx, o);
  scripted_drafter a(ctx, "inproc://rd-shm", "feat", {0, 2});  // layers this verifier captures
  ASSERT_TRUE(registered(rd, "feat"));
  auto r0 = a.next();
  ASSERT_TRUE(r0 && std::holds_alternative<msg::drafter_reset>(*r0));
  const auto& reset = std::get<msg::drafter_reset>(*r0);
  ASSERT_FALSE(reset.shm_name.empty());
  shared_segment view = shared_segment::open_readonly(reset.shm_name, static_cast<size_t>(reset.shm_bytes));

  // Features of 2 layers x 3 rows x 4 wide, rows 1..3 of a 4-row forward (row0 = 1).
  std::vector<float> hidden(2 * 4 * 4);
  for (size_t i = 0; i < hidden.size(); ++i) hidden[i] = static_cast<float>(i) * 0.5f;
  const std::vector<int32_t> prompt = {1, 2, 3};
  rd.begin(0, prompt);
  ASSERT_TRUE(a.next().has_value());  // begin
  const std::vector<int32_t> toks = {5, 6, 7};
  commit_info ci;
  ci.tokens = toks;
  ci.features = {hidden.data(), 2, 3, 1, 4, 16};
  rd.on_commit(0, ci);
  auto c1 = a.next();
  ASSERT_TRUE(c1 && std::holds_alternative<msg::drafter_commit>(*c1));
  const auto& cm1 = std::get<msg::drafter_commit>(*c1);
  ASSERT_TRUE(cm1.features_shm);
  EXPECT_TRUE(cm1.features.empty());
  EXPECT_EQ(rd.shm_commits(), 1);
  const float* got = reinterpret_cast<const float*>(view.data() + cm1.shm_offset);
  for (int l = 0; l < 2; ++l)
    for (int i = 0; i < 3; ++i)
      for (int e = 0; e < 4; ++e)
        EXPECT_EQ(got[(l * 3 + i) * 4 + e], hidden[static_cast<size_t>(l * 16 + (1 + i) * 4 + e)]) << l << i << e;
  rd.on_commit(0, ci);  // a second commit goes after the first
  auto c2 = a.next();
  ASSERT_TRUE(c2);
  EXPECT_GT(std::get<msg::drafter_commit>(*c2).shm_offset, cm1.shm_offset);
  // An answered propose frees the segment: the next commit starts at 0 again.
  std::vector<int32_t> ctx6 = {1, 2, 3, 5, 6, 7, 5, 6, 7};
  std::vector<propose_request> batch = {{0, 2, ctx6, rng_key{}, nullptr}};
  draft_batch out = make_batch();
  std::thread answer([&] { a.answer_next_with_nothing(); });
  rd.propose(batch, out);
  answer.join();
  rd.on_commit(0, ci);
  auto c3 = a.next();
  ASSERT_TRUE(c3);
  EXPECT_EQ(std::get<msg::drafter_commit>(*c3).shm_offset, 0u);
}

// Split-phase propose (the pipelined decoder): propose_begin only sends; commits for other slots
// follow the propose on the link; an answer that poll() picks up is kept for propose_end; a
// commit written into the shared segment while the propose was in flight is not overwritten
// after its answer, and the segment restarts at 0 only once nothing is unread.
TEST(RemoteDrafter, SplitPhaseProposeOverlapsCommitsOfOtherSlots) {
  zmq::context_t ctx;
  remote_drafter_options o = options("inproc://rd-split");
  o.capture_layers = {0};
  o.feature_shm_bytes = 1 << 16;
  remote_drafter rd(ctx, o);
  scripted_drafter a(ctx, "inproc://rd-split", "split", {0});
  ASSERT_TRUE(registered(rd, "split"));
  while (a.next(200ms)) {}  // the reset
  const std::vector<int32_t> prompt = {1, 2, 3};
  rd.begin(0, prompt);
  rd.begin(1, prompt);
  ASSERT_TRUE(a.next().has_value());
  ASSERT_TRUE(a.next().has_value());
  std::vector<float> hidden(2 * 4);
  for (size_t i = 0; i < hidden.size(); ++i) hidden[i] = static_cast<float>(i);
  const std::vector<int32_t> toks = {5, 6};
  commit_info ci;
  ci.tokens = toks;
  ci.features = {hidden.data(), 1, 2, 0, 4, 8};
  rd.on_commit(0, ci);  // before the propose: freed by its answer
  auto c0 = a.next();
  ASSERT_TRUE(c0 && std::holds_alternative<msg::drafter_commit>(*c0));
  EXPECT_EQ(std::get<msg::drafter_commit>(*c0).shm_offset, 0u);

  draft_batch out = make_batch();
  const std::vector<int32_t> ctx0 = {1, 2, 3, 5, 6};
  std::vector<propose_request> batch = {{0, 2, ctx0, rng_key{}, nullptr}};
  rd.propose_begin(batch, out);  // returns without an answer
  rd.on_commit(1, ci);           // slot 1 commits while slot 0 drafts
  auto p = a.next();
  ASSERT_TRUE(p && std::holds_alternative<msg::drafter_propose>(*p));
  auto c1 = a.next();
  ASSERT_TRUE(c1 && std::holds_alternative<msg::drafter_commit>(*c1));
  const auto& cm1 = std::get<msg::drafter_commit>(*c1);
  EXPECT_EQ(cm1.slot, 1);
  ASSERT_TRUE(cm1.features_shm);
  EXPECT_GT(cm1.shm_offset, 0u);
  msg::drafter_proposal reply;
  reply.seq = std::get<msg::drafter_propose>(*p).seq;
  reply.slots = {{0, {{7, 0.9f, {}, {}}, {8, 0.8f, {}, {}}}}};
  a.answer(reply);
  // The verifier idles (poll) before it collects: the answer is kept, not dropped as late.
  for (int i = 0; i < 50; ++i) {
    rd.poll();
    std::this_thread::sleep_for(5ms);
  }
  rd.propose_end();
  ASSERT_EQ(out.length(0), 2);
  EXPECT_EQ(out.tokens(0)[1], 8);
  EXPECT_EQ(rd.timeouts(), 0);
  // Slot 1's commit (sent after the propose) may still be unread: the next one goes after it.
  rd.on_commit(1, ci);
  auto c2 = a.next();
  ASSERT_TRUE(c2);
  EXPECT_GT(std::get<msg::drafter_commit>(*c2).shm_offset, cm1.shm_offset);
  // A synchronous propose with nothing sent during it frees everything: back to offset 0.
  std::thread answer([&] { a.answer_next_with_nothing(); });
  out.clear();
  rd.propose(batch, out);
  answer.join();
  rd.on_commit(1, ci);
  auto c3 = a.next();
  ASSERT_TRUE(c3);
  EXPECT_EQ(std::get<msg::drafter_commit>(*c3).shm_offset, 0u);
}

}  // namespace
}  // namespace dspark::actors
