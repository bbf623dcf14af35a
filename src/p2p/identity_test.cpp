#include <gtest/gtest.h>

#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

#include "p2p/identity.hpp"

namespace fs = std::filesystem;

namespace {

unsigned modeOf(const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_mode & 0777U;
}

struct TempDir {
    fs::path path = fs::temp_directory_path() / ("sp_identity_test_" + std::to_string(::getpid()));
    TempDir() {
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() { fs::remove_all(path); }
};

} // namespace

TEST(Identity, KeyIsCreatedPrivateWhateverTheUmask) {
    TempDir dir;
    mode_t old = ::umask(0); // the most permissive umask: only the open() mode protects the key
    auto id = sp::p2p::loadOrCreateIdentity(dir.path / "dht-identity");
    ::umask(old);
    EXPECT_EQ(modeOf(dir.path / "dht-identity.pem"), 0600U);
    EXPECT_EQ(modeOf(dir.path / "dht-identity.crt"), 0644U);
    EXPECT_FALSE(fs::exists(dir.path / "dht-identity.pem.tmp"));
    // Loaded back as the same identity.
    auto again = sp::p2p::loadOrCreateIdentity(dir.path / "dht-identity");
    EXPECT_EQ(again.second->getId(), id.second->getId());
}

TEST(Identity, ExistingKeyReadableByOthersIsMadePrivate) {
    TempDir dir;
    auto id = sp::p2p::loadOrCreateIdentity(dir.path / "dht-identity");
    ASSERT_EQ(::chmod((dir.path / "dht-identity.pem").c_str(), 0644), 0);
    auto again = sp::p2p::loadOrCreateIdentity(dir.path / "dht-identity");
    EXPECT_EQ(modeOf(dir.path / "dht-identity.pem"), 0600U);
    EXPECT_EQ(again.second->getId(), id.second->getId());
}

TEST(Identity, StaleTemporaryFileDoesNotBreakCreation) {
    TempDir dir;
    // A world-readable leftover at the temporary path (a crash, or someone else's file).
    std::ofstream(dir.path / "dht-identity.pem.tmp") << "junk";
    ASSERT_EQ(::chmod((dir.path / "dht-identity.pem.tmp").c_str(), 0666), 0);
    sp::p2p::loadOrCreateIdentity(dir.path / "dht-identity");
    EXPECT_EQ(modeOf(dir.path / "dht-identity.pem"), 0600U);
}
