#include "p2p/codec.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <nlohmann/json.hpp>

#include "core/ids.hpp"
#include "core/json.hpp"
#include "core/text.hpp"

namespace sp::p2p {

const char* rejectName(Reject r) {
    static constexpr std::array<const char*, kRejectReasons> kNames = {
        "too_large", "not_json",       "not_object", "missing_field", "not_string",
        "bad_uuid",  "own_event",      "bad_ip",     "bad_timestamp", "bad_field",
        "duplicate", "publisher_rate", "global_rate"};
    auto i = static_cast<std::size_t>(r);
    return i < kNames.size() ? kNames[i] : "unknown";
}

std::string encode(const core::Event& e) {
    if (e.sip_message.size() <= kMaxPublishedMessage) {
        return core::eventToJson(e);
    }
    core::Event cut = e;
    // Cut on a UTF-8 boundary so the value stays valid JSON text.
    std::size_t n = kMaxPublishedMessage;
    while (n > 0 && (static_cast<unsigned char>(cut.sip_message[n]) & 0xc0) == 0x80) {
        --n;
    }
    cut.sip_message.resize(n);
    return core::eventToJson(cut);
}

namespace {

bool validIp(const std::string& s) {
    unsigned char buf[16];
    return s.size() < 46 &&
           (inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1);
}

bool printable(const std::string& s, std::size_t max) {
    return s.size() <= max && std::none_of(s.begin(), s.end(), [](char c) {
               auto u = static_cast<unsigned char>(c);
               return u < 0x20 || u == 0x7f;
           });
}

bool token(const std::string& s, std::size_t max) {
    return !s.empty() && s.size() <= max && std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-' || c == '.' || c == '!' || c == '%' || c == '*' || c == '+' ||
               c == '`' || c == '\'' || c == '~';
    });
}

} // namespace

Decoded decode(std::string_view bytes, std::string_view own_node_id, core::TimePoint now) {
    Decoded d;
    if (bytes.size() > kMaxValueBytes) {
        d.reason = Reject::TooLarge;
        return d;
    }
    // No exceptions on untrusted input; invalid UTF-8 is a parse error too.
    auto j = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, false);
    if (j.is_discarded()) {
        d.reason = Reject::NotJson;
        return d;
    }
    if (!j.is_object()) {
        d.reason = Reject::NotObject;
        return d;
    }
    static constexpr std::array<const char*, 13> kKeys = {
        "app_name",           "app_version",      "event_timestamp", "event_uuid",
        "created_by_node_id", "collected_method", "transport_type",  "source_ip",
        "destination_ip",     "called_number",    "sip_method",      "sip_user_agent",
        "sip_message"};
    std::array<std::string, kKeys.size()> v;
    for (std::size_t i = 0; i < kKeys.size(); ++i) {
        auto it = j.find(kKeys[i]);
        if (it == j.end()) {
            d.reason = Reject::MissingField;
            return d;
        }
        if (!it->is_string()) {
            d.reason = Reject::NotString;
            return d;
        }
        v[i] = it->get<std::string>();
    }
    auto& [app_name, app_version, timestamp, uuid, node, collected, transport, source_ip,
           destination_ip, called, method, agent, message] = v;
    if (!core::isUuid(uuid) || !core::isUuid(node)) {
        d.reason = Reject::BadUuid;
        return d;
    }
    if (node == own_node_id) {
        d.reason = Reject::OwnEvent;
        return d;
    }
    if (!validIp(source_ip) || (!destination_ip.empty() && !validIp(destination_ip))) {
        d.reason = Reject::BadIp;
        return d;
    }
    auto time = core::parseTimestamp(timestamp);
    if (!time) {
        d.reason = Reject::BadTimestamp;
        return d;
    }
    bool ok = printable(app_name, 64) && printable(app_version, 32) &&
              (collected == "passive" || collected == "responsive") &&
              (transport == "UDP" || transport == "TCP" || transport == "TLS") &&
              printable(called, 128) && !called.empty() && token(method, 32) &&
              printable(agent, 512) && message.size() <= kMaxValueBytes;
    if (!ok) {
        d.reason = Reject::BadField;
        return d;
    }
    core::Event e;
    e.app_version = std::move(app_version);
    e.time = std::min(*time, now);
    e.event_timestamp = std::move(timestamp);
    e.event_uuid = std::move(uuid);
    e.created_by_node_id = std::move(node);
    e.collected_method = std::move(collected);
    e.transport_type = std::move(transport);
    e.source_ip = std::move(source_ip);
    e.destination_ip = std::move(destination_ip);
    e.called_number = std::move(called);
    e.sip_method = std::move(method);
    e.sip_user_agent = std::move(agent);
    // Whole messages may carry CR/LF; anything else that could fool a viewer is escaped.
    e.sip_message = core::sanitizeBytes(message, true);
    auto port = [&](const char* key) -> std::uint16_t {
        auto it = j.find(key);
        if (it == j.end() || !it->is_string()) {
            return 0;
        }
        const auto& s = it->get_ref<const std::string&>();
        if (s.empty() || s.size() > 5 || !std::all_of(s.begin(), s.end(), ::isdigit)) {
            return 0;
        }
        auto p = std::stoul(s);
        return p <= 65535 ? static_cast<std::uint16_t>(p) : 0;
    };
    e.source_port = port("source_port");
    e.destination_port = port("destination_port");
    e.origin = core::Origin::Peer;
    d.event = std::move(e);
    return d;
}

} // namespace sp::p2p
