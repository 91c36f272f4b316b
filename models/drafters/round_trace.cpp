// round_trace: the JSON-lines trace of drafting rounds (see round_trace.h).
#include "models/drafters/round_trace.h"

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace dspark {

namespace {

using nlohmann::json;
constexpr const char* k_magic = "dspark-rounds";

[[noreturn]] void fail(const std::string& path, size_t line, const std::string& what) {
  throw format_error("round trace " + path + ", line " + std::to_string(line) + ": " + what);
}

// Confidences to 4 decimals: the trace stays small and the replayed schedule does not depend
// on digits the drafter's own float math does not carry.
double rounded(float c) { return std::round(static_cast<double>(c) * 1e4) / 1e4; }

}  // namespace

std::string trace_header_line(const round_trace_header& h) {
  return json{{"trace", k_magic}, {"version", 1},          {"drafter", h.drafter},
              {"has_confidence", h.has_confidence}, {"gamma_max", h.gamma_max}, {"note", h.note}}
      .dump();
}

std::string trace_request_line(const trace_request& r) {
  json rounds = json::array();
  for (const trace_round& t : r.rounds) {
    json c = json::array();
    for (float v : t.confidence) c.push_back(rounded(v));
    rounds.push_back({{"c", std::move(c)}, {"l", t.verified}, {"a", t.accepted}});
  }
  return json{{"request", r.index}, {"prompt_tokens", r.prompt_tokens}, {"rounds", std::move(rounds)}}.dump();
}

round_trace read_round_trace(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw format_error("round trace: cannot open " + path);
  round_trace t;
  std::string text;
  size_t line = 0;
  bool have_header = false;
  while (std::getline(in, text)) {
    ++line;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j;
    try {
      j = json::parse(text);
    } catch (const json::exception& e) {
      fail(path, line, std::string("not valid JSON: ") + e.what());
    }
    try {
      if (!have_header) {
        if (!j.is_object() || j.value("trace", std::string()) != k_magic)
          fail(path, line, std::string("the first line must be the header {\"trace\": \"") + k_magic + "\", ...}");
        t.header.drafter = j.at("drafter").get<std::string>();
        t.header.has_confidence = j.at("has_confidence").get<bool>();
        t.header.gamma_max = j.at("gamma_max").get<int32_t>();
        t.header.note = j.value("note", std::string());
        if (t.header.gamma_max < 1 || t.header.gamma_max > 256)
          fail(path, line, "gamma_max " + std::to_string(t.header.gamma_max) + " outside [1, 256]");
        have_header = true;
        continue;
      }
      trace_request r;
      r.index = j.at("request").get<int64_t>();
      r.prompt_tokens = j.at("prompt_tokens").get<int32_t>();
      for (const json& jr : j.at("rounds")) {
        trace_round tr;
        for (const json& c : jr.at("c")) {
          const double v = c.get<double>();
          if (!(v >= 0.0 && v <= 1.0)) fail(path, line, "confidence " + std::to_string(v) + " outside [0, 1]");
          tr.confidence.push_back(static_cast<float>(v));
        }
        tr.verified = jr.at("l").get<int32_t>();
        tr.accepted = jr.at("a").get<int32_t>();
        const int32_t g = static_cast<int32_t>(tr.confidence.size());
        if (g > t.header.gamma_max || tr.verified < 0 || tr.verified > g || tr.accepted < 0 || tr.accepted > tr.verified)
          fail(path, line, "round needs 0 <= a <= l <= g <= gamma_max, got a " + std::to_string(tr.accepted) + ", l " +
                               std::to_string(tr.verified) + ", g " + std::to_string(g));
        r.rounds.push_back(std::move(tr));
      }
      t.requests.push_back(std::move(r));
    } catch (const json::exception& e) {
      fail(path, line, std::string("missing or mistyped field: ") + e.what());
    }
  }
  if (!have_header) throw format_error("round trace " + path + ": empty (no header line)");
  return t;
}

}  // namespace dspark
