#include <gtest/gtest.h>

#include <fstream>
#include <opendht/crypto.h>
#include <random>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.hpp"
#include "core/ids.hpp"
#include "core/text.hpp"
#include "p2p/node.hpp"
#include "p2p/records.hpp"

namespace fs = std::filesystem;

namespace {

struct TempDir {
    fs::path path = fs::temp_directory_path() / ("sp_p2p_node_test_" + std::to_string(::getpid()));
    TempDir() {
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() { fs::remove_all(path); }
};

void writeFile(const fs::path& p, const dht::Blob& data) {
    std::ofstream out(p, std::ios::binary);
    out.write(reinterpret_cast<const char*>(data.data()),
              static_cast<std::streamsize>(data.size()));
}

sp::core::Event sampleEvent() {
    sp::core::Event e;
    e.app_version = "5.0.0";
    e.time = std::chrono::system_clock::now();
    e.event_timestamp = sp::core::formatTimestamp(e.time);
    e.event_uuid = sp::core::newUuid();
    e.created_by_node_id = sp::core::newUuid();
    e.collected_method = "passive";
    e.transport_type = "UDP";
    e.source_ip = "203.0.113.44";
    e.source_port = 5070;
    e.destination_ip = "198.51.100.5";
    e.destination_port = 5060;
    e.called_number = "+441234567890";
    e.sip_method = "INVITE";
    e.sip_user_agent = "friendly-scanner";
    e.sip_message = "INVITE sip:+441234567890@198.51.100.5 SIP/2.0\r\n\r\n";
    return e;
}

} // namespace

// What sentrypeer 0.x persisted (an EC identity, the way its P2pNode wrote it) is replaced by
// an RSA one at start, the old files kept aside, and the node runs on the new identity.
TEST(P2pNode, PersistedEcIdentityIsMigratedToRsaAndTheNodeStarts) {
    TempDir dir;
    auto ec = dht::crypto::generateEcIdentity("sentrypeer");
    writeFile(dir.path / "dht-identity.pem", ec.first->serialize());
    writeFile(dir.path / "dht-identity.crt", ec.second->getPacked());
    ::chmod((dir.path / "dht-identity.pem").c_str(), 0600);

    sp::core::SystemClock clock;
    sp::p2p::P2pOptions o;
    o.port = 0; // any free port
    o.network = 100000 + std::random_device{}() % 1000000;
    o.data_dir = dir.path.string();
    o.node_id = sp::core::newUuid();
    o.key_bits = 2048; // a test: the daemon's is 4096
    sp::p2p::P2pNode node(o, clock, [](const sp::core::EventPtr&) {});
    node.start();
    std::string id = node.identity();
    EXPECT_EQ(id.size(), 40U);
    EXPECT_NE(id, ec.second->getId().toString()); // a new identity
    EXPECT_NE(node.statusJson().find("\"identity\": \"" + id + "\""), std::string::npos)
        << node.statusJson();
    node.stop();

    EXPECT_TRUE(fs::exists(dir.path / "dht-identity.pem.ec-old"));
    auto read = [&](const char* name) {
        std::ifstream in(dir.path / name, std::ios::binary);
        return dht::Blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    };
    dht::crypto::Identity migrated{
        std::make_shared<dht::crypto::PrivateKey>(read("dht-identity.pem")),
        std::make_shared<dht::crypto::Certificate>(read("dht-identity.crt"))};
    EXPECT_TRUE(sp::share::isRsa(migrated));
    EXPECT_EQ(sp::share::pkId(migrated), id);
    struct stat st {};
    ASSERT_EQ(::stat((dir.path / "dht-identity.pem").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777U, 0600U);

    // A restart keeps the migrated identity.
    sp::p2p::P2pNode again(o, clock, [](const sp::core::EventPtr&) {});
    again.start();
    EXPECT_EQ(again.identity(), id);
    again.stop();
}

// A local event survives the trip through a share record: every SentryPeer field, the
// reporter set to the verified publisher.
TEST(P2pRecords, EventRoundTripsThroughARecord) {
    auto e = sampleEvent();
    sp::share::Record r;
    ASSERT_TRUE(sp::p2p::toRecord(e, r));
    EXPECT_EQ(r.subject, e.source_ip);
    std::size_t bytes = 0;
    for (const auto& [k, v] : r.attributes) {
        bytes += k.size() + v.size();
    }
    EXPECT_LE(bytes, sp::share::kMaxAttributeBytes);
    sp::share::Delivered d{r, "9f2c4b1a0e8d7c6b5a4938271605f4e3d2c1b0a9", true};
    auto back = sp::p2p::fromDelivered(d, "00000000-0000-4000-8000-000000000000", e.time);
    ASSERT_TRUE(back.event) << sp::p2p::rejectName(back.reason);
    const auto& g = *back.event;
    EXPECT_EQ(g.event_uuid, e.event_uuid);
    EXPECT_EQ(g.event_timestamp, e.event_timestamp);
    EXPECT_EQ(g.created_by_node_id, e.created_by_node_id);
    EXPECT_EQ(g.source_ip, e.source_ip);
    EXPECT_EQ(g.source_port, e.source_port);
    EXPECT_EQ(g.destination_ip, e.destination_ip);
    EXPECT_EQ(g.destination_port, e.destination_port);
    EXPECT_EQ(g.called_number, e.called_number);
    EXPECT_EQ(g.sip_method, e.sip_method);
    EXPECT_EQ(g.sip_user_agent, e.sip_user_agent);
    EXPECT_EQ(g.sip_message, e.sip_message);
    EXPECT_EQ(g.origin, sp::core::Origin::Peer);
    EXPECT_EQ(g.reporter, d.publisher);

    // A huge message is cut to fit the protocol's 4 KiB of attributes.
    e.sip_message.assign(20000, 'x');
    ASSERT_TRUE(sp::p2p::toRecord(e, r));
    bytes = 0;
    for (const auto& [k, v] : r.attributes) {
        bytes += k.size() + v.size();
    }
    EXPECT_EQ(bytes, sp::share::kMaxAttributeBytes);

    // A verified publisher's junk is still junk: decode()'s checks apply.
    d.record.attributes.emplace_back("called_number", "");
    d.record.subject = "not-an-ip";
    EXPECT_FALSE(sp::p2p::fromDelivered(d, "", e.time).event);
    // Our own node id: not stored again.
    ASSERT_TRUE(sp::p2p::toRecord(e, r));
    d.record = r;
    EXPECT_EQ(sp::p2p::fromDelivered(d, e.created_by_node_id, e.time).reason,
              sp::p2p::Reject::OwnEvent);
}
