// stream_chat: sends one chat message to a DSpark server and prints the answer as it streams,
// then the request's stats.
//
//   stream_chat [--endpoint tcp://127.0.0.1:5555] [--server-key Z85] [--max-tokens N]
//               [--temperature T] "your message"
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "sdk/cpp/dspark_client.h"

namespace dc = dspark::client;
namespace dm = dspark::messages;

int main(int argc, char** argv) {
  dc::client_options options;
  dm::sampling_params params;
  params.max_tokens = 128;
  std::string message;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--endpoint" && has_value) options.endpoint = argv[++i];
    else if (a == "--server-key" && has_value) options.server_public_key = argv[++i];
    else if (a == "--max-tokens" && has_value) params.max_tokens = std::atoll(argv[++i]);
    else if (a == "--temperature" && has_value) params.temperature = std::atof(argv[++i]);
    else if (!a.starts_with("--") && message.empty()) message = a;
    else {
      std::fprintf(stderr, "usage: stream_chat [--endpoint E] [--server-key K] [--max-tokens N] [--temperature T] MESSAGE\n");
      return 2;
    }
  }
  if (message.empty()) message = "Write a haiku about the sea.";
  try {
    dc::client client(options);
    dc::request r = client.submit(dc::chat(message), params);
    for (;;) {
      dc::stream_event ev = r.next();
      if (auto* t = std::get_if<dm::tokens_reply>(&ev)) {
        std::cout << t->text << std::flush;
      } else if (auto* d = std::get_if<dm::done_reply>(&ev)) {
        std::printf("\n[%s] %lld prompt + %lld completion tokens, ttft %.3f s, %.1f tok/s, acceptance %.2f\n",
                    std::string(dm::to_string(d->reason)).c_str(), static_cast<long long>(d->stats.prompt_tokens),
                    static_cast<long long>(d->stats.completion_tokens), d->stats.ttft_s, d->stats.tokens_per_s,
                    d->stats.acceptance_length);
        return 0;
      } else if (auto* e = std::get_if<dm::error_reply>(&ev)) {
        std::fprintf(stderr, "\nserver error %s: %s\n", std::string(dm::to_string(e->code)).c_str(), e->message.c_str());
        return 1;
      }
    }
  } catch (const dc::client_error& e) {
    std::fprintf(stderr, "stream_chat: %s\n", e.what());
    return 1;
  }
}
