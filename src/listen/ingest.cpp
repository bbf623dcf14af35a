#include "listen/ingest.hpp"

#include "core/ids.hpp"
#include "core/text.hpp"
#include "core/version.hpp"
#include "sip/parse.hpp"

namespace sp::listen {

const char* transportName(Transport t) {
    switch (t) {
    case Transport::Udp:
        return "UDP";
    case Transport::Tcp:
        return "TCP";
    case Transport::Tls:
        return "TLS";
    }
    return "UDP";
}

std::size_t methodLabelIndex(std::string_view method) {
    for (std::size_t i = 0; i < kMethodLabels.size(); ++i) {
        if (method == kMethodLabels[i]) {
            return i;
        }
    }
    return methodLabelIndex("OTHER");
}

Ingest::Ingest(IngestOptions options, const core::Clock& clock, Publish publish)
    : options_(std::move(options)), clock_(clock), publish_(std::move(publish)) {
    sip::initParser();
}

std::string Ingest::handle(std::string_view bytes, const Meta& meta) {
    auto& c = at(meta.transport);
    if (bytes.empty()) {
        c.empty.fetch_add(1, std::memory_order_relaxed);
        return {};
    }
    c.bytes.fetch_add(bytes.size(), std::memory_order_relaxed);
    sip::Message msg =
        sip::parse(bytes, options_.responsive ? sip::Detail::Reply : sip::Detail::Event);

    auto e = std::make_shared<core::Event>();
    e->app_version = core::kVersion;
    e->time = clock_.now();
    e->event_timestamp = core::formatTimestamp(e->time);
    e->event_uuid = core::newUuid();
    e->created_by_node_id = options_.node_id;
    e->collected_method = options_.responsive ? "responsive" : "passive";
    e->transport_type = transportName(meta.transport);
    e->source_ip = meta.source_ip;
    e->source_port = meta.source_port;
    e->destination_ip = meta.destination_ip;
    e->destination_port = meta.destination_port;
    e->called_number = msg.called_number;
    e->sip_method = msg.method;
    e->sip_user_agent = msg.user_agent;
    e->sip_message = std::move(msg.sip_message);
    e->origin = core::Origin::Local;

    c.messages.fetch_add(1, std::memory_order_relaxed);
    counters_.by_method[static_cast<std::size_t>(meta.transport)][methodLabelIndex(e->sip_method)]
        .fetch_add(1, std::memory_order_relaxed);
    if (msg.kind == sip::Kind::Malformed) {
        c.malformed.fetch_add(1, std::memory_order_relaxed);
    } else if (msg.kind == sip::Kind::Response) {
        c.responses.fetch_add(1, std::memory_order_relaxed);
    }
    publish_(std::move(e));

    if (!options_.responsive || msg.kind != sip::Kind::Request) {
        return {};
    }
    sip::ReplyContext ctx{transportName(meta.transport), meta.source_ip, meta.source_port,
                          meta.destination_ip, meta.destination_port};
    std::string reply = sip::buildReply(msg, ctx, options_.responder);
    if (!reply.empty()) {
        c.replies.fetch_add(1, std::memory_order_relaxed);
    }
    return reply;
}

} // namespace sp::listen
