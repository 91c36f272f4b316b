// draft_batch: preallocated per-slot draft chains with their draw distributions.
#include "engine/spec/draft_batch.h"

#include <algorithm>
#include <string>

#include "common/error.h"

namespace dspark {

float draft_dist::prob(int32_t t) const {
  switch (kind) {
    case draft_dist_kind::one_hot:
      return t == token ? 1.0f : 0.0f;
    case draft_dist_kind::dense:
      return (t >= 0 && static_cast<size_t>(t) < probs.size()) ? probs[static_cast<size_t>(t)] : 0.0f;
    case draft_dist_kind::sparse: {
      auto it = std::lower_bound(ids.begin(), ids.end(), t);
      if (it == ids.end() || *it != t) return 0.0f;
      return probs[static_cast<size_t>(it - ids.begin())];
    }
  }
  return 0.0f;
}

draft_batch::draft_batch(const draft_batch_params& p) : p_(p) {
  if (p.max_slots < 1 || p.max_slots > 65536)
    throw invalid_argument_error("draft_batch: max_slots " + std::to_string(p.max_slots) +
                                 " out of range [1, 65536]");
  if (p.gamma_max < 1 || p.gamma_max > 256)
    throw invalid_argument_error("draft_batch: gamma_max " + std::to_string(p.gamma_max) +
                                 " out of range [1, 256]");
  if (p.n_vocab < 1)
    throw invalid_argument_error("draft_batch: n_vocab " + std::to_string(p.n_vocab) + " must be >= 1");
  if (p.kind == draft_dist_kind::sparse && (p.max_sparse < 1 || p.max_sparse > p.n_vocab))
    throw invalid_argument_error("draft_batch: max_sparse " + std::to_string(p.max_sparse) +
                                 " out of range [1, n_vocab] for sparse distributions");
  const size_t n_pos = static_cast<size_t>(p.max_slots) * static_cast<size_t>(p.gamma_max);
  length_.assign(static_cast<size_t>(p.max_slots), 0);
  tokens_.assign(n_pos, -1);
  confidence_.assign(n_pos, 1.0f);
  if (p.kind == draft_dist_kind::dense) dense_.assign(n_pos * static_cast<size_t>(p.n_vocab), 0.0f);
  if (p.kind == draft_dist_kind::sparse) {
    sparse_ids_.assign(n_pos * static_cast<size_t>(p.max_sparse), 0);
    sparse_p_.assign(n_pos * static_cast<size_t>(p.max_sparse), 0.0f);
    sparse_n_.assign(n_pos, 0);
  }
}

int32_t draft_batch::checked(int32_t slot) const {
  if (slot < 0 || slot >= p_.max_slots)
    throw invalid_argument_error("draft_batch: slot " + std::to_string(slot) + " out of range [0, " +
                                 std::to_string(p_.max_slots) + ")");
  return slot;
}

void draft_batch::clear() { std::fill(length_.begin(), length_.end(), 0); }

void draft_batch::clear(int32_t slot) { length_[checked(slot)] = 0; }

std::span<const int32_t> draft_batch::tokens(int32_t slot) const {
  return {tokens_.data() + pos_index(checked(slot), 0), static_cast<size_t>(length_[slot])};
}

std::span<const float> draft_batch::confidences(int32_t slot) const {
  return {confidence_.data() + pos_index(checked(slot), 0), static_cast<size_t>(length_[slot])};
}

std::span<float> draft_batch::mutable_confidences(int32_t slot) {
  return {confidence_.data() + pos_index(checked(slot), 0), static_cast<size_t>(length_[slot])};
}

draft_dist draft_batch::dist(int32_t slot, int32_t k) const {
  if (k < 0 || k >= length_[checked(slot)])
    throw invalid_argument_error("draft_batch: draft " + std::to_string(k) + " out of range [0, " +
                                 std::to_string(length_[slot]) + ")");
  const size_t i = pos_index(slot, k);
  draft_dist d;
  d.kind = p_.kind;
  d.token = tokens_[i];
  if (p_.kind == draft_dist_kind::dense) {
    d.probs = {dense_.data() + i * static_cast<size_t>(p_.n_vocab), static_cast<size_t>(p_.n_vocab)};
  } else if (p_.kind == draft_dist_kind::sparse) {
    const size_t off = i * static_cast<size_t>(p_.max_sparse);
    const size_t n = static_cast<size_t>(sparse_n_[i]);
    d.ids = {sparse_ids_.data() + off, n};
    d.probs = {sparse_p_.data() + off, n};
  }
  return d;
}

int32_t draft_batch::begin_push(int32_t slot, int32_t token, float confidence) {
  const int32_t k = length_[checked(slot)];
  if (k >= p_.gamma_max)
    throw invalid_argument_error("draft_batch: slot " + std::to_string(slot) + " already holds gamma_max = " +
                                 std::to_string(p_.gamma_max) + " drafts");
  if (token < 0 || token >= p_.n_vocab)
    throw invalid_argument_error("draft_batch: token " + std::to_string(token) + " out of range [0, " +
                                 std::to_string(p_.n_vocab) + ")");
  if (!(confidence >= 0.0f && confidence <= 1.0f))
    throw invalid_argument_error("draft_batch: confidence " + std::to_string(confidence) +
                                 " out of range [0, 1]");
  const size_t i = pos_index(slot, k);
  tokens_[i] = token;
  confidence_[i] = confidence;
  return k;
}

void draft_batch::push_one_hot(int32_t slot, int32_t token, float confidence) {
  const int32_t k = begin_push(slot, token, confidence);
  const size_t i = pos_index(slot, k);
  if (p_.kind == draft_dist_kind::dense) {
    float* row = dense_.data() + i * static_cast<size_t>(p_.n_vocab);
    std::fill(row, row + p_.n_vocab, 0.0f);
    row[token] = 1.0f;
  } else if (p_.kind == draft_dist_kind::sparse) {
    const size_t off = i * static_cast<size_t>(p_.max_sparse);
    sparse_ids_[off] = token;
    sparse_p_[off] = 1.0f;
    sparse_n_[i] = 1;
  }
  length_[slot] = k + 1;
}

std::span<float> draft_batch::next_dense_row(int32_t slot) {
  if (p_.kind != draft_dist_kind::dense)
    throw invalid_argument_error("draft_batch: next_dense_row needs kind == dense");
  const int32_t k = length_[checked(slot)];
  if (k >= p_.gamma_max)
    throw invalid_argument_error("draft_batch: slot " + std::to_string(slot) + " is full");
  return {dense_.data() + pos_index(slot, k) * static_cast<size_t>(p_.n_vocab),
          static_cast<size_t>(p_.n_vocab)};
}

void draft_batch::push_dense(int32_t slot, int32_t token, float confidence) {
  if (p_.kind != draft_dist_kind::dense)
    throw invalid_argument_error("draft_batch: push_dense needs kind == dense");
  const int32_t k = begin_push(slot, token, confidence);
  length_[slot] = k + 1;
}

void draft_batch::push_sparse(int32_t slot, int32_t token, std::span<const int32_t> ids,
                              std::span<const float> probs, float confidence) {
  if (p_.kind != draft_dist_kind::sparse)
    throw invalid_argument_error("draft_batch: push_sparse needs kind == sparse");
  if (ids.size() != probs.size() || ids.empty() || ids.size() > static_cast<size_t>(p_.max_sparse))
    throw invalid_argument_error("draft_batch: sparse distribution of " + std::to_string(ids.size()) +
                                 " ids and " + std::to_string(probs.size()) +
                                 " probs; need equal sizes in [1, " + std::to_string(p_.max_sparse) + "]");
  const int32_t k = begin_push(slot, token, confidence);
  const size_t i = pos_index(slot, k);
  const size_t off = i * static_cast<size_t>(p_.max_sparse);
  int32_t* out_ids = sparse_ids_.data() + off;
  float* out_p = sparse_p_.data() + off;
  // Insertion sort by id: lists are short, and sorting in place allocates nothing.
  size_t n = 0;
  for (size_t j = 0; j < ids.size(); ++j) {
    if (ids[j] < 0 || ids[j] >= p_.n_vocab)
      throw invalid_argument_error("draft_batch: sparse id " + std::to_string(ids[j]) + " out of range");
    size_t at = n;
    while (at > 0 && out_ids[at - 1] > ids[j]) {
      out_ids[at] = out_ids[at - 1];
      out_p[at] = out_p[at - 1];
      --at;
    }
    if (at > 0 && out_ids[at - 1] == ids[j])
      throw invalid_argument_error("draft_batch: sparse id " + std::to_string(ids[j]) + " repeated");
    out_ids[at] = ids[j];
    out_p[at] = probs[j];
    ++n;
  }
  sparse_n_[i] = static_cast<int32_t>(n);
  length_[slot] = k + 1;
}

void draft_batch::truncate(int32_t slot, int32_t n) {
  if (n < 0 || n > length_[checked(slot)])
    throw invalid_argument_error("draft_batch: truncate to " + std::to_string(n) + " out of range [0, " +
                                 std::to_string(length_[slot]) + "]");
  length_[slot] = n;
}

}  // namespace dspark
