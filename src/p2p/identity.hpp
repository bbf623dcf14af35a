#pragma once
// The node's OpenDHT identity files (used by P2pNode::start; exposed for tests).

#include <filesystem>
#include <opendht/crypto.h>

namespace sp::p2p {

// Loads <base>.pem (private key) and <base>.crt, or creates both: the key file is created
// with mode 0600 from its first byte (a temporary file opened O_CREAT|O_EXCL 0600, then
// renamed), never readable by others. An existing key readable by group or others is made
// 0600 with a warning. Throws std::runtime_error naming the file.
dht::crypto::Identity loadOrCreateIdentity(const std::filesystem::path& base);

} // namespace sp::p2p
