// request_output: stop conditions and streamed text of one request.
#include "engine/spec/request_output.h"

#include <algorithm>
#include <string>

#include "models/tokenizer/tokenizer.h"

namespace dspark {

request_output::request_output(const tokenizer* tok, std::span<const int32_t> stop_ids,
                               const sampling_params& p, int32_t n_ctx, int32_t prompt_len,
                               token_callback on_token)
    : stop_ids_(stop_ids),
      max_tokens_(p.max_tokens),
      n_ctx_(n_ctx),
      prompt_len_(prompt_len),
      on_token_(std::move(on_token)),
      stops_(p.stop) {
  if (tok) text_.emplace(*tok, /*skip_special=*/true);
  res_.stats.prompt_tokens = prompt_len;
  res_.token_ids.reserve(static_cast<size_t>(std::max(0, max_tokens_)));
}

void request_output::emit(int32_t id, std::string_view text) {
  res_.text.append(text);
  if (on_token_) on_token_(id, text);
}

int32_t request_output::remaining() const {
  return stopped_ ? 0 : max_tokens_ - static_cast<int32_t>(res_.token_ids.size());
}

bool request_output::push(int32_t id) {
  if (stopped_) return false;
  ++res_.stats.generated_tokens;
  if (std::find(stop_ids_.begin(), stop_ids_.end(), id) != stop_ids_.end()) {
    res_.finish = finish_reason::stop_id;
    stopped_ = true;
    return false;
  }
  res_.token_ids.push_back(id);
  if (text_) {
    const auto st = stops_.push(text_->push(id));
    emit(id, st.emit);
    if (st.stopped) {
      res_.finish = finish_reason::stop_string;
      stopped_ = true;
      return false;
    }
  } else if (on_token_) {
    on_token_(id, {});
  }
  if (static_cast<int32_t>(res_.token_ids.size()) >= max_tokens_) {
    res_.finish = finish_reason::max_tokens;
    stopped_ = true;
    return false;
  }
  if (prompt_len_ + static_cast<int64_t>(res_.token_ids.size()) > n_ctx_) {
    res_.finish = finish_reason::context_full;
    stopped_ = true;
    return false;
  }
  return true;
}

void request_output::close() {
  if (closed_) return;
  closed_ = true;
  if (text_ && !stops_.stopped()) {
    const auto st = stops_.push(text_->flush());
    std::string tail = st.emit + stops_.flush();
    if (st.stopped) res_.finish = finish_reason::stop_string;
    emit(-1, tail);
  }
}

}  // namespace dspark
