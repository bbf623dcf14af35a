#include "listen/ingest.hpp"

#include <spdlog/spdlog.h>

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
    : options_(std::move(options)), clock_(clock), publish_(std::move(publish)),
      reply_limit_(options_.reply_rate, options_.reply_rate, options_.reply_rate_keys) {
    sip::initParser();
}

bool Ingest::replyAllowed(const std::string& destination_ip) {
    if (options_.reply_rate <= 0) {
        return true;
    }
    std::lock_guard lock(reply_mutex_);
    return reply_limit_.allow(destination_ip, clock_.now());
}

void Ingest::logProbe(const core::Event& e) {
    if (!spdlog::should_log(spdlog::level::trace)) {
        return; // -d not given: no lock, no formatting
    }
    std::uint64_t suppressed = 0;
    {
        std::lock_guard lock(log_mutex_);
        if (!probe_log_.allow(e.time)) {
            return;
        }
        suppressed = probe_log_.takeSuppressed();
    }
    // Attacker-chosen fields are sanitised (no control characters) and capped at parse time.
    spdlog::trace("probe: {} {}:{} -> {}:{} {} {} called {} agent \"{}\"{}", e.transport_type,
                  e.source_ip, e.source_port, e.destination_ip, e.destination_port, e.sip_method,
                  e.collected_method, e.called_number, e.sip_user_agent,
                  suppressed == 0
                      ? std::string()
                      : " (" + std::to_string(suppressed) + " earlier probe lines suppressed)");
}

void Ingest::collect(core::MetricsWriter& w) {
    auto& c = counters_;
    auto each = [&](const char* name, const char* help, auto member) {
        w.family(name, "counter", help);
        for (std::size_t t = 0; t < kTransports; ++t) {
            w.sample((c.by_transport[t].*member).load(),
                     {{"transport", transportName(static_cast<Transport>(t))}});
        }
    };
    w.family("events_received_total", "counter",
             "SIP messages recorded as events, by transport and method");
    for (std::size_t t = 0; t < kTransports; ++t) {
        for (std::size_t m = 0; m < kMethodLabels.size(); ++m) {
            auto n = c.by_method[t][m].load();
            if (n > 0) {
                w.sample(n, {{"transport", transportName(static_cast<Transport>(t))},
                             {"method", kMethodLabels[m]}});
            }
        }
    }
    using P = IngestCounters::PerTransport;
    each("unparsable_total", "Inputs that were not SIP (recorded as MALFORMED)", &P::malformed);
    each("sip_responses_received_total", "SIP responses received (recorded, never answered)",
         &P::responses);
    each("empty_datagrams_total", "0-byte datagrams (counted, not stored)", &P::empty);
    each("replies_total", "SIP replies sent in responsive mode", &P::replies);
    each("sip_replies_suppressed_total",
         "Requests recorded but not answered: over --sip-reply-rate for their source IP",
         &P::replies_suppressed);
    each("received_bytes_total", "Bytes of SIP messages received", &P::bytes);
    w.family("connections_refused_total", "counter", "TCP/TLS connections over a cap");
    w.sample(c.connections_refused.load());
    w.family("tls_handshake_failures_total", "counter", "Failed TLS handshakes");
    w.sample(c.tls_handshake_failures.load());
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
    logProbe(*e);
    publish_(std::move(e));

    if (!options_.responsive || msg.kind != sip::Kind::Request) {
        return {};
    }

    sip::ReplyContext ctx{transportName(meta.transport), meta.source_ip, meta.source_port,
                          meta.destination_ip, meta.destination_port};
    std::string reply = sip::buildReply(msg, ctx, options_.responder);
    if (!reply.empty() && meta.transport == Transport::Udp && !replyAllowed(meta.source_ip)) {
        c.replies_suppressed.fetch_add(1, std::memory_order_relaxed);
        return {};
    }
    if (!reply.empty()) {
        c.replies.fetch_add(1, std::memory_order_relaxed);
    }
    return reply;
}

} // namespace sp::listen
