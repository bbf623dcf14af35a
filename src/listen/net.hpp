#pragma once
// Small socket helpers shared by the listeners.

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <stdexcept>
#include <string>

namespace sp::listen {

// A startup failure of a listener: one line naming the address and the reason.
class ListenError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The printable form of an address, IPv4-mapped IPv6 (::ffff:192.0.2.1) unmapped.
inline std::string printable(const boost::asio::ip::address& a) {
    if (a.is_v6() && a.to_v6().is_v4_mapped()) {
        return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a.to_v6()).to_string();
    }
    return a.to_string();
}

template <typename Endpoint> std::string describe(const char* proto, const Endpoint& ep) {
    std::string host = ep.address().to_string();
    if (ep.address().is_v6()) {
        host = "[" + host + "]";
    }
    return std::string(proto) + " " + host + ":" + std::to_string(ep.port());
}

} // namespace sp::listen
