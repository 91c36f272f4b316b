// Tokenizer construction from a spec, encoding and decoding (see tokenizer.h). The file
// loaders live in tokenizer_gguf.cpp and tokenizer_hf.cpp.
#include "models/tokenizer/tokenizer.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "common/error.h"
#include "models/tokenizer/byte_level.h"
#include "models/tokenizer/utf8.h"

namespace dspark {
namespace {

bool is_added_kind(token_kind k) { return k == token_kind::control || k == token_kind::user_defined; }

void check_id(int32_t id, int32_t n_vocab, const char* what) {
  if (id < -1 || id >= n_vocab) {
    throw format_error(std::string("tokenizer: ") + what + " id " + std::to_string(id) +
                       " is outside the vocabulary [0, " + std::to_string(n_vocab) + ")");
  }
}

// Control tokens that end a turn or a document in common chat formats.
constexpr const char* k_stop_names[] = {"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|endoftext|>",
                                        "<|end_of_text|>", "<end_of_turn>", "<|end|>"};

}  // namespace

tokenizer tokenizer::from_spec(tokenizer_spec spec) {
  const size_t n = spec.pieces.size();
  if (n == 0) throw format_error("tokenizer: the vocabulary is empty");
  if (n > size_t(std::numeric_limits<int32_t>::max() / 2)) {
    throw format_error("tokenizer: vocabulary of " + std::to_string(n) + " tokens is too large");
  }
  if (spec.kinds.size() != n) {
    throw format_error("tokenizer: " + std::to_string(spec.kinds.size()) + " token types for " +
                       std::to_string(n) + " tokens");
  }
  tokenizer t;
  const auto n_vocab = int32_t(n);
  check_id(spec.bos_id, n_vocab, "BOS");
  check_id(spec.eos_id, n_vocab, "EOS");
  check_id(spec.unk_id, n_vocab, "unknown-token");
  check_id(spec.pad_id, n_vocab, "padding");
  for (int32_t id : spec.extra_stop_ids) check_id(id, n_vocab, "end-of-turn");

  t.pieces_ = std::move(spec.pieces);
  t.kinds_ = std::move(spec.kinds);
  t.bytes_.resize(n);
  t.piece_index_.reserve(n);
  bool unique_pieces = true;
  for (size_t i = 0; i < n; ++i) {
    const int kind = int(t.kinds_[i]);
    if (kind < 1 || kind > 6) {
      throw format_error("tokenizer: token " + std::to_string(i) + " has type " + std::to_string(kind) +
                         " (valid: 1..6)");
    }
    const std::string& piece = t.pieces_[i];
    // Added tokens are literal text; the rest are byte-level spelled, except characters outside
    // the alphabet, which stand for their own UTF-8 (as in HF's ByteLevel decoder).
    if (is_added_kind(t.kinds_[i]) || !byte_level_unspell(piece, t.bytes_[i])) t.bytes_[i] = piece;
    // The first id wins when a piece is spelled twice.
    if (!piece.empty() && !t.piece_index_.insert(int32_t(i), t.pieces_)) unique_pieces = false;
  }
  if (spec.ignore_merges) {
    // Raw-bytes index for whole-piece lookups; BPE-produced (non-added) tokens take precedence.
    t.bytes_index_.reserve(n);
    for (int pass = 0; pass < 2; ++pass) {
      for (size_t i = 0; i < n; ++i) {
        if (is_added_kind(t.kinds_[i]) == (pass == 1) && !t.bytes_[i].empty()) {
          t.bytes_index_.insert(int32_t(i), t.bytes_);
        }
      }
    }
  }
  for (int b = 0; b < 256; ++b) {
    const int32_t id = t.token_to_id(byte_level_spell(std::string(1, char(b))));
    if (id >= 0 && !is_added_kind(t.kinds_[size_t(id)])) t.merges_.set_byte_token(uint8_t(b), id);
  }
  t.merges_.reserve(spec.merges.size());
  std::string joined;
  int32_t ir = -1;
  for (size_t r = 0; r < spec.merges.size(); ++r) {
    const auto& [a, b] = spec.merges[r];
    joined.assign(a).append(b);
    // Trained vocabularies number merge results in merge order: try the id after the previous
    // result before hashing (it saves a third of the lookups, and this loop dominates loading).
    // (Only when no piece is spelled twice, or token_to_id might name an earlier duplicate.)
    const bool next_in_order = unique_pieces && ir >= 0 && size_t(ir) + 1 < n && t.pieces_[size_t(ir) + 1] == joined;
    ir = next_in_order ? ir + 1 : t.token_to_id(joined);
    const int32_t ia = t.token_to_id(a), ib = t.token_to_id(b);
    if (ia < 0 || ib < 0 || ir < 0) {
      const std::string& missing = ia < 0 ? a : ib < 0 ? b : joined;
      throw format_error("tokenizer: merge " + std::to_string(r) + " ('" + a + "' '" + b +
                         "') uses '" + missing + "', which is not in the vocabulary");
    }
    t.merges_.add(ia, ib, ir);
  }

  for (size_t i = 0; i < n; ++i) {
    if (is_added_kind(t.kinds_[i]) && !t.pieces_[i].empty()) {
      t.added_.push_back({t.pieces_[i], int32_t(i), t.kinds_[i] == token_kind::control});
    }
  }
  std::stable_sort(t.added_.begin(), t.added_.end(),
                   [](const added_token& a, const added_token& b) { return a.text.size() > b.text.size(); });
  for (size_t i = 0; i < t.added_.size(); ++i) {
    t.added_by_first_byte_[uint8_t(t.added_[i].text[0])].push_back(uint32_t(i));
  }

  t.pre_ = std::move(spec.pre);
  t.ignore_merges_ = spec.ignore_merges;
  t.bos_id_ = spec.bos_id;
  t.eos_id_ = spec.eos_id;
  t.unk_id_ = spec.unk_id;
  t.pad_id_ = spec.pad_id;
  t.add_bos_ = spec.add_bos && spec.bos_id >= 0;
  t.chat_template_ = std::move(spec.chat_template);

  t.stop_ids_ = spec.extra_stop_ids;
  if (t.eos_id_ >= 0) t.stop_ids_.push_back(t.eos_id_);
  t.eot_id_ = t.eos_id_;
  for (const char* name : k_stop_names) {
    const int32_t id = t.token_to_id(name);
    if (id >= 0 && t.kinds_[size_t(id)] == token_kind::control) {
      t.stop_ids_.push_back(id);
      const std::string_view s = name;
      if (t.eot_id_ == t.eos_id_ && (s == "<|im_end|>" || s == "<|eot_id|>" || s == "<end_of_turn>")) {
        t.eot_id_ = id;
      }
    }
  }
  if (t.eot_id_ < 0 && !spec.extra_stop_ids.empty()) t.eot_id_ = spec.extra_stop_ids.front();
  std::sort(t.stop_ids_.begin(), t.stop_ids_.end());
  t.stop_ids_.erase(std::unique(t.stop_ids_.begin(), t.stop_ids_.end()), t.stop_ids_.end());
  return t;
}

const tokenizer::added_token* tokenizer::match_added(std::string_view text, size_t pos,
                                                     bool parse_special) const {
  for (uint32_t i : added_by_first_byte_[uint8_t(text[pos])]) {
    const added_token& a = added_[i];
    if (a.special && !parse_special) continue;
    if (text.size() - pos >= a.text.size() && std::memcmp(text.data() + pos, a.text.data(), a.text.size()) == 0) {
      return &a;
    }
  }
  return nullptr;
}

void tokenizer::encode_piece(std::string_view bytes, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    const int32_t id = bytes_index_.find(bytes, bytes_);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  merges_.encode(bytes, out);
}

void tokenizer::encode_text(std::string_view text, std::vector<int32_t>& out) const {
  thread_local std::vector<text_span> pieces;
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    // A run of valid UTF-8 goes through the pre-tokenizer; the regexes must not see anything else.
    const size_t run = i;
    utf8_step s{utf8_status::valid, 0};
    while (i < text.size() && (s = utf8_next(p + i, text.size() - i)).status == utf8_status::valid) {
      i += s.length;
    }
    if (i > run) {
      const std::string_view valid = text.substr(run, i - run);
      pieces.clear();
      pre_.split(valid, pieces);
      for (const text_span& sp : pieces) encode_piece(valid.substr(sp.begin, sp.end - sp.begin), out);
    }
    if (i < text.size()) {  // an invalid subpart is a piece of its own
      encode_piece(text.substr(i, s.length), out);
      i += s.length;
    }
  }
}

std::vector<int32_t> tokenizer::encode(std::string_view text, bool parse_special, bool add_special) const {
  if (text.size() > std::numeric_limits<uint32_t>::max()) {
    throw invalid_argument_error("tokenizer: text of " + std::to_string(text.size()) +
                                 " bytes is too long to encode (limit 4 GiB)");
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special && add_bos_) out.push_back(bos_id_);
  size_t seg = 0;
  for (size_t pos = 0; pos < text.size();) {
    const added_token* a = added_by_first_byte_[uint8_t(text[pos])].empty()
                               ? nullptr
                               : match_added(text, pos, parse_special);
    if (!a) {
      ++pos;
      continue;
    }
    encode_text(text.substr(seg, pos - seg), out);
    out.push_back(a->id);
    pos += a->text.size();
    seg = pos;
  }
  encode_text(text.substr(seg), out);
  return out;
}

token_kind tokenizer::kind(int32_t id) const {
  if (id < 0 || id >= n_vocab()) {
    throw invalid_argument_error("tokenizer: token id " + std::to_string(id) + " is outside [0, " +
                                 std::to_string(n_vocab()) + ")");
  }
  return kinds_[size_t(id)];
}

const std::string& tokenizer::token_bytes(int32_t id) const {
  kind(id);  // range check
  return bytes_[size_t(id)];
}

const std::string& tokenizer::id_to_piece(int32_t id) const {
  kind(id);  // range check
  return pieces_[size_t(id)];
}

int32_t tokenizer::token_to_id(std::string_view piece) const { return piece_index_.find(piece, pieces_); }

bool tokenizer::is_stop(int32_t id) const {
  return std::binary_search(stop_ids_.begin(), stop_ids_.end(), id);
}

std::string tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string raw;
  for (int32_t id : ids) {
    if (skip_special && kind(id) == token_kind::control) continue;
    raw += token_bytes(id);
  }
  std::string out;
  out.reserve(raw.size());
  utf8_append_lossy(raw, out);
  return out;
}

}  // namespace dspark
