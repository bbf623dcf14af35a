#pragma once
// The TLS server context for SIP over TLS (TLS 1.2 or later).

#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>

namespace sp::listen {

// Loads cert/key (PEM) when given; otherwise uses, or on first start generates, a
// self-signed certificate for "localhost" in data_dir (tls-cert.pem, tls-key.pem; the key
// readable by the owner only). Throws ListenError naming the file and the reason.
std::unique_ptr<boost::asio::ssl::context>
makeTlsContext(const std::string& cert, const std::string& key, const std::string& data_dir);

// Writes a new self-signed certificate (EC P-256, CN and SAN "localhost", 10 years) and its
// key. Throws ListenError.
void generateSelfSigned(const std::string& cert_path, const std::string& key_path);

} // namespace sp::listen
