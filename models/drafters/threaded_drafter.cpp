// threaded_drafter: see threaded_drafter.h.
#include "models/drafters/threaded_drafter.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "common/error.h"

namespace dspark {

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

}  // namespace

threaded_drafter::threaded_drafter(std::unique_ptr<drafter> inner, const threaded_drafter_params& p)
    : inner_(std::move(inner)), max_slots_(p.max_slots) {
  if (!inner_) throw invalid_argument_error("threaded_drafter: inner drafter is null");
  if (p.max_slots < 1) throw invalid_argument_error("threaded_drafter: max_slots must be >= 1");
  if (p.queue < 0 || p.token_ring == 0 || p.feature_ring == 0)
    throw invalid_argument_error("threaded_drafter: queue must be >= 0 and the rings > 0");
  if (inner_->caps().shares_target)
    throw invalid_argument_error("threaded_drafter: '" + inner_->caps().name +
                                 "' drafts on the target's backend and cannot run beside its forward");
  caps_ = inner_->caps();
  caps_.reads_device_features = false;
  q_.resize(static_cast<size_t>(p.queue > 0 ? p.queue : 8 * p.max_slots + 16));
  tokens_.resize(p.token_ring);
  if (!inner_->caps().capture_layers.empty()) features_.resize(p.feature_ring);
  batch_.resize(static_cast<size_t>(p.max_slots));
  thread_ = std::thread([this] { worker(); });
}

threaded_drafter::~threaded_drafter() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  work_cv_.notify_one();
  thread_.join();
}

int32_t threaded_drafter::checked(int32_t slot) const {
  if (slot < 0 || slot >= max_slots_)
    throw invalid_argument_error("threaded_drafter: slot " + std::to_string(slot) + " out of range [0, " +
                                 std::to_string(max_slots_) + ")");
  return slot;
}

void threaded_drafter::worker() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    work_cv_.wait(lk, [this] { return stop_ || head_ != tail_; });
    if (head_ == tail_) break;  // stop_ and nothing left
    const command c = q_[tail_ % q_.size()];
    const bool skip = error_ != nullptr;  // after a failure, nothing more reaches the drafter
    lk.unlock();
    std::exception_ptr err;
    const auto t0 = clock_type::now();
    if (!skip) {
      try {
        run(c);
      } catch (...) {
        err = std::current_exception();
      }
    }
    const double dt = seconds_since(t0);
    lk.lock();
    if (err && !error_) error_ = err;
    stats_.busy_s += dt;
    ++stats_.commands;
    if (c.kind == op::propose) {
      stats_.propose_s += dt;
      ++stats_.proposes;
    }
    if (c.tok_n > 0) tok_.read = c.tok_pos + c.tok_n;
    if (c.feat_n > 0) feat_.read = c.feat_pos + c.feat_n;
    ++tail_;
    done_cv_.notify_all();
  }
}

void threaded_drafter::run(const command& c) {
  const std::span<const int32_t> toks(tokens_.data() + c.tok_pos % tokens_.size(), c.tok_n);
  switch (c.kind) {
    case op::begin: inner_->begin(c.slot, toks); break;
    case op::commit: {
      commit_info ci = c.c;
      ci.tokens = toks;
      if (c.feat_n > 0) {
        ci.features.data = features_.data() + c.feat_pos % features_.size();
        ci.features.row0 = 0;
        ci.features.layer_stride = static_cast<int64_t>(ci.features.n_rows) * ci.features.n_embd;
      }
      inner_->on_commit(c.slot, ci);
      break;
    }
    case op::rollback: inner_->rollback(c.slot, c.n); break;
    case op::end: inner_->end(c.slot); break;
    case op::propose: inner_->propose({batch_.data(), batch_n_}, *out_); break;
  }
}

void threaded_drafter::rethrow(std::unique_lock<std::mutex>&) {
  if (!error_) return;
  std::exception_ptr e = error_;
  error_ = nullptr;
  std::rethrow_exception(e);
}

uint64_t threaded_drafter::reserve(ring_pos& r, size_t cap, size_t n, std::unique_lock<std::mutex>& lk) {
  if (n == 0) return r.write;
  for (;;) {
    uint64_t pos = r.write;
    if (pos % cap + n > cap) pos += cap - pos % cap;  // a payload never straddles the end
    if (pos + n - r.read <= cap) {
      r.write = pos + n;
      return pos;
    }
    if (r.read == r.write) {  // empty: start at the boundary, where n <= cap always fits
      r.read = r.write = pos;
      continue;
    }
    const auto t0 = clock_type::now();
    done_cv_.wait(lk);
    stats_.wait_s += seconds_since(t0);
  }
}

void threaded_drafter::push(const command& c, std::unique_lock<std::mutex>& lk) {
  if (head_ - tail_ >= q_.size()) {
    const auto t0 = clock_type::now();
    done_cv_.wait(lk, [this] { return head_ - tail_ < q_.size(); });
    stats_.wait_s += seconds_since(t0);
  }
  q_[head_ % q_.size()] = c;
  ++head_;
  work_cv_.notify_one();
}

void threaded_drafter::wait_idle(std::unique_lock<std::mutex>& lk) {
  if (head_ == tail_) return;
  const auto t0 = clock_type::now();
  done_cv_.wait(lk, [this] { return head_ == tail_; });
  stats_.wait_s += seconds_since(t0);
}

void threaded_drafter::drain() {
  std::unique_lock<std::mutex> lk(mu_);
  wait_idle(lk);
  rethrow(lk);
}

threaded_drafter_stats threaded_drafter::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

template <class Call>
bool threaded_drafter::run_inline_if(bool too_big, std::unique_lock<std::mutex>& lk, Call&& call) {
  if (!too_big) return false;
  wait_idle(lk);  // the worker is idle from here on: the wrapped drafter is ours
  ++stats_.inline_calls;
  lk.unlock();
  call();
  return true;
}

void threaded_drafter::copy_tokens(std::span<const int32_t> t, uint64_t pos) {
  std::copy(t.begin(), t.end(), tokens_.begin() + static_cast<std::ptrdiff_t>(pos % tokens_.size()));
}

void threaded_drafter::begin(int32_t slot, std::span<const int32_t> prompt) {
  checked(slot);
  std::unique_lock<std::mutex> lk(mu_);
  rethrow(lk);
  if (run_inline_if(prompt.size() > tokens_.size(), lk, [&] { inner_->begin(slot, prompt); })) return;
  command c;
  c.kind = op::begin;
  c.slot = slot;
  c.tok_n = static_cast<uint32_t>(prompt.size());
  c.tok_pos = reserve(tok_, tokens_.size(), prompt.size(), lk);
  // The reserved range is ours until the command is pushed: copy without the lock.
  lk.unlock();
  copy_tokens(prompt, c.tok_pos);
  lk.lock();
  push(c, lk);
}

void threaded_drafter::on_commit(int32_t slot, const commit_info& info) {
  checked(slot);
  const target_features& f = info.features;
  const size_t n_feat = f.data ? static_cast<size_t>(f.n_layers) * static_cast<size_t>(f.n_rows) * static_cast<size_t>(f.n_embd) : 0;
  std::unique_lock<std::mutex> lk(mu_);
  rethrow(lk);
  if (run_inline_if(info.tokens.size() > tokens_.size() || n_feat > features_.size(), lk,
                    [&] { inner_->on_commit(slot, info); }))
    return;
  command c;
  c.kind = op::commit;
  c.slot = slot;
  c.c = info;
  c.c.tokens = {};
  c.c.features.data = nullptr;
  c.tok_n = static_cast<uint32_t>(info.tokens.size());
  c.tok_pos = reserve(tok_, tokens_.size(), info.tokens.size(), lk);
  c.feat_n = n_feat;
  c.feat_pos = reserve(feat_, features_.size() ? features_.size() : 1, n_feat, lk);
  lk.unlock();
  copy_tokens(info.tokens, c.tok_pos);
  if (n_feat > 0) {
    // Packed [n_layers][n_rows][n_embd], whatever the forward's row layout.
    float* dst = features_.data() + c.feat_pos % features_.size();
    const size_t row_bytes = static_cast<size_t>(f.n_embd) * sizeof(float);
    for (int32_t l = 0; l < f.n_layers; ++l)
      for (int32_t i = 0; i < f.n_rows; ++i, dst += f.n_embd) std::memcpy(dst, f.row(l, i), row_bytes);
  }
  lk.lock();
  push(c, lk);
}

void threaded_drafter::rollback(int32_t slot, int32_t n_context) {
  checked(slot);
  std::unique_lock<std::mutex> lk(mu_);
  rethrow(lk);
  command c;
  c.kind = op::rollback;
  c.slot = slot;
  c.n = n_context;
  push(c, lk);
}

void threaded_drafter::end(int32_t slot) {
  checked(slot);
  std::unique_lock<std::mutex> lk(mu_);  // no rethrow: decoders end requests from destructors
  command c;
  c.kind = op::end;
  c.slot = slot;
  push(c, lk);
}

void threaded_drafter::propose_begin(std::span<const propose_request> batch, draft_batch& out) {
  if (batch.size() > batch_.size())
    throw invalid_argument_error("threaded_drafter: a propose of " + std::to_string(batch.size()) +
                                 " requests exceeds max_slots " + std::to_string(max_slots_));
  for (const propose_request& r : batch) checked(r.slot);
  std::unique_lock<std::mutex> lk(mu_);
  rethrow(lk);
  if (in_flight_) throw invalid_argument_error("threaded_drafter: propose_begin while a propose is in flight");
  // The previous propose has finished (propose_end returned), so the worker no longer reads batch_.
  std::copy(batch.begin(), batch.end(), batch_.begin());
  batch_n_ = batch.size();
  out_ = &out;
  command c;
  c.kind = op::propose;
  push(c, lk);
  propose_seq_ = head_ - 1;
  in_flight_ = true;
}

void threaded_drafter::propose_end() {
  std::unique_lock<std::mutex> lk(mu_);
  if (in_flight_) {
    if (tail_ <= propose_seq_) {
      const auto t0 = clock_type::now();
      done_cv_.wait(lk, [this] { return tail_ > propose_seq_; });
      stats_.wait_s += seconds_since(t0);
    }
    in_flight_ = false;
  }
  rethrow(lk);
}

void threaded_drafter::propose(std::span<const propose_request> batch, draft_batch& out) {
  propose_begin(batch, out);
  propose_end();
}

}  // namespace dspark
