#include "sip/parse.hpp"

#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/event.hpp"
#include "sip/test_messages.hpp"

namespace sp::sip {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

class ParseTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() { initParser(); }
};

// No single-line field may carry a control character (log forging, header injection).
void expectSingleLineFieldsClean(const Message& m) {
    for (const std::string* field :
         {&m.method, &m.called_number, &m.user_agent, &m.request_uri, &m.from, &m.to, &m.to_tag,
          &m.call_id, &m.cseq, &m.cseq_method, &m.content_type}) {
        for (char c : *field) {
            auto u = static_cast<unsigned char>(c);
            EXPECT_TRUE(u >= 0x20 && u != 0x7f) << "control byte in field: " << *field;
        }
    }
    for (const std::string& via : m.vias) {
        EXPECT_EQ(via.find_first_of("\r\n"), std::string::npos) << via;
    }
}

TEST_F(ParseTest, SippInvite) {
    const std::string bytes = test::sippInvite();
    Message m = parse(bytes);
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_EQ(m.method, "INVITE");
    EXPECT_EQ(m.called_number, "service");
    EXPECT_EQ(m.user_agent, core::kNotFound);
    EXPECT_EQ(m.sip_message, bytes);
    EXPECT_EQ(m.request_uri, "sip:service@192.0.2.10:5060");
    EXPECT_THAT(m.vias, ElementsAre("SIP/2.0/UDP 198.51.100.7:5061;branch=z9hG4bK-4242-1-0"));
    EXPECT_EQ(m.from, "sipp <sip:sipp@198.51.100.7:5061>;tag=4242SIPpTag001");
    EXPECT_EQ(m.to, "service <sip:service@192.0.2.10:5060>");
    EXPECT_EQ(m.to_tag, "");
    EXPECT_EQ(m.call_id, "1-4242@198.51.100.7");
    EXPECT_EQ(m.cseq, "1 INVITE");
    EXPECT_EQ(m.cseq_method, "INVITE");
    EXPECT_EQ(m.content_type, "application/sdp");
    EXPECT_TRUE(m.has_body);
}

TEST_F(ParseTest, SipviciousOptions) {
    Message m = parse(test::sipviciousOptions());
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_EQ(m.method, "OPTIONS");
    EXPECT_EQ(m.user_agent, "friendly-scanner");
    EXPECT_EQ(m.called_number, "100");
    EXPECT_THAT(m.vias,
                ElementsAre("SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK-2876093012;rport"));
    EXPECT_EQ(m.cseq, "1 OPTIONS");
    EXPECT_FALSE(m.has_body);
    EXPECT_EQ(m.content_type, "");
}

TEST_F(ParseTest, Register) {
    Message m = parse(test::softphoneRegister());
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_EQ(m.method, "REGISTER");
    EXPECT_EQ(m.called_number, "1001");
    EXPECT_EQ(m.user_agent, "Zoiper rv2.10.8.2");
    EXPECT_EQ(m.request_uri, "sip:192.0.2.10");
    EXPECT_EQ(m.call_id, "reg-call-1@203.0.113.5");
}

TEST_F(ParseTest, ResponseIsRecordedNotAnswerable) {
    Message m = parse(test::okResponse());
    EXPECT_EQ(m.kind, Kind::Response);
    EXPECT_EQ(m.method, core::kMethodResponse);
    EXPECT_EQ(m.called_number, "bob");
    EXPECT_EQ(m.user_agent, "SomePhone/1.0");
    EXPECT_TRUE(m.vias.empty());
    EXPECT_EQ(m.call_id, "");
}

TEST_F(ParseTest, TruncatedResponseIsStillAResponse) {
    Message m = parse("SIP/2.0 486 Busy");
    EXPECT_EQ(m.kind, Kind::Response);
    EXPECT_EQ(m.method, core::kMethodResponse);
    EXPECT_EQ(m.called_number, core::kNotFound);
    EXPECT_EQ(m.user_agent, core::kNotFound);
}

TEST_F(ParseTest, StatusLineOfOtherVersionIsNotARequest) {
    Message m = parse("SIP/1.0 200 OK\r\nTo: <sip:5@192.0.2.1>\r\n\r\n");
    EXPECT_EQ(m.kind, Kind::Malformed);
    EXPECT_EQ(m.method, core::kMethodMalformed);
}

TEST_F(ParseTest, EmptyInput) {
    Message m = parse("");
    EXPECT_EQ(m.kind, Kind::Malformed);
    EXPECT_EQ(m.method, core::kMethodMalformed);
    EXPECT_EQ(m.called_number, core::kNotFound);
    EXPECT_EQ(m.user_agent, core::kNotFound);
    EXPECT_EQ(m.sip_message, "");
}

TEST_F(ParseTest, OnlyLineBreaks) {
    Message m = parse("\r\n\r\n");
    EXPECT_EQ(m.kind, Kind::Malformed);
    EXPECT_EQ(m.sip_message, "\r\n\r\n");
}

TEST_F(ParseTest, RandomBytesAreMalformedAndSanitised) {
    std::mt19937 rng(20240229);
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_int_distribution<std::size_t> length(1, 1500);
    for (int round = 0; round < 300; ++round) {
        std::string bytes(length(rng), '\0');
        for (char& c : bytes) {
            c = static_cast<char>(byte(rng));
        }
        Message m = parse(bytes);
        EXPECT_EQ(m.kind, Kind::Malformed);
        EXPECT_EQ(m.method, core::kMethodMalformed);
        EXPECT_EQ(m.called_number, core::kNotFound);
        for (char c : m.sip_message) {
            auto u = static_cast<unsigned char>(c);
            EXPECT_TRUE(u >= 0x20 || c == '\t' || c == '\r' || c == '\n');
        }
        expectSingleLineFieldsClean(m);
    }
}

TEST_F(ParseTest, BinaryGarbageWithEmbeddedNul) {
    const char raw[] = "\x00\x01\x02INVITE\x00 sip:x SIP/2.0\r\n\r\n";
    const std::string bytes(raw, sizeof(raw) - 1);
    Message m = parse(bytes);
    EXPECT_EQ(m.kind, Kind::Malformed);
    EXPECT_THAT(m.sip_message, StartsWith("\\x00\\x01\\x02INVITE\\x00"));
}

TEST_F(ParseTest, HttpRequestIsMalformed) {
    Message m = parse("GET / HTTP/1.1\r\nHost: 192.0.2.1\r\nUser-Agent: curl/7.88\r\n\r\n");
    EXPECT_EQ(m.kind, Kind::Malformed);
    EXPECT_EQ(m.method, core::kMethodMalformed);
    // Still worth recording who knocked.
    EXPECT_EQ(m.user_agent, "curl/7.88");
}

TEST_F(ParseTest, MethodThatIsNotATokenIsMalformed) {
    Message m = parse("INV\x01TE sip:1@192.0.2.1 SIP/2.0\r\nTo: <sip:1@192.0.2.1>\r\n\r\n");
    EXPECT_EQ(m.kind, Kind::Malformed);
    EXPECT_EQ(m.method, core::kMethodMalformed);
}

TEST_F(ParseTest, LeadingLineBreaksAreTolerated) {
    Message m = parse("\r\n" + test::sipviciousOptions());
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_EQ(m.method, "OPTIONS");
}

TEST_F(ParseTest, LargeMessageOf60KiB) {
    std::string head = "INVITE sip:4915112345678@192.0.2.10 SIP/2.0\r\n"
                       "Via: SIP/2.0/TCP 198.51.100.7:5060;branch=z9hG4bK-big\r\n"
                       "From: <sip:a@198.51.100.7>;tag=1\r\n"
                       "To: <sip:4915112345678@192.0.2.10>\r\n"
                       "Call-ID: big-1\r\n"
                       "CSeq: 1 INVITE\r\n"
                       "User-Agent: big-agent\r\n"
                       "X-Padding: " +
                       std::string(std::size_t{60} * 1024, 'a') + "\r\n";
    const std::string bytes = test::withBody(head, "");
    ASSERT_GT(bytes.size(), 60u * 1024);
    Message m = parse(bytes);
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_EQ(m.called_number, "4915112345678");
    EXPECT_EQ(m.user_agent, "big-agent");
    EXPECT_EQ(m.sip_message.size(), bytes.size());
}

// A request whose To user and User-Agent are the given bytes.
std::string withToUserAndAgent(const std::string& user, const std::string& agent) {
    return test::withBody("INVITE sip:" + user +
                              "@192.0.2.10 SIP/2.0\r\n"
                              "Via: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK-cap\r\n"
                              "To: <sip:" +
                              user +
                              "@192.0.2.10>\r\n"
                              "From: <sip:a@192.0.2.10>;tag=cap\r\n"
                              "Call-ID: cap\r\n"
                              "CSeq: 1 INVITE\r\n"
                              "User-Agent: " +
                              agent + "\r\n",
                          "");
}

TEST_F(ParseTest, HugeCalledNumberAndUserAgentAreCutToTheirCaps) {
    // The documented caps, the same as SentryPeer's peer codec (README, ARCHITECTURE.md).
    static_assert(kMaxCalledNumberBytes == 128);
    EXPECT_EQ(kMaxUserAgentBytes, 512U);
    Message m = parse(withToUserAndAgent(std::string(std::size_t{20} * 1024, '9'),
                                         std::string(std::size_t{30} * 1024, 'u')));
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_EQ(m.called_number, std::string(kMaxCalledNumberBytes, '9'));
    EXPECT_EQ(m.user_agent, std::string(kMaxUserAgentBytes, 'u'));
    // At the cap exactly: kept whole.
    m = parse(withToUserAndAgent(std::string(kMaxCalledNumberBytes, '1'),
                                 std::string(kMaxUserAgentBytes, 'v')));
    EXPECT_EQ(m.called_number, std::string(kMaxCalledNumberBytes, '1'));
    EXPECT_EQ(m.user_agent, std::string(kMaxUserAgentBytes, 'v'));
}

TEST_F(ParseTest, CapNeverSplitsACharacterOrAnEscape) {
    // A 2-byte UTF-8 character straddling the cap is dropped whole, not cut in half.
    Message m = parse(
        withToUserAndAgent("1", std::string(kMaxUserAgentBytes - 1, 'a') + "\xc3\xa9" + "tail"));
    EXPECT_EQ(m.user_agent, std::string(kMaxUserAgentBytes - 1, 'a'));
    // An invalid byte becomes the 4 characters \xff: kept whole when it fits ...
    m = parse(withToUserAndAgent("1", std::string(kMaxUserAgentBytes - 4, 'a') + "\xff" + "zz"));
    EXPECT_EQ(m.user_agent, std::string(kMaxUserAgentBytes - 4, 'a') + "\\xff");
    // ... and dropped whole when it does not.
    m = parse(withToUserAndAgent("1", std::string(kMaxUserAgentBytes - 2, 'a') + "\xff" + "zz"));
    EXPECT_EQ(m.user_agent, std::string(kMaxUserAgentBytes - 2, 'a'));
    // A 4-byte character at the end of the called number.
    m = parse(
        withToUserAndAgent(std::string(kMaxCalledNumberBytes - 3, '5') + "%F0%9F%98%80", "x"));
    EXPECT_EQ(m.called_number, std::string(kMaxCalledNumberBytes - 3, '5'));
}

TEST_F(ParseTest, UserAgentOfAMalformedMessageIsCappedToo) {
    // No Content-Length match: osip never sees it, the raw header scan finds the agent.
    Message m = parse("INVITE sip:1@192.0.2.10 SIP/2.0\r\nContent-Length: 99\r\nUser-Agent: " +
                      std::string(std::size_t{4} * 1024, 'm') + "\r\n\r\n");
    EXPECT_EQ(m.kind, Kind::Malformed);
    EXPECT_EQ(m.user_agent, std::string(kMaxUserAgentBytes, 'm'));
}

TEST_F(ParseTest, InvalidUtf8InUserAgentIsEscapedNotLost) {
    Message m = parse(test::withBody("OPTIONS sip:100@192.0.2.10 SIP/2.0\r\n"
                                     "Via: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK-u\r\n"
                                     "To: <sip:100@192.0.2.10>\r\n"
                                     "From: <sip:100@192.0.2.10>;tag=u\r\n"
                                     "Call-ID: utf8\r\n"
                                     "CSeq: 1 OPTIONS\r\n"
                                     "User-Agent: bad\xff\xfe agent \xc3\xa9t\xc3\xa9\r\n",
                                     ""));
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_EQ(m.user_agent, "bad\\xff\\xfe agent \xc3\xa9t\xc3\xa9");
    EXPECT_THAT(m.sip_message, HasSubstr("bad\\xff\\xfe agent"));
}

TEST_F(ParseTest, LineBreakInjectionCannotReachSingleLineFields) {
    // Escaped CRLF in the To user (osip unescapes it), a bare CR inside a header line, and
    // a NUL: none may survive into a field the responder or a log line echoes.
    Message m = parse(test::withBody("INVITE sip:%0d%0aX-Evil:%201@192.0.2.10 SIP/2.0\r\n"
                                     "Via: SIP/2.0/UDP 198.51.100.23;branch=z9hG4bK-i\r\n"
                                     "To: <sip:%0d%0aInjected:%20yes@192.0.2.10>\r\n"
                                     "From: <sip:a@192.0.2.10>;tag=i\r\n"
                                     "Call-ID: inj\r\n"
                                     "CSeq: 1 INVITE\r\n"
                                     "User-Agent: evil\rX-Forged: 1\r\n",
                                     ""));
    expectSingleLineFieldsClean(m);
    EXPECT_THAT(m.called_number, Not(HasSubstr("\n")));
    EXPECT_THAT(m.user_agent, Not(HasSubstr("\r")));
}

TEST_F(ParseTest, ToWithoutUserFallsBackToRequestUriUser) {
    Message m = parse(test::withBody("INVITE sip:0044123456@192.0.2.10 SIP/2.0\r\n"
                                     "Via: SIP/2.0/UDP 198.51.100.23;branch=z9hG4bK-t\r\n"
                                     "To: <sip:192.0.2.10>\r\n"
                                     "From: <sip:a@192.0.2.10>;tag=t\r\n"
                                     "Call-ID: to-no-user\r\n"
                                     "CSeq: 1 INVITE\r\n",
                                     ""));
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_EQ(m.called_number, "0044123456");
}

TEST_F(ParseTest, NoUserAnywhereIsNotFound) {
    Message m = parse(test::withBody("OPTIONS sip:192.0.2.10 SIP/2.0\r\n"
                                     "Via: SIP/2.0/UDP 198.51.100.23;branch=z9hG4bK-n\r\n"
                                     "From: <sip:a@192.0.2.10>;tag=n\r\n"
                                     "Call-ID: nobody\r\n"
                                     "CSeq: 1 OPTIONS\r\n",
                                     ""));
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_EQ(m.called_number, core::kNotFound);
    EXPECT_EQ(m.to, "");
}

TEST_F(ParseTest, TelUriNumber) {
    Message m = parse(test::withBody("INVITE tel:+441234567890 SIP/2.0\r\n"
                                     "Via: SIP/2.0/UDP 198.51.100.23;branch=z9hG4bK-tel\r\n"
                                     "To: <tel:+441234567890;phone-context=example.com>\r\n"
                                     "From: <sip:a@192.0.2.10>;tag=tel\r\n"
                                     "Call-ID: tel-1\r\n"
                                     "CSeq: 1 INVITE\r\n",
                                     ""));
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_EQ(m.called_number, "+441234567890");
}

TEST_F(ParseTest, CompactHeaders) {
    Message m = parse(test::withBody("INVITE sip:999@192.0.2.10 SIP/2.0\r\n"
                                     "v: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK-c\r\n"
                                     "f: <sip:scan@198.51.100.23>;tag=c1\r\n"
                                     "t: <sip:12125551234@192.0.2.10>;tag=c2\r\n"
                                     "i: compact-1\r\n"
                                     "CSeq: 2 INVITE\r\n"
                                     "c: application/sdp\r\n",
                                     "v=0\r\n"));
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_EQ(m.called_number, "12125551234");
    EXPECT_THAT(m.vias, ElementsAre("SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK-c"));
    EXPECT_EQ(m.from, "<sip:scan@198.51.100.23>;tag=c1");
    EXPECT_EQ(m.to_tag, "c2");
    EXPECT_EQ(m.call_id, "compact-1");
    EXPECT_EQ(m.content_type, "application/sdp");
    EXPECT_TRUE(m.has_body);
}

TEST_F(ParseTest, MultipleViasKeepTheirOrder) {
    Message m = parse(test::withBody("BYE sip:1@192.0.2.10 SIP/2.0\r\n"
                                     "Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK-a, "
                                     "SIP/2.0/TCP 198.51.100.2;branch=z9hG4bK-b\r\n"
                                     "Via: SIP/2.0/UDP 198.51.100.3;branch=z9hG4bK-c\r\n"
                                     "To: <sip:1@192.0.2.10>;tag=x\r\n"
                                     "From: <sip:2@198.51.100.1>;tag=y\r\n"
                                     "Call-ID: vias\r\n"
                                     "CSeq: 3 BYE\r\n",
                                     ""));
    EXPECT_THAT(m.vias, ElementsAre("SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK-a",
                                    "SIP/2.0/TCP 198.51.100.2;branch=z9hG4bK-b",
                                    "SIP/2.0/UDP 198.51.100.3;branch=z9hG4bK-c"));
    EXPECT_EQ(m.to_tag, "x");
}

TEST_F(ParseTest, FirstUserAgentWinsAndEmptyIsNotFound) {
    const std::string head = "OPTIONS sip:1@192.0.2.10 SIP/2.0\r\n"
                             "Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK-ua\r\n"
                             "Call-ID: ua\r\n"
                             "CSeq: 1 OPTIONS\r\n";
    EXPECT_EQ(parse(test::withBody(head + "User-Agent: one\r\nUser-Agent: two\r\n", "")).user_agent,
              "one");
    EXPECT_EQ(parse(test::withBody(head + "User-Agent:\r\n", "")).user_agent, core::kNotFound);
    EXPECT_EQ(parse(test::withBody(head + "User-Agent:    \r\n", "")).user_agent, core::kNotFound);
}

TEST_F(ParseTest, TruncatedBodyIsMalformedButKeepsTheUserAgent) {
    // A datagram cut short: Content-Length promises more than arrived.
    std::string bytes = test::sippInvite();
    bytes.insert(bytes.find("Max-Forwards"), "User-Agent: pplsip\r\n");
    bytes.resize(bytes.size() - 20);
    Message m = parse(bytes);
    EXPECT_EQ(m.kind, Kind::Malformed);
    EXPECT_EQ(m.method, core::kMethodMalformed);
    EXPECT_EQ(m.user_agent, "pplsip");
    EXPECT_EQ(m.called_number, core::kNotFound);
}

TEST_F(ParseTest, PathologicallyComplexMessagesAreMalformedNotParsed) {
    // osip's cost is quadratic in the number of parameters, headers and list items: a
    // 64 KiB datagram of them would cost it seconds. Such messages are recorded unparsed.
    std::string params = "INVITE sip:1@192.0.2.10";
    while (params.size() < 60000) {
        params += ";p";
    }
    params += " SIP/2.0\r\nUser-Agent: pathological\r\n\r\n";
    Message m = parse(params);
    EXPECT_EQ(m.kind, Kind::Malformed);
    EXPECT_EQ(m.user_agent, "pathological");
    EXPECT_EQ(m.sip_message.size(), params.size());

    // osip is given only the headers we read (To and User-Agent; for a reply also From, Via,
    // Call-ID, CSeq): any number of others costs it nothing; too many of those it parses make
    // the message malformed, or, when only the reply's are too many, a request not answered.
    auto many = [](std::string_view header) {
        std::string out = "OPTIONS sip:1@192.0.2.10 SIP/2.0\r\n";
        for (int i = 0; i < 300; ++i) {
            out.append(header).append("\r\n");
        }
        return out + "\r\n";
    };
    EXPECT_EQ(parse(many("X-H: 1")).kind, Kind::Request);
    EXPECT_EQ(parse(many("User-Agent: a")).kind, Kind::Malformed);
    Message vias = parse(many("Via: SIP/2.0/UDP 192.0.2.1:5060"));
    EXPECT_EQ(vias.kind, Kind::Request);
    EXPECT_TRUE(vias.vias.empty());
}

TEST_F(ParseTest, HugeHeadersOutgrowTheParsersArenaAndStillParse) {
    // osip copies each header value a few times: 200 KB of To and User-Agent need more than
    // the per-thread arena (256 KiB), so osip's allocations fall back to malloc mid-message.
    std::string name(100000, 'n');
    std::string ua(100000, 'u');
    std::string bytes = "INVITE sip:100@192.0.2.10 SIP/2.0\r\nTo: \"" + name +
                        "\" <sip:300@192.0.2.10>\r\nUser-Agent: " + ua + "\r\n\r\n";
    for (int round = 0; round < 3; ++round) { // the arena is rewound and reused
        Message m = parse(bytes, round == 1 ? Detail::Event : Detail::Reply);
        EXPECT_EQ(m.kind, Kind::Request);
        EXPECT_EQ(m.called_number, "300");
        EXPECT_EQ(m.user_agent, ua.substr(0, kMaxUserAgentBytes)); // recorded cut to its cap
    }
    EXPECT_EQ(parse(test::sipviciousOptions()).kind, Kind::Request);
}

TEST_F(ParseTest, HeadersWeDoNotReadCannotMakeARequestMalformed) {
    // A broken Contact or a NUL in an unknown header: still the INVITE it is, recorded whole.
    std::string bytes = "INVITE sip:100@192.0.2.10 SIP/2.0\r\n"
                        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
                        "From: <sip:a@192.0.2.1>;tag=1\r\nTo: <sip:200@192.0.2.10>\r\n"
                        "Call-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <<<\r\n"
                        "X-Bin: a";
    bytes.push_back('\0');
    bytes += "b\r\n User-Agent: folded into X-Bin\r\nUser-Agent: ua\r\n\r\n";
    Message m = parse(bytes);
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_EQ(m.method, "INVITE");
    EXPECT_EQ(m.called_number, "200");
    EXPECT_EQ(m.user_agent, "ua");
    EXPECT_EQ(m.call_id, "c1");
    EXPECT_NE(m.sip_message.find("X-Bin: a\\x00b"), std::string::npos);
}

TEST_F(ParseTest, BodyIsNotParsedOnlyMeasured) {
    // A multipart body with many parts: osip never sees it (its MIME parser is quadratic and
    // leaks on some malformed parts).
    std::string parts;
    for (int i = 0; i < 300; ++i) {
        parts += "--b\r\nContent-Type: text/plain\r\nContent-Type: a/b\r\n\r\nx\r\n";
    }
    Message m = parse(test::withBody("MESSAGE sip:1@192.0.2.10 SIP/2.0\r\n"
                                     "Content-Type: multipart/mixed;boundary=b\r\n",
                                     parts + "--b--\r\n"));
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_EQ(m.content_type, "multipart/mixed;boundary=b");
    EXPECT_TRUE(m.has_body);

    // Bytes beyond Content-Length are recorded, not a reason to reject.
    m = parse(test::sipviciousOptions() + "trailing");
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_FALSE(m.has_body);

    // Without Content-Length (allowed over UDP) the body is the rest of the datagram.
    m = parse("MESSAGE sip:1@192.0.2.10 SIP/2.0\r\nCall-ID: b\r\n\r\nhello");
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_TRUE(m.has_body);
}

TEST_F(ParseTest, NulOrLoneCarriageReturnInHeadersIsMalformed) {
    const std::string head = "OPTIONS sip:1@192.0.2.10 SIP/2.0\r\n"
                             "Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK-n\r\n";
    std::string nul = head + "User-Agent: a";
    nul.push_back('\0');
    nul += "b\r\n\r\n";
    Message m = parse(nul);
    EXPECT_EQ(m.kind, Kind::Malformed);
    EXPECT_EQ(m.user_agent, "a\\x00b");
    EXPECT_EQ(parse(head + "User-Agent: a\rX-Forged: 1\r\n\r\n").kind, Kind::Malformed);
    // A NUL in the body is fine.
    m = parse(test::withBody(head, std::string("\0\x01", 2)));
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_TRUE(m.has_body);
}

TEST_F(ParseTest, MissingFinalEmptyLineIsTolerated) {
    std::string bytes = test::sipviciousOptions();
    bytes.resize(bytes.size() - 2); // drop the empty line
    Message m = parse(bytes);
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_EQ(m.user_agent, "friendly-scanner");
    EXPECT_EQ(parse("OPTIONS sip:100@192.0.2.10 SIP/2.0").method, "OPTIONS");
}

TEST_F(ParseTest, RealisticBigHeaderSetIsStillParsed) {
    // A carrier INVITE with several Vias, a Record-Route set and long capability lists.
    std::string head = "INVITE sip:+4930123456@192.0.2.10;user=phone SIP/2.0\r\n";
    for (int i = 0; i < 6; ++i) {
        head += "Via: SIP/2.0/UDP 198.51.100." + std::to_string(i) + ":5060;branch=z9hG4bK-" +
                std::to_string(i) + ";rport;received=198.51.100.1\r\n";
    }
    head += "Record-Route: <sip:198.51.100.1;lr;ftag=a>, <sip:198.51.100.2;lr;ftag=b>, "
            "<sip:198.51.100.3;lr>\r\n"
            "From: \"Caller, Name\" <sip:+4930987@198.51.100.1;user=phone>;tag=abc\r\n"
            "To: <sip:+4930123456@192.0.2.10;user=phone>\r\n"
            "Call-ID: big-header-set\r\n"
            "CSeq: 10 INVITE\r\n"
            "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, REFER, NOTIFY, "
            "MESSAGE, SUBSCRIBE\r\n"
            "Supported: 100rel, timer, replaces, histinfo, norefersub\r\n"
            "P-Asserted-Identity: <sip:+4930987@198.51.100.1;user=phone>\r\n"
            "Session-Expires: 1800;refresher=uac\r\n"
            "Content-Type: application/sdp\r\n";
    Message m = parse(test::withBody(head, "v=0\r\n"));
    EXPECT_EQ(m.kind, Kind::Request);
    EXPECT_EQ(m.vias.size(), 6u);
    EXPECT_EQ(m.called_number, "+4930123456");
}

TEST_F(ParseTest, EveryPrefixOfARealMessageIsSafe) {
    const std::string bytes = test::sippInvite();
    for (std::size_t n = 0; n <= bytes.size(); ++n) {
        Message m = parse(std::string_view(bytes).substr(0, n));
        expectSingleLineFieldsClean(m);
        if (m.kind == Kind::Request) {
            EXPECT_EQ(m.method, "INVITE");
        }
    }
}

} // namespace
} // namespace sp::sip
