// server_config: see server_config.h.
#include "config/server_config.h"

#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/spec/policy_factory.h"
#include "engine/spec/spec_gate.h"
#include "models/drafters/skipping_drafter.h"

namespace dspark::config {

namespace {

template <class T>
void read(const nlohmann::json& j, const char* key, T& out) {
  try {
    out = j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw std::runtime_error(std::string("config key '") + key + "' has the wrong type");
  }
}

void range(const char* key, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi)
    throw std::runtime_error(std::string("config key '") + key + "' must be in [" + std::to_string(lo) + ", " +
                             std::to_string(hi) + "], got " + std::to_string(v));
}

}  // namespace

void apply_config_json(const std::string& json_text, server_config& c) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(std::string("config is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw std::runtime_error("config must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (k == "model") read(j, "model", c.model);
    else if (k == "device") read(j, "device", c.device);
    else if (k == "threads") read(j, "threads", c.threads);
    else if (k == "n_ctx") read(j, "n_ctx", c.n_ctx);
    else if (k == "precision") read(j, "precision", c.precision);
    else if (k == "client_endpoint") read(j, "client_endpoint", c.client_endpoint);
    else if (k == "engine_endpoint") read(j, "engine_endpoint", c.engine_endpoint);
    else if (k == "drafter_endpoint") read(j, "drafter_endpoint", c.drafter_endpoint);
    else if (k == "draft") read(j, "draft", c.draft);
    else if (k == "gamma") read(j, "gamma", c.gamma);
    else if (k == "policy") read(j, "policy", c.policy);
    else if (k == "threshold") read(j, "threshold", c.threshold);
    else if (k == "sps_profile") read(j, "sps_profile", c.sps_profile);
    else if (k == "draft_skip") read(j, "draft_skip", c.draft_skip);
    else if (k == "ngram_min") read(j, "ngram_min", c.ngram_min);
    else if (k == "ngram_max") read(j, "ngram_max", c.ngram_max);
    else if (k == "max_requests") read(j, "max_requests", c.max_requests);
    else if (k == "max_queued") read(j, "max_queued", c.max_queued);
    else if (k == "max_message_bytes") read(j, "max_message_bytes", c.max_message_bytes);
    else if (k == "kv_block_size") read(j, "kv_block_size", c.kv_block_size);
    else if (k == "kv_blocks") read(j, "kv_blocks", c.kv_blocks);
    else if (k == "prefix_cache") read(j, "prefix_cache", c.prefix_cache);
    else if (k == "pipeline") read(j, "pipeline", c.pipeline);
    else if (k == "spec_gate") read(j, "spec_gate", c.spec_gate);
    else if (k == "drafter_timeout_ms") read(j, "drafter_timeout_ms", c.drafter_timeout_ms);
    else if (k == "http") read(j, "http", c.http);
    else if (k == "draft_capture_layers") read(j, "draft_capture_layers", c.draft_capture_layers);
    else if (k == "draft_dist") read(j, "draft_dist", c.draft_dist);
    else if (k == "draft_max_sparse") read(j, "draft_max_sparse", c.draft_max_sparse);
    else if (k == "feature_shm_mib") read(j, "feature_shm_mib", c.feature_shm_mib);
    else if (k == "curve_secret_key") read(j, "curve_secret_key", c.curve_secret_key);
    else if (k == "link_curve_secret_key") read(j, "link_curve_secret_key", c.link_curve_secret_key);
    else if (k.rfind("_", 0) == 0) continue;  // "_comment" and friends
    else throw std::runtime_error("unknown config key '" + k + "'");
  }
  validate_server_config(c);
}

void validate_server_config(const server_config& c) {
  if (c.device != "cpu" && c.device != "cuda")
    throw std::runtime_error("config key 'device' must be cpu or cuda, got '" + c.device + "'");
  if (c.precision != "q8" && c.precision != "f32")
    throw std::runtime_error("config key 'precision' must be q8 or f32, got '" + c.precision + "'");
  range("threads", c.threads, 0, 1024);
  range("n_ctx", c.n_ctx, 16, 1 << 20);
  range("gamma", c.gamma, 1, 64);
  try {
    parse_policy_name(c.policy);
  } catch (const invalid_argument_error& e) {
    throw std::runtime_error(std::string("config key 'policy': ") + e.what());
  }
  if (!(c.threshold >= 0.0 && c.threshold <= 1.0))
    throw std::runtime_error("config key 'threshold' must be in [0, 1], got " + std::to_string(c.threshold));
  if (!c.draft_skip.empty()) {
    try {
      draft_skip_params p;
      parse_draft_skip(c.draft_skip, p);
    } catch (const invalid_argument_error& e) {
      throw std::runtime_error(std::string("config key 'draft_skip': ") + e.what());
    }
  }
  try {
    parse_spec_gate(c.spec_gate);
  } catch (const invalid_argument_error& e) {
    throw std::runtime_error(std::string("config key 'spec_gate': ") + e.what());
  }
  range("ngram_min", c.ngram_min, 1, 64);
  range("ngram_max", c.ngram_max, c.ngram_min, 64);
  range("max_requests", c.max_requests, 1, 4096);
  range("max_queued", c.max_queued, 1, 1 << 20);
  range("max_message_bytes", c.max_message_bytes, 256, int64_t{1} << 30);
  range("kv_block_size", c.kv_block_size, 1, 4096);
  range("kv_blocks", c.kv_blocks, 0, 1 << 24);
  if (c.draft_dist != "one_hot" && c.draft_dist != "sparse" && c.draft_dist != "dense")
    throw std::runtime_error("config key 'draft_dist' must be one_hot, sparse or dense, got '" + c.draft_dist + "'");
  range("draft_max_sparse", c.draft_max_sparse, 0, 4096);
  range("feature_shm_mib", c.feature_shm_mib, 0, 1 << 16);
  if (c.draft_capture_layers.size() > 64) throw std::runtime_error("config key 'draft_capture_layers' lists more than 64 layers");
  range("drafter_timeout_ms", c.drafter_timeout_ms, 1, 600000);
  if (!c.curve_secret_key.empty() && c.curve_secret_key.size() != 40)
    throw std::runtime_error("config key 'curve_secret_key' must be 40 Z85 characters");
  if (!c.link_curve_secret_key.empty() && c.link_curve_secret_key.size() != 40)
    throw std::runtime_error("config key 'link_curve_secret_key' must be 40 Z85 characters");
  if (c.client_endpoint.empty()) throw std::runtime_error("config key 'client_endpoint' is empty");
  if (c.engine_endpoint.empty()) throw std::runtime_error("config key 'engine_endpoint' is empty");
}

server_config load_server_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read config file '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  server_config c;
  try {
    apply_config_json(ss.str(), c);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  return c;
}

}  // namespace dspark::config
