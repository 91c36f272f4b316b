// A backend that passes every call to another one: tests derive from it and override forward()
// to watch what the decoding loop asks for, without touching what it gets back. counting_backend
// counts the forwards, those asking for captured features and those that came back out of KV.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "engine/backend.h"

namespace dspark::test {

class forwarding_backend : public backend {
 public:
  explicit forwarding_backend(backend& inner) : in_(inner) {}
  const backend_limits& limits() const override { return in_.limits(); }
  std::optional<int32_t> open_sequence() override { return in_.open_sequence(); }
  void free_sequence(int32_t seq) override { in_.free_sequence(seq); }
  int32_t sequence_length(int32_t seq) const override { return in_.sequence_length(seq); }
  void truncate(int32_t seq, int32_t new_len) override { in_.truncate(seq, new_len); }
  int32_t attach_prefix(int32_t seq, std::span<const int32_t> tokens) override { return in_.attach_prefix(seq, tokens); }
  void cache_prefix(int32_t seq, std::span<const int32_t> tokens) override { in_.cache_prefix(seq, tokens); }
  prefix_cache_stats prefix_stats() const override { return in_.prefix_stats(); }
  forward_output forward(const forward_batch& b) override { return in_.forward(b); }
  bool supports_forward_prefix() const override { return in_.supports_forward_prefix(); }
  forward_output forward_prefix(const forward_batch& b, int32_t n_layers) override {
    return in_.forward_prefix(b, n_layers);
  }

 private:
  backend& in_;
};

class counting_backend final : public forwarding_backend {
 public:
  using forwarding_backend::forwarding_backend;
  forward_output forward(const forward_batch& b) override {
    ++forwards;
    if (!b.capture_layers.empty()) ++capturing;
    const forward_output o = forwarding_backend::forward(b);
    if (o.status == forward_status::out_of_kv) ++out_of_kv;
    return o;
  }
  int64_t forwards = 0;
  int64_t capturing = 0;  // forwards that asked for captured features
  int64_t out_of_kv = 0;
};

}  // namespace dspark::test
