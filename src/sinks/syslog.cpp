#include "sinks/syslog.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/text.hpp"

namespace sp::sinks {

namespace {
constexpr int kUserNotice = (1 << 3) | 5; // LOG_USER | LOG_NOTICE
}

std::string syslogMessage(const core::Event& e) {
    return "Source IP: " + core::sanitizeBytes(e.source_ip, false) +
           ", Method: " + core::sanitizeBytes(e.sip_method, false) +
           ", Agent: " + core::sanitizeBytes(e.sip_user_agent, false);
}

std::string syslogDatagram(const core::Event& e, core::TimePoint now, int pid) {
    std::time_t t = std::chrono::system_clock::to_time_t(now);
    std::tm tm{};
    localtime_r(&t, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%h %e %T", &tm);
    return "<" + std::to_string(kUserNotice) + ">" + stamp + " sentrypeer[" + std::to_string(pid) +
           "]: " + syslogMessage(e);
}

Syslog::Syslog(std::string socket_path, const core::Clock& clock)
    : socket_path_(std::move(socket_path)), clock_(clock), pid_(static_cast<int>(::getpid())) {
    connect();
}

Syslog::~Syslog() {
    disconnect();
}

bool Syslog::connect() {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_path_.size() >= sizeof addr.sun_path) {
        return false;
    }
    std::memcpy(addr.sun_path, socket_path_.c_str(), socket_path_.size() + 1);
    for (int type : {SOCK_DGRAM, SOCK_STREAM}) {
        fd_ = ::socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
        if (fd_ < 0) {
            return false;
        }
        if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
            stream_ = type == SOCK_STREAM;
            return true;
        }
        int err = errno;
        disconnect();
        if (err != EPROTOTYPE) {
            errno = err;
            break;
        }
    }
    if (error_log_.allow(clock_.now())) {
        spdlog::warn("syslog: cannot connect to {}: {} (will retry)", socket_path_,
                     core::errnoMessage(errno));
    }
    return false;
}

void Syslog::disconnect() {
    if (fd_ >= 0) {
        ::close(fd_);
        fd_ = -1;
    }
}

void Syslog::consume(std::span<const core::EventPtr> batch) {
    auto now = clock_.now();
    for (const auto& e : batch) {
        if (e->origin != core::Origin::Local) {
            continue; // fail2ban bans who probed this host
        }
        std::string line = syslogDatagram(*e, now, pid_);
        if (stream_) {
            line.push_back('\0');
        }
        // One reconnect attempt per message: syslogd restarted, or the socket appeared.
        bool sent = false;
        for (int attempt = 0; attempt < 2 && !sent; ++attempt) {
            if (fd_ < 0 && (now < next_connect_ || !connect())) {
                next_connect_ = std::max(next_connect_, now + std::chrono::seconds(1));
                break;
            }
            sent = ::send(fd_, line.data(), line.size(), MSG_NOSIGNAL) >= 0;
            if (!sent) {
                disconnect();
            }
        }
        if (!sent) {
            write_errors_.fetch_add(1, std::memory_order_relaxed);
        }
    }
}

void Syslog::close() {
    disconnect();
}

} // namespace sp::sinks
