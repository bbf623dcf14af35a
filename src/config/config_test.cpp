#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "config/config.hpp"

using namespace sp::config;
using namespace std::chrono_literals;

namespace {

// Parses a command line with a clean SENTRYPEER_* environment plus `env`.
std::variant<Config, Exit> run(std::vector<std::string> args,
                               std::vector<std::pair<std::string, std::string>> env = {}) {
    for (const char* name :
         {"SENTRYPEER_SIP_RESPONSIVE", "SENTRYPEER_DB_FILE", "SENTRYPEER_CONFIG_FILE",
          "SENTRYPEER_MAX_AGE", "SENTRYPEER_TLS_LISTEN_ADDRESS", "SENTRYPEER_JSON_LOG"}) {
        unsetenv(name);
    }
    for (const auto& [k, v] : env) {
        setenv(k.c_str(), v.c_str(), 1);
    }
    args.insert(args.begin(), "sentrypeer");
    std::vector<const char*> argv;
    for (const auto& a : args) {
        argv.push_back(a.c_str());
    }
    auto r = parse(static_cast<int>(argv.size()), argv.data());
    for (const auto& [k, v] : env) {
        unsetenv(k.c_str());
    }
    return r;
}

const Config& ok(const std::variant<Config, Exit>& r) {
    if (auto* e = std::get_if<Exit>(&r)) {
        ADD_FAILURE() << "unexpected exit " << e->code << ": " << e->message;
        static Config empty;
        return empty;
    }
    return std::get<Config>(r);
}

std::string tempFile(const std::string& name, const std::string& content) {
    auto p = std::filesystem::temp_directory_path() / ("sp_config_test_" + name);
    std::ofstream(p) << content;
    return p.string();
}

} // namespace

TEST(Config, DefaultsMatchSentryPeer) {
    auto c = ok(run({}));
    EXPECT_EQ(c.db_file, "sentrypeer.db");
    EXPECT_EQ(c.json_log_file, "sentrypeer_json.log");
    EXPECT_FALSE(c.sip_responsive);
    EXPECT_FALSE(c.json_log);
    ASSERT_EQ(c.sip_listen.size(), 2u);
    EXPECT_EQ(c.sip_listen[0].str(), "0.0.0.0:5060");
    EXPECT_EQ(c.sip_listen[1].str(), "[::]:5060");
    ASSERT_TRUE(c.tls_listen);
    EXPECT_EQ(c.tls_listen->str(), "0.0.0.0:5061");
    EXPECT_EQ(c.max_age, 168h);
    EXPECT_EQ(c.dataDir(), ".");
    EXPECT_GE(c.threads, 1u);
}

TEST(Config, ShortFlagsAndLongOptions) {
    auto c = ok(run({"-r", "-j", "-f", "/tmp/x/db.sqlite", "--sip-listen", "127.0.0.1:5070",
                     "--sip-listen", "[::1]:5070", "-z", "127.0.0.1:5071", "--max-age", "12h"}));
    EXPECT_TRUE(c.sip_responsive);
    EXPECT_TRUE(c.json_log);
    EXPECT_EQ(c.dataDir(), "/tmp/x");
    ASSERT_EQ(c.sip_listen.size(), 2u);
    EXPECT_EQ(c.sip_listen[1].host, "::1");
    EXPECT_EQ(c.sip_listen[1].port, 5070);
    EXPECT_EQ(c.tls_listen->port, 5071);
    EXPECT_EQ(c.max_age, 12h);
}

TEST(Config, JsonLogFileImpliesJsonLog) {
    EXPECT_TRUE(ok(run({"-l", "/tmp/x.json"})).json_log);
}

TEST(Config, EnvironmentBooleansAreStrict) {
    EXPECT_TRUE(ok(run({}, {{"SENTRYPEER_SIP_RESPONSIVE", "1"}})).sip_responsive);
    EXPECT_TRUE(ok(run({}, {{"SENTRYPEER_SIP_RESPONSIVE", "yes"}})).sip_responsive);
    EXPECT_TRUE(ok(run({}, {{"SENTRYPEER_SIP_RESPONSIVE", "ON"}})).sip_responsive);
    // SentryPeer treats any set variable as on; "0" means off here.
    EXPECT_FALSE(ok(run({}, {{"SENTRYPEER_SIP_RESPONSIVE", "0"}})).sip_responsive);
    EXPECT_FALSE(ok(run({}, {{"SENTRYPEER_SIP_RESPONSIVE", "false"}})).sip_responsive);
    EXPECT_FALSE(ok(run({}, {{"SENTRYPEER_SIP_RESPONSIVE", "off"}})).sip_responsive);
    auto r = run({}, {{"SENTRYPEER_SIP_RESPONSIVE", "maybe"}});
    ASSERT_TRUE(std::holds_alternative<Exit>(r));
    EXPECT_EQ(std::get<Exit>(r).code, 2);
    EXPECT_NE(std::get<Exit>(r).message.find("maybe"), std::string::npos);
}

TEST(Config, BadValuesGiveOneLineNamingTheOption) {
    for (auto args : std::vector<std::vector<std::string>>{{"--max-age", "abc"},
                                                           {"--sip-listen", "nonsense"},
                                                           {"--sip-listen", "127.0.0.1:70000"},
                                                           {"--tls-listen", "localhost:5061"},
                                                           {"--sip-agent", "500"},
                                                           {"--threads", "x"},
                                                           {"--no-such-flag"}}) {
        auto r = run(args);
        ASSERT_TRUE(std::holds_alternative<Exit>(r)) << args[0];
        const auto& e = std::get<Exit>(r);
        EXPECT_EQ(e.code, 2) << args[0];
        EXPECT_EQ(e.message.find('\n'), std::string::npos) << e.message;
        EXPECT_NE(e.message.find(args[0]), std::string::npos) << e.message;
    }
}

TEST(Config, MissingCertFileIsRefused) {
    auto r = run({"-t", "/nonexistent/cert.pem", "-k", "/nonexistent/key.pem"});
    ASSERT_TRUE(std::holds_alternative<Exit>(r));
    EXPECT_NE(std::get<Exit>(r).message.find("/nonexistent/cert.pem"), std::string::npos);
}

TEST(Config, ConfigFileWithSentryPeerKeysAndPrecedence) {
    auto cert = tempFile("cert.pem", "x");
    auto key = tempFile("key.pem", "x");
    auto file = tempFile("conf.toml", "cert = \"" + cert + "\"\nkey = \"" + key +
                                          "\"\ntls_listen_address = \"127.0.0.1:6061\"\n"
                                          "sip_responsive = true\nmax-age = \"1d\"\n"
                                          "db_file = \"/tmp/from-file.db\"\n");
    auto c = ok(run({"-g", file}));
    EXPECT_EQ(c.cert, cert);
    EXPECT_EQ(c.key, key);
    EXPECT_EQ(c.tls_listen->str(), "127.0.0.1:6061");
    EXPECT_TRUE(c.sip_responsive);
    EXPECT_EQ(c.max_age, 24h);
    EXPECT_EQ(c.db_file, "/tmp/from-file.db");

    // file < environment < command line
    auto e = ok(run({"-g", file}, {{"SENTRYPEER_SIP_RESPONSIVE", "0"},
                                   {"SENTRYPEER_DB_FILE", "/tmp/from-env.db"}}));
    EXPECT_FALSE(e.sip_responsive);
    EXPECT_EQ(e.db_file, "/tmp/from-env.db");
    auto l = ok(
        run({"-g", file, "-f", "/tmp/from-cli.db"}, {{"SENTRYPEER_DB_FILE", "/tmp/from-env.db"}}));
    EXPECT_EQ(l.db_file, "/tmp/from-cli.db");
    auto viaenv = ok(run({}, {{"SENTRYPEER_CONFIG_FILE", file}}));
    EXPECT_EQ(viaenv.max_age, 24h);
}

TEST(Config, UnknownConfigKeyIsAnError) {
    auto file = tempFile("bad.toml", "sip_responsiv = true\n");
    auto r = run({"-g", file});
    ASSERT_TRUE(std::holds_alternative<Exit>(r));
    EXPECT_EQ(std::get<Exit>(r).code, 2);
}

TEST(Config, DescribeIsAValidConfigFile) {
    auto c = ok(run({"-r", "--sip-listen", "127.0.0.1:5070", "--max-age", "2h"}));
    auto file = tempFile("described.toml", describe(c));
    auto again = ok(run({"-g", file}));
    EXPECT_EQ(describe(again), describe(c));
}

TEST(Config, HostPortParsing) {
    EXPECT_TRUE(parseHostPort("0.0.0.0:5060"));
    EXPECT_TRUE(parseHostPort("[::]:5060"));
    EXPECT_TRUE(parseHostPort("[2001:db8::1]:5061"));
    EXPECT_FALSE(parseHostPort("::1:5060"));
    EXPECT_FALSE(parseHostPort("127.0.0.1"));
    EXPECT_FALSE(parseHostPort("127.0.0.1:"));
    EXPECT_FALSE(parseHostPort("127.0.0.1:0"));
    EXPECT_FALSE(parseHostPort("example.com:5060"));
    EXPECT_FALSE(parseHostPort("[::1]5060"));
}
