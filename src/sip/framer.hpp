#pragma once
// Content-Length framing of a SIP byte stream (TCP/TLS, RFC 3261 section 18.3).
// One Framer per connection; not thread-safe (a connection is served by one strand).

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace sp::sip {

class Framer {
public:
    enum class Status {
        Ok,       // all complete messages delivered; a partial one may be buffered
        TooLarge, // headers or Content-Length exceed max_message: stop reading, close
        Invalid,  // Content-Length unparsable: stop reading, close
    };

    explicit Framer(std::size_t max_message = std::size_t{64} * 1024) : max_message_(max_message) {}

    // Appends data and calls on_message once per complete message (headers + body), in
    // order. Leading CRLFs between messages (keep-alives, RFC 5626) are skipped, not
    // messages. A missing Content-Length means an empty body. After TooLarge/Invalid the
    // offending bytes stay in pending() (so the caller can record them) and further feeds
    // return the same status. on_message must not call feed() on this Framer; the view it
    // gets is valid only during the call.
    Status feed(std::string_view data, const std::function<void(std::string_view)>& on_message);

    // Bytes received but not yet delivered as a message (e.g. at EOF: record as malformed).
    std::string_view pending() const { return buffer_; }

private:
    // Delivers the complete messages of buffer_ from `start` on, advancing `start` past each
    // one (and past keep-alive line breaks) before calling on_message for it.
    Status deliver(std::size_t& start, const std::function<void(std::string_view)>& on_message);

    std::size_t max_message_;
    std::string buffer_;
    Status status_ = Status::Ok;
    // Offset in buffer_ where the search for the end of the header section resumes, so a
    // message arriving byte by byte is scanned once. 0 = at the start of a message.
    std::size_t scan_ = 0;
    // Headers + body of the message at the front of buffer_; 0 until its headers are complete.
    std::size_t message_size_ = 0;
};

} // namespace sp::sip
