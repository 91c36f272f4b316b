// Streaming UTF-8 assembly (see utf8_stream.h).
#include "models/tokenizer/utf8_stream.h"

#include "models/tokenizer/tokenizer.h"
#include "models/tokenizer/utf8.h"

namespace dspark {

std::string utf8_stream::push(std::string_view bytes) {
  pending_.append(bytes);
  const auto* p = reinterpret_cast<const uint8_t*>(pending_.data());
  const size_t n = pending_.size();
  // Find where a trailing, still completable sequence starts; everything before it is final.
  size_t i = 0, keep_from = n;
  while (i < n) {
    const utf8_step s = utf8_next(p + i, n - i);
    if (s.status == utf8_status::truncated) {
      keep_from = i;
      break;
    }
    i += s.length;
  }
  std::string out;
  utf8_append_lossy(std::string_view(pending_).substr(0, keep_from), out);
  pending_.erase(0, keep_from);
  return out;
}

std::string utf8_stream::flush() {
  std::string out;
  utf8_append_lossy(pending_, out);
  pending_.clear();
  return out;
}

std::string token_text_stream::push(int32_t id) {
  if (skip_special_ && tok_->is_control(id)) return {};
  return bytes_.push(tok_->token_bytes(id));
}

}  // namespace dspark
