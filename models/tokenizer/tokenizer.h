// Byte-level BPE tokenizer (GPT-2, Llama 3, Qwen2/2.5/3, SmolLM2), loaded from GGUF metadata or
// from a Hugging Face tokenizer.json (+ tokenizer_config.json).
//
// encode(text):
//   1. added tokens (<|im_start|>, ...) are cut out first, longest match at each position;
//      control ("special") ones only when parse_special is set, user-defined ones always;
//   2. the text between them is pre-tokenized (pre_tokenizer.h) into pieces;
//   3. each piece's bytes are merged by BPE rank (bpe.h).
// decode(ids) concatenates each token's raw bytes and replaces invalid UTF-8 with U+FFFD, as
// Hugging Face's ByteLevel decoder does; utf8_stream.h decodes incrementally during generation.
//
// Encoding and decoding are const and thread-safe.
//
// Example (SmolLM2): encode("Hello 42<|im_end|>") == {19556, 216, 36, 34, 2}: " " stays alone
// because SmolLM2 splits digits off before the GPT-2 regex runs.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "models/tokenizer/bpe.h"
#include "models/tokenizer/pre_tokenizer.h"
#include "models/tokenizer/string_index.h"

namespace dspark {

class gguf_file;

// Kinds of token, numbered as GGUF's tokenizer.ggml.token_type (only ever append).
enum class token_kind : uint8_t {
  normal = 1,        // spelled in the byte-level alphabet, produced by BPE
  unknown = 2,
  control = 3,       // special: <|im_start|>, <|endoftext|>; matched only with parse_special
  user_defined = 4,  // added but not special: always matched whole in the text
  unused = 5,
  byte = 6,
};

// Everything a loader extracts from a file; tokenizer::from_spec validates and indexes it.
struct tokenizer_spec {
  std::vector<std::string> pieces;  // [n_vocab] normal: byte-level spelling; control and
                                    // user_defined: the literal text. "" for unused ids.
  std::vector<token_kind> kinds;    // [n_vocab]
  std::vector<std::pair<std::string, std::string>> merges;  // spelled parts, best rank first
  pre_tokenizer pre;
  bool ignore_merges = false;  // emit a piece that is itself a token without merging (Llama 3)
  int32_t bos_id = -1;         // -1: none
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  int32_t pad_id = -1;
  bool add_bos = false;                // prompts should start with BOS
  std::vector<int32_t> extra_stop_ids;  // end-of-turn tokens named by the file (GGUF eot/eom)
  std::string chat_template;            // Jinja source, "" when the file has none
};

class tokenizer {
 public:
  // Reads tokenizer.ggml.* and tokenizer.chat_template; throws format_error naming the missing
  // or malformed key (only tokenizer.ggml.model == "gpt2" is supported).
  static tokenizer from_gguf(const gguf_file& file);
  // Reads a tokenizer.json and, when the path is not empty, its tokenizer_config.json (BOS, EOS,
  // add_bos_token, chat_template); throws format_error on unreadable, malformed or unsupported
  // content (only BPE models with byte-level pre-tokenization are supported).
  static tokenizer from_hf_files(const std::string& tokenizer_json_path,
                                 const std::string& tokenizer_config_json_path = "");
  // As from_hf_files, from the files' contents (config_json may be empty).
  static tokenizer from_hf_json(std::string_view tokenizer_json, std::string_view config_json = {});
  // Validates and indexes a spec; throws format_error on bad ids, merges or sizes.
  static tokenizer from_spec(tokenizer_spec spec);

  // Token ids of `text` (any bytes; invalid UTF-8 is tokenized byte by byte). add_special:
  // prepend BOS when the model asks for it (add_bos()), like HF's add_special_tokens.
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true,
                              bool add_special = false) const;
  // Text of `ids`, invalid UTF-8 replaced by U+FFFD; skip_special drops control tokens.
  // Throws invalid_argument_error on an id outside [0, n_vocab).
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // The raw bytes token `id` stands for (possibly a fragment of a UTF-8 character).
  const std::string& token_bytes(int32_t id) const;
  // The token as the vocabulary spells it ("Ġthe"); throws invalid_argument_error when out of range.
  const std::string& id_to_piece(int32_t id) const;
  // The id of a piece spelled as in the vocabulary ("Ġthe", "<|im_end|>"), -1 when absent.
  int32_t token_to_id(std::string_view piece) const;

  int32_t n_vocab() const { return int32_t(pieces_.size()); }
  token_kind kind(int32_t id) const;
  bool is_control(int32_t id) const { return kind(id) == token_kind::control; }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t pad_id() const { return pad_id_; }
  bool add_bos() const { return add_bos_; }
  // The token that ends an assistant turn: <|im_end|> / <|eot_id|> when present, else EOS.
  int32_t eot_id() const { return eot_id_; }
  // Every id generation should stop at (EOS, end-of-turn, end-of-text), ascending.
  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }
  bool is_stop(int32_t id) const;
  const std::string& chat_template() const { return chat_template_; }

 private:
  struct added_token {
    std::string text;
    int32_t id;
    bool special;
  };
  void encode_text(std::string_view text, std::vector<int32_t>& out) const;
  void encode_piece(std::string_view bytes, std::vector<int32_t>& out) const;
  const added_token* match_added(std::string_view text, size_t pos, bool parse_special) const;

  std::vector<std::string> pieces_;  // [n_vocab] as spelled in the file
  std::vector<std::string> bytes_;   // [n_vocab] raw bytes
  std::vector<token_kind> kinds_;    // [n_vocab]
  string_index piece_index_;  // pieces_ -> id
  string_index bytes_index_;  // bytes_ -> id, for ignore_merges only
  bpe_merges merges_;
  pre_tokenizer pre_;
  bool ignore_merges_ = false;
  std::vector<added_token> added_;  // longest first
  std::array<std::vector<uint32_t>, 256> added_by_first_byte_;  // indices into added_
  int32_t bos_id_ = -1, eos_id_ = -1, unk_id_ = -1, pad_id_ = -1, eot_id_ = -1;
  bool add_bos_ = false;
  std::vector<int32_t> stop_ids_;
  std::string chat_template_;
};

}  // namespace dspark
