#include "listen/tls.hpp"
#include "core/text.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include "listen/net.hpp"

namespace sp::listen {

namespace {

std::string opensslError() {
    unsigned long e = ERR_get_error();
    if (e == 0) {
        return "unknown OpenSSL error";
    }
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}

template <typename T, void (*Free)(T*)> struct Deleter {
    void operator()(T* p) const { Free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;

struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
};

std::unique_ptr<std::FILE, FileCloser> openForWrite(const std::string& path, mode_t mode) {
    std::FILE* f = nullptr;
    mode_t old = ::umask(static_cast<mode_t>(~mode & 0777));
    f = std::fopen(path.c_str(), "we");
    ::umask(old);
    if (f == nullptr) {
        throw ListenError("cannot write " + path + ": " + core::errnoMessage(errno));
    }
    return std::unique_ptr<std::FILE, FileCloser>(f);
}

} // namespace

void generateSelfSigned(const std::string& cert_path, const std::string& key_path) {
    PkeyPtr pkey(EVP_EC_gen("P-256"));
    X509Ptr x509(X509_new());
    if (!pkey || !x509) {
        throw ListenError("cannot generate a TLS key: " + opensslError());
    }
    X509_set_version(x509.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x509.get()), static_cast<long>(std::time(nullptr)));
    X509_gmtime_adj(X509_getm_notBefore(x509.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x509.get()), 10L * 365 * 24 * 3600);
    X509_set_pubkey(x509.get(), pkey.get());
    X509_NAME* name = X509_get_subject_name(x509.get());
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
    X509_set_issuer_name(x509.get(), name);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x509.get(), x509.get(), nullptr, nullptr, 0);
    X509_EXTENSION* san = X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name,
                                              "DNS:localhost,IP:127.0.0.1,IP:::1");
    if (san != nullptr) {
        X509_add_ext(x509.get(), san, -1);
        X509_EXTENSION_free(san);
    }
    if (X509_sign(x509.get(), pkey.get(), EVP_sha256()) == 0) {
        throw ListenError("cannot sign the TLS certificate: " + opensslError());
    }
    auto key_file = openForWrite(key_path, 0600);
    if (PEM_write_PrivateKey(key_file.get(), pkey.get(), nullptr, nullptr, 0, nullptr, nullptr) !=
        1) {
        throw ListenError("cannot write " + key_path + ": " + opensslError());
    }
    auto cert_file = openForWrite(cert_path, 0644);
    if (PEM_write_X509(cert_file.get(), x509.get()) != 1) {
        throw ListenError("cannot write " + cert_path + ": " + opensslError());
    }
}

std::unique_ptr<boost::asio::ssl::context>
makeTlsContext(const std::string& cert, const std::string& key, const std::string& data_dir) {
    std::string cert_path = cert;
    std::string key_path = key;
    if (cert_path.empty()) {
        cert_path = (std::filesystem::path(data_dir) / "tls-cert.pem").string();
        key_path = (std::filesystem::path(data_dir) / "tls-key.pem").string();
        if (!std::filesystem::exists(cert_path) || !std::filesystem::exists(key_path)) {
            generateSelfSigned(cert_path, key_path);
            spdlog::info("generated a self-signed TLS certificate for localhost: {}", cert_path);
        }
    }
    auto ctx = std::make_unique<boost::asio::ssl::context>(boost::asio::ssl::context::tls_server);
    SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
    ctx->set_options(boost::asio::ssl::context::default_workarounds |
                     boost::asio::ssl::context::single_dh_use);
    boost::system::error_code ec;
    ctx->use_certificate_chain_file(cert_path, ec);
    if (ec) {
        throw ListenError("cannot load TLS certificate " + cert_path + ": " + ec.message());
    }
    ctx->use_private_key_file(key_path, boost::asio::ssl::context::pem, ec);
    if (ec) {
        throw ListenError("cannot load TLS key " + key_path + ": " + ec.message());
    }
    if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
        throw ListenError("TLS key " + key_path + " does not match certificate " + cert_path);
    }
    return ctx;
}

} // namespace sp::listen
