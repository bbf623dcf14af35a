#include <gtest/gtest.h>

#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "core/clock.hpp"
#include "core/ids.hpp"
#include "core/json.hpp"
#include "core/metrics.hpp"
#include "core/rate_limit.hpp"
#include "core/text.hpp"

using namespace sp::core;
using namespace std::chrono_literals;

TEST(Ids, UuidIsV4AndUnique) {
    auto a = newUuid();
    auto b = newUuid();
    EXPECT_NE(a, b);
    EXPECT_TRUE(isUuid(a));
    EXPECT_EQ(a[14], '4');
    EXPECT_TRUE(a[19] == '8' || a[19] == '9' || a[19] == 'a' || a[19] == 'b');
    for (char c : a) {
        EXPECT_FALSE(c >= 'A' && c <= 'Z');
    }
}

TEST(Ids, UuidValidation) {
    EXPECT_TRUE(isUuid("123e4567-e89b-12d3-a456-426614174000"));
    EXPECT_TRUE(isUuid("123E4567-E89B-12D3-A456-426614174000"));
    EXPECT_FALSE(isUuid("123e4567e89b12d3a456426614174000"));
    EXPECT_FALSE(isUuid("123e4567-e89b-12d3-a456-42661417400g"));
    EXPECT_FALSE(isUuid(""));
    EXPECT_FALSE(isUuid("123e4567-e89b-12d3-a456-4266141740000"));
}

TEST(Text, SanitizeKeepsUtf8AndEscapesControls) {
    EXPECT_EQ(sanitizeBytes("h\xc3\xa9llo", false), "h\xc3\xa9llo");
    EXPECT_EQ(sanitizeBytes("a\r\nb", false), "a\\x0d\\x0ab");
    EXPECT_EQ(sanitizeBytes("a\r\nb", true), "a\r\nb");
    EXPECT_EQ(sanitizeBytes(std::string_view("a\0b", 3), true), "a\\x00b");
    EXPECT_EQ(sanitizeBytes("\xff\xc3", true), "\\xff\\xc3");
    EXPECT_EQ(sanitizeBytes("\xed\xa0\x80", true), "\\xed\\xa0\\x80"); // surrogate
    EXPECT_EQ(sanitizeBytes("\xc0\xaf", true), "\\xc0\\xaf");          // overlong
    EXPECT_EQ(sanitizeBytes("\xf0\x9f\x98\x80", true), "\xf0\x9f\x98\x80");
}

TEST(Text, TimestampRoundTripsWithNineDigits) {
    TimePoint t{std::chrono::seconds(1700000000) + 123456789ns};
    auto s = formatTimestamp(t);
    EXPECT_EQ(s, "2023-11-14 22:13:20.123456789");
    EXPECT_EQ(parseTimestamp(s), t);
    EXPECT_EQ(formatTimestamp(TimePoint{std::chrono::seconds(1700000000)}),
              "2023-11-14 22:13:20.000000000");
}

TEST(Text, ParsesSentryPeerTimestamps) {
    // SentryPeer prints the nanoseconds with minimum width 6: 6 to 9 digits.
    auto t = parseTimestamp("2023-11-14 22:13:20.123456");
    ASSERT_TRUE(t);
    EXPECT_EQ(formatTimestamp(*t), "2023-11-14 22:13:20.123456000");
    EXPECT_TRUE(parseTimestamp("2023-11-14 22:13:20"));
    EXPECT_TRUE(parseTimestamp("2023-11-14T22:13:20.5Z"));
    EXPECT_FALSE(parseTimestamp("2023-11-14 22:13:20.1234567890"));
    EXPECT_FALSE(parseTimestamp("2023-13-14 22:13:20"));
    EXPECT_FALSE(parseTimestamp("yesterday"));
    EXPECT_FALSE(parseTimestamp("2023-11-14 22:13:20."));
}

TEST(Text, Durations) {
    EXPECT_EQ(parseDuration("0"), 0s);
    EXPECT_EQ(parseDuration("90"), 90s);
    EXPECT_EQ(parseDuration("15m"), 900s);
    EXPECT_EQ(parseDuration("12h"), 12h);
    EXPECT_EQ(parseDuration("7d"), 168h);
    EXPECT_EQ(parseDuration("2w"), 336h);
    EXPECT_FALSE(parseDuration(""));
    EXPECT_FALSE(parseDuration("-1d"));
    EXPECT_FALSE(parseDuration("7 days"));
    EXPECT_FALSE(parseDuration("abc"));
    EXPECT_FALSE(parseDuration("99999999999999d"));
}

TEST(Json, EscapesEverythingIntoValidJson) {
    std::string out;
    appendJsonString(out, std::string_view("q\"b\\n\n\x01\xff\xc3\xa9", 10));
    EXPECT_EQ(out, "\"q\\\"b\\\\n\\n\\u0001\\ufffd\xc3\xa9\"");
    EXPECT_TRUE(nlohmann::json::accept(out));
}

Event sampleEvent() {
    Event e;
    e.app_version = "5.0.0";
    e.event_timestamp = "2023-11-14 22:13:20.123456789";
    e.event_uuid = "123e4567-e89b-42d3-a456-426614174000";
    e.created_by_node_id = "00000000-0000-4000-8000-000000000001";
    e.collected_method = "responsive";
    e.transport_type = "UDP";
    e.source_ip = "192.0.2.7";
    e.source_port = 5070;
    e.destination_ip = "198.51.100.1";
    e.destination_port = 5060;
    e.called_number = "+4471234567";
    e.sip_method = "INVITE";
    e.sip_user_agent = "friendly-scanner";
    e.sip_message = "INVITE sip:x SIP/2.0\r\n\r\n";
    return e;
}

TEST(Json, EventGoldenLine) {
    EXPECT_EQ(eventToJson(sampleEvent()),
              R"({"app_name":"sentrypeer","app_version":"5.0.0",)"
              R"("event_timestamp":"2023-11-14 22:13:20.123456789",)"
              R"("event_uuid":"123e4567-e89b-42d3-a456-426614174000",)"
              R"("created_by_node_id":"00000000-0000-4000-8000-000000000001",)"
              R"("collected_method":"responsive","transport_type":"UDP",)"
              R"("source_ip":"192.0.2.7","destination_ip":"198.51.100.1",)"
              R"("called_number":"+4471234567","sip_method":"INVITE",)"
              R"("sip_user_agent":"friendly-scanner",)"
              R"("sip_message":"INVITE sip:x SIP/2.0\r\n\r\n",)"
              R"("source_port":"5070","destination_port":"5060"})");
}

TEST(Json, EventKeysInSentryPeerOrder) {
    auto j = nlohmann::ordered_json::parse(eventToJson(sampleEvent()));
    std::vector<std::string> keys;
    for (auto& [k, v] : j.items()) {
        keys.push_back(k);
        EXPECT_TRUE(v.is_string()) << k;
    }
    std::vector<std::string> expected{"app_name",       "app_version",        "event_timestamp",
                                      "event_uuid",     "created_by_node_id", "collected_method",
                                      "transport_type", "source_ip",          "destination_ip",
                                      "called_number",  "sip_method",         "sip_user_agent",
                                      "sip_message",    "source_port",        "destination_port"};
    EXPECT_EQ(keys, expected);
}

TEST(Clock, ManualClockAdvances) {
    ManualClock c;
    auto t0 = c.now();
    c.advance(90s);
    EXPECT_EQ(c.now() - t0, 90s);
}

TEST(RateLimit, TokenBucketRefillsWithClock) {
    ManualClock c;
    TokenBucket b(1.0, 2.0);
    EXPECT_TRUE(b.allow(c.now()));
    EXPECT_TRUE(b.allow(c.now()));
    EXPECT_FALSE(b.allow(c.now()));
    EXPECT_FALSE(b.allow(c.now()));
    EXPECT_EQ(b.takeSuppressed(), 2u);
    c.advance(1s);
    EXPECT_TRUE(b.allow(c.now()));
    EXPECT_FALSE(b.allow(c.now()));
}

TEST(Metrics, PrometheusTextFormat) {
    MetricsRegistry r;
    r.add([](MetricsWriter& w) {
        w.family("events_total", "counter", "Events recorded");
        w.sample(std::uint64_t{3}, {{"transport", "UDP"}, {"method", "IN\"V"}});
        w.family("uptime_seconds", "gauge", "Uptime");
        w.sample(1.5);
    });
    EXPECT_EQ(r.render(), "# HELP sentrypeer_events_total Events recorded\n"
                          "# TYPE sentrypeer_events_total counter\n"
                          "sentrypeer_events_total{transport=\"UDP\",method=\"IN\\\"V\"} 3\n"
                          "# HELP sentrypeer_uptime_seconds Uptime\n"
                          "# TYPE sentrypeer_uptime_seconds gauge\n"
                          "sentrypeer_uptime_seconds 1.5\n");
}

TEST(Text, TimestampFormatterAgreesWithGmtime) {
    for (long long secs : {0LL, 951782400LL /* 2000-02-29 */, 1700000000LL, 4102444799LL, -86400LL,
                           7258118399LL /* 2199-12-31 23:59:59 */}) {
        std::time_t t = static_cast<std::time_t>(secs);
        std::tm tm{};
        gmtime_r(&t, &tm);
        char expected[96];
        std::snprintf(expected, sizeof expected, "%04d-%02d-%02d %02d:%02d:%02d.000000007",
                      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                      tm.tm_sec);
        EXPECT_EQ(formatTimestamp(TimePoint{std::chrono::seconds(secs) + 7ns}), expected) << secs;
    }
}

// Every C0 control byte, alone and inside text: the exact escape (short forms for TAB, LF and
// CR, \u00XX in lowercase hex for the others), and the JSON parses back to the original bytes.
// A mutation dropping any escape range (e.g. 0x10-0x1f) must fail here.
TEST(Json, EscapesEveryControlByteExactlyAndRoundTrips) {
    static constexpr char kHex[] = "0123456789abcdef";
    for (int b = 0x00; b <= 0x1f; ++b) {
        const std::string raw(1, static_cast<char>(b));
        std::string expected;
        switch (b) {
        case '\t':
            expected = "\\t";
            break;
        case '\n':
            expected = "\\n";
            break;
        case '\r':
            expected = "\\r";
            break;
        default:
            expected = std::string("\\u00") + kHex[b >> 4] + kHex[b & 0x0f];
        }
        std::string out;
        appendJsonString(out, raw);
        EXPECT_EQ(out, "\"" + expected + "\"") << "byte 0x" << std::hex << b;
        const std::string text = "a" + raw + "b" + raw;
        out.clear();
        appendJsonString(out, text);
        EXPECT_EQ(out, "\"a" + expected + "b" + expected + "\"") << "byte 0x" << std::hex << b;
        ASSERT_TRUE(nlohmann::json::accept(out)) << out;
        EXPECT_EQ(nlohmann::json::parse(out).get<std::string>(), text)
            << "byte 0x" << std::hex << b;
    }
    // All 32 at once, and DEL (0x7f) which JSON allows raw.
    std::string all;
    for (int b = 0x00; b <= 0x1f; ++b) {
        all.push_back(static_cast<char>(b));
    }
    all.push_back('\x7f');
    std::string out;
    appendJsonString(out, all);
    EXPECT_EQ(nlohmann::json::parse(out).get<std::string>(), all);
    EXPECT_EQ(out.find_first_of(std::string_view("\x00\x1f", 2)), std::string::npos);
}

// DEL (0x7f) is a control character: peers reject events containing it, so sanitizeBytes
// escapes it in both modes, like the C0 controls, and keeps the printable neighbours.
TEST(Text, SanitizeEscapesDel) {
    EXPECT_EQ(sanitizeBytes("a\x7f"
                            "b",
                            true),
              "a\\x7fb");
    EXPECT_EQ(sanitizeBytes("a\x7f"
                            "b",
                            false),
              "a\\x7fb");
    EXPECT_EQ(sanitizeBytes("\x7f", true), "\\x7f");
    EXPECT_EQ(sanitizeBytes("~ \x7f\r\n", true), "~ \\x7f\r\n");
    EXPECT_EQ(sanitizeBytes("~", true), "~"); // 0x7e is printable
    // Every C0 control but TAB/CR/LF, and with keep_line_breaks=false those three too.
    for (int b = 0x00; b <= 0x1f; ++b) {
        const std::string raw(1, static_cast<char>(b));
        const bool line_break = b == '\t' || b == '\r' || b == '\n';
        char esc[8];
        std::snprintf(esc, sizeof esc, "\\x%02x", b);
        EXPECT_EQ(sanitizeBytes(raw, true), line_break ? raw : std::string(esc)) << b;
        EXPECT_EQ(sanitizeBytes(raw, false), std::string(esc)) << b;
    }
}

// The bucket allows exactly `burst` calls at one instant, then exactly one per 1/rate (4/s:
// 250 ms, exact in binary floating point, so the edges are exact too).
TEST(RateLimit, AllowsExactlyBurstThenOnePerInterval) {
    const TimePoint t{std::chrono::hours(1)};
    auto drained = [&] {
        TokenBucket bucket(4.0, 3.0);
        EXPECT_TRUE(bucket.allow(t));
        EXPECT_TRUE(bucket.allow(t));
        EXPECT_TRUE(bucket.allow(t));
        EXPECT_FALSE(bucket.allow(t));
        EXPECT_EQ(bucket.takeSuppressed(), 1u);
        return bucket;
    };
    auto early = drained();
    EXPECT_FALSE(early.allow(t + 249ms));
    auto on_time = drained();
    EXPECT_TRUE(on_time.allow(t + 250ms));
    EXPECT_FALSE(on_time.allow(t + 250ms));
    EXPECT_EQ(on_time.takeSuppressed(), 1u);
    EXPECT_EQ(on_time.takeSuppressed(), 0u);
    // A long pause refills to `burst`, not beyond.
    auto rested = drained();
    const TimePoint later = t + 1h;
    EXPECT_TRUE(rested.allow(later));
    EXPECT_TRUE(rested.allow(later));
    EXPECT_TRUE(rested.allow(later));
    EXPECT_FALSE(rested.allow(later));
}

// Label values per the exposition format: backslash, double quote and line feed escaped
// (\\ \" \n), everything else as is; a label value can never end the line or the quotes.
TEST(Metrics, LabelValuesAreEscaped) {
    MetricsRegistry r;
    r.add([](MetricsWriter& w) {
        w.family("x_total", "counter", "X");
        w.sample(std::uint64_t{1}, {{"v", "a\\b"}});
        w.sample(std::uint64_t{2}, {{"v", "q\"\n\\\"z"}});
        w.sample(std::uint64_t{3}, {{"v", "tab\there"}});
    });
    EXPECT_EQ(r.render(), "# HELP sentrypeer_x_total X\n"
                          "# TYPE sentrypeer_x_total counter\n"
                          "sentrypeer_x_total{v=\"a\\\\b\"} 1\n"
                          "sentrypeer_x_total{v=\"q\\\"\\n\\\\\\\"z\"} 2\n"
                          "sentrypeer_x_total{v=\"tab\there\"} 3\n");
}
