#include "sinks/json_log.hpp"
#include "core/text.hpp"

#include <cerrno>
#include <cstring>
#include <spdlog/spdlog.h>
#include <stdexcept>

#include "core/json.hpp"

namespace sp::sinks {

JsonLog::JsonLog(std::string path, const core::Clock& clock)
    : path_(std::move(path)), clock_(clock) {
    if (!open()) {
        throw std::runtime_error("cannot open JSON log file " + path_ + ": " +
                                 core::errnoMessage(errno));
    }
}

JsonLog::~JsonLog() {
    close();
}

bool JsonLog::open() {
    file_ = std::fopen(path_.c_str(), "ae");
    if (file_ == nullptr) {
        return false;
    }
    std::setvbuf(file_, nullptr, _IOFBF, 1 << 20);
    return true;
}

void JsonLog::reportError(const char* what) {
    if (error_log_.allow(clock_.now())) {
        spdlog::error("JSON log {}: {}: {}", path_, what, core::errnoMessage(errno));
    }
}

void JsonLog::consume(std::span<const core::EventPtr> batch) {
    if (file_ == nullptr && !open()) {
        reportError("cannot open");
        return;
    }
    for (const auto& e : batch) {
        if (e->origin != core::Origin::Local) {
            continue; // the log records what this node caught; peers' events are in the db
        }
        line_.clear();
        core::appendEventJson(line_, *e);
        line_.push_back('\n');
        if (std::fwrite(line_.data(), 1, line_.size(), file_) != line_.size()) {
            reportError("write failed");
            break;
        }
    }
    if (std::fflush(file_) != 0) {
        reportError("flush failed");
    }
}

void JsonLog::reopen() {
    close();
    if (!open()) {
        reportError("cannot reopen");
    }
}

void JsonLog::close() {
    if (file_ != nullptr) {
        std::fclose(file_);
        file_ = nullptr;
    }
}

} // namespace sp::sinks
