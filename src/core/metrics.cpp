#include "core/metrics.hpp"

#include <cmath>
#include <cstdio>

namespace sp::core {

void MetricsWriter::family(std::string_view name, std::string_view type, std::string_view help) {
    name_ = "sentrypeer_";
    name_.append(name);
    out_.append("# HELP ").append(name_).append(" ").append(help).append("\n");
    out_.append("# TYPE ").append(name_).append(" ").append(type).append("\n");
}

void MetricsWriter::labelsAndName(Labels labels) {
    out_.append(name_);
    if (labels.size() == 0) {
        return;
    }
    out_.push_back('{');
    bool first = true;
    for (const auto& [k, v] : labels) {
        if (!first) {
            out_.push_back(',');
        }
        first = false;
        out_.append(k).append("=\"");
        for (char c : v) { // label value escaping per the exposition format
            if (c == '\\' || c == '"') {
                out_.push_back('\\');
                out_.push_back(c);
            } else if (c == '\n') {
                out_.append("\\n");
            } else {
                out_.push_back(c);
            }
        }
        out_.push_back('"');
    }
    out_.push_back('}');
}

void MetricsWriter::sample(std::uint64_t value, Labels labels) {
    labelsAndName(labels);
    out_.push_back(' ');
    out_.append(std::to_string(value)).push_back('\n');
}

void MetricsWriter::sample(double value, Labels labels) {
    labelsAndName(labels);
    char buf[64];
    std::snprintf(buf, sizeof buf, " %.17g\n", std::isfinite(value) ? value : 0.0);
    out_.append(buf);
}

void MetricsRegistry::add(Collector c) {
    std::lock_guard lock(mutex_);
    collectors_.push_back(std::move(c));
}

std::string MetricsRegistry::render() const {
    MetricsWriter w;
    std::lock_guard lock(mutex_);
    for (const auto& c : collectors_) {
        c(w);
    }
    return w.take();
}

} // namespace sp::core
