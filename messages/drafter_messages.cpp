// Encode/decode of the verifier <-> drafter messages (drafter_messages.h).
#include "messages/drafter_messages.h"

#include "messages/engine_messages.h"
#include "messages/wire.h"

namespace dspark::msg {

namespace {

uint16_t tag(drafter_type t) { return static_cast<uint16_t>(t); }

uint32_t get_count(wire_reader& r, const char* field, uint32_t max) {
  const uint32_t n = r.u32(field);
  if (n > max)
    throw wire_error(std::string("'") + field + "' has " + std::to_string(n) + " entries, at most " +
                     std::to_string(max) + " allowed");
  return n;
}

}  // namespace

void encode(const drafter_hello& m, std::string& out) {
  wire_writer w(out, tag(drafter_type::hello));
  w.str(m.name);
  w.u8(static_cast<uint8_t>(m.dist_kind));
  w.i32(m.max_sparse);
  w.i32s(m.capture_layers);
}

void encode(const drafter_proposal& m, std::string& out) {
  wire_writer w(out, tag(drafter_type::proposal));
  w.u64(m.seq);
  w.u32(static_cast<uint32_t>(m.slots.size()));
  for (const auto& s : m.slots) {
    w.i32(s.slot);
    w.u32(static_cast<uint32_t>(s.drafts.size()));
    for (const auto& d : s.drafts) {
      w.i32(d.token);
      w.f32(d.confidence);
      w.i32s(d.sparse_ids);
      w.f32s(d.sparse_probs);
    }
  }
}

void encode(const drafter_reset& m, std::string& out) {
  wire_writer w(out, tag(drafter_type::reset));
  w.str(m.shm_name);
  w.u64(m.shm_bytes);
}

void encode(const drafter_begin& m, std::string& out) {
  wire_writer w(out, tag(drafter_type::begin));
  w.i32(m.slot);
  w.i32s(m.prompt);
}

void encode(const drafter_propose& m, std::string& out) {
  wire_writer w(out, tag(drafter_type::propose));
  w.u64(m.seq);
  w.u32(static_cast<uint32_t>(m.items.size()));
  for (const auto& it : m.items) {
    w.i32(it.slot);
    w.i32(it.max_drafts);
    w.i32(it.context_len);
    w.u64(it.rng_seed);
    w.u64(it.rng_round);
    w.f32(it.temperature);
    w.i32(it.top_k);
    w.f32(it.top_p);
    w.f32(it.min_p);
  }
}

void encode(const drafter_commit& m, std::string& out) {
  wire_writer w(out, tag(drafter_type::commit));
  w.i32(m.slot);
  w.i32s(m.tokens);
  w.i32(m.n_accepted);
  w.i32(m.n_proposed);
  w.i32(m.n_layers);
  w.i32(m.n_rows);
  w.i64(m.n_embd);
  w.u8(m.features_shm ? 1 : 0);
  w.u64(m.shm_offset);
  w.f32s(m.features);
}

void encode(const drafter_rollback& m, std::string& out) {
  wire_writer w(out, tag(drafter_type::rollback));
  w.i32(m.slot);
  w.i32(m.n_context);
}

void encode(const drafter_end& m, std::string& out) {
  wire_writer w(out, tag(drafter_type::end));
  w.i32(m.slot);
}

drafter_message decode_drafter_message(std::string_view frame) {
  wire_reader r(frame);
  drafter_message out;
  switch (static_cast<drafter_type>(r.type())) {
    case drafter_type::hello: {
      drafter_hello m;
      m.name = r.str("name", 256);
      const uint8_t k = r.u8("dist_kind");
      if (k > static_cast<uint8_t>(draft_dist_kind::dense))
        throw wire_error("'dist_kind' out of range: " + std::to_string(k));
      m.dist_kind = static_cast<draft_dist_kind>(k);
      m.max_sparse = r.i32("max_sparse");
      if (m.max_sparse < 0 || static_cast<uint32_t>(m.max_sparse) > k_max_sparse)
        throw wire_error("'max_sparse' out of range: " + std::to_string(m.max_sparse));
      r.i32s("capture_layers", 64, m.capture_layers);
      out = std::move(m);
      break;
    }
    case drafter_type::proposal: {
      drafter_proposal m;
      m.seq = r.u64("seq");
      const uint32_t n = get_count(r, "slots", k_max_batch);
      m.slots.resize(n);
      for (auto& s : m.slots) {
        s.slot = r.i32("slot");
        s.drafts.resize(get_count(r, "drafts", k_max_chain));
        for (auto& d : s.drafts) {
          d.token = r.i32("token");
          d.confidence = r.f32("confidence");
          r.i32s("sparse_ids", k_max_sparse, d.sparse_ids);
          r.f32s("sparse_probs", k_max_sparse, d.sparse_probs);
          if (d.sparse_ids.size() != d.sparse_probs.size())
            throw wire_error("'sparse_ids' and 'sparse_probs' differ in length");
        }
      }
      out = std::move(m);
      break;
    }
    case drafter_type::reset: {
      drafter_reset m;
      m.shm_name = r.str("shm_name", 255);
      m.shm_bytes = r.u64("shm_bytes");
      out = std::move(m);
      break;
    }
    case drafter_type::begin: {
      drafter_begin m;
      m.slot = r.i32("slot");
      r.i32s("prompt", k_max_prompt_tokens, m.prompt);
      out = std::move(m);
      break;
    }
    case drafter_type::propose: {
      drafter_propose m;
      m.seq = r.u64("seq");
      m.items.resize(get_count(r, "items", k_max_batch));
      for (auto& it : m.items) {
        it.slot = r.i32("slot");
        it.max_drafts = r.i32("max_drafts");
        it.context_len = r.i32("context_len");
        it.rng_seed = r.u64("rng_seed");
        it.rng_round = r.u64("rng_round");
        it.temperature = r.f32("temperature");
        it.top_k = r.i32("top_k");
        it.top_p = r.f32("top_p");
        it.min_p = r.f32("min_p");
      }
      out = std::move(m);
      break;
    }
    case drafter_type::commit: {
      drafter_commit m;
      m.slot = r.i32("slot");
      r.i32s("tokens", k_max_chain + 1, m.tokens);
      m.n_accepted = r.i32("n_accepted");
      m.n_proposed = r.i32("n_proposed");
      m.n_layers = r.i32("n_layers");
      m.n_rows = r.i32("n_rows");
      m.n_embd = r.i64("n_embd");
      const uint8_t shm = r.u8("features_shm");
      if (shm > 1) throw wire_error("'features_shm' out of range: " + std::to_string(shm));
      m.features_shm = shm == 1;
      m.shm_offset = r.u64("shm_offset");
      r.f32s("features", k_max_feature_floats, m.features);
      if (m.n_layers < 0 || m.n_layers > 64 || m.n_rows < 0 || m.n_embd < 0 || m.n_embd > (1 << 20))
        throw wire_error("feature shape out of range");
      const int64_t n = static_cast<int64_t>(m.n_layers) * m.n_rows * m.n_embd;
      if (static_cast<int64_t>(m.features.size()) != (m.features_shm ? 0 : n))
        throw wire_error("'features' has " + std::to_string(m.features.size()) +
                         " floats, not n_layers * n_rows * n_embd");
      out = std::move(m);
      break;
    }
    case drafter_type::rollback: {
      drafter_rollback m;
      m.slot = r.i32("slot");
      m.n_context = r.i32("n_context");
      out = m;
      break;
    }
    case drafter_type::end: out = drafter_end{r.i32("slot")}; break;
    default:
      throw wire_error("unknown drafter message type " + std::to_string(r.type()));
  }
  r.finish();
  return out;
}

}  // namespace dspark::msg
