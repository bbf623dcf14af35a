#pragma once
// A pull-style metrics registry in Prometheus text format (version 0.0.4). Modules do not
// know about each other: the composition root registers one collector per module, and the
// API renders them all on GET /metrics. Thread-safe: collectors are added before the
// daemon starts serving; render() may run on any thread and calls every collector.

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sp::core {

using Labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

// Writes metric families. One family() call, then its samples.
class MetricsWriter {
public:
    // type: "counter" | "gauge" | "info" written as gauge. Names get the "sentrypeer_" prefix.
    void family(std::string_view name, std::string_view type, std::string_view help);
    void sample(double value, Labels labels = {});
    void sample(std::uint64_t value, Labels labels = {});
    std::string take() { return std::move(out_); }

private:
    void labelsAndName(Labels labels);
    std::string out_;
    std::string name_;
};

class MetricsRegistry {
public:
    using Collector = std::function<void(MetricsWriter&)>;
    void add(Collector c);
    std::string render() const;

private:
    mutable std::mutex mutex_;
    std::vector<Collector> collectors_;
};

} // namespace sp::core
