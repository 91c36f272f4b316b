// The n-gram (prompt-lookup) drafter: the header's worked examples and edge cases.
#include <gtest/gtest.h>

#include <vector>

#include "common/error.h"
#include "engine/spec/draft_batch.h"
#include "models/drafters/ngram_drafter.h"

namespace dspark {
namespace {

std::vector<int32_t> lookup(const ngram_drafter& d, const std::vector<int32_t>& ctx, int k) {
  std::vector<int32_t> out(static_cast<size_t>(k));
  out.resize(static_cast<size_t>(d.lookup(ctx, out)));
  return out;
}

TEST(SpecNgram, HeaderWorkedExampleMostRecentMatchWins) {
  ngram_drafter d({.min_n = 1, .max_n = 3, .max_slots = 1});
  EXPECT_EQ(lookup(d, {5, 9, 2, 7, 5, 9, 3, 5, 9}, 3), (std::vector<int32_t>{3, 5, 9}));
}

TEST(SpecNgram, HeaderWorkedExampleShortTail) {
  ngram_drafter d({.min_n = 1, .max_n = 3, .max_slots = 1});
  EXPECT_EQ(lookup(d, {1, 2, 1}, 4), (std::vector<int32_t>{2, 1}));
}

TEST(SpecNgram, LongestSuffixPreferredOverMoreRecentShortOne) {
  // Suffix [2 3] occurs at 0 (followed by 9) and its last token 3 occurs more recently at 5
  // (followed by 8): n = 2 is tried first and wins.
  ngram_drafter d({.min_n = 1, .max_n = 2, .max_slots = 1});
  EXPECT_EQ(lookup(d, {2, 3, 9, 9, 9, 3, 8, 2, 3}, 1), (std::vector<int32_t>{9}));
  // With max_n 1 only the single token 3 is matched: most recent occurrence at 5.
  ngram_drafter d1({.min_n = 1, .max_n = 1, .max_slots = 1});
  EXPECT_EQ(lookup(d1, {2, 3, 9, 9, 9, 3, 8, 2, 3}, 1), (std::vector<int32_t>{8}));
}

TEST(SpecNgram, NoMatchBelowMinN) {
  ngram_drafter d({.min_n = 2, .max_n = 3, .max_slots = 1});
  EXPECT_TRUE(lookup(d, {1, 2, 3, 4, 5, 3}, 4).empty());  // only a 1-gram [3] repeats
  EXPECT_TRUE(lookup(d, {}, 4).empty());
  EXPECT_TRUE(lookup(d, {7}, 4).empty());
  EXPECT_TRUE(lookup(d, {7, 7}, 4).empty());  // the 2-gram [7 7] has no earlier occurrence
  EXPECT_EQ(lookup(d, {7, 7, 7}, 4), (std::vector<int32_t>{7}));
}

TEST(SpecNgram, ProposeWritesOneHotDraftsPerSlot) {
  ngram_drafter d({.min_n = 1, .max_n = 3, .max_slots = 3});
  draft_batch out({.max_slots = 3, .gamma_max = 4, .n_vocab = 16});
  const std::vector<int32_t> a = {5, 9, 2, 7, 5, 9, 3, 5, 9};
  const std::vector<int32_t> b = {1, 2, 3};
  d.begin(0, a);
  d.begin(2, b);
  const propose_request reqs[] = {{.slot = 0, .max_drafts = 2, .context = a, .rng = {}, .sampling = nullptr},
                                  {.slot = 2, .max_drafts = 4, .context = b, .rng = {}, .sampling = nullptr}};
  out.clear();
  d.propose(reqs, out);
  ASSERT_EQ(out.length(0), 2);
  EXPECT_EQ(out.tokens(0)[0], 3);
  EXPECT_EQ(out.tokens(0)[1], 5);
  EXPECT_EQ(out.dist(0, 1).kind, draft_dist_kind::one_hot);
  EXPECT_EQ(out.dist(0, 1).prob(5), 1.0f);
  EXPECT_EQ(out.dist(0, 1).prob(3), 0.0f);
  EXPECT_EQ(out.confidences(0)[0], 1.0f);
  EXPECT_EQ(out.length(1), 0);
  EXPECT_EQ(out.length(2), 0);  // no repeat in [1 2 3]
  d.end(0);
  EXPECT_THROW(d.propose(reqs, out), invalid_argument_error);  // slot 0 no longer open
}

TEST(SpecNgram, RejectsBadParameters) {
  EXPECT_THROW(ngram_drafter({.min_n = 0, .max_n = 2, .max_slots = 1}), invalid_argument_error);
  EXPECT_THROW(ngram_drafter({.min_n = 3, .max_n = 2, .max_slots = 1}), invalid_argument_error);
  EXPECT_THROW(ngram_drafter({.min_n = 1, .max_n = 2, .max_slots = 0}), invalid_argument_error);
}

}  // namespace
}  // namespace dspark
