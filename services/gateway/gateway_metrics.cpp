#include "services/gateway/gateway_metrics.h"

#include <cstdio>

namespace dspark::gateway {

namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string with_le(const std::string& labels, const std::string& le) {
  return "{" + (labels.empty() ? "" : labels + ",") + "le=\"" + le + "\"}";
}

}  // namespace

void latency_histogram::observe(double seconds) {
  size_t i = 0;
  while (i < k_bounds.size() && seconds > k_bounds[i]) ++i;
  if (i < k_bounds.size()) ++counts_[i];
  ++count_;
  sum_ += seconds;
}

std::string latency_histogram::text(const std::string& name, const std::string& labels) const {
  std::string out;
  uint64_t cumulative = 0;
  for (size_t i = 0; i < k_bounds.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket" + with_le(labels, num(k_bounds[i])) + " " + std::to_string(cumulative) + "\n";
  }
  out += name + "_bucket" + with_le(labels, "+Inf") + " " + std::to_string(count_) + "\n";
  const std::string braces = labels.empty() ? "" : "{" + labels + "}";
  out += name + "_sum" + braces + " " + num(sum_) + "\n";
  out += name + "_count" + braces + " " + std::to_string(count_) + "\n";
  return out;
}

void gateway_metrics::record_request(const std::string& endpoint, int status, double seconds) {
  std::lock_guard lock(m_);
  ++requests_[{endpoint, status}];
  latency_[endpoint].observe(seconds);
}

void gateway_metrics::record_ttft(double seconds) {
  std::lock_guard lock(m_);
  ttft_.observe(seconds);
}

void gateway_metrics::stream_opened() {
  std::lock_guard lock(m_);
  ++open_streams_;
}

void gateway_metrics::stream_closed() {
  std::lock_guard lock(m_);
  --open_streams_;
}

std::string gateway_metrics::prometheus_text() const {
  std::lock_guard lock(m_);
  std::string out =
      "# HELP dspark_gateway_http_requests_total HTTP requests answered by the gateway.\n"
      "# TYPE dspark_gateway_http_requests_total counter\n";
  for (const auto& [key, n] : requests_)
    out += "dspark_gateway_http_requests_total{endpoint=\"" + key.first + "\",status=\"" + std::to_string(key.second) +
           "\"} " + std::to_string(n) + "\n";
  out += "# HELP dspark_gateway_request_duration_seconds Time from request to the end of the response.\n"
         "# TYPE dspark_gateway_request_duration_seconds histogram\n";
  for (const auto& [endpoint, h] : latency_)
    out += h.text("dspark_gateway_request_duration_seconds", "endpoint=\"" + endpoint + "\"");
  out += "# HELP dspark_gateway_ttft_seconds Time from request to the first streamed text, as the gateway sees it.\n"
         "# TYPE dspark_gateway_ttft_seconds histogram\n";
  out += ttft_.text("dspark_gateway_ttft_seconds", "");
  out += "# HELP dspark_gateway_open_streams Streaming responses in progress.\n"
         "# TYPE dspark_gateway_open_streams gauge\n"
         "dspark_gateway_open_streams " + std::to_string(open_streams_) + "\n";
  return out;
}

}  // namespace dspark::gateway
