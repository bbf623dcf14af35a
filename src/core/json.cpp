#include "core/json.hpp"

#include "core/text.hpp"

namespace sp::core {

void appendJsonString(std::string& out, std::string_view s) {
    static constexpr char kHex[] = "0123456789abcdef";
    out.push_back('"');
    std::size_t i = 0;
    while (i < s.size()) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            // Copy the run of plain ASCII in one go: the common case.
            std::size_t j = i + 1;
            while (j < s.size()) {
                auto d = static_cast<unsigned char>(s[j]);
                if (d < 0x20 || d >= 0x80 || d == '"' || d == '\\') {
                    break;
                }
                ++j;
            }
            out.append(s.substr(i, j - i));
            i = j;
            continue;
        }
        switch (c) {
        case '"':
            out.append("\\\"");
            break;
        case '\\':
            out.append("\\\\");
            break;
        case '\n':
            out.append("\\n");
            break;
        case '\r':
            out.append("\\r");
            break;
        case '\t':
            out.append("\\t");
            break;
        default:
            if (c < 0x20) {
                out.append("\\u00");
                out.push_back(kHex[c >> 4]);
                out.push_back(kHex[c & 0x0f]);
            } else {
                std::size_t len = utf8SequenceLength(s, i);
                if (len == 0) {
                    out.append("\\ufffd");
                    ++i;
                    continue;
                }
                out.append(s.substr(i, len));
                i += len;
                continue;
            }
        }
        ++i;
    }
    out.push_back('"');
}

namespace {

void field(std::string& out, const char* key, std::string_view value, bool first = false) {
    if (!first) {
        out.push_back(',');
    }
    out.push_back('"');
    out.append(key);
    out.append("\":");
    appendJsonString(out, value);
}

} // namespace

void appendEventJson(std::string& out, const Event& e) {
    out.push_back('{');
    field(out, "app_name", kAppName, true);
    field(out, "app_version", e.app_version);
    field(out, "event_timestamp", e.event_timestamp);
    field(out, "event_uuid", e.event_uuid);
    field(out, "created_by_node_id", e.created_by_node_id);
    field(out, "collected_method", e.collected_method);
    field(out, "transport_type", e.transport_type);
    field(out, "source_ip", e.source_ip);
    field(out, "destination_ip", e.destination_ip);
    field(out, "called_number", e.called_number);
    field(out, "sip_method", e.sip_method);
    field(out, "sip_user_agent", e.sip_user_agent);
    field(out, "sip_message", e.sip_message);
    field(out, "source_port", std::to_string(e.source_port));
    field(out, "destination_port", std::to_string(e.destination_port));
    out.push_back('}');
}

} // namespace sp::core
