// A drafter that proposes nothing and keeps nothing, with the caps a test gives it: for tests of
// what the decoder or a wrapper does with a drafter's caps (capture layers, device features).
#pragma once

#include <utility>

#include "models/drafters/drafter.h"

namespace dspark::test {

class caps_only_drafter final : public drafter {
 public:
  explicit caps_only_drafter(drafter_caps c) : caps_(std::move(c)) {}
  const drafter_caps& caps() const override { return caps_; }
  void begin(int32_t, std::span<const int32_t>) override {}
  void propose(std::span<const propose_request>, draft_batch&) override {}
  void on_commit(int32_t, const commit_info&) override {}
  void rollback(int32_t, int32_t) override {}
  void end(int32_t) override {}

 private:
  drafter_caps caps_;
};

}  // namespace dspark::test
