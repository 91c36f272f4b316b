// remote_drafter: see remote_drafter.h.
#include "actors/remote_drafter.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "messages/wire.h"

namespace dspark::actors {

namespace {

channel_options router_options(const std::string& endpoint, const std::string& curve_secret_key) {
  channel_options o;
  o.type = zmq::socket_type::router;
  o.endpoint = endpoint;
  o.bind = true;
  o.watch_disconnects = endpoint.rfind("inproc://", 0) != 0;
  o.curve_secret_key = curve_secret_key;
  return o;
}

}  // namespace

remote_drafter::remote_drafter(zmq::context_t& ctx, const remote_drafter_options& opt)
    : opt_(opt), ch_(ctx, router_options(opt.endpoint, opt.curve_secret_key)) {
  caps_.name = "remote";
  caps_.dist_kind = opt.dist_kind;
  caps_.max_sparse = opt.max_sparse;
  caps_.has_confidence = true;
  caps_.capture_layers = opt.capture_layers;
  const bool same_host = opt.endpoint.rfind("ipc://", 0) == 0 || opt.endpoint.rfind("inproc://", 0) == 0;
  if (same_host && opt.feature_shm_bytes > 0 && !opt.capture_layers.empty()) {
    try {
      shm_ = shared_segment::create(opt.feature_shm_bytes);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "verifier: features will travel inline (%s)\n", e.what());
    }
  }
  slots_.resize(static_cast<size_t>(opt.max_slots));
  budget_.assign(static_cast<size_t>(opt.max_slots), -1);
  prop_.items.reserve(static_cast<size_t>(opt.max_slots));
  ch_.start(
      [this](frames&& f) {
        // A proposal is awaited by propose() itself; anything else may arrive while idle.
        const bool proposal = f.size() == 2 && f[1].size() >= 3 &&
                              static_cast<uint8_t>(f[1][1]) == static_cast<uint16_t>(msg::drafter_type::proposal) &&
                              f[1][2] == 0;
        {
          std::lock_guard<std::mutex> lk(mu_);
          inbox_.push_back(inbound{false, std::move(f)});
        }
        cv_.notify_one();
        if (!proposal && notify_set_.load(std::memory_order_acquire)) notify_();
      },
      [this](const std::string& peer) {
        {
          std::lock_guard<std::mutex> lk(mu_);
          inbox_.push_back(inbound{true, frames{peer}});
        }
        cv_.notify_one();
        if (notify_set_.load(std::memory_order_acquire)) notify_();
      });
}

remote_drafter::~remote_drafter() = default;

void remote_drafter::set_notify(std::function<void()> fn) {
  notify_ = std::move(fn);
  notify_set_.store(true, std::memory_order_release);
}

void remote_drafter::send_to_peer() {
  if (peer_) ch_.send(frames{*peer_, buf_});
}

void remote_drafter::drop(const char* why) {
  if (!peer_) return;
  std::fprintf(stderr, "verifier: drafter '%s' dropped (%s); plain decoding until another registers\n",
               peer_name_.c_str(), why);
  peer_.reset();
  peer_name_.clear();
  misses_ = 0;
}

void remote_drafter::adopt(const std::string& peer, const msg::drafter_hello& h) {
  for (int32_t l : h.capture_layers) {
    if (std::find(caps_.capture_layers.begin(), caps_.capture_layers.end(), l) == caps_.capture_layers.end()) {
      std::fprintf(stderr, "verifier: refusing drafter '%s': it needs target layer %d, which this verifier does not capture\n",
                   h.name.c_str(), l);
      return;
    }
  }
  if (peer_ && *peer_ != peer) drop("replaced");
  peer_ = peer;
  peer_name_ = h.name;
  misses_ = 0;
  ++swaps_;
  std::fprintf(stderr, "verifier: drafter '%s' registered\n", h.name.c_str());
  // Bring it up to date: the calls a request starting from its current context would have seen.
  msg::drafter_reset reset;
  if (shm_.valid()) {
    reset.shm_name = shm_.name();
    reset.shm_bytes = shm_.size();
  }
  shm_write_ = shm_read_ = shm_mark_ = 0;
  msg::encode(reset, buf_);
  send_to_peer();
  for (size_t s = 0; s < slots_.size(); ++s) {
    const slot_state& st = slots_[s];
    if (!st.open) continue;
    const size_t n_prompt = st.committed ? st.ctx.size() - 1 : st.ctx.size();
    msg::encode(msg::drafter_begin{static_cast<int32_t>(s), {st.ctx.begin(), st.ctx.begin() + static_cast<std::ptrdiff_t>(n_prompt)}}, buf_);
    send_to_peer();
    if (st.committed) {
      msg::drafter_commit c;
      c.slot = static_cast<int32_t>(s);
      c.tokens = {st.ctx.back()};
      msg::encode(c, buf_);
      send_to_peer();
    }
  }
}

bool remote_drafter::dispatch(inbound& in) {
  if (in.f.empty()) return false;
  const std::string& from = in.f[0];
  if (in.lost) {
    if (peer_ && *peer_ == from) drop("disconnected");
    return false;
  }
  if (in.f.size() != 2) {
    std::fprintf(stderr, "verifier: drafter sent %zu frames, expected 2; dropped\n", in.f.size());
    return false;
  }
  try {
    msg::drafter_message m = msg::decode_drafter_message(in.f[1]);
    if (auto* h = std::get_if<msg::drafter_hello>(&m)) {
      adopt(from, *h);
      return false;
    }
    if (auto* p = std::get_if<msg::drafter_proposal>(&m)) {
      // Late, foreign, or no propose in flight: ignored.
      if (!in_flight_ || answered_ || !peer_ || *peer_ != from || p->seq != prop_.seq) return false;
      fill(*p, fl_batch_, *fl_out_);
      answered_ = true;
      misses_ = 0;
      // The drafter has read every commit sent before this propose.
      shm_read_ = shm_mark_;
      if (shm_read_ == shm_write_) shm_read_ = shm_write_ = 0;
      return true;
    }
    std::fprintf(stderr, "verifier: drafter sent a message meant for a drafter; dropped\n");
  } catch (const msg::wire_error& e) {
    std::fprintf(stderr, "verifier: malformed frame from a drafter: %s\n", e.what());
  }
  return false;
}

void remote_drafter::fill(const msg::drafter_proposal& p, std::span<const propose_request> batch, draft_batch& out) {
  for (const propose_request& r : batch) budget_[static_cast<size_t>(r.slot)] = r.max_drafts;
  for (const msg::slot_drafts& s : p.slots) {
    if (s.slot < 0 || s.slot >= opt_.max_slots) continue;
    int32_t& budget = budget_[static_cast<size_t>(s.slot)];
    if (budget < 0 || out.length(s.slot) > 0) continue;  // not asked, or a duplicate entry
    const int32_t n = std::min<int32_t>(budget, static_cast<int32_t>(s.drafts.size()));
    for (int32_t k = 0; k < n; ++k) {
      const msg::draft_token& d = s.drafts[static_cast<size_t>(k)];
      if (d.token < 0 || d.token >= opt_.n_vocab || !(d.confidence >= 0.0f && d.confidence <= 1.0f)) break;
      if (d.sparse_ids.empty()) {
        out.push_one_hot(s.slot, d.token, d.confidence);
      } else if (caps_.dist_kind == draft_dist_kind::sparse &&
                 static_cast<int32_t>(d.sparse_ids.size()) <= caps_.max_sparse) {
        bool valid = true;
        for (int32_t id : d.sparse_ids) valid = valid && id >= 0 && id < opt_.n_vocab;
        for (float q : d.sparse_probs) valid = valid && q >= 0.0f && q <= 1.0f;
        if (!valid) break;
        out.push_sparse(s.slot, d.token, d.sparse_ids, d.sparse_probs, d.confidence);
      } else if (caps_.dist_kind == draft_dist_kind::dense) {
        // The wire carries a dense row's support; rebuild the row (zeros elsewhere).
        bool valid = true;
        for (int32_t id : d.sparse_ids) valid = valid && id >= 0 && id < opt_.n_vocab;
        if (!valid) break;
        std::span<float> row = out.next_dense_row(s.slot);
        std::fill(row.begin(), row.end(), 0.0f);
        for (size_t e = 0; e < d.sparse_ids.size(); ++e) row[static_cast<size_t>(d.sparse_ids[e])] = d.sparse_probs[e];
        out.push_dense(s.slot, d.token, d.confidence);
      } else if (d.sparse_ids.size() == 1 && d.sparse_ids[0] == d.token && d.sparse_probs[0] == 1.0f) {
        out.push_one_hot(s.slot, d.token, d.confidence);  // a point mass sent as a list
      } else {
        break;  // a distribution this decoder cannot represent: propose fewer (always lossless)
      }
    }
  }
  for (const propose_request& r : batch) budget_[static_cast<size_t>(r.slot)] = -1;
}

void remote_drafter::poll() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!inbox_.empty()) {
    inbound in = std::move(inbox_.front());
    inbox_.pop_front();
    lk.unlock();
    dispatch(in);
    lk.lock();
  }
}

void remote_drafter::propose(std::span<const propose_request> batch, draft_batch& out) {
  propose_begin(batch, out);
  propose_end();
}

void remote_drafter::propose_begin(std::span<const propose_request> batch, draft_batch& out) {
  poll();
  in_flight_ = false;
  if (!peer_ || batch.empty()) return;
  prop_.seq = ++seq_;
  prop_.items.clear();
  for (const propose_request& r : batch) {
    msg::propose_item it;
    it.slot = r.slot;
    it.max_drafts = r.max_drafts;
    it.context_len = static_cast<int32_t>(r.context.size());
    it.rng_seed = r.rng.seed;
    it.rng_round = r.rng.round;
    if (r.sampling) {
      it.temperature = r.sampling->temperature;
      it.top_k = r.sampling->top_k;
      it.top_p = r.sampling->top_p;
      it.min_p = r.sampling->min_p;
    }
    prop_.items.push_back(it);
  }
  msg::encode(prop_, buf_);
  send_to_peer();
  in_flight_ = true;
  answered_ = false;
  fl_batch_ = batch;
  fl_out_ = &out;
  shm_mark_ = shm_write_;
  deadline_ = std::chrono::steady_clock::now() + opt_.timeout;
}

void remote_drafter::propose_end() {
  if (!in_flight_) return;
  std::unique_lock<std::mutex> lk(mu_);
  while (peer_ && !answered_) {
    if (inbox_.empty() && !cv_.wait_until(lk, deadline_, [this] { return !inbox_.empty(); })) {
      ++timeouts_;
      if (++misses_ >= opt_.max_misses) drop("missed its deadline repeatedly");
      break;
    }
    inbound in = std::move(inbox_.front());
    inbox_.pop_front();
    lk.unlock();
    dispatch(in);
    lk.lock();
  }
  in_flight_ = false;
  fl_out_ = nullptr;
}

void remote_drafter::begin(int32_t slot, std::span<const int32_t> prompt) {
  slot_state& st = slots_.at(static_cast<size_t>(slot));
  st.open = true;
  st.committed = false;
  st.ctx.assign(prompt.begin(), prompt.end());
  if (!peer_) return;
  msg::drafter_begin b{slot, {prompt.begin(), prompt.end()}};
  msg::encode(b, buf_);
  send_to_peer();
}

void remote_drafter::on_commit(int32_t slot, const commit_info& c) {
  slot_state& st = slots_.at(static_cast<size_t>(slot));
  st.ctx.insert(st.ctx.end(), c.tokens.begin(), c.tokens.end());
  st.committed = true;
  if (!peer_) return;
  commit_.slot = slot;
  commit_.tokens.assign(c.tokens.begin(), c.tokens.end());
  commit_.n_accepted = c.n_accepted;
  commit_.n_proposed = c.n_proposed;
  commit_.n_layers = c.features.data ? c.features.n_layers : 0;
  commit_.n_rows = commit_.n_layers > 0 ? c.features.n_rows : 0;
  commit_.n_embd = commit_.n_layers > 0 ? c.features.n_embd : 0;
  commit_.features.clear();
  commit_.features_shm = false;
  commit_.shm_offset = 0;
  const size_t row_bytes = static_cast<size_t>(commit_.n_embd) * sizeof(float);
  const size_t bytes = static_cast<size_t>(commit_.n_layers) * static_cast<size_t>(commit_.n_rows) * row_bytes;
  // Where the rows would go in the ring: a block never straddles the segment's end.
  const uint64_t cap = shm_.valid() ? shm_.size() : 0;
  uint64_t pos = shm_write_;
  if (cap > 0 && pos % cap + bytes > cap) pos += cap - pos % cap;
  if (bytes > 0 && cap > 0 && pos + bytes - shm_read_ <= cap) {
    // [n_layers][n_rows][n_embd] at pos % cap, rows copied once, no message payload.
    char* dst = shm_.data() + pos % cap;
    for (int32_t l = 0; l < commit_.n_layers; ++l)
      for (int32_t i = 0; i < commit_.n_rows; ++i, dst += row_bytes) std::memcpy(dst, c.features.row(l, i), row_bytes);
    commit_.features_shm = true;
    commit_.shm_offset = pos % cap;
    shm_write_ = pos + ((bytes + 63) & ~size_t{63});
    ++shm_commits_;
  } else {
    for (int32_t l = 0; l < commit_.n_layers; ++l)
      for (int32_t i = 0; i < commit_.n_rows; ++i) {
        const float* row = c.features.row(l, i);
        commit_.features.insert(commit_.features.end(), row, row + commit_.n_embd);
      }
  }
  msg::encode(commit_, buf_);
  send_to_peer();
}

void remote_drafter::rollback(int32_t slot, int32_t n_context) {
  slot_state& st = slots_.at(static_cast<size_t>(slot));
  if (n_context < static_cast<int32_t>(st.ctx.size())) st.ctx.resize(static_cast<size_t>(std::max(n_context, 0)));
  if (!peer_) return;
  msg::encode(msg::drafter_rollback{slot, n_context}, buf_);
  send_to_peer();
}

void remote_drafter::end(int32_t slot) {
  slot_state& st = slots_.at(static_cast<size_t>(slot));
  st.open = false;
  st.committed = false;
  st.ctx.clear();
  if (!peer_) return;
  msg::encode(msg::drafter_end{slot}, buf_);
  send_to_peer();
}

}  // namespace dspark::actors
