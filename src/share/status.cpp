// Credit names and the status JSON.
#include <cstdio>

#include "share/share.hpp"

namespace sp::share {

std::optional<Credit> parseCredit(std::string_view text) {
    if (text == "L0" || text == "l0" || text == "0") {
        return Credit::L0;
    }
    if (text == "L1" || text == "l1" || text == "1") {
        return Credit::L1;
    }
    if (text == "L2" || text == "l2" || text == "2") {
        return Credit::L2;
    }
    return std::nullopt;
}

std::string_view toString(Credit c) {
    switch (c) {
    case Credit::L0:
        return "L0";
    case Credit::L1:
        return "L1";
    case Credit::L2:
        return "L2";
    }
    return "L1";
}

namespace {

// pkIds and the fixed strings written here need no escaping but quotes are escaped anyway.
void str(std::string& out, std::string_view s) {
    out += '"';
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
            out += buf;
        } else {
            out += c;
        }
    }
    out += '"';
}

void list(std::string& out, const std::vector<std::string>& v) {
    out += '[';
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (i != 0) {
            out += ',';
        }
        str(out, v[i]);
    }
    out += ']';
}

void num(std::string& out, std::string_view key, std::uint64_t v, bool comma = true) {
    str(out, key);
    out += ':';
    out += std::to_string(v);
    if (comma) {
        out += ',';
    }
}

} // namespace

std::string statusJson(const Status& s) {
    std::string o = "{";
    o += "\"running\":";
    o += s.running ? "true," : "false,";
    o += "\"identity\":";
    str(o, s.identity);
    o += ",\"epoch\":" + std::to_string(s.epoch) + ",\"bucket\":" + std::to_string(s.bucket);
    o += ",\"credit\":";
    str(o, toString(s.credit));
    o += ",\"newcomer\":";
    o += s.newcomer ? "true" : "false";
    o += ",\"partners\":{\"granted_to\":";
    list(o, s.granted_to);
    o += ",\"granted_by\":";
    list(o, s.granted_by);
    o += "},\"records\":{";
    num(o, "published", s.records_published);
    num(o, "delivered", s.records_delivered);
    num(o, "credited", s.records_credited);
    num(o, "dropped", s.records_dropped);
    num(o, "queued", s.queued_records, false);
    o += "},\"batches\":{";
    num(o, "put", s.batches_put);
    num(o, "received", s.batches_received);
    num(o, "pending", s.pending_batches, false);
    o += "},\"grants\":{";
    num(o, "sent", s.grants_sent);
    num(o, "received", s.grants_received);
    num(o, "give_first_restarts", s.give_first_restarts, false);
    o += "},\"bytes\":{";
    num(o, "put", s.bytes_put);
    num(o, "received", s.bytes_received, false);
    o += "},\"rejected\":{";
    const auto& r = s.rejected;
    num(o, "signature", r.signature);
    num(o, "cap", r.cap);
    num(o, "binding", r.binding);
    num(o, "replay", r.replay);
    num(o, "no_key_expired", r.no_key_expired);
    num(o, "decrypt", r.decrypt);
    num(o, "context", r.context);
    num(o, "record_schema", r.record_schema);
    num(o, "record_time", r.record_time);
    num(o, "duplicate", r.duplicate);
    num(o, "denied", r.denied);
    num(o, "bandwidth", r.bandwidth, false);
    o += "},\"publishers\":" + std::to_string(s.publishers) + "}";
    return o;
}

} // namespace sp::share
