#include "sip/framer.hpp"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "sip/test_messages.hpp"

namespace sp::sip {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// Feeds chunks into a framer, collecting messages and the last status.
struct Collector {
    Framer framer;
    std::vector<std::string> messages;
    Framer::Status status = Framer::Status::Ok;

    explicit Collector(std::size_t max_message = std::size_t{64} * 1024) : framer(max_message) {}

    Framer::Status feed(std::string_view data) {
        status = framer.feed(data, [this](std::string_view m) { messages.emplace_back(m); });
        return status;
    }
};

const std::string kOptions = test::sipviciousOptions();
const std::string kInvite = test::sippInvite();

TEST(FramerTest, OneMessage) {
    Collector c;
    EXPECT_EQ(c.feed(kOptions), Framer::Status::Ok);
    EXPECT_THAT(c.messages, ElementsAre(kOptions));
    EXPECT_THAT(c.framer.pending(), IsEmpty());
}

TEST(FramerTest, TwoMessagesInOneFeed) {
    Collector c;
    EXPECT_EQ(c.feed(kInvite + kOptions), Framer::Status::Ok);
    EXPECT_THAT(c.messages, ElementsAre(kInvite, kOptions));
    EXPECT_THAT(c.framer.pending(), IsEmpty());
}

TEST(FramerTest, OneMessageSplitOverThreeFeeds) {
    Collector c;
    // Cut inside the header terminator and inside the body.
    std::size_t cut1 = kInvite.find("\r\n\r\n") + 2;
    std::size_t cut2 = kInvite.size() - 10;
    EXPECT_EQ(c.feed(std::string_view(kInvite).substr(0, cut1)), Framer::Status::Ok);
    EXPECT_THAT(c.messages, IsEmpty());
    EXPECT_EQ(c.feed(std::string_view(kInvite).substr(cut1, cut2 - cut1)), Framer::Status::Ok);
    EXPECT_THAT(c.messages, IsEmpty());
    EXPECT_EQ(c.framer.pending(), std::string_view(kInvite).substr(0, cut2));
    EXPECT_EQ(c.feed(std::string_view(kInvite).substr(cut2)), Framer::Status::Ok);
    EXPECT_THAT(c.messages, ElementsAre(kInvite));
    EXPECT_THAT(c.framer.pending(), IsEmpty());
}

TEST(FramerTest, ByteByByte) {
    Collector c;
    const std::string stream = kInvite + "\r\n" + kOptions + kInvite;
    for (char ch : stream) {
        ASSERT_EQ(c.feed(std::string_view(&ch, 1)), Framer::Status::Ok);
    }
    EXPECT_THAT(c.messages, ElementsAre(kInvite, kOptions, kInvite));
    EXPECT_THAT(c.framer.pending(), IsEmpty());
}

TEST(FramerTest, BodyIsDeliveredWholeEvenWithBlankLinesInside) {
    const std::string message = test::withBody("MESSAGE sip:1@192.0.2.10 SIP/2.0\r\n"
                                               "Content-Type: text/plain\r\n",
                                               "hello\r\n\r\nINVITE sip:not-a-message SIP/2.0");
    Collector c;
    EXPECT_EQ(c.feed(message + kOptions), Framer::Status::Ok);
    EXPECT_THAT(c.messages, ElementsAre(message, kOptions));
}

TEST(FramerTest, KeepAliveLineBreaksAreSkipped) {
    Collector c;
    EXPECT_EQ(c.feed("\r\n\r\n"), Framer::Status::Ok);
    EXPECT_THAT(c.messages, IsEmpty());
    EXPECT_THAT(c.framer.pending(), IsEmpty());
    EXPECT_EQ(c.feed("\r\n" + kOptions + "\r\n\r\n" + kOptions + "\r\n"), Framer::Status::Ok);
    EXPECT_THAT(c.messages, ElementsAre(kOptions, kOptions));
    EXPECT_THAT(c.framer.pending(), IsEmpty());
}

TEST(FramerTest, MissingContentLengthMeansEmptyBody) {
    const std::string bare = "OPTIONS sip:1@192.0.2.10 SIP/2.0\r\nCall-ID: x\r\n\r\n";
    Collector c;
    EXPECT_EQ(c.feed(bare + bare), Framer::Status::Ok);
    EXPECT_THAT(c.messages, ElementsAre(bare, bare));
}

TEST(FramerTest, HeaderNamesAreCaseInsensitiveAndCompact) {
    const std::string lower = "MESSAGE sip:1@192.0.2.10 SIP/2.0\r\ncontent-LENGTH :  3\r\n\r\nabc";
    const std::string compact = "MESSAGE sip:1@192.0.2.10 SIP/2.0\r\nl: 4\r\n\r\nabcd";
    Collector c;
    EXPECT_EQ(c.feed(lower + compact), Framer::Status::Ok);
    EXPECT_THAT(c.messages, ElementsAre(lower, compact));
}

TEST(FramerTest, BareLineFeedsAreAccepted) {
    const std::string message = "MESSAGE sip:1@192.0.2.10 SIP/2.0\nContent-Length: 2\n\nhi";
    Collector c;
    EXPECT_EQ(c.feed(message + message), Framer::Status::Ok);
    EXPECT_THAT(c.messages, ElementsAre(message, message));
}

TEST(FramerTest, StartLineIsNotAHeader) {
    // "l:5" in the request line must not be taken for a compact Content-Length.
    const std::string message = "l:5 sip:1@192.0.2.10 SIP/2.0\r\nCall-ID: y\r\n\r\n";
    Collector c;
    EXPECT_EQ(c.feed(message + kOptions), Framer::Status::Ok);
    EXPECT_THAT(c.messages, ElementsAre(message, kOptions));
}

TEST(FramerTest, PendingAfterPartial) {
    Collector c;
    EXPECT_EQ(c.feed(kOptions + "\r\n" + kInvite.substr(0, 40)), Framer::Status::Ok);
    EXPECT_THAT(c.messages, ElementsAre(kOptions));
    EXPECT_EQ(c.framer.pending(), kInvite.substr(0, 40));
}

TEST(FramerTest, HeadersWithoutEndTooLarge) {
    Collector c(1024);
    std::string endless = "INVITE sip:1@192.0.2.10 SIP/2.0\r\n";
    while (endless.size() <= 1024) {
        endless += "X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    }
    EXPECT_EQ(c.feed(endless.substr(0, 1000)), Framer::Status::Ok);
    EXPECT_EQ(c.feed(endless.substr(1000)), Framer::Status::TooLarge);
    EXPECT_EQ(c.framer.pending(), endless);
    EXPECT_EQ(c.feed(kOptions), Framer::Status::TooLarge);
    EXPECT_EQ(c.framer.pending(), endless);
    EXPECT_THAT(c.messages, IsEmpty());
}

TEST(FramerTest, ContentLengthTooLarge) {
    const std::string message = "MESSAGE sip:1@192.0.2.10 SIP/2.0\r\nContent-Length: 5000\r\n\r\n";
    Collector c(4096);
    EXPECT_EQ(c.feed(kOptions + message), Framer::Status::TooLarge);
    EXPECT_THAT(c.messages, ElementsAre(kOptions));
    EXPECT_EQ(c.framer.pending(), message);
}

TEST(FramerTest, HugeContentLengthIsTooLarge) {
    Collector c;
    EXPECT_EQ(c.feed("MESSAGE sip:1@192.0.2.10 SIP/2.0\r\n"
                     "Content-Length: 184467440737095516160000\r\n\r\n"),
              Framer::Status::TooLarge);
}

TEST(FramerTest, MessageOfExactlyMaxSizeFits) {
    const std::string head = "MESSAGE sip:1@192.0.2.10 SIP/2.0\r\nContent-Length: 100\r\n\r\n";
    const std::string message = head + std::string(100, 'x');
    {
        Collector c(message.size());
        EXPECT_EQ(c.feed(message), Framer::Status::Ok);
        EXPECT_THAT(c.messages, ElementsAre(message));
    }
    {
        Collector c(message.size() - 1);
        EXPECT_EQ(c.feed(message), Framer::Status::TooLarge);
        EXPECT_THAT(c.messages, IsEmpty());
    }
}

TEST(FramerTest, InvalidContentLength) {
    for (std::string value : {"abc", "-1", "", "12abc", "+5", "0x10", "1 2"}) {
        Collector c;
        const std::string message =
            "MESSAGE sip:1@192.0.2.10 SIP/2.0\r\nContent-Length: " + value + "\r\n\r\nbody";
        EXPECT_EQ(c.feed(message), Framer::Status::Invalid) << value;
        EXPECT_EQ(c.framer.pending(), message);
        EXPECT_EQ(c.feed("more"), Framer::Status::Invalid);
    }
}

TEST(FramerTest, ConflictingContentLengthsAreInvalid) {
    Collector c;
    EXPECT_EQ(c.feed("MESSAGE sip:1@192.0.2.10 SIP/2.0\r\nContent-Length: 2\r\nl: 3\r\n\r\nabc"),
              Framer::Status::Invalid);
    Collector same;
    const std::string agreeing =
        "MESSAGE sip:1@192.0.2.10 SIP/2.0\r\nContent-Length: 3\r\nl: 3\r\n\r\nabc";
    EXPECT_EQ(same.feed(agreeing), Framer::Status::Ok);
    EXPECT_THAT(same.messages, ElementsAre(agreeing));
}

TEST(FramerTest, ManyMessagesInOneFeed) {
    std::string stream;
    for (int i = 0; i < 1000; ++i) {
        stream += kOptions;
    }
    Collector c;
    EXPECT_EQ(c.feed(stream), Framer::Status::Ok);
    EXPECT_EQ(c.messages.size(), 1000u);
    EXPECT_THAT(c.framer.pending(), IsEmpty());
}

} // namespace
} // namespace sp::sip
