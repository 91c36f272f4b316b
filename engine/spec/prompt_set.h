// Evaluation prompt sets (JSONL, one {"turns": ["first user turn", ...]} per line, as in
// /work/shared/data): the first turn of each line, rendered with the model's chat template.
// Used by `dspark bench-spec` and the end-to-end speculative tests (evaluation only).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dspark {

class tokenizer;

// The first turn of up to `limit` lines of a JSONL prompt file (limit <= 0: all). Throws
// format_error naming the file and line for a missing file or a malformed line.
std::vector<std::string> read_first_turns(const std::string& path, int64_t limit = 0);

// `text` as a single user turn with the tokenizer's chat template and the generation prompt,
// encoded (as `dspark generate --chat`). Throws invalid_argument_error when the model has no
// supported chat template.
std::vector<int32_t> encode_chat_prompt(const tokenizer& tok, const std::string& text);

}  // namespace dspark
