// Messaging overhead of the actor runtime at batch 1: the decode step time of one request
// through the server (client DEALER -> intake -> verifier -> intake -> client, every hop a
// ZeroMQ message) against the same spec_decoder loop called directly, on the same backend kind.
//
//   bench_actors --model PATH [--device cpu|cuda] [--tokens N] [--reps R] [--threads T]
//                [--endpoint tcp|inproc]
//
// Direct: spec_decoder (no drafter) steps for one request; the mean time of a decode step.
// Served: an in-process actors::server (intake + verifier, no drafter) and a DEALER client; the
// mean interval between consecutive `tokens` messages at the client (one per decode step). Both
// exclude the prefill and the first token. Overhead = served / direct - 1. Runs alternate.
//
//   bench_actors --load --endpoint-url tcp://127.0.0.1:5555 --model PATH --clients 64 --seconds 180
//                [--max-tokens N]
//   bench_actors --admission N
// Admission mode (no model): the round trip a verifier step pays when requests wait and a slot
// is free (admit -> scheduler actor -> reserve -> kv_manager actor -> back, CAF messages in one
// process), timed N times from a scoped actor with one request waiting, 10 ms apart (a decode
// step's worth of idle actors in between); prints median and p99.
//
// Load mode: N concurrent streaming clients against a running server for S seconds; every done
// is compared token for token with offline generate() (references computed first); prints
// requests, errors, mismatches, tokens/s, TTFT p50/p99.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "actors/actors.h"
#include "actors/server.h"
#include "engine/cpu_backend.h"
#include "engine/generator.h"
#include "engine/model.h"
#include "engine/spec/policy.h"
#include "engine/spec/spec_decoder.h"
#include "messages/client_messages.h"
#include "models/tokenizer/tokenizer.h"
#ifdef DSPARK_HAVE_CUDA
#include "engine/cuda/cuda_backend.h"
#endif

using namespace dspark;
using clk = std::chrono::steady_clock;
namespace cm = dspark::messages;

namespace {

struct args {
  std::string model, device = "cpu", endpoint = "tcp", url = "tcp://127.0.0.1:5555";
  int tokens = 64, reps = 3, threads = 2, clients = 64, seconds = 180, max_tokens = 32, admission = 0;
  bool load = false;
};

args parse(int argc, char** argv) {
  args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto v = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (k == "--model") a.model = v();
    else if (k == "--device") a.device = v();
    else if (k == "--tokens") a.tokens = std::stoi(v());
    else if (k == "--reps") a.reps = std::stoi(v());
    else if (k == "--threads") a.threads = std::stoi(v());
    else if (k == "--endpoint") a.endpoint = v();
    else if (k == "--endpoint-url") a.url = v();
    else if (k == "--clients") a.clients = std::stoi(v());
    else if (k == "--seconds") a.seconds = std::stoi(v());
    else if (k == "--max-tokens") a.max_tokens = std::stoi(v());
    else if (k == "--load") a.load = true;
    else if (k == "--admission") a.admission = std::stoi(v());
    else {
      std::fprintf(stderr, "bench_actors: unknown option %s\n", k.c_str());
      std::exit(2);
    }
  }
  if (a.model.empty() && a.admission <= 0) {
    std::fprintf(stderr, "bench_actors: --model PATH is required\n");
    std::exit(2);
  }
  return a;
}

std::unique_ptr<backend> make_target(const model& m, const args& a, int32_t n_seq_max, int32_t n_ctx) {
#ifdef DSPARK_HAVE_CUDA
  if (a.device == "cuda") {
    cuda::cuda_backend_options o;
    o.n_seq_max = n_seq_max;
    o.n_ctx = n_ctx;
    o.kv_memory_fraction = 0.3;
    return std::make_unique<cuda::cuda_backend>(m.config(), m.weights(), o);
  }
#endif
  if (a.device != "cpu") {
    std::fprintf(stderr, "bench_actors: device %s not available in this build\n", a.device.c_str());
    std::exit(1);
  }
  cpu_backend_options o;
  o.n_threads = a.threads;
  o.n_seq_max = n_seq_max;
  o.n_ctx = n_ctx;
  o.kv_block_size = 16;
  return std::make_unique<cpu_backend>(m.config(), m.weights(), o);
}

// A raw continuation prompt (no chat template on either path): a story opening keeps greedy
// decoding going, where a finished sentence may end at once with EOS (then no step is timed).
const char* k_prompt = "Once upon a time, in a small fishing village by the sea, there lived an old lighthouse keeper who";

// Mean decode step (ms) of spec_decoder with no drafter, one request.
double direct_step_ms(const model& m, backend& be, const args& a) {
  fixed_gamma_policy pol(1);
  spec_decoder dec(be, nullptr, pol, &m.tokenizer(), m.stop_ids(), spec_decoder_options{1, 256});
  sampling_params p;
  p.max_tokens = a.tokens + 1;
  const auto prompt = m.tokenizer().encode(k_prompt, true, true);
  const int32_t id = dec.add(prompt, p);
  dec.step();  // prefill + first token
  double total = 0;
  int n = 0;
  while (!dec.finished(id)) {
    const auto t0 = clk::now();
    dec.step();
    total += std::chrono::duration<double, std::milli>(clk::now() - t0).count();
    ++n;
  }
  const spec_result res = dec.take(id);
  if (n < a.tokens / 2)
    std::fprintf(stderr, "bench_actors: direct run stopped after %d decode steps (%zu tokens, finish %d)\n", n,
                 res.gen.token_ids.size(), static_cast<int>(res.gen.finish));
  return n ? total / n : 0;
}

// Mean interval (ms) between consecutive tokens messages at a DEALER client of the server.
double served_step_ms(actors::server& srv, zmq::context_t& ctx, const args& a, int rep) {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.connect(srv.client_endpoint());
  cm::submit_request req;
  req.id = std::string("bench") + std::to_string(rep);
  req.input = cm::text_prompt{k_prompt};
  req.params.max_tokens = a.tokens + 1;
  req.params.temperature = 0;
  const std::string f = cm::encode(cm::client_message{req});
  s.send(zmq::buffer(f), zmq::send_flags::none);
  std::vector<clk::time_point> arrivals;
  for (;;) {
    zmq::message_t m;
    if (!s.recv(m)) break;
    auto r = cm::decode_server_message(m.to_string_view(), size_t{64} << 20);
    if (!r.ok()) break;
    if (auto* t = std::get_if<cm::tokens_reply>(&r.value())) {
      if (!t->token_ids.empty()) arrivals.push_back(clk::now());
    } else if (std::holds_alternative<cm::done_reply>(r.value()) || std::holds_alternative<cm::error_reply>(r.value())) {
      break;
    }
  }
  if (arrivals.size() < 2) {
    std::fprintf(stderr, "bench_actors: served run got %zu token messages\n", arrivals.size());
    return 0;
  }
  return std::chrono::duration<double, std::milli>(arrivals.back() - arrivals.front()).count() /
         static_cast<double>(arrivals.size() - 1);
}

int overhead(const args& a) {
  const model m = load_model(a.model);
  config::server_config c;
  c.model = a.model;
  c.device = a.device;
  c.threads = a.threads;
  c.n_ctx = 1024;
  c.max_requests = 1;
  c.client_endpoint = a.endpoint == "inproc" ? "inproc://bench-clients" : "tcp://127.0.0.1:*";
  c.engine_endpoint = "inproc://bench-engine";
  c.drafter_endpoint = "";
  actors::server_factories f;
  f.make_backend = [&a](const model& mm, const config::server_config& cc) { return make_target(mm, a, cc.max_requests, cc.n_ctx); };
  actors::server_roles roles;
  roles.drafter = false;
  actors::server srv(c, roles, f);
  auto be = make_target(m, a, 1, 1024);
  zmq::context_t own;
  zmq::context_t& ctx = a.endpoint == "inproc" ? srv.zmq_context() : own;
  direct_step_ms(m, *be, a);   // warm-up both paths
  served_step_ms(srv, ctx, a, -1);
  std::vector<double> d, s;
  for (int r = 0; r < a.reps; ++r) {
    d.push_back(direct_step_ms(m, *be, a));
    s.push_back(served_step_ms(srv, ctx, a, r));
    std::printf("rep %d: direct %.3f ms/step, served %.3f ms/step\n", r, d.back(), s.back());
  }
  std::sort(d.begin(), d.end());
  std::sort(s.begin(), s.end());
  const double dm = d[d.size() / 2], sm = s[s.size() / 2];
  std::printf("device %s, batch 1, %d decode steps, client over %s: direct %.3f ms/step, served %.3f ms/step "
              "(medians of %d), messaging overhead %+.2f%%\n",
              a.device.c_str(), a.tokens, a.endpoint.c_str(), dm, sm, a.reps, (sm / dm - 1.0) * 100.0);
  return 0;
}

// ---- load mode ----------------------------------------------------------------------------

const char* k_load_prompts[] = {
    "The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
    "List three primary colors:", "Explain photosynthesis in one sentence.", "The quick brown fox",
    "SELECT name FROM users WHERE", "In 1492, Columbus",
};

int load(const args& a) {
  const model m = load_model(a.model);
  const int n_prompts = static_cast<int>(std::size(k_load_prompts));
  std::vector<std::vector<int32_t>> refs;
  {
    auto be = make_target(m, a, 1, 1024);
    for (int i = 0; i < n_prompts; ++i) {
      sampling_params p;
      p.max_tokens = a.max_tokens;
      refs.push_back(generate(m, *be, m.tokenizer().encode(k_load_prompts[i], true, true), p).token_ids);
    }
  }
  zmq::context_t ctx;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> done{0}, errors{0}, mismatches{0}, tokens{0};
  std::mutex mu;
  std::vector<double> ttfts;
  std::vector<std::string> first_errors;
  auto client = [&](int cid) {
    zmq::socket_t s(ctx, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.connect(a.url);
    for (int k = 0; !stop; ++k) {
      const int pi = (cid + k) % n_prompts;
      cm::submit_request req;
      req.id = std::string("c") + std::to_string(cid) + "-" + std::to_string(k);
      req.input = cm::text_prompt{k_load_prompts[pi]};
      req.params.max_tokens = a.max_tokens;
      const std::string f = cm::encode(cm::client_message{req});
      const auto t0 = clk::now();
      s.send(zmq::buffer(f), zmq::send_flags::none);
      bool first = true;
      std::vector<int32_t> streamed;
      for (;;) {
        zmq::pollitem_t it{s.handle(), 0, ZMQ_POLLIN, 0};
        if (zmq::poll(&it, 1, std::chrono::milliseconds(120000)) <= 0) {
          ++errors;
          std::lock_guard<std::mutex> lk(mu);
          first_errors.push_back("timeout waiting for " + req.id);
          return;
        }
        zmq::message_t msg;
        (void)s.recv(msg);
        auto r = cm::decode_server_message(msg.to_string_view(), size_t{64} << 20);
        if (!r.ok()) {
          ++errors;
          break;
        }
        if (auto* t = std::get_if<cm::tokens_reply>(&r.value())) {
          if (first && !t->token_ids.empty()) {
            first = false;
            std::lock_guard<std::mutex> lk(mu);
            ttfts.push_back(std::chrono::duration<double>(clk::now() - t0).count());
          }
          streamed.insert(streamed.end(), t->token_ids.begin(), t->token_ids.end());
        } else if (auto* d = std::get_if<cm::done_reply>(&r.value())) {
          ++done;
          tokens += static_cast<int64_t>(d->token_ids.size());
          if (d->token_ids != refs[static_cast<size_t>(pi)] || streamed != d->token_ids) ++mismatches;
          break;
        } else if (auto* e = std::get_if<cm::error_reply>(&r.value())) {
          ++errors;
          std::lock_guard<std::mutex> lk(mu);
          if (first_errors.size() < 5) first_errors.push_back(e->message);
          break;
        }
      }
    }
  };
  const auto t0 = clk::now();
  std::vector<std::thread> th;
  for (int i = 0; i < a.clients; ++i) th.emplace_back(client, i);
  std::this_thread::sleep_for(std::chrono::seconds(a.seconds));
  stop = true;  // each client finishes its current request
  for (auto& t : th) t.join();
  const double el = std::chrono::duration<double>(clk::now() - t0).count();
  std::sort(ttfts.begin(), ttfts.end());
  auto pct = [&](double q) { return ttfts.empty() ? 0.0 : ttfts[static_cast<size_t>(q * (ttfts.size() - 1))]; };
  std::printf("load: %d clients, %.0f s, %lld requests done, %lld errors, %lld mismatches vs offline, "
              "%.1f tokens/s, TTFT p50 %.2f s p99 %.2f s\n",
              a.clients, el, static_cast<long long>(done.load()), static_cast<long long>(errors.load()),
              static_cast<long long>(mismatches.load()), static_cast<double>(tokens.load()) / el, pct(0.5), pct(0.99));
  for (const auto& e : first_errors) std::printf("  error: %s\n", e.c_str());
  return errors == 0 && mismatches == 0 ? 0 : 1;
}

}  // namespace

int admission(const args& a) {
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", 2);  // as in the server
  caf::actor_system sys{cfg};
  const actors::kv_manager_params p{64, 16, 512, 5};
  auto kv = actors::spawn_kv_manager(sys, p);
  auto sched = actors::spawn_scheduler(sys, p, 1024, kv);
  caf::scoped_actor self{sys};
  std::vector<double> us;
  int errors = 0;
  for (int i = 0; i < a.admission; ++i) {
    const uint64_t id = static_cast<uint64_t>(i) + 1;
    actors::waiting_request w;
    w.id = id;
    w.req.key = id;
    w.req.prompt.assign(32, 1);
    w.req.params.max_tokens = 64;
    self->request(sched, caf::infinite, actors::enqueue_atom::value, std::move(w))
        .receive([](int32_t) {}, [&](caf::error&) { ++errors; });
    size_t got = 0;
    const auto t0 = clk::now();
    self->request(sched, caf::infinite, actors::admit_atom::value, int32_t{1}, int32_t{0})
        .receive([&](actors::admitted_batch& b) { got = b.requests.size(); }, [&](caf::error&) { ++errors; });
    us.push_back(std::chrono::duration<double, std::micro>(clk::now() - t0).count());
    if (got != 1) ++errors;
    self->send(kv, actors::release_atom::value, id);
    // A decode step's worth of idleness between admissions, as in a server whose queue refills.
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (auto h : {caf::actor_cast<caf::actor>(sched), caf::actor_cast<caf::actor>(kv)}) {
    self->send_exit(h, caf::exit_reason::user_shutdown);
    self->wait_for(h);
  }
  std::sort(us.begin(), us.end());
  std::printf("admission round trip (admit -> scheduler -> kv_manager -> back), %zu runs: median %.1f us, p99 %.1f us, "
              "errors %d\n",
              us.size(), us[us.size() / 2], us[std::min(us.size() - 1, us.size() * 99 / 100)], errors);
  return errors == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  const args a = parse(argc, argv);
  try {
    if (a.admission > 0) return admission(a);
    return a.load ? load(a) : overhead(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_actors: %s\n", e.what());
    return 1;
  }
}
