// Identity files, pkId and the proof-of-work stamp.
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <gnutls/abstract.h>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>

#include "share/share.hpp"

namespace sp::share {

namespace fs = std::filesystem;

namespace {

std::string errText(int err) {
    return std::system_category().message(err);
}

dht::Blob readFile(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) {
        throw std::runtime_error("cannot read " + p.string() + ": " + errText(errno));
    }
    return dht::Blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Writes `data` through a fresh file created with `mode` (O_EXCL: never readable by others,
// not even for a moment), then renames it over `path`.
void writePrivate(const fs::path& path, const dht::Blob& data, mode_t mode) {
    fs::path tmp = path;
    tmp += ".tmp";
    ::unlink(tmp.c_str());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        throw std::runtime_error("cannot create " + tmp.string() + ": " + errText(errno));
    }
    ::fchmod(fd, mode);
    std::size_t done = 0;
    while (done < data.size()) {
        auto n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            int err = errno;
            ::close(fd);
            ::unlink(tmp.c_str());
            throw std::runtime_error("cannot write " + tmp.string() + ": " + errText(err));
        }
        done += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        ::unlink(tmp.c_str());
        throw std::runtime_error("cannot write " + tmp.string() + ": " + errText(errno));
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) {
        ::unlink(tmp.c_str());
        throw std::runtime_error("cannot write " + path.string() + ": " + ec.message());
    }
}

void say(const std::function<void(std::string_view)>& log, const std::string& line) {
    if (log) {
        log(line);
    }
}

void fixKeyMode(const fs::path& key, const std::function<void(std::string_view)>& log) {
    struct stat st {};
    if (::stat(key.c_str(), &st) != 0 || (st.st_mode & 077) == 0) {
        return;
    }
    if (::chmod(key.c_str(), S_IRUSR | S_IWUSR) != 0) {
        throw std::runtime_error(
            "the identity key " + key.string() +
            " is readable by others and cannot be made private: " + errText(errno));
    }
    char mode[8];
    std::snprintf(mode, sizeof mode, "%o", st.st_mode & 0777);
    say(log, "share: the identity key " + key.string() + " was readable by others (mode " + mode +
                 "); made it 0600");
}

fs::path withSuffix(const fs::path& base, const char* suffix) {
    fs::path p = base;
    p += suffix;
    return p;
}

std::uint64_t leadingZeroBits(const dht::InfoHash& h) {
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < h.size(); ++i) {
        if (h[i] == 0) {
            n += 8;
            continue;
        }
        for (int bit = 7; bit >= 0 && ((h[i] >> bit) & 1) == 0; --bit) {
            ++n;
        }
        break;
    }
    return n;
}

dht::InfoHash stampHash(std::string_view pk_id, std::uint64_t nonce) {
    std::string in = "rcp1-stamp";
    in += pk_id;
    for (int i = 0; i < 8; ++i) {
        in.push_back(static_cast<char>((nonce >> (8 * i)) & 0xff));
    }
    return dht::InfoHash::get(in);
}

} // namespace

bool isRsa(const dht::crypto::Identity& identity) {
    if (!identity.first || !identity.first->key) {
        return false;
    }
    return gnutls_privkey_get_pk_algorithm(identity.first->key, nullptr) == GNUTLS_PK_RSA;
}

std::string pkId(const dht::crypto::Identity& identity) {
    if (identity.second) {
        return identity.second->getId().toString();
    }
    if (identity.first) {
        return identity.first->getPublicKey().getId().toString();
    }
    return {};
}

dht::crypto::Identity loadOrCreateIdentity(const fs::path& base, unsigned bits,
                                           const std::function<void(std::string_view)>& log) {
    const fs::path key = withSuffix(base, ".pem");
    const fs::path crt = withSuffix(base, ".crt");
    if (fs::exists(key) && fs::exists(crt)) {
        fixKeyMode(key, log);
        dht::crypto::Identity id;
        try {
            id = {std::make_shared<dht::crypto::PrivateKey>(readFile(key)),
                  std::make_shared<dht::crypto::Certificate>(readFile(crt))};
        } catch (const std::exception& e) {
            throw std::runtime_error("cannot load the identity " + key.string() + ": " + e.what());
        }
        if (isRsa(id)) {
            return id;
        }
        // A pre-RCP1 EC identity: OpenDHT 2.4 cannot verify or encrypt to it. Keep it aside.
        std::error_code ec;
        fs::rename(key, withSuffix(base, ".pem.ec-old"), ec);
        if (!ec) {
            fs::rename(crt, withSuffix(base, ".crt.ec-old"), ec);
        }
        if (ec) {
            throw std::runtime_error("cannot move the EC identity " + key.string() +
                                     " aside: " + ec.message());
        }
        say(log, "share: the identity " + key.string() + " (" + pkId(id) +
                     ") is not RSA; kept it as " + withSuffix(base, ".pem.ec-old").string() +
                     " and created a new RSA identity");
    }
    auto id = dht::crypto::generateIdentity("rcp1", {}, bits);
    try {
        writePrivate(key, id.first->serialize(), S_IRUSR | S_IWUSR);
        writePrivate(crt, id.second->getPacked(), S_IRUSR | S_IWUSR | S_IRGRP | S_IROTH);
    } catch (const std::exception& e) {
        throw std::runtime_error("cannot save the identity: " + std::string(e.what()));
    }
    return id;
}

std::uint64_t computeStamp(std::string_view pk_id, unsigned bits) {
    for (std::uint64_t nonce = 0;; ++nonce) {
        if (leadingZeroBits(stampHash(pk_id, nonce)) >= bits) {
            return nonce;
        }
    }
}

bool checkStamp(std::string_view pk_id, std::uint64_t stamp, unsigned bits) {
    return leadingZeroBits(stampHash(pk_id, stamp)) >= bits;
}

} // namespace sp::share
