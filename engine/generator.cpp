// generate(): chunked prefill, decode loop, stop conditions, timing.
#include "engine/generator.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>

#include "common/error.h"
#include "engine/model.h"
#include "engine/stop_strings.h"
#include "models/tokenizer/tokenizer.h"
#include "models/tokenizer/utf8_stream.h"

namespace dspark {

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// Frees the sequence however generate() exits.
struct sequence_guard {
  backend& be;
  int32_t seq;
  ~sequence_guard() { be.free_sequence(seq); }
};

// The last row of a forward: its logits, or (greedy) only its argmax id.
struct last_row {
  const float* logits = nullptr;
  int32_t argmax = -1;
};

// One forward of `tokens` on `seq`; returns the last row (empty with no logit rows). A greedy
// caller asks the backend for the argmax id alone, so a GPU copies back 4 bytes, not the row.
last_row run(backend& be, int32_t seq, std::span<const int32_t> tokens, int32_t n_logits, bool greedy) {
  const batch_sequence s{seq, static_cast<int32_t>(tokens.size()), n_logits};
  forward_batch b;
  b.tokens = tokens;
  b.seqs = std::span<const batch_sequence>(&s, 1);
  b.outputs = greedy ? row_outputs::argmax : row_outputs::logits;
  const forward_output out = be.forward(b);
  if (out.status != forward_status::ok)
    throw invalid_argument_error("generate: the KV cache has no room for the sequence");
  if (n_logits == 0) return {};
  if (greedy) return {nullptr, out.argmax[out.n_rows - 1]};
  return {out.logits + (out.n_rows - 1) * be.limits().n_vocab, -1};
}

void check_request(const backend& be, const tokenizer* tok, std::span<const int32_t> prompt,
                   const sampling_params& params) {
  validate(params);
  if (prompt.empty()) throw invalid_argument_error("generate: the prompt is empty");
  const int32_t n_ctx = be.limits().n_ctx;
  if (static_cast<int64_t>(prompt.size()) >= n_ctx)
    throw invalid_argument_error("generate: the prompt has " + std::to_string(prompt.size()) +
                                 " tokens but the context holds " + std::to_string(n_ctx) +
                                 " (at most " + std::to_string(n_ctx - 1) +
                                 " prompt tokens leave room to generate)");
  if (!params.stop.empty() && tok == nullptr)
    throw invalid_argument_error("generate: stop strings need a tokenizer");
}

}  // namespace

std::string_view finish_reason_name(finish_reason r) {
  switch (r) {
    case finish_reason::stop_id: return "stop";
    case finish_reason::stop_string: return "stop_string";
    case finish_reason::max_tokens: return "length";
    case finish_reason::context_full: return "context_full";
  }
  return "unknown";
}

generation_result generate(backend& be, const tokenizer* tok, std::span<const int32_t> stop_ids,
                           std::span<const int32_t> prompt, const sampling_params& params,
                           const token_callback& on_token, const generate_options& opt) {
  const auto t_start = clock_type::now();
  check_request(be, tok, prompt, params);
  sampler smp(be.limits().n_vocab, params);
  const std::optional<int32_t> seq = be.open_sequence();
  if (!seq) throw invalid_argument_error("generate: no free sequence in the backend");
  sequence_guard guard{be, *seq};

  generation_result res;
  res.stats.prompt_tokens = static_cast<int32_t>(prompt.size());
  const int32_t chunk = std::max(1, std::min(opt.prefill_chunk, be.limits().max_tokens_per_step));
  last_row row;
  for (size_t i = 0; i < prompt.size(); i += chunk) {
    const size_t n = std::min(prompt.size() - i, static_cast<size_t>(chunk));
    row = run(be, *seq, prompt.subspan(i, n), i + n == prompt.size() ? 1 : 0, smp.greedy());
  }
  res.stats.prefill_s = seconds_since(t_start);

  std::optional<token_text_stream> text_stream;
  if (tok) text_stream.emplace(*tok, /*skip_special=*/true);
  stop_string_matcher stops(params.stop);
  auto emit = [&](int32_t id, std::string_view text) {
    res.text.append(text);
    if (on_token) on_token(id, text);
  };

  const int32_t n_ctx = be.limits().n_ctx;
  int32_t n_decode = 0;
  clock_type::time_point t_first;
  for (uint64_t step = 0;; ++step) {
    // Greedy: the backend's argmax, the same rule as sampler::sample (lowest id on ties).
    const int32_t id = smp.greedy() ? row.argmax : smp.sample(row.logits, step);
    ++res.stats.generated_tokens;
    if (step == 0) {
      t_first = clock_type::now();
      res.stats.ttft_s = seconds_since(t_start);
    }
    if (!params.ignore_eos && std::find(stop_ids.begin(), stop_ids.end(), id) != stop_ids.end()) {
      res.finish = finish_reason::stop_id;
      break;
    }
    res.token_ids.push_back(id);
    if (text_stream) {
      const auto st = stops.push(text_stream->push(id));
      emit(id, st.emit);
      if (st.stopped) {
        res.finish = finish_reason::stop_string;
        break;
      }
    } else if (on_token) {
      on_token(id, {});
    }
    if (static_cast<int32_t>(res.token_ids.size()) >= params.max_tokens) {
      res.finish = finish_reason::max_tokens;
      break;
    }
    if (be.sequence_length(*seq) + 1 > n_ctx) {
      res.finish = finish_reason::context_full;
      break;
    }
    row = run(be, *seq, std::span<const int32_t>(&res.token_ids.back(), 1), 1, smp.greedy());
    ++n_decode;
  }
  if (text_stream && !stops.stopped()) {
    const auto st = stops.push(text_stream->flush());
    std::string tail = st.emit + stops.flush();
    if (st.stopped) res.finish = finish_reason::stop_string;
    emit(-1, tail);
  }

  auto& s = res.stats;
  s.decode_s = seconds_since(t_first);
  s.prefill_tok_s = s.prefill_s > 0 ? s.prompt_tokens / s.prefill_s : 0;
  s.decode_tok_s = s.decode_s > 0 && n_decode > 0 ? n_decode / s.decode_s : 0;
  return res;
}

generation_result generate(const model& m, backend& be, std::span<const int32_t> prompt,
                           const sampling_params& params, const token_callback& on_token,
                           const generate_options& opt) {
  return generate(be, m.has_tokenizer() ? &m.tokenizer() : nullptr, m.stop_ids(), prompt, params,
                  on_token, opt);
}

}  // namespace dspark
