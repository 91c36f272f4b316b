// The gateway's own Prometheus metrics: HTTP requests by endpoint and status, request latency
// and time to first token as histograms, and the number of open streams. Appended to the
// server's metrics text on /metrics. Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace dspark::gateway {

// A Prometheus histogram with fixed buckets (seconds).
class latency_histogram {
 public:
  static constexpr std::array<double, 13> k_bounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                      1, 2.5, 5, 10, 30, 60};
  void observe(double seconds);
  // The _bucket, _sum and _count lines of `name` with `labels` ("" or `endpoint="x"`).
  std::string text(const std::string& name, const std::string& labels) const;

 private:
  std::array<uint64_t, k_bounds.size()> counts_{};  // per bucket, not cumulative
  uint64_t count_ = 0;
  double sum_ = 0;
};

class gateway_metrics {
 public:
  void record_request(const std::string& endpoint, int status, double seconds);
  void record_ttft(double seconds);
  void stream_opened();
  void stream_closed();
  std::string prometheus_text() const;

 private:
  mutable std::mutex m_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (endpoint, status) -> count
  std::map<std::string, latency_histogram> latency_;         // endpoint -> seconds
  latency_histogram ttft_;
  int64_t open_streams_ = 0;
};

}  // namespace dspark::gateway
