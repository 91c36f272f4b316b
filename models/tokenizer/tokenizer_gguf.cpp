// tokenizer::from_gguf: the tokenizer.ggml.* metadata keys as llama.cpp's converter writes them.
//
//   tokenizer.ggml.model       "gpt2" (byte-level BPE); other models are rejected
//   tokenizer.ggml.pre         pre-tokenizer preset name (pre_tokenizer.h); "gpt2" when absent
//   tokenizer.ggml.tokens      [n_vocab] strings, byte-level spelled
//   tokenizer.ggml.token_type  [n_vocab] token_kind values; all normal when absent
//   tokenizer.ggml.merges      "left right" strings, best first
//   tokenizer.ggml.{bos,eos,unknown,padding,eot,eom}_token_id, tokenizer.ggml.add_bos_token,
//   tokenizer.chat_template
#include <string>

#include "common/error.h"
#include "models/formats/gguf.h"
#include "models/tokenizer/tokenizer.h"

namespace dspark {
namespace {

const gguf_value& require(const gguf_file& f, const char* key, gguf_type type, gguf_type element) {
  const gguf_value* v = f.find(key);
  if (!v) throw format_error("tokenizer: GGUF key " + std::string(key) + " is missing in " + f.path());
  if (v->type != type || (type == gguf_type::array && v->array_type != element)) {
    throw format_error("tokenizer: GGUF key " + std::string(key) + " has the wrong type in " + f.path());
  }
  return *v;
}

bool is_integer_type(gguf_type t) {
  switch (t) {
    case gguf_type::u8: case gguf_type::i8: case gguf_type::u16: case gguf_type::i16:
    case gguf_type::u32: case gguf_type::i32: case gguf_type::u64: case gguf_type::i64:
      return true;
    default:
      return false;
  }
}

// An optional token id; absent gives -1. Ids outside the vocabulary are an error for the ids
// that matter (BOS, EOS) and ignored for the rest, which some converters fill with junk.
int32_t optional_id(const gguf_file& f, const char* key, size_t n_vocab, bool strict) {
  const std::optional<int64_t> v = f.get_int(key);
  if (!v) return -1;
  if (*v < 0 || uint64_t(*v) >= n_vocab) {
    if (!strict) return -1;
    throw format_error("tokenizer: GGUF key " + std::string(key) + " = " + std::to_string(*v) +
                       " is outside the vocabulary [0, " + std::to_string(n_vocab) + ")");
  }
  return int32_t(*v);
}

}  // namespace

tokenizer tokenizer::from_gguf(const gguf_file& f) {
  const std::string model = require(f, "tokenizer.ggml.model", gguf_type::string, gguf_type::u8).string;
  if (model != "gpt2") {
    throw format_error("tokenizer: tokenizer.ggml.model '" + model + "' in " + f.path() +
                       " is not supported (only byte-level BPE, 'gpt2')");
  }
  tokenizer_spec spec;
  const std::string pre = f.get_string("tokenizer.ggml.pre").value_or("gpt2");
  spec.pre = pre_tokenizer::from_gguf_name(pre);
  spec.ignore_merges = pre_tokenizer::gguf_name_ignores_merges(pre);

  spec.pieces = require(f, "tokenizer.ggml.tokens", gguf_type::array, gguf_type::string).strings;
  const size_t n = spec.pieces.size();
  if (const gguf_value* types = f.find("tokenizer.ggml.token_type")) {
    if (types->type != gguf_type::array || !is_integer_type(types->array_type)) {
      throw format_error("tokenizer: GGUF key tokenizer.ggml.token_type is not an integer array in " + f.path());
    }
    if (types->integers.size() != n) {
      throw format_error("tokenizer: tokenizer.ggml.token_type has " + std::to_string(types->integers.size()) +
                         " entries for " + std::to_string(n) + " tokens in " + f.path());
    }
    spec.kinds.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      const int64_t k = types->integers[i];
      if (k < 1 || k > 6) {
        throw format_error("tokenizer: token " + std::to_string(i) + " has type " + std::to_string(k) +
                           " (valid: 1..6) in " + f.path());
      }
      spec.kinds.push_back(token_kind(k));
    }
  } else {
    spec.kinds.assign(n, token_kind::normal);
  }

  const auto& merges = require(f, "tokenizer.ggml.merges", gguf_type::array, gguf_type::string).strings;
  spec.merges.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const std::string& m = merges[r];
    const size_t sp = m.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == m.size() || m.find(' ', sp + 1) != std::string::npos) {
      throw format_error("tokenizer: merge " + std::to_string(r) + " '" + m +
                         "' is not two tokens separated by one space in " + f.path());
    }
    spec.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
  }

  spec.bos_id = optional_id(f, "tokenizer.ggml.bos_token_id", n, true);
  spec.eos_id = optional_id(f, "tokenizer.ggml.eos_token_id", n, true);
  spec.unk_id = optional_id(f, "tokenizer.ggml.unknown_token_id", n, false);
  spec.pad_id = optional_id(f, "tokenizer.ggml.padding_token_id", n, false);
  for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    const int32_t id = optional_id(f, key, n, false);
    if (id >= 0) spec.extra_stop_ids.push_back(id);
  }
  spec.add_bos = f.get_bool("tokenizer.ggml.add_bos_token").value_or(false);
  spec.chat_template = f.get_string("tokenizer.chat_template").value_or("");
  return from_spec(std::move(spec));
}

}  // namespace dspark
