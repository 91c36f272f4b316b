// The server's configuration: one JSON file (config/*.json) read by `dspark serve` and by the
// separate processes (`dspark verifier|drafter|intake`), with command-line overrides applied
// on top by the commands. Every field has a default, so `{}` is a valid file; unknown keys and
// values out of range are errors naming the key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dspark::config {

struct server_config {
  std::string model;                                     // .gguf file or HF folder
  std::string device = "cpu";                            // cpu | cuda
  int32_t threads = 0;                                   // CPU threads, 0 = all cores
  int32_t n_ctx = 2048;                                  // context per request
  std::string precision = "q8";                          // q8 | f32 (CPU)
  std::string client_endpoint = "tcp://127.0.0.1:5555";  // intake ROUTER (clients, gateway)
  std::string engine_endpoint = "inproc://dspark-engine";    // verifier ROUTER (intakes)
  std::string drafter_endpoint = "inproc://dspark-drafter";  // verifier ROUTER (drafters); "" = none
  std::string draft = "none";                            // drafter kind: none | ngram | layerskip:K
  int32_t gamma = 4;                                     // drafts verified per step
  // Which drafts each step verifies (engine/spec/policy_factory.h, docs/scheduler.md):
  // fixed | threshold | scheduled | async[:LAG]. scheduled/async profile SPS(R, B) on the target at
  // start-up, cached at sps_profile ("" = ~/.cache/dspark/sps-*.json).
  std::string policy = "fixed";
  double threshold = 0.0;                                // threshold policy: cumulative confidence, [0, 1]
  std::string sps_profile;                               // step-time profile cache file
  std::string draft_skip;                                // "" | off | auto[:COST]: draft skipping (skipping_drafter.h)
  int32_t ngram_min = 1;
  int32_t ngram_max = 4;
  int32_t max_requests = 8;                              // running batch (decoder slots)
  int32_t max_queued = 256;                              // live requests before `overloaded`
  int64_t max_message_bytes = 1 << 20;                   // client frames larger get too_large
  int32_t kv_block_size = 16;                            // positions per KV block
  int32_t kv_blocks = 0;                                 // KV budget; 0 = max_requests full contexts
  bool prefix_cache = true;                              // reuse cached KV blocks of shared prompt prefixes
  bool pipeline = false;                                 // draft one group while the other verifies (docs/actors.md)
  std::string spec_gate = "off";                         // off | auto[:BUDGET] | N: speculation off where it does not pay (spec_gate.h)
  int32_t drafter_timeout_ms = 200;                      // deadline of one remote propose
  // What the verifier's decoder is built for, so remote drafters of that shape can plug in
  // (a drafter asking for layers not listed is refused). `serve` with an in-process drafter
  // takes these from the drafter itself.
  std::vector<int32_t> draft_capture_layers;             // target layers captured for drafters
  std::string draft_dist = "one_hot";                    // one_hot | sparse | dense
  int32_t draft_max_sparse = 0;                          // entries per sparse distribution
  int32_t feature_shm_mib = 64;                          // features via host shared memory (ipc/inproc); 0 = inline
  std::string http;                                      // HOST:PORT of the HTTP gateway ("" = off)
  std::string curve_secret_key;                          // Z85 key: CURVE on client_endpoint ("" = plain)
  // Z85 key: CURVE on the internal tcp links (engine_endpoint, drafter_endpoint). The verifier's
  // bound endpoints use it as their secret; intake and drafter processes, reading the same
  // config, connect with its public key. ipc:// and inproc:// links stay plain. "" = plain.
  std::string link_curve_secret_key;
};

// Reads and validates a JSON config file. std::runtime_error naming the file and the key.
server_config load_server_config(const std::string& path);
// Parses JSON text into `base` (keys present override). std::runtime_error naming the key.
void apply_config_json(const std::string& json_text, server_config& base);
// Range checks shared by the file and the command-line overrides.
void validate_server_config(const server_config& c);

}  // namespace dspark::config
