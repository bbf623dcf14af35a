#include "sip/responder.hpp"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "sip/header_scan.hpp"
#include "sip/test_messages.hpp"

namespace sp::sip {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::testing::StartsWith;

class ResponderTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() { initParser(); }

    ReplyContext ctx{"UDP", "203.0.113.9", 40000, "192.0.2.10", 5060};
    ResponderOptions options;
};

// A reply split into its status line, headers (name, value) and body; checks framing.
struct Reply {
    std::string status_line;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;

    explicit Reply(const std::string& bytes) {
        std::size_t end = bytes.find("\r\n\r\n");
        EXPECT_NE(end, std::string::npos) << "no blank line";
        std::string_view head = std::string_view(bytes).substr(0, end + 2);
        body = bytes.substr(end + 4);
        status_line = std::string(head.substr(0, head.find("\r\n")));
        forEachHeader(head, [this](std::string_view n, std::string_view v) {
            headers.emplace_back(n, v);
            return true;
        });
        for (std::size_t i = 0; i < bytes.size(); ++i) {
            if (bytes[i] == '\n') {
                EXPECT_TRUE(i > 0 && bytes[i - 1] == '\r') << "bare LF at " << i;
            }
        }
    }

    std::vector<std::string> all(std::string_view name) const {
        std::vector<std::string> out;
        for (const auto& [n, v] : headers) {
            if (n == name) {
                out.push_back(v);
            }
        }
        return out;
    }
    std::string one(std::string_view name) const {
        auto values = all(name);
        EXPECT_EQ(values.size(), 1u) << name;
        return values.empty() ? std::string() : values.front();
    }
};

TEST_F(ResponderTest, OptionsGets200EchoingTheRequest) {
    Message request = parse(test::sipviciousOptions());
    Reply r(buildReply(request, ctx, options));
    EXPECT_EQ(r.status_line, "SIP/2.0 200 OK");
    EXPECT_THAT(r.all("Via"), ElementsAre("SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK-"
                                          "2876093012;rport=40000;received=203.0.113.9"));
    EXPECT_EQ(r.one("From"), request.from);
    EXPECT_THAT(r.one("To"), StartsWith(request.to + ";tag="));
    EXPECT_EQ(r.one("Call-ID"), "366432446553395631349");
    EXPECT_EQ(r.one("CSeq"), "1 OPTIONS");
    EXPECT_EQ(r.one("Server"), "FPBX-16.0.40");
    EXPECT_THAT(r.one("Allow"), HasSubstr("INVITE"));
    EXPECT_EQ(r.one("Content-Length"), "0");
    EXPECT_THAT(r.body, IsEmpty());
}

TEST_F(ResponderTest, ViaReceivedAndRportOnlyOnTheTopVia) {
    Message request = parse(test::withBody("BYE sip:1@192.0.2.10 SIP/2.0\r\n"
                                           "Via: SIP/2.0/UDP 198.51.100.1:5062;rport;branch=a\r\n"
                                           "Via: SIP/2.0/UDP 198.51.100.2;branch=b;rport\r\n"
                                           "To: <sip:1@192.0.2.10>;tag=x\r\n"
                                           "From: <sip:2@198.51.100.1>;tag=y\r\n"
                                           "Call-ID: vias\r\n"
                                           "CSeq: 3 BYE\r\n",
                                           ""));
    Reply r(buildReply(request, ctx, options));
    EXPECT_THAT(
        r.all("Via"),
        ElementsAre("SIP/2.0/UDP 198.51.100.1:5062;rport=40000;branch=a;received=203.0.113.9",
                    "SIP/2.0/UDP 198.51.100.2;branch=b;rport"));
}

TEST_F(ResponderTest, ViaWithoutRportOrWithReceivedIsNotDuplicated) {
    Message request = parse(test::sippInvite());
    Reply r(buildReply(request, ctx, options));
    EXPECT_THAT(r.all("Via"), ElementsAre("SIP/2.0/UDP 198.51.100.7:5061;branch=z9hG4bK-4242-1-0;"
                                          "received=203.0.113.9"));

    request.vias = {"SIP/2.0/UDP h.example.com;received=198.51.100.9;rport=1234;branch=z"};
    Reply again(buildReply(request, ctx, options));
    EXPECT_THAT(again.all("Via"), ElementsAre(request.vias.front()));
}

TEST_F(ResponderTest, IPv6SourceInReceived) {
    Message request = parse(test::sipviciousOptions());
    ctx.source_ip = "2001:db8::5";
    Reply r(buildReply(request, ctx, options));
    EXPECT_THAT(r.one("Via"), HasSubstr(";rport=40000;received=2001:db8::5"));
}

TEST_F(ResponderTest, ToTagIsStableAcrossRetransmissions) {
    const std::string bytes = test::sippInvite();
    const std::string first = buildReply(parse(bytes), ctx, options);
    const std::string second = buildReply(parse(bytes), ctx, options);
    EXPECT_EQ(first, second);
    std::string to = Reply(first).one("To");
    EXPECT_THAT(to, MatchesRegex(".*;tag=[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
                                 "[0-9a-f]{12}"));

    std::string other_call =
        Reply(buildReply(parse(test::sippInvite("2-4242@198.51.100.7")), ctx, options)).one("To");
    EXPECT_NE(to, other_call);

    ResponderOptions other_node = options;
    other_node.tag_key = 0x5eed;
    EXPECT_NE(Reply(buildReply(parse(bytes), ctx, other_node)).one("To"), to);
}

TEST_F(ResponderTest, ExistingToTagIsKept) {
    Message request = parse(test::withBody("BYE sip:service@192.0.2.10 SIP/2.0\r\n"
                                           "Via: SIP/2.0/UDP 198.51.100.7:5061;branch=z9hG4bK-b\r\n"
                                           "From: <sip:sipp@198.51.100.7>;tag=4242SIPpTag001\r\n"
                                           "To: <sip:service@192.0.2.10>;tag=abc-123\r\n"
                                           "Call-ID: bye-1\r\n"
                                           "CSeq: 2 BYE\r\n",
                                           ""));
    Reply r(buildReply(request, ctx, options));
    EXPECT_EQ(r.status_line, "SIP/2.0 200 OK");
    EXPECT_EQ(r.one("To"), "<sip:service@192.0.2.10>;tag=abc-123");
    EXPECT_EQ(r.one("CSeq"), "2 BYE");
}

TEST_F(ResponderTest, AckGetsNoReply) {
    Message request = parse(test::withBody("ACK sip:service@192.0.2.10 SIP/2.0\r\n"
                                           "Via: SIP/2.0/UDP 198.51.100.7:5061;branch=z9hG4bK-a\r\n"
                                           "From: <sip:sipp@198.51.100.7>;tag=1\r\n"
                                           "To: <sip:service@192.0.2.10>;tag=2\r\n"
                                           "Call-ID: ack-1\r\n"
                                           "CSeq: 1 ACK\r\n",
                                           ""));
    ASSERT_EQ(request.kind, Kind::Request);
    EXPECT_EQ(buildReply(request, ctx, options), "");
}

TEST_F(ResponderTest, ResponsesAndMalformedGetNoReply) {
    EXPECT_EQ(buildReply(parse(test::okResponse()), ctx, options), "");
    EXPECT_EQ(buildReply(parse("\x16\x03\x01 garbage"), ctx, options), "");
    EXPECT_EQ(buildReply(parse(""), ctx, options), "");
}

TEST_F(ResponderTest, UnanswerableRequestsGetNoReply) {
    const Message good = parse(test::sipviciousOptions());
    ASSERT_NE(buildReply(good, ctx, options), "");
    for (auto strip : std::vector<void (*)(Message&)>{
             [](Message& m) { m.vias.clear(); }, [](Message& m) { m.from.clear(); },
             [](Message& m) { m.to.clear(); }, [](Message& m) { m.call_id.clear(); },
             [](Message& m) { m.cseq.clear(); },
             [](Message& m) { m.call_id = "x\r\nX-Injected: 1"; }}) {
        Message m = good;
        strip(m);
        EXPECT_EQ(buildReply(m, ctx, options), "");
    }
}

TEST_F(ResponderTest, InviteGets200WithSdpAnswer) {
    Message request = parse(test::sippInvite());
    Reply r(buildReply(request, ctx, options));
    EXPECT_EQ(r.status_line, "SIP/2.0 200 OK");
    EXPECT_EQ(r.one("Contact"), "<sip:192.0.2.10:5060;transport=udp>");
    EXPECT_EQ(r.one("Content-Type"), "application/sdp");
    EXPECT_EQ(r.one("CSeq"), "1 INVITE");
    EXPECT_EQ(r.one("Content-Length"), std::to_string(r.body.size()));
    EXPECT_THAT(r.body,
                AllOf(StartsWith("v=0\r\n"), HasSubstr("\r\nc=IN IP4 192.0.2.10\r\n"),
                      HasSubstr("\r\nt=0 0\r\n"),
                      MatchesRegex("(.|\r|\n)*m=audio [0-9]+ RTP/AVP 0 8 101\r\n(.|\r|\n)*"),
                      HasSubstr("a=rtpmap:0 PCMU/8000\r\n"),
                      HasSubstr("a=rtpmap:101 telephone-event/8000\r\n"),
                      HasSubstr("a=sendrecv\r\n")));
}

TEST_F(ResponderTest, InviteOverIPv6AndTls) {
    ctx = ReplyContext{"TLS", "2001:db8::7", 50000, "2001:db8::10", 5061};
    Reply r(buildReply(parse(test::sippInvite()), ctx, options));
    EXPECT_EQ(r.one("Contact"), "<sip:[2001:db8::10]:5061;transport=tls>");
    EXPECT_THAT(r.body, HasSubstr("\r\nc=IN IP6 2001:db8::10\r\n"));
    EXPECT_THAT(r.body, HasSubstr(" IN IP6 2001:db8::10\r\n"));
}

TEST_F(ResponderTest, NotFoundModeAnswersInviteWith404) {
    options.mode = AgentMode::NotFound;
    Reply r(buildReply(parse(test::sippInvite()), ctx, options));
    EXPECT_EQ(r.status_line, "SIP/2.0 404 Not Found");
    EXPECT_THAT(r.all("Contact"), IsEmpty());
    EXPECT_THAT(r.all("Content-Type"), IsEmpty());
    EXPECT_EQ(r.one("Content-Length"), "0");
    EXPECT_THAT(r.one("To"), HasSubstr(";tag="));
    // Other methods are still answered 200.
    EXPECT_EQ(Reply(buildReply(parse(test::sipviciousOptions()), ctx, options)).status_line,
              "SIP/2.0 200 OK");
}

TEST_F(ResponderTest, RedirectModeAnswersInviteWith302) {
    options.mode = AgentMode::Redirect;
    options.redirect_uri = "sip:999@192.0.2.1";
    Reply r(buildReply(parse(test::sippInvite()), ctx, options));
    EXPECT_EQ(r.status_line, "SIP/2.0 302 Moved Temporarily");
    EXPECT_EQ(r.one("Contact"), "<sip:999@192.0.2.1>");
    EXPECT_EQ(r.one("Content-Length"), "0");
    EXPECT_THAT(r.body, IsEmpty());
    EXPECT_EQ(Reply(buildReply(parse(test::softphoneRegister()), ctx, options)).status_line,
              "SIP/2.0 200 OK");
}

TEST_F(ResponderTest, OtherMethodsGet200) {
    for (std::string method : {"REGISTER", "BYE", "CANCEL", "INFO", "MESSAGE", "SUBSCRIBE",
                               "NOTIFY", "PUBLISH", "UPDATE", "REFER", "PRACK", "FOO"}) {
        std::string head = method;
        head.append(" sip:1@192.0.2.10 SIP/2.0\r\n"
                    "Via: SIP/2.0/TCP 198.51.100.1;branch=q\r\n"
                    "To: <sip:1@192.0.2.10>\r\n"
                    "From: <sip:2@198.51.100.1>;tag=y\r\n");
        head.append("Call-ID: m-").append(method).append("\r\n");
        head.append("CSeq: 5 ").append(method).append("\r\n");
        Message request = parse(test::withBody(head, ""));
        ASSERT_EQ(request.kind, Kind::Request) << method;
        Reply r(buildReply(request, ctx, options));
        EXPECT_EQ(r.status_line, "SIP/2.0 200 OK") << method;
        EXPECT_EQ(r.one("CSeq"), "5 " + method);
        EXPECT_EQ(r.one("Content-Length"), "0");
    }
}

TEST_F(ResponderTest, ServerHeaderIsOptional) {
    options.server.clear();
    Reply r(buildReply(parse(test::sipviciousOptions()), ctx, options));
    EXPECT_THAT(r.all("Server"), IsEmpty());
}

TEST_F(ResponderTest, ReplyParsesBackAsAResponse) {
    for (AgentMode mode : {AgentMode::Ok, AgentMode::NotFound, AgentMode::Redirect}) {
        options.mode = mode;
        options.redirect_uri = "sip:999@192.0.2.1";
        const std::string bytes = buildReply(parse(test::sippInvite()), ctx, options);
        Message back = parse(bytes);
        EXPECT_EQ(back.kind, Kind::Response);
        EXPECT_EQ(back.called_number, "service");
        EXPECT_THAT(bytes, Not(HasSubstr(std::string(1, '\0'))));
    }
}

} // namespace
} // namespace sp::sip
