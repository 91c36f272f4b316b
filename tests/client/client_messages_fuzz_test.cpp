// Random mutations of valid frames through both decoders: each call returns a value or an
// error, never crashes, hangs or leaks (this test also runs under ASan + UBSan, `make test-asan`).
// Whatever decodes must re-encode to a frame that decodes to the same value.
#include <gtest/gtest.h>

#include <random>

#include "messages/client_messages.h"

namespace dm = dspark::messages;

namespace {

const std::vector<std::string>& seeds() {
  static const std::vector<std::string> k = {
      R"({"v":1,"type":"submit","id":"a1","messages":[{"role":"user","content":"Hi"}],"params":{"max_tokens":8,"temperature":0.7,"top_k":40,"top_p":0.9,"min_p":0.05,"seed":42,"stop":["\n"],"ignore_eos":false},"stream":true})",
      R"({"v":1,"type":"submit","id":"b","prompt_tokens":[1,2,3],"stream":false})",
      R"({"v":1,"type":"cancel","id":"a1"})",
      R"({"v":1,"type":"done","id":"a1","text":"Hello","token_ids":[19556],"finish_reason":"length","stats":{"prompt_tokens":25,"completion_tokens":1,"ttft_s":0.1,"tpot_s":0,"tokens_per_s":10,"acceptance_length":1,"verify_steps":1,"draft_tokens_proposed":0,"draft_tokens_accepted":0}})",
      R"({"v":1,"type":"models","models":[{"id":"m","n_ctx":8192,"draft":""}]})",
      R"({"v":1,"type":"error","id":"x","code":"overloaded","message":"full"})"};
  return k;
}

// Bytes that matter to JSON plus a few that break UTF-8 and numbers.
char interesting_byte(std::mt19937& rng) {
  static const char k[] = {'{', '}', '[', ']', '"', '\\', ',', ':', '0', '9', '-', 'e', '.', ' ', 'u',
                           'n', 't', '\x00', '\x7f', '\x80', '\xc3', '\xed', '\xf4', '\xff'};
  return k[rng() % sizeof k];
}

std::string mutate(std::string s, std::mt19937& rng) {
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int i = 0; i < edits && !s.empty(); ++i) {
    const size_t pos = rng() % s.size();
    switch (rng() % 7) {
      case 0: s[pos] = interesting_byte(rng); break;
      case 1: s.insert(pos, 1, interesting_byte(rng)); break;
      case 2: s.erase(pos, 1 + rng() % 8); break;
      case 3: s.resize(pos); break;                                               // truncation
      case 4: s.insert(pos, "99999999999999999999999999e999"); break;             // huge number
      case 5: s.insert(pos, std::string(1 + rng() % 64, '[')); break;             // nesting
      case 6: s.insert(pos, s.substr(rng() % s.size(), rng() % 32)); break;        // duplicate a slice
    }
  }
  return s;
}

template <class Decode>
void check_stable(const std::string& frame, Decode decode) {
  auto r = decode(frame);
  if (!r.ok()) {
    EXPECT_FALSE(r.error().message.empty());
    return;
  }
  auto again = decode(dm::encode(r.value()));
  ASSERT_TRUE(again.ok()) << again.error().message << " re-encoding " << frame;
  EXPECT_EQ(again.value(), r.value());
}

}  // namespace

TEST(ClientMessagesFuzz, RandomMutationsNeverCrash) {
  std::mt19937 rng(1234);
  int decoded = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::string frame = mutate(seeds()[rng() % seeds().size()], rng);
    auto c = dm::decode_client_message(frame);
    decoded += c.ok();
    check_stable(frame, [](const std::string& f) { return dm::decode_client_message(f); });
    check_stable(frame, [](const std::string& f) { return dm::decode_server_message(f); });
  }
  EXPECT_GT(decoded, 0);  // the mutations keep some frames valid, so re-encoding is exercised
}

TEST(ClientMessagesFuzz, EveryTruncationIsAnError) {
  for (const auto& s : seeds())
    for (size_t n = 0; n < s.size(); ++n) {
      EXPECT_FALSE(dm::decode_client_message(s.substr(0, n)).ok());
      EXPECT_FALSE(dm::decode_server_message(s.substr(0, n)).ok());
    }
}

TEST(ClientMessagesFuzz, RandomBytesNeverCrash) {
  std::mt19937 rng(99);
  for (int i = 0; i < 5000; ++i) {
    std::string s(rng() % 200, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    EXPECT_FALSE(dm::decode_client_message(s).ok());
  }
}

TEST(ClientMessagesFuzz, DeepNestingInsideAFieldIsRefused) {
  for (int depth : {31, 33, 1000, 200000}) {
    std::string v = std::string(depth, '[') + std::string(depth, ']');
    auto r = dm::decode_client_message(R"({"v":1,"type":"cancel","id":"a","x":)" + v + "}");
    EXPECT_EQ(r.ok(), depth + 1 <= dm::k_max_json_depth) << depth;
  }
}
