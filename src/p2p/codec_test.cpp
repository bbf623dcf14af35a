#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/json.hpp"
#include "p2p/codec.hpp"

using namespace sp;

namespace {

const std::string kOwn = "00000000-0000-4000-8000-0000000000aa";

core::Event event() {
    core::Event e;
    e.app_version = "4.0.6";
    e.event_timestamp = "2026-11-27 04:00:00.123456";
    e.event_uuid = "123e4567-e89b-42d3-a456-426614174000";
    e.created_by_node_id = "00000000-0000-4000-8000-0000000000bb";
    e.collected_method = "passive";
    e.transport_type = "UDP";
    e.source_ip = "192.0.2.7";
    e.destination_ip = "198.51.100.1";
    e.called_number = "+4471234567";
    e.sip_method = "INVITE";
    e.sip_user_agent = "friendly-scanner";
    e.sip_message = "INVITE sip:x SIP/2.0\r\n\r\n";
    e.source_port = 5070;
    return e;
}

core::TimePoint now() {
    return core::TimePoint{std::chrono::seconds(1'900'000'000)};
}

p2p::Decoded decodeJson(const nlohmann::ordered_json& j) {
    return p2p::decode(j.dump(), kOwn, now());
}

} // namespace

TEST(P2pCodec, SentryPeerValueIsAccepted) {
    auto j = nlohmann::ordered_json::parse(core::eventToJson(event()));
    j.erase("source_port");
    j.erase("destination_port"); // SentryPeer sends only the 13 keys
    auto d = decodeJson(j);
    ASSERT_TRUE(d.event) << p2p::rejectName(d.reason);
    EXPECT_EQ(d.event->origin, core::Origin::Peer);
    EXPECT_EQ(d.event->event_timestamp, "2026-11-27 04:00:00.123456"); // as received
    EXPECT_EQ(d.event->called_number, "+4471234567");
    EXPECT_EQ(d.event->source_port, 0);
}

TEST(P2pCodec, OurValueRoundTrips) {
    auto d = p2p::decode(p2p::encode(event()), kOwn, now());
    ASSERT_TRUE(d.event);
    EXPECT_EQ(d.event->source_port, 5070);
    EXPECT_EQ(core::eventToJson(*d.event), core::eventToJson([] {
                  auto e = event();
                  e.origin = core::Origin::Peer;
                  return e;
              }()));
}

TEST(P2pCodec, Rejections) {
    auto base = nlohmann::ordered_json::parse(core::eventToJson(event()));
    auto with = [&](const char* k, nlohmann::ordered_json v) {
        auto j = base;
        j[k] = std::move(v);
        return decodeJson(j).reason;
    };
    EXPECT_EQ(p2p::decode("not json", kOwn, now()).reason, p2p::Reject::NotJson);
    EXPECT_EQ(p2p::decode("[1,2]", kOwn, now()).reason, p2p::Reject::NotObject);
    EXPECT_EQ(p2p::decode("{\"a\":\"\xff\"}", kOwn, now()).reason, p2p::Reject::NotJson);
    EXPECT_EQ(p2p::decode(std::string(70 * 1024, ' '), kOwn, now()).reason, p2p::Reject::TooLarge);
    auto missing = base;
    missing.erase("sip_method");
    EXPECT_EQ(decodeJson(missing).reason, p2p::Reject::MissingField);
    EXPECT_EQ(with("source_ip", 7), p2p::Reject::NotString);
    EXPECT_EQ(with("event_uuid", "not-a-uuid"), p2p::Reject::BadUuid);
    EXPECT_EQ(with("created_by_node_id", kOwn), p2p::Reject::OwnEvent);
    EXPECT_EQ(with("source_ip", "192.0.2.300"), p2p::Reject::BadIp);
    EXPECT_EQ(with("event_timestamp", "yesterday"), p2p::Reject::BadTimestamp);
    EXPECT_EQ(with("transport_type", "SCTP"), p2p::Reject::BadField);
    EXPECT_EQ(with("called_number", "1\r\n2"), p2p::Reject::BadField);
    EXPECT_EQ(with("sip_method", "IN VITE"), p2p::Reject::BadField);
    EXPECT_EQ(with("sip_user_agent", std::string(600, 'a')), p2p::Reject::BadField);
}

TEST(P2pCodec, FutureTimestampIsClamped) {
    auto e = event();
    e.event_timestamp = "2099-01-01 00:00:00.000000000";
    auto d = p2p::decode(core::eventToJson(e), kOwn, now());
    ASSERT_TRUE(d.event);
    EXPECT_EQ(d.event->time, now());
}

TEST(P2pCodec, LongMessagesAreCutToFitAValue) {
    auto e = event();
    e.sip_message = std::string(60 * 1024, 'x') + "\xc3\xa9";
    auto bytes = p2p::encode(e);
    EXPECT_LT(bytes.size(), p2p::kMaxValueBytes);
    EXPECT_TRUE(p2p::decode(bytes, kOwn, now()).event);
}

// The caps at their edges (SentryPeer's own: user agent 512, called number 1..128 bytes):
// one byte under or at the cap passes, one byte over is refused.
TEST(P2pCodec, FieldCapsAtTheirEdges) {
    auto base = nlohmann::ordered_json::parse(core::eventToJson(event()));
    auto with = [&](const char* k, nlohmann::ordered_json v) {
        auto j = base;
        j[k] = std::move(v);
        return decodeJson(j);
    };
    auto agent = with("sip_user_agent", std::string(512, 'a'));
    ASSERT_TRUE(agent.event) << p2p::rejectName(agent.reason);
    EXPECT_EQ(agent.event->sip_user_agent, std::string(512, 'a'));
    EXPECT_EQ(with("sip_user_agent", std::string(513, 'a')).reason, p2p::Reject::BadField);
    EXPECT_FALSE(with("sip_user_agent", std::string(513, 'a')).event);

    auto number = with("called_number", std::string(128, '1'));
    ASSERT_TRUE(number.event) << p2p::rejectName(number.reason);
    EXPECT_EQ(number.event->called_number, std::string(128, '1'));
    EXPECT_EQ(with("called_number", std::string(129, '1')).reason, p2p::Reject::BadField);
    EXPECT_EQ(with("called_number", "").reason, p2p::Reject::BadField);
    EXPECT_FALSE(with("called_number", "").event);
    auto one = with("called_number", "1");
    ASSERT_TRUE(one.event) << p2p::rejectName(one.reason);
    EXPECT_EQ(one.event->called_number, "1");
}

// A message of exactly kMaxPublishedMessage bytes is published whole; one byte more is cut
// to exactly the cap (on a UTF-8 boundary).
TEST(P2pCodec, MessageAtThePublishCapIsKeptWhole) {
    auto e = event();
    e.sip_message = std::string(p2p::kMaxPublishedMessage, 'x');
    auto at = p2p::decode(p2p::encode(e), kOwn, now());
    ASSERT_TRUE(at.event) << p2p::rejectName(at.reason);
    EXPECT_EQ(at.event->sip_message, e.sip_message);
    EXPECT_EQ(p2p::encode(e), core::eventToJson(e));

    e.sip_message.push_back('y');
    auto over = p2p::decode(p2p::encode(e), kOwn, now());
    ASSERT_TRUE(over.event) << p2p::rejectName(over.reason);
    EXPECT_EQ(over.event->sip_message, std::string(p2p::kMaxPublishedMessage, 'x'));

    // A two-byte character straddling the cap is dropped whole, not split.
    e.sip_message = std::string(p2p::kMaxPublishedMessage - 1, 'x') + "\xc3\xa9";
    auto utf8 = p2p::decode(p2p::encode(e), kOwn, now());
    ASSERT_TRUE(utf8.event) << p2p::rejectName(utf8.reason);
    EXPECT_EQ(utf8.event->sip_message, std::string(p2p::kMaxPublishedMessage - 1, 'x'));
}
