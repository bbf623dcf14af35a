#include "sip/framer.hpp"

#include <optional>

#include "sip/header_scan.hpp"

namespace sp::sip {
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
            std::optional<ContentLength> length =
                contentLength(rest.substr(0, header_length), body_limit);
            if (!length) {
                return Status::Invalid;
            }
            if (length->value > body_limit) {
                return Status::TooLarge;
            }
            message_size_ = header_length + length->value;
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
