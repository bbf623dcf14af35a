#include "sinks/json_log.hpp"
#include "core/text.hpp"

#include <algorithm>
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
    auto local = [](const core::EventPtr& e) { return e->origin == core::Origin::Local; };
    if (file_ == nullptr && !open()) {
        reportError("cannot open");
        write_errors_.fetch_add(
            static_cast<std::uint64_t>(std::count_if(batch.begin(), batch.end(), local)),
            std::memory_order_relaxed);
        return;
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
        const auto& e = batch[i];
        if (!local(e)) {
            continue; // the log records what this node caught; peers' events are in the db
        }
        line_.clear();
        core::appendEventJson(line_, *e);
        line_.push_back('\n');
        if (std::fwrite(line_.data(), 1, line_.size(), file_) != line_.size()) {
            reportError("write failed");
            // This line, the rest of the batch and whatever the buffer held are lost.
            write_errors_.fetch_add(buffered_ + static_cast<std::uint64_t>(std::count_if(
                                                    batch.begin() + i, batch.end(), local)),
                                    std::memory_order_relaxed);
            buffered_ = 0;
            std::clearerr(file_);
            return;
        }
        ++buffered_;
    }
    if (std::fflush(file_) != 0) {
        reportError("flush failed");
        write_errors_.fetch_add(buffered_, std::memory_order_relaxed);
        std::clearerr(file_);
    }
    buffered_ = 0;
}

void JsonLog::reopen() {
    close();
    if (!open()) {
        reportError("cannot reopen");
    }
}

void JsonLog::close() {
    if (file_ != nullptr) {
        if (std::fclose(file_) != 0 && buffered_ > 0) {
            write_errors_.fetch_add(buffered_, std::memory_order_relaxed);
        }
        buffered_ = 0;
        file_ = nullptr;
    }
}

} // namespace sp::sinks
