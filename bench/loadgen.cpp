// sp_loadgen: a SIP load generator for benchmarking sentrypeer's ingestion path.
//
//   sp_loadgen --mode udp --target 127.0.0.1:5060 --rate 50000 --duration 30
//   sp_loadgen --mode tcp-connections --target 127.0.0.1:5060 --rate 1000 --duration 30
//   sp_loadgen --mode tcp-stream --target 127.0.0.1:5060 --rate 20000 --duration 30
//
// Modes:
//   udp              datagrams sent with sendmmsg() in batches from a few source ports
//                    (--unique 1: every datagram from its own 127.x.y.z source address,
//                    set per message with IP_PKTINFO, and with its own called number)
//   tcp-connections  N new connections per second; each sends one message and closes
//   tcp-stream       one persistent connection per thread, M messages per second
//
// Every message is a realistic (~450 byte) INVITE (with SDP) or OPTIONS, with a distinct
// Call-ID, branch and tag, and varied called numbers and user agents. The run is always
// bounded: at most rate x duration messages and at most duration + 2 s of wall time.
// Prints one JSON object: sent count, errors, bytes, elapsed time and achieved rate.
//
// No dependencies beyond libc and pthreads. Linux only (sendmmsg).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

enum class Mode { Udp, TcpConnections, TcpStream };

struct Options {
    Mode mode = Mode::Udp;
    std::string mode_name = "udp";
    std::string host = "127.0.0.1";
    std::uint16_t port = 5060;
    double rate = 1000;   // messages (or connections) per second, all threads together
    double duration = 10; // seconds
    unsigned threads = 1;
    unsigned sources = 4;    // UDP source sockets (ports) per thread
    unsigned src_ips = 1;    // source addresses 127.0.0.1 .. 127.0.0.N (loopback targets only)
    unsigned batch = 64;     // UDP messages per sendmmsg()
    std::uint64_t count = 0; // 0: rate x duration
    unsigned invite_percent = 50;
    std::string tag = "lg"; // Call-ID prefix, to count a run's rows afterwards
    bool unique = false;    // udp: a new source address and called number per message
};

[[noreturn]] void usage(const char* msg) {
    if (msg != nullptr) {
        std::fprintf(stderr, "sp_loadgen: %s\n", msg);
    }
    std::fprintf(
        stderr, "usage: sp_loadgen --mode udp|tcp-connections|tcp-stream --target HOST:PORT\n"
                "         --rate N/s --duration S [--threads T] [--count N] [--sources K]\n"
                "         [--src-ips K] [--batch B] [--invite-percent P] [--tag T] [--unique 0|1]\n"
                "--unique 1 (udp, loopback target): message k comes from 127.a.b.c, the k-th of\n"
                "  the 16,646,144 addresses 127.1.0.0 .. 127.254.255.255 (then it wraps), and\n"
                "  calls the number 10000000000 + k.\n"
                "Every Call-ID starts with T (default \"lg\"): count a run's rows with\n"
                "  SELECT count(*) FROM honey WHERE sip_message LIKE '%%Call-ID: T-%%'\n");
    std::exit(msg != nullptr ? 2 : 0);
}

double parseNumber(const char* flag, const char* s, double lo, double hi) {
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi)) {
        std::string m = std::string("bad value for ") + flag + ": " + s;
        usage(m.c_str());
    }
    return v;
}

Options parseArgs(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "-h" || a == "--help") {
            usage(nullptr);
        }
        if (i + 1 >= argc) {
            std::string m = "missing value for " + std::string(a);
            usage(m.c_str());
        }
        const char* v = argv[++i];
        if (a == "--mode") {
            o.mode_name = v;
            if (o.mode_name == "udp") {
                o.mode = Mode::Udp;
            } else if (o.mode_name == "tcp-connections") {
                o.mode = Mode::TcpConnections;
            } else if (o.mode_name == "tcp-stream") {
                o.mode = Mode::TcpStream;
            } else {
                usage("unknown --mode");
            }
        } else if (a == "--target") {
            std::string t = v;
            auto colon = t.rfind(':');
            if (colon == std::string::npos) {
                usage("--target must be HOST:PORT");
            }
            o.host = t.substr(0, colon);
            o.port = static_cast<std::uint16_t>(
                parseNumber("--target", t.c_str() + colon + 1, 1, 65535));
        } else if (a == "--rate") {
            o.rate = parseNumber("--rate", v, 1, 10'000'000);
        } else if (a == "--duration") {
            o.duration = parseNumber("--duration", v, 0.01, 3600);
        } else if (a == "--threads") {
            o.threads = static_cast<unsigned>(parseNumber("--threads", v, 1, 256));
        } else if (a == "--count") {
            o.count = static_cast<std::uint64_t>(parseNumber("--count", v, 1, 1e10));
        } else if (a == "--sources") {
            o.sources = static_cast<unsigned>(parseNumber("--sources", v, 1, 1024));
        } else if (a == "--src-ips") {
            o.src_ips = static_cast<unsigned>(parseNumber("--src-ips", v, 1, 250));
        } else if (a == "--batch") {
            o.batch = static_cast<unsigned>(parseNumber("--batch", v, 1, 1024));
        } else if (a == "--invite-percent") {
            o.invite_percent = static_cast<unsigned>(parseNumber("--invite-percent", v, 0, 100));
        } else if (a == "--unique") {
            o.unique = parseNumber("--unique", v, 0, 1) != 0;
        } else if (a == "--tag") {
            o.tag = v;
            bool ok = !o.tag.empty() && o.tag.size() <= 16;
            for (char ch : o.tag) {
                ok = ok && (std::isalnum(static_cast<unsigned char>(ch)) != 0);
            }
            if (!ok) {
                usage("--tag must be 1 to 16 letters or digits");
            }
        } else {
            std::string m = "unknown flag " + std::string(a);
            usage(m.c_str());
        }
    }
    return o;
}

// ---- messages -------------------------------------------------------------------------

// xorshift64*: fast, per thread, good enough for ids and variety.
struct Rng {
    std::uint64_t s;
    explicit Rng(std::uint64_t seed) : s(seed ? seed : 0x9E3779B97F4A7C15ULL) {}
    std::uint64_t next() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 2685821657736338717ULL;
    }
};

constexpr const char* kUserAgents[] = {
    "friendly-scanner",
    "sipcli/v1.8",
    "PortSIP VoIP SDK 11.2.2.3567",
    "Z 5.5.9 rv2.10.14.5",
    "sipsak 0.9.8",
    "VaxSIPUserAgent/3.5",
    "pplsip",
    "Cisco-SIPGateway/IOS-12.x",
};
constexpr const char* kPrefixes[] = {"00972", "011441", "900", "+44", "0046", "9011", "", "00"};

class MessageFactory {
public:
    MessageFactory(const Options& o, unsigned thread_index, const char* transport)
        : o_(o), thread_(thread_index), transport_(transport),
          rng_(0xC0FFEEULL * (thread_index + 1) ^
               static_cast<std::uint64_t>(Clock::now().time_since_epoch().count())) {}

    // Writes one message into buf (capacity cap); returns its length.
    // unique_key >= 0: the called number is 10000000000 + unique_key, with no prefix.
    std::size_t make(char* buf, std::size_t cap, const char* src_ip, unsigned src_port,
                     std::int64_t unique_key = -1) {
        const std::uint64_t seq = seq_++;
        const std::uint64_t r = rng_.next();
        const bool invite = (r % 100) < o_.invite_percent;
        const char* method = invite ? "INVITE" : "OPTIONS";
        const char* ua = kUserAgents[(r >> 8) % std::size(kUserAgents)];
        const char* prefix = unique_key >= 0 ? "" : kPrefixes[(r >> 16) % std::size(kPrefixes)];
        const unsigned long long number =
            unique_key >= 0 ? 10000000000ULL + static_cast<unsigned long long>(unique_key)
                            : 100000000ULL + (r >> 24) % 900000000ULL;
        const unsigned long long caller = 1000ULL + (r >> 40) % 9000ULL;
        const std::uint64_t r2 = rng_.next();

        char body[256];
        int body_len = 0;
        if (invite) {
            body_len =
                std::snprintf(body, sizeof body,
                              "v=0\r\no=- %" PRIu64 " 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\n"
                              "t=0 0\r\nm=audio %u RTP/AVP 0 8\r\na=sendrecv\r\n",
                              seq, src_ip, src_ip, 10000u + static_cast<unsigned>(r2 % 20000) * 2);
        }
        int n = std::snprintf(
            buf, cap,
            "%s sip:%s%llu@%s:%u SIP/2.0\r\n"
            "Via: SIP/2.0/%s %s:%u;branch=z9hG4bK%016" PRIx64 ";rport\r\n"
            "Max-Forwards: 70\r\n"
            "From: \"%llu\" <sip:%llu@%s>;tag=%08" PRIx64 "\r\n"
            "To: <sip:%s%llu@%s>\r\n"
            "Call-ID: %s-%02x%012" PRIx64 "%08" PRIx64 "@%s\r\n"
            "CSeq: 1 %s\r\n"
            "Contact: <sip:%llu@%s:%u>\r\n"
            "User-Agent: %s\r\n"
            "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\n"
            "%s"
            "Content-Length: %d\r\n\r\n%s",
            method, prefix, number, o_.host.c_str(), o_.port, transport_, src_ip, src_port, r2,
            caller, caller, src_ip, r2 >> 32, prefix, number, o_.host.c_str(), o_.tag.c_str(),
            thread_ & 0xff, seq, static_cast<std::uint64_t>(r & 0xffffffffU), src_ip, method,
            caller, src_ip, src_port, ua, invite ? "Content-Type: application/sdp\r\n" : "",
            body_len, invite ? body : "");
        if (n < 0 || static_cast<std::size_t>(n) >= cap) {
            std::fprintf(stderr, "sp_loadgen: message buffer too small\n");
            std::exit(1);
        }
        return static_cast<std::size_t>(n);
    }

private:
    const Options& o_;
    unsigned thread_;
    const char* transport_;
    Rng rng_;
    std::uint64_t seq_ = 0;
};

constexpr std::size_t kMaxMessage = 1500;

// ---- sockets ----------------------------------------------------------------------------

sockaddr_in targetAddress(const Options& o) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(o.port);
    if (inet_pton(AF_INET, o.host.c_str(), &a.sin_addr) != 1) {
        usage("--target host must be a numeric IPv4 address");
    }
    return a;
}

// The k-th address of 127.1.0.0 .. 127.254.255.255 (wraps after 254 x 65536).
in_addr uniqueSource(std::uint64_t k) {
    k %= 254ULL * 65536ULL;
    in_addr a{};
    a.s_addr = htonl((127U << 24) | static_cast<std::uint32_t>((1 + k / 65536) << 16) |
                     static_cast<std::uint32_t>(k % 65536));
    return a;
}

std::string sourceIp(const Options& o, unsigned i) {
    if (o.src_ips <= 1) {
        return "127.0.0.1";
    }
    return "127.0.0." + std::to_string(1 + i % o.src_ips);
}

int bindSource(int fd, const std::string& ip, bool no_port) {
    if (no_port) {
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
    return bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
}

unsigned localPort(int fd) {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    return ntohs(a.sin_port);
}

// ---- pacing -------------------------------------------------------------------------------

struct Stats {
    std::uint64_t sent = 0;
    std::uint64_t errors = 0;
    std::uint64_t bytes = 0;
};

struct Pacer {
    Clock::time_point start;
    double rate;         // per thread
    std::uint64_t total; // per thread
    Clock::time_point hard_deadline;

    // Messages that should have been sent by now.
    std::uint64_t due() const {
        double e = std::chrono::duration<double>(Clock::now() - start).count();
        auto d = static_cast<std::uint64_t>(e * rate) + 1;
        return d < total ? d : total;
    }
    bool expired() const { return Clock::now() >= hard_deadline; }
    void waitFor(std::uint64_t sent) const {
        // Sleep until message `sent` is due (capped at 1 ms to stay responsive).
        auto when = start + std::chrono::duration_cast<Clock::duration>(
                                std::chrono::duration<double>(static_cast<double>(sent) / rate));
        auto now = Clock::now();
        if (when > now) {
            auto d = when - now;
            std::this_thread::sleep_for(
                d < std::chrono::milliseconds(1) ? d : std::chrono::milliseconds(1));
        }
    }
};

// ---- modes --------------------------------------------------------------------------------

void runUdp(const Options& o, unsigned t, Pacer p, Stats& st) {
    const sockaddr_in dst = targetAddress(o);
    std::vector<int> fds;
    std::vector<std::string> ips;
    std::vector<unsigned> ports;
    for (unsigned i = 0; i < o.sources; ++i) {
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (fd < 0) {
            std::perror("socket");
            std::exit(1);
        }
        int buf = 4 << 20;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
        std::string ip = sourceIp(o, t * o.sources + i);
        if (bindSource(fd, ip, false) != 0) {
            std::perror("bind");
            std::exit(1);
        }
        fds.push_back(fd);
        ips.push_back(ip);
        ports.push_back(localPort(fd));
    }
    MessageFactory f(o, t, "UDP");
    std::vector<char> storage(static_cast<std::size_t>(o.batch) * kMaxMessage);
    std::vector<iovec> iov(o.batch);
    std::vector<mmsghdr> msgs(o.batch);
    // --unique: one IP_PKTINFO control message per datagram sets its source address.
    constexpr std::size_t kCmsgSpace = CMSG_SPACE(sizeof(in_pktinfo));
    std::vector<char> control(static_cast<std::size_t>(o.batch) * kCmsgSpace);
    char ip_text[INET_ADDRSTRLEN];
    unsigned which = 0;
    while (st.sent < p.total && !p.expired()) {
        std::uint64_t due = p.due();
        if (due <= st.sent) {
            p.waitFor(st.sent);
            continue;
        }
        auto n = static_cast<unsigned>(std::min<std::uint64_t>(due - st.sent, o.batch));
        which = (which + 1) % o.sources;
        for (unsigned i = 0; i < n; ++i) {
            char* b = storage.data() + static_cast<std::size_t>(i) * kMaxMessage;
            iov[i].iov_base = b;
            msgs[i] = mmsghdr{};
            msgs[i].msg_hdr.msg_name = const_cast<sockaddr_in*>(&dst);
            msgs[i].msg_hdr.msg_namelen = sizeof dst;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            if (!o.unique) {
                iov[i].iov_len = f.make(b, kMaxMessage, ips[which].c_str(), ports[which]);
                continue;
            }
            // Global message index k: thread t sends k = t, t + T, t + 2T, ...
            const std::uint64_t k = (st.sent + i) * o.threads + t;
            const in_addr src = uniqueSource(k);
            inet_ntop(AF_INET, &src, ip_text, sizeof ip_text);
            iov[i].iov_len =
                f.make(b, kMaxMessage, ip_text, ports[which], static_cast<std::int64_t>(k));
            char* c = control.data() + static_cast<std::size_t>(i) * kCmsgSpace;
            std::memset(c, 0, kCmsgSpace);
            msgs[i].msg_hdr.msg_control = c;
            msgs[i].msg_hdr.msg_controllen = kCmsgSpace;
            cmsghdr* cm = CMSG_FIRSTHDR(&msgs[i].msg_hdr);
            cm->cmsg_level = IPPROTO_IP;
            cm->cmsg_type = IP_PKTINFO;
            cm->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
            in_pktinfo pi{};
            pi.ipi_spec_dst = src;
            std::memcpy(CMSG_DATA(cm), &pi, sizeof pi);
        }
        unsigned done = 0;
        while (done < n && !p.expired()) {
            int r = sendmmsg(fds[which], msgs.data() + done, n - done, 0);
            if (r < 0) {
                if (errno == EINTR) {
                    continue;
                }
                ++st.errors; // ENOBUFS/ECONNREFUSED: the message is skipped
                ++done;
                std::this_thread::sleep_for(std::chrono::microseconds(100));
                continue;
            }
            for (int i = 0; i < r; ++i) {
                st.bytes += iov[done + static_cast<unsigned>(i)].iov_len;
            }
            st.sent += static_cast<unsigned>(r);
            done += static_cast<unsigned>(r);
        }
    }
    for (int fd : fds) {
        close(fd);
    }
}

bool writeAll(int fd, const char* data, std::size_t len, const Pacer& p) {
    while (len > 0) {
        ssize_t w = send(fd, data, len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                if (p.expired()) {
                    return false;
                }
                continue;
            }
            return false;
        }
        data += w;
        len -= static_cast<std::size_t>(w);
    }
    return true;
}

int connectTo(const Options& o, const sockaddr_in& dst, const std::string& src_ip) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }
    timeval tv{2, 0}; // bounded connect and send
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (o.src_ips > 1 && bindSource(fd, src_ip, true) != 0) {
        close(fd);
        return -1;
    }
    if (connect(fd, reinterpret_cast<const sockaddr*>(&dst), sizeof dst) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

void runTcpConnections(const Options& o, unsigned t, Pacer p, Stats& st) {
    const sockaddr_in dst = targetAddress(o);
    MessageFactory f(o, t, "TCP");
    char buf[kMaxMessage];
    std::uint64_t attempts = 0;
    while (attempts < p.total && !p.expired()) {
        if (p.due() <= attempts) {
            p.waitFor(attempts);
            continue;
        }
        std::string ip = sourceIp(o, static_cast<unsigned>(attempts) * o.threads + t);
        ++attempts;
        int fd = connectTo(o, dst, ip);
        if (fd < 0) {
            ++st.errors;
            continue;
        }
        std::size_t len = f.make(buf, sizeof buf, ip.c_str(), localPort(fd));
        if (writeAll(fd, buf, len, p)) {
            ++st.sent;
            st.bytes += len;
        } else {
            ++st.errors;
        }
        close(fd); // FIN after the data: the daemon reads the message, then EOF
    }
}

void runTcpStream(const Options& o, unsigned t, Pacer p, Stats& st) {
    const sockaddr_in dst = targetAddress(o);
    std::string ip = sourceIp(o, t);
    int fd = connectTo(o, dst, ip);
    if (fd < 0) {
        std::perror("connect");
        ++st.errors;
        return;
    }
    const unsigned port = localPort(fd);
    MessageFactory f(o, t, "TCP");
    std::string out;
    char buf[kMaxMessage];
    while (st.sent < p.total && !p.expired()) {
        std::uint64_t due = p.due();
        if (due <= st.sent) {
            p.waitFor(st.sent);
            continue;
        }
        auto n = std::min<std::uint64_t>(due - st.sent, 256);
        out.clear();
        for (std::uint64_t i = 0; i < n; ++i) {
            out.append(buf, f.make(buf, sizeof buf, ip.c_str(), port));
        }
        if (!writeAll(fd, out.data(), out.size(), p)) {
            ++st.errors;
            std::fprintf(stderr,
                         "sp_loadgen: tcp-stream: send failed after %" PRIu64 " messages: %s\n",
                         st.sent, p.expired() ? "time is up" : std::strerror(errno));
            break;
        }
        st.sent += n;
        st.bytes += out.size();
    }
    shutdown(fd, SHUT_WR);
    close(fd);
}

} // namespace

int main(int argc, char** argv) {
    Options o = parseArgs(argc, argv);
    const double per_thread_rate = o.rate / o.threads;
    const std::uint64_t total =
        o.count != 0 ? o.count : static_cast<std::uint64_t>(o.rate * o.duration + 0.5);
    std::vector<Stats> stats(o.threads);
    std::vector<std::thread> threads;
    const auto start = Clock::now();
    const auto hard_deadline = start + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(o.duration + 2.0));
    for (unsigned t = 0; t < o.threads; ++t) {
        std::uint64_t share = total / o.threads + (t < total % o.threads ? 1 : 0);
        Pacer p{start, per_thread_rate, share, hard_deadline};
        threads.emplace_back([&o, t, p, &stats] {
            switch (o.mode) {
            case Mode::Udp:
                runUdp(o, t, p, stats[t]);
                break;
            case Mode::TcpConnections:
                runTcpConnections(o, t, p, stats[t]);
                break;
            case Mode::TcpStream:
                runTcpStream(o, t, p, stats[t]);
                break;
            }
        });
    }
    for (auto& th : threads) {
        th.join();
    }
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    Stats sum;
    for (const auto& s : stats) {
        sum.sent += s.sent;
        sum.errors += s.errors;
        sum.bytes += s.bytes;
    }
    std::printf("{\"mode\":\"%s\",\"target\":\"%s:%u\",\"threads\":%u,\"rate_target\":%.0f,"
                "\"duration_s\":%.3f,\"planned\":%" PRIu64 ",\"sent\":%" PRIu64
                ",\"errors\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"elapsed_s\":%.3f,"
                "\"achieved_rate\":%.1f,\"avg_message_bytes\":%.1f}\n",
                o.mode_name.c_str(), o.host.c_str(), o.port, o.threads, o.rate, o.duration, total,
                sum.sent, sum.errors, sum.bytes, elapsed,
                elapsed > 0 ? static_cast<double>(sum.sent) / elapsed : 0.0,
                sum.sent ? static_cast<double>(sum.bytes) / static_cast<double>(sum.sent) : 0.0);
    return sum.sent > 0 ? 0 : 1;
}
