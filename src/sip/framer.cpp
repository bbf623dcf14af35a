#include "sip/framer.hpp"

#include <optional>

#include "sip/header_scan.hpp"

namespace sp::sip {
namespace {

// Content-Length of a complete header section: 0 when absent; nullopt when unparsable or
// when two values disagree; values above `limit` are returned as limit + 1.
std::optional<std::size_t> contentLength(std::string_view headers, std::size_t limit) {
    std::optional<std::size_t> result = std::size_t{0};
    bool seen = false;
    forEachHeader(headers, [&](std::string_view name, std::string_view value) {
        if (!isHeaderName(name, "content-length", 'l')) {
            return true;
        }
        std::size_t n = 0;
        bool valid = !value.empty();
        for (char c : value) {
            if (c < '0' || c > '9') {
                valid = false;
                break;
            }
            n = n > limit ? n : n * 10 + static_cast<std::size_t>(c - '0');
        }
        if (n > limit) {
            n = limit + 1;
        }
        if (!valid || (seen && n != *result)) {
            result.reset();
            return false;
        }
        seen = true;
        result = n;
        return true;
    });
    return result;
}

} // namespace

Framer::Status Framer::feed(std::string_view data,
                            const std::function<void(std::string_view)>& on_message) {
    if (status_ != Status::Ok) {
        return status_;
    }
    buffer_.append(data);

    Status result = Status::Ok;
    std::size_t start = 0; // first byte of the current message in buffer_
    try {
        result = deliver(start, on_message);
    } catch (...) {
        // on_message threw: what it was given is consumed, as if it had returned.
        buffer_.erase(0, start);
        throw;
    }
    buffer_.erase(0, start);
    status_ = result;
    return result;
}

Framer::Status Framer::deliver(std::size_t& start,
                               const std::function<void(std::string_view)>& on_message) {
    while (start < buffer_.size()) {
        std::string_view rest(buffer_.data() + start, buffer_.size() - start);
        if (message_size_ == 0) {
            if (scan_ == 0) {
                std::size_t blank = rest.find_first_not_of("\r\n");
                if (blank == std::string_view::npos) {
                    start = buffer_.size();
                    return Status::Ok;
                }
                start += blank;
                rest.remove_prefix(blank);
            }
            std::size_t header_length = headerSectionLength(rest, scan_);
            if (header_length == 0) {
                return rest.size() > max_message_ ? Status::TooLarge : Status::Ok;
            }
            if (header_length > max_message_) {
                return Status::TooLarge;
            }
            std::size_t body_limit = max_message_ - header_length;
            std::optional<std::size_t> body_length =
                contentLength(rest.substr(0, header_length), body_limit);
            if (!body_length) {
                return Status::Invalid;
            }
            if (*body_length > body_limit) {
                return Status::TooLarge;
            }
            message_size_ = header_length + *body_length;
        }
        if (rest.size() < message_size_) {
            return Status::Ok;
        }
        std::size_t size = message_size_;
        message_size_ = 0;
        scan_ = 0;
        start += size;
        on_message(rest.substr(0, size));
    }
    return Status::Ok;
}

} // namespace sp::sip
