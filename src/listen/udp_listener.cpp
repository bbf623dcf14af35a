#include "listen/udp_listener.hpp"
#include "core/text.hpp"

#include <arpa/inet.h>
#include <array>
#include <cerrno>
#include <cstring>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include "listen/net.hpp"
#include <boost/asio/ip/v6_only.hpp>

namespace sp::listen {

namespace {
constexpr std::size_t kSlots = 32;
constexpr std::size_t kMaxDatagram = 65536; // > 65,507: a bigger one shows as truncated
constexpr int kReceiveBuffer = 16 << 20;
} // namespace

struct UdpListener::Batch {
    std::array<std::array<char, kMaxDatagram>, kSlots> data;
    std::array<sockaddr_storage, kSlots> from;
    std::array<std::array<char, 128>, kSlots> control;
    std::array<iovec, kSlots> iov;
    std::array<mmsghdr, kSlots> msgs;
    std::array<Meta, kSlots> meta;

    void reset() {
        for (std::size_t i = 0; i < kSlots; ++i) {
            iov[i] = {data[i].data(), data[i].size()};
            msgs[i] = {};
            msgs[i].msg_hdr.msg_name = &from[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = control[i].data();
            msgs[i].msg_hdr.msg_controllen = control[i].size();
        }
    }
};

namespace {

void setOption(int fd, int level, int name, int value) {
    ::setsockopt(fd, level, name, &value, sizeof value);
}

// Fills source address/port from the sender and the destination address from PKTINFO.
// The printable address; an IPv4-mapped IPv6 address (::ffff:192.0.2.1) as plain IPv4.
// Runs per datagram: straight from the bytes, without parsing text back into an address.
std::string ipText(int family, const void* addr) {
    char text[INET6_ADDRSTRLEN] = {};
    if (family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(static_cast<const in6_addr*>(addr))) {
        family = AF_INET;
        addr = static_cast<const unsigned char*>(addr) + 12;
    }
    ::inet_ntop(family, addr, text, sizeof text);
    return text;
}

// Fills source address/port from the sender and the destination address from PKTINFO.
void fillMeta(const mmsghdr& m, const sockaddr_storage& from, const UdpListener& self, Meta& meta) {
    meta.transport = Transport::Udp;
    if (from.ss_family == AF_INET) {
        const auto& sin = reinterpret_cast<const sockaddr_in&>(from);
        meta.source_ip = ipText(AF_INET, &sin.sin_addr);
        meta.source_port = ntohs(sin.sin_port);
    } else {
        const auto& sin6 = reinterpret_cast<const sockaddr_in6&>(from);
        meta.source_ip = ipText(AF_INET6, &sin6.sin6_addr);
        meta.source_port = ntohs(sin6.sin6_port);
    }
    meta.destination_port = self.localEndpoint().port();
    meta.destination_ip.clear();
    auto* hdr = const_cast<msghdr*>(&m.msg_hdr);
    for (cmsghdr* c = CMSG_FIRSTHDR(hdr); c != nullptr; c = CMSG_NXTHDR(hdr, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
            in_pktinfo pi{};
            std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
            meta.destination_ip = ipText(AF_INET, &pi.ipi_addr);
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
            in6_pktinfo pi{};
            std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
            meta.destination_ip = ipText(AF_INET6, &pi.ipi6_addr);
        }
    }
    if (meta.destination_ip.empty()) { // no PKTINFO: the bound address
        meta.destination_ip = printable(self.localEndpoint().address());
    }
}

} // namespace

UdpListener::UdpListener(boost::asio::io_context& io, const boost::asio::ip::udp::endpoint& ep,
                         Ingest& ingest, bool responsive)
    : socket_(io), poll_timer_(io), ingest_(ingest), responsive_(responsive),
      batch_(std::make_unique<Batch>()) {
    boost::system::error_code ec;
    socket_.open(ep.protocol(), ec);
    if (!ec && ep.address().is_v6()) {
        socket_.set_option(boost::asio::ip::v6_only(true), ec);
    }
    if (!ec) {
        socket_.bind(ep, ec);
    }
    if (ec) {
        throw ListenError("cannot listen on " + describe("UDP", ep) + ": " + ec.message());
    }
    int fd = socket_.native_handle();
    // A large receive buffer absorbs bursts; root may exceed net.core.rmem_max.
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &kReceiveBuffer, sizeof kReceiveBuffer) != 0) {
        setOption(fd, SOL_SOCKET, SO_RCVBUF, kReceiveBuffer);
    }
    if (ep.address().is_v6()) {
        setOption(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1);
    } else {
        setOption(fd, IPPROTO_IP, IP_PKTINFO, 1);
    }
    socket_.non_blocking(true);
    local_ = socket_.local_endpoint();
}

UdpListener::~UdpListener() = default;

void UdpListener::start() {
    spdlog::debug("{}: listening", describe("UDP", local_));
    arm();
}

void UdpListener::arm() {
    socket_.async_wait(boost::asio::socket_base::wait_read,
                       [self = shared_from_this()](const boost::system::error_code& ec) {
                           if (ec) {
                               return; // cancelled: shutting down
                           }
                           self->poll();
                       });
}

void UdpListener::poll() {
    if (receive(16) == 0) {
        arm(); // quiet: wait for the next datagram
        return;
    }
    poll_timer_.expires_after(kPollInterval); // busy: read again shortly, in one batch
    poll_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        if (!ec) {
            self->poll();
        }
    });
}

std::size_t UdpListener::receive(int max_rounds) {
    std::size_t received = 0;
    int fd = socket_.native_handle();
    for (int round = 0; round < max_rounds; ++round) {
        batch_->reset();
        int n = ::recvmmsg(fd, batch_->msgs.data(), kSlots, MSG_DONTWAIT, nullptr);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                error_log_.allow(ingest_.clock().now())) {
                spdlog::warn("{}: recvmmsg: {}", describe("UDP", local_),
                             core::errnoMessage(errno));
            }
            return received;
        }
        received += static_cast<std::size_t>(n);
        for (int i = 0; i < n; ++i) {
            auto slot = static_cast<std::size_t>(i);
            const auto& m = batch_->msgs[slot];
            Meta& meta = batch_->meta[slot];
            fillMeta(m, batch_->from[slot], *this, meta);
            std::string_view bytes(batch_->data[slot].data(), m.msg_len);
            std::string reply = ingest_.handle(bytes, meta);
            if (responsive_ && !reply.empty()) {
                sendReply(reply, slot);
            }
        }
        if (static_cast<std::size_t>(n) < kSlots) {
            return received;
        }
    }
    return received;
}

void UdpListener::sendReply(const std::string& reply, std::size_t slot) {
    // Reply from the address the request was sent to (multi-homed hosts, 0.0.0.0 binds).
    msghdr out{};
    iovec iov{const_cast<char*>(reply.data()), reply.size()};
    out.msg_name = &batch_->from[slot];
    out.msg_namelen = batch_->msgs[slot].msg_hdr.msg_namelen;
    out.msg_iov = &iov;
    out.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(in6_pktinfo))] = {};
    auto* hdr = const_cast<msghdr*>(&batch_->msgs[slot].msg_hdr);
    for (cmsghdr* c = CMSG_FIRSTHDR(hdr); c != nullptr; c = CMSG_NXTHDR(hdr, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
            in_pktinfo pi{};
            std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
            in_pktinfo spec{};
            spec.ipi_spec_dst = pi.ipi_addr;
            out.msg_control = control;
            out.msg_controllen = CMSG_SPACE(sizeof spec);
            cmsghdr* oc = CMSG_FIRSTHDR(&out);
            oc->cmsg_level = IPPROTO_IP;
            oc->cmsg_type = IP_PKTINFO;
            oc->cmsg_len = CMSG_LEN(sizeof spec);
            std::memcpy(CMSG_DATA(oc), &spec, sizeof spec);
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
            in6_pktinfo pi{};
            std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
            pi.ipi6_ifindex = 0;
            out.msg_control = control;
            out.msg_controllen = CMSG_SPACE(sizeof pi);
            cmsghdr* oc = CMSG_FIRSTHDR(&out);
            oc->cmsg_level = IPPROTO_IPV6;
            oc->cmsg_type = IPV6_PKTINFO;
            oc->cmsg_len = CMSG_LEN(sizeof pi);
            std::memcpy(CMSG_DATA(oc), &pi, sizeof pi);
        }
    }
    if (::sendmsg(socket_.native_handle(), &out, MSG_DONTWAIT) < 0 &&
        error_log_.allow(ingest_.clock().now())) {
        spdlog::debug("{}: reply not sent: {}", describe("UDP", local_), core::errnoMessage(errno));
    }
}

std::size_t UdpListener::drainAndClose(std::size_t max_datagrams,
                                       std::chrono::milliseconds max_time,
                                       const std::atomic<bool>* abort) {
    const auto deadline = std::chrono::steady_clock::now() + max_time;
    std::size_t drained = 0;
    bool bounded = false;
    while (socket_.is_open()) {
        if (drained >= max_datagrams || std::chrono::steady_clock::now() >= deadline ||
            (abort != nullptr && abort->load())) {
            bounded = true;
            break;
        }
        std::size_t n = receive(1); // one recvmmsg: up to kSlots datagrams
        drained += n;
        if (n == 0) {
            break; // empty
        }
    }
    boost::system::error_code ec;
    socket_.close(ec);
    if (bounded) {
        spdlog::warn("{}: shutdown drain stopped after {} datagrams; the rest is not recorded",
                     describe("UDP", local_), drained);
    } else {
        spdlog::debug("{}: drained {} datagrams, closed", describe("UDP", local_), drained);
    }
    return drained;
}

} // namespace sp::listen
