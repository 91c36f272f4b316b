// CPU backend throughput: prefill tok/s of a 512-token prompt and decode tok/s of 128 greedy
// tokens after a short prompt, per thread count, median of N runs, as a markdown table.
//
//   bench_cpu --model PATH [--threads-list 1,2] [--runs 3] [--precision q8|f32]
//
// Prefill runs in chunks of 256 tokens (the generator's default); decode times only the 128
// single-token forwards plus the argmax, not the prompt.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

#include "engine/cpu_backend.h"
#include "engine/model.h"
#include "kernels/cpu/ops.h"
#include "models/tokenizer/tokenizer.h"

namespace {

using namespace dspark;
using clock_type = std::chrono::steady_clock;

struct bench_args {
  std::string model;
  std::vector<int> threads = {1, 2};
  int runs = 3;
  matmul_precision precision = matmul_precision::q8_activations;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "bench_cpu: %s\nusage: bench_cpu --model PATH [--threads-list 1,2] [--runs N] "
               "[--precision q8|f32]\n", why.c_str());
  std::exit(2);
}

bench_args parse(int argc, char** argv) {
  bench_args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) usage("option " + k + " needs a value");
    const std::string v = argv[++i];
    if (k == "--model") {
      a.model = v;
    } else if (k == "--runs") {
      a.runs = std::atoi(v.c_str());
      if (a.runs < 1) usage("--runs must be >= 1");
    } else if (k == "--threads-list") {
      a.threads.clear();
      std::stringstream ss(v);
      for (std::string t; std::getline(ss, t, ',');) {
        const int n = std::atoi(t.c_str());
        if (n < 1) usage("--threads-list needs positive integers, got '" + v + "'");
        a.threads.push_back(n);
      }
    } else if (k == "--precision") {
      if (v != "q8" && v != "f32") usage("--precision must be q8 or f32");
      a.precision = v == "f32" ? matmul_precision::f32_activations : matmul_precision::q8_activations;
    } else {
      usage("unknown option " + k);
    }
  }
  if (a.model.empty()) usage("--model is required");
  return a;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Seconds to run `tokens` through a fresh sequence in chunks of `chunk`; the sequence is
// returned open (decode continues on it).
double prefill(backend& be, int32_t seq, const std::vector<int32_t>& tokens, int32_t chunk) {
  const auto t0 = clock_type::now();
  for (size_t i = 0; i < tokens.size(); i += chunk) {
    const int32_t n = static_cast<int32_t>(std::min(tokens.size() - i, static_cast<size_t>(chunk)));
    const batch_sequence s{seq, n, i + n == tokens.size() ? 1 : 0};
    be.forward({std::span<const int32_t>(tokens.data() + i, n), {&s, 1}, {}});
  }
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

struct result {
  int threads;
  double prefill_tok_s, decode_tok_s;
};

result bench_threads(const model& m, const bench_args& a, int threads, const std::vector<int32_t>& long_prompt,
                     const std::vector<int32_t>& short_prompt) {
  cpu_backend_options o;
  o.n_threads = threads;
  o.n_ctx = 1024;
  o.precision = a.precision;
  cpu_backend be(m.config(), m.weights(), o);
  const int n_decode = 128;
  std::vector<double> pre, dec;
  for (int r = 0; r < a.runs; ++r) {
    int32_t seq = *be.open_sequence();
    pre.push_back(long_prompt.size() / prefill(be, seq, long_prompt, 256));
    be.free_sequence(seq);

    seq = *be.open_sequence();
    prefill(be, seq, short_prompt, 256);
    int32_t tok = short_prompt.back();
    const auto t0 = clock_type::now();
    for (int i = 0; i < n_decode; ++i) {
      const batch_sequence s{seq, 1, 1};
      const forward_output out = be.forward({std::span<const int32_t>(&tok, 1), {&s, 1}, {}});
      tok = static_cast<int32_t>(argmax(out.logits, m.config().n_vocab));
    }
    dec.push_back(n_decode / std::chrono::duration<double>(clock_type::now() - t0).count());
    be.free_sequence(seq);
  }
  return {threads, median(pre), median(dec)};
}

}  // namespace

int main(int argc, char** argv) {
  const bench_args a = parse(argc, argv);
  try {
    const model m = load_model(a.model);
    const std::string text =
        "The history of the city begins with a small settlement by the river, where traders met "
        "to exchange grain, salt and cloth. Over the centuries it grew into a busy port. ";
    std::vector<int32_t> unit = m.tokenizer().encode(text);
    std::vector<int32_t> long_prompt;
    while (long_prompt.size() < 512) long_prompt.insert(long_prompt.end(), unit.begin(), unit.end());
    long_prompt.resize(512);
    const std::vector<int32_t> short_prompt(unit.begin(), unit.begin() + std::min<size_t>(16, unit.size()));

    std::printf("model: %s (%s, %lld layers, n_embd %lld), matmul precision %s, median of %d runs\n\n",
                m.path().c_str(), m.config().name.c_str(), static_cast<long long>(m.config().n_layer),
                static_cast<long long>(m.config().n_embd),
                a.precision == matmul_precision::f32_activations ? "f32" : "q8", a.runs);
    std::printf("| threads | prefill tok/s (512-token prompt) | decode tok/s (128 tokens) |\n");
    std::printf("|--------:|---------------------------------:|--------------------------:|\n");
    for (int t : a.threads) {
      const result r = bench_threads(m, a, t, long_prompt, short_prompt);
      std::printf("| %7d | %32.1f | %25.1f |\n", r.threads, r.prefill_tok_s, r.decode_tok_s);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cpu: %s\n", e.what());
    return 1;
  }
  return 0;
}
