#include "p2p/records.hpp"

#include <nlohmann/json.hpp>

#include "core/ids.hpp"
#include "core/text.hpp"

namespace sp::p2p {
namespace {

std::string uuidText(const std::array<std::uint8_t, 16>& id) {
    static constexpr const char* kHex = "0123456789abcdef";
    std::string out;
    out.reserve(36);
    for (std::size_t i = 0; i < id.size(); ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out += '-';
        }
        out += kHex[id[i] >> 4];
        out += kHex[id[i] & 0xf];
    }
    return out;
}

// The fields carried as attributes, in this order (sip_message last: it is cut to fit).
constexpr std::array<const char*, 12> kAttributes = {
    "app_version",    "event_timestamp", "created_by_node_id", "collected_method",
    "transport_type", "source_port",     "destination_ip",     "destination_port",
    "called_number",  "sip_method",      "sip_user_agent",     "sip_message"};

} // namespace

bool toRecord(const core::Event& e, share::Record& out) {
    if (!core::isUuid(e.event_uuid) || e.source_ip.empty() ||
        e.source_ip.size() > share::kMaxSubjectBytes) {
        return false;
    }
    std::size_t n = 0;
    for (char c : e.event_uuid) {
        if (c == '-') {
            continue;
        }
        int hi = core::hexValue(c);
        if (n / 2 >= out.id.size() || hi < 0) {
            return false;
        }
        if (n % 2 == 0) {
            out.id[n / 2] = static_cast<std::uint8_t>(hi << 4);
        } else {
            out.id[n / 2] = static_cast<std::uint8_t>(out.id[n / 2] | hi);
        }
        ++n;
    }
    out.time = std::chrono::duration_cast<std::chrono::seconds>(e.time.time_since_epoch()).count();
    out.subject = e.source_ip;
    auto port = [](std::uint16_t p) { return p == 0 ? std::string() : std::to_string(p); };
    const std::array<std::string, kAttributes.size() - 1> values = {
        e.app_version,    e.event_timestamp,   e.created_by_node_id, e.collected_method,
        e.transport_type, port(e.source_port), e.destination_ip,     port(e.destination_port),
        e.called_number,  e.sip_method,        e.sip_user_agent};
    out.attributes.clear();
    std::size_t used = 0;
    for (std::size_t i = 0; i < values.size(); ++i) {
        used += std::char_traits<char>::length(kAttributes[i]) + values[i].size();
        out.attributes.emplace_back(kAttributes[i], values[i]);
    }
    const std::string_view message_key = kAttributes.back();
    if (used + message_key.size() > share::kMaxAttributeBytes) {
        return false; // an oversized field: decode() would refuse it anyway
    }
    std::size_t room = share::kMaxAttributeBytes - used - message_key.size();
    std::size_t cut = std::min(room, e.sip_message.size());
    // Cut on a UTF-8 boundary, as encode() does.
    while (cut > 0 && cut < e.sip_message.size() &&
           (static_cast<unsigned char>(e.sip_message[cut]) & 0xc0) == 0x80) {
        --cut;
    }
    out.attributes.emplace_back(message_key, e.sip_message.substr(0, cut));
    return true;
}

Decoded fromDelivered(const share::Delivered& d, std::string_view own_node_id,
                      core::TimePoint now) {
    nlohmann::json j = nlohmann::json::object();
    j["app_name"] = core::kAppName;
    j["event_uuid"] = uuidText(d.record.id);
    j["source_ip"] = d.record.subject;
    for (const auto& [key, value] : d.record.attributes) {
        if (key == "app_name" || key == "event_uuid" || key == "source_ip") {
            continue; // never from the attributes: the record says them
        }
        j[key] = value;
    }
    // Invalid UTF-8 in a field is replaced (U+FFFD), never thrown.
    Decoded out =
        decode(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), own_node_id, now);
    if (out.event) {
        out.event->reporter = d.publisher;
    }
    return out;
}

} // namespace sp::p2p
