#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

extern char** environ;

#include "config/config.hpp"

using namespace sp::config;
using namespace std::chrono_literals;

namespace {

// Parses a command line with a clean SENTRYPEER_* environment plus `env`.
std::variant<Config, Exit> run(std::vector<std::string> args,
                               std::vector<std::pair<std::string, std::string>> env = {}) {
    std::vector<std::string> set;
    for (char** e = environ; *e != nullptr; ++e) {
        std::string kv = *e;
        if (kv.rfind("SENTRYPEER_", 0) == 0) {
            set.push_back(kv.substr(0, kv.find('=')));
        }
    }
    for (const auto& name : set) {
        unsetenv(name.c_str());
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

// ---- describe() round trip over the whole option table ------------------------------------

namespace {

Exit err(const std::variant<Config, Exit>& r) {
    if (auto* e = std::get_if<Exit>(&r)) {
        return *e;
    }
    ADD_FAILURE() << "parsed although it should not";
    return Exit{0, ""};
}

// Values tried, in order, for an option until one parses and changes the Config. A new
// option whose values are all refused fails SampleValueForEveryOption: add one here.
const std::vector<std::string> kCandidates = {"7",
                                              "3",
                                              "404",
                                              "1",
                                              "12345",
                                              "3h",
                                              "90s",
                                              "127.0.0.1:5999",
                                              "[::1]:5998",
                                              "sip:1@192.0.2.1",
                                              "http://192.0.2.1:8080/hook",
                                              "sample-text",
                                              "/tmp/sp-sample/file",
                                              "192.0.2.7:4333",
                                              "2",
                                              "198.51.100.0/24",
                                              "L0",
                                              "5m",
                                              "0123456789abcdef0123456789abcdef01234567",
                                              "0"};

// Equal but for the config file's name (which -g sets).
bool same(Config a, const Config& b) {
    a.config_file = b.config_file;
    return a == b;
}

struct Sample {
    std::vector<std::string> args; // command line that sets the option
    std::string value;
};

// The command line that gives `o` a non-default value, or nullopt.
std::optional<Sample> sampleFor(const OptionInfo& o, const Config& defaults) {
    static const std::string cert = tempFile("rt_cert.pem", "x");
    static const std::string key = tempFile("rt_key.pem", "x");
    std::vector<std::string> candidates = kCandidates;
    if (o.is_flag) {
        candidates = {"true", "false"};
    } else if (o.secret) {
        candidates = {"s3cret-Sample-Value"}; // found nowhere else in describe()'s text
    } else if (o.flag == "--cert" || o.flag == "--key") {
        candidates = {o.flag == "--cert" ? cert : key};
    }
    for (const auto& v : candidates) {
        std::vector<std::string> args = {o.flag + "=" + v};
        if (o.flag == "--cert") {
            args.push_back("--key=" + key);
        } else if (o.flag == "--key") {
            args.push_back("--cert=" + cert);
        }
        auto r = run(args);
        if (auto* c = std::get_if<Config>(&r); c != nullptr && !(*c == defaults)) {
            return Sample{args, v};
        }
    }
    return std::nullopt;
}

} // namespace

TEST(ConfigRoundTrip, TableHasTheSecretsAndEveryOptionIsDescribed) {
    auto table = optionTable();
    std::map<std::string, OptionInfo> by_flag;
    for (const auto& o : table) {
        by_flag.emplace(o.flag, o);
    }
    ASSERT_TRUE(by_flag.count("--api-token"));
    EXPECT_TRUE(by_flag.at("--api-token").secret);
    EXPECT_TRUE(by_flag.at("--oauth2-client-secret").secret);
    EXPECT_FALSE(by_flag.at("--db-file").secret);
    EXPECT_FALSE(by_flag.at("--p2p").configurable);
    std::string text = describe(ok(run({})));
    for (const auto& o : table) {
        bool listed = text.find("\n" + o.key + " = ") != std::string::npos ||
                      text.find("\n# " + o.key + " = ") != std::string::npos;
        EXPECT_EQ(listed, o.configurable) << o.key << " in\n" << text;
    }
}

TEST(ConfigRoundTrip, SampleValueForEveryOption) {
    Config defaults = ok(run({}));
    for (const auto& o : optionTable()) {
        if (o.configurable) {
            EXPECT_TRUE(sampleFor(o, defaults))
                << o.flag << ": no value in kCandidates parses and changes the Config; add one";
        }
    }
}

// Each option alone: set it, describe(), read the text back with -g: the same Config.
// Fails for an option that describe() leaves out or prints with a stale value.
TEST(ConfigRoundTrip, EachOptionSurvivesDescribeAndReadBack) {
    Config defaults = ok(run({}));
    for (const auto& o : optionTable()) {
        if (!o.configurable) {
            continue;
        }
        auto sample = sampleFor(o, defaults);
        if (!sample) {
            continue; // reported by SampleValueForEveryOption
        }
        Config set = ok(run(sample->args));
        std::string text = describe(set);
        auto file = tempFile("rt.toml", text);
        auto back = run({"-g", file});
        ASSERT_TRUE(std::holds_alternative<Config>(back))
            << o.flag << ": " << std::get<Exit>(back).message << "\n"
            << text;
        if (!o.secret) {
            EXPECT_TRUE(same(std::get<Config>(back), set)) << o.flag << " lost in\n" << text;
            continue;
        }
        // A secret: never in the text, not read back from it, only from its variable.
        EXPECT_EQ(text.find(sample->value), std::string::npos) << text;
        EXPECT_NE(text.find("# " + o.key + " = (set; not shown: use " + o.env + ")"),
                  std::string::npos)
            << text;
        EXPECT_TRUE(same(std::get<Config>(back), defaults)) << o.flag;
        ASSERT_FALSE(o.env.empty()) << o.flag << ": a secret needs a SENTRYPEER_* variable";
        EXPECT_TRUE(same(ok(run({"-g", file}, {{o.env, sample->value}})), set)) << o.flag;
    }
}

// Every option at once (the sample values do not conflict).
TEST(ConfigRoundTrip, AllOptionsTogether) {
    Config defaults = ok(run({}));
    std::vector<std::string> args;
    std::vector<std::pair<std::string, std::string>> env;
    for (const auto& o : optionTable()) {
        auto sample = o.configurable ? sampleFor(o, defaults) : std::nullopt;
        if (sample && o.secret) {
            env.emplace_back(o.env, sample->value);
        } else if (sample && o.flag != "--key" && o.flag != "--no-tls" &&
                   o.flag != "--sip-disable") {
            args.insert(args.end(), sample->args.begin(), sample->args.end());
        }
    }
    Config set = ok(run(args, env));
    auto file = tempFile("rt_all.toml", describe(set));
    EXPECT_TRUE(same(ok(run({"-g", file}, env)), set)) << describe(set);
}

TEST(ConfigRoundTrip, AwkwardStringsSurvive) {
    Config set = ok(run({"--sip-server-header", "A \"quoted\" # not a comment, \\ back\tslash é",
                         "--db-file", "/tmp/it's here.db", "--api-token", "tok\"en#1"}));
    auto file = tempFile("rt_awkward.toml", describe(set));
    Config back = ok(run({"-g", file}, {{"SENTRYPEER_API_TOKEN", "tok\"en#1"}}));
    EXPECT_EQ(back.sip_server_header, set.sip_server_header);
    EXPECT_EQ(back.db_file, set.db_file);
    EXPECT_TRUE(same(back, set));
}

// ---- errors name where the value came from -----------------------------------------------

TEST(ConfigErrors, NameTheVariableTheFlagOrTheFileKey) {
    auto e = err(run({}, {{"SENTRYPEER_PEER_TO_PEER", "maybe"}}));
    EXPECT_EQ(e.code, 2);
    EXPECT_EQ(e.message.rfind("sentrypeer: SENTRYPEER_PEER_TO_PEER: 'maybe' is not a boolean", 0),
              0u)
        << e.message;
    e = err(run({"--peer-to-peer=maybe"}));
    EXPECT_EQ(e.message.rfind("sentrypeer: --peer-to-peer: 'maybe'", 0), 0u) << e.message;
    auto file = tempFile("err.toml", "# comment\n\npeer_to_peer = \"maybe\"\n");
    e = err(run({"-g", file}));
    EXPECT_EQ(e.message, "sentrypeer: " + file +
                             ":3: peer_to_peer: 'maybe' is not a boolean (use 1/true/yes/on or "
                             "0/false/no/off)");
    // The environment beats the file, so its variable is the one named.
    e = err(run({"-g", file}, {{"SENTRYPEER_PEER_TO_PEER", "nope"}}));
    EXPECT_NE(e.message.find("SENTRYPEER_PEER_TO_PEER: 'nope'"), std::string::npos) << e.message;
    e = err(run({}, {{"SENTRYPEER_DHT_NETWORK", "-1"}}));
    EXPECT_EQ(e.message.rfind("sentrypeer: SENTRYPEER_DHT_NETWORK: '-1'", 0), 0u) << e.message;
}

TEST(ConfigErrors, ConfigFileKeysAndSyntax) {
    for (auto [content, expected] : std::vector<std::pair<std::string, std::string>>{
             {"p2p = false\n", ":1: 'p2p' is a command-line option only"},
             {"no_p2p = true\n", ":1: 'no_p2p' is a command-line option only"},
             {"check_config = true\n", ":1: 'check_config' is a command-line option only"},
             {"x = 1\np3p = false\n", ":1: unknown key 'x'"},
             {"r = true\n", ":1: unknown key 'r'"},
             {"[sip]\nresponsive = true\n", ":1: tables"},
             {"db_file = \"a\"\ndb-file = \"b\"\n", ":2: 'db-file' is given twice"},
             {"db_file = a.db\n", ":1: db_file: 'a.db' is not a value"},
             {"db_file = \"a.db\n", ":1: db_file: unterminated string"},
             {"db_file = \"a\" extra\n", ":1: db_file: unexpected text"},
             {"sip_listen = [\"127.0.0.1:5060\",\n", ":2: sip_listen: unterminated array"},
             {"sip_listen = []\n", ":1: sip_listen: empty array"},
             {"this is not toml\n", ":1: expected 'key = value'"}}) {
        auto file = tempFile("keys.toml", content);
        auto e = err(run({"-g", file}));
        EXPECT_EQ(e.code, 2) << content;
        EXPECT_EQ(e.message.rfind("sentrypeer: " + file + expected, 0), 0u)
            << content << " -> " << e.message;
        EXPECT_EQ(e.message.find('\n'), std::string::npos) << e.message;
    }
}

TEST(ConfigErrors, TomlValuesAndSentryPeerKeys) {
    auto file = tempFile("values.toml", "# SentryPeer's keys and TOML forms\n"
                                        "tls_listen_address = '127.0.0.1:6061' # literal\n"
                                        "sip_listen = [\n  \"127.0.0.1:5070\", # one\n"
                                        "  \"[::1]:5070\",\n]\n"
                                        "dht_network = 4_294_967_295\r\n"
                                        "sip_server_header = \"A\\u00e9\\tB\"\n"
                                        "peer_to_peer = false\n");
    auto c = ok(run({"-g", file}));
    EXPECT_EQ(c.tls_listen->str(), "127.0.0.1:6061");
    ASSERT_EQ(c.sip_listen.size(), 2u);
    EXPECT_EQ(c.sip_listen[1].str(), "[::1]:5070");
    EXPECT_EQ(c.dht_network, 4294967295u);
    EXPECT_EQ(c.sip_server_header, "A\xc3\xa9\tB");
    EXPECT_FALSE(c.p2p);
}

TEST(ConfigErrors, RangesAndPorts) {
    for (auto args : std::vector<std::vector<std::string>>{
             {"--dht-network", "-1"},
             {"--dht-network", "4294967296"},
             {"--dht-network", "18446744073709551616"},
             {"--dht-port", "0"},
             {"--dht-port", "65536"},
             {"--bootstrap", "192.0.2.1:99999"},
             {"--bootstrap", "192.0.2.1:0"},
             {"--bootstrap", "host.example:"},
             {"--bootstrap", "[2001:db8::1]:70000"},
             {"--bootstrap", "2001:db8::1:99999x"},
             {"--api-listen", "127.0.0.1:65536"},
             {"--tls-listen", "127.0.0.1:0"},
             {"--webhook-url", "http://192.0.2.1:99999/x"},
             {"--oauth2-token-url", "https://[2001:db8::1]:0/token"}}) {
        auto e = err(run(args));
        EXPECT_EQ(e.code, 2) << args[0] << " " << args[1];
        EXPECT_EQ(e.message.rfind("sentrypeer: " + args[0] + ": ", 0), 0u) << e.message;
        EXPECT_EQ(e.message.find('\n'), std::string::npos) << e.message;
    }
    EXPECT_EQ(ok(run({"--dht-network", "4294967295"})).dht_network, 4294967295u);
    for (const char* b : {"bootstrap.example.org", "bootstrap.example.org:4222", "192.0.2.1:1",
                          "[2001:db8::1]:65535", "2001:db8::1"}) {
        EXPECT_EQ(ok(run({"-b", b})).bootstrap.front(), b);
    }
}

TEST(ConfigP2p, ShareOptionsDefaultsAndValidation) {
    Config c = ok(run({}));
    EXPECT_EQ(c.p2p_credit, "L1");
    EXPECT_EQ(c.p2p_epoch, std::chrono::seconds(3600));
    EXPECT_EQ(c.p2p_bucket, std::chrono::seconds(600));
    EXPECT_EQ(c.p2p_flush, std::chrono::seconds(120));
    EXPECT_EQ(c.p2p_max_bandwidth, 256ULL * 1024 * 1024);
    EXPECT_FALSE(c.p2p_sentrypeer_compat);
    c = ok(run({"--p2p-epoch", "60s", "--p2p-bucket", "10s", "--p2p-flush", "1s", "--p2p-credit",
                "L0", "--p2p-trust", "0123456789ABCDEF0123456789abcdef01234567",
                "--p2p-sentrypeer-compat"}));
    EXPECT_EQ(c.p2p_epoch, std::chrono::seconds(60));
    EXPECT_EQ(c.p2p_credit, "L0");
    EXPECT_EQ(c.p2p_trust,
              std::vector<std::string>{"0123456789abcdef0123456789abcdef01234567"}); // lowered
    EXPECT_TRUE(c.p2p_sentrypeer_compat);
    for (const auto& [args, expected] :
         std::vector<std::pair<std::vector<std::string>, std::string>>{
             {{"--p2p-epoch", "70s", "--p2p-bucket", "20s", "--p2p-flush", "1s"},
              "sentrypeer: --p2p-epoch: 70s is not a multiple of --p2p-bucket 20s"},
             {{"--p2p-flush", "10m"},
              "sentrypeer: --p2p-flush: 10m must be less than "
              "--p2p-bucket 10m"},
             {{"--p2p-bucket", "0"}, "sentrypeer: --p2p-bucket: must be more than 0"},
             {{"--p2p-credit", "L3"}, "sentrypeer: --p2p-credit: 'L3' is not a credit level"},
             {{"--p2p-trust", "abc"}, "sentrypeer: --p2p-trust: 'abc' is not an identity"},
             {{"--p2p-deny", "0123456789abcdef0123456789abcdef0123456z"},
              "sentrypeer: --p2p-deny: '0123456789abcdef0123456789abcdef0123456z' is not an"},
         }) {
        auto e = err(run(args));
        EXPECT_EQ(e.code, 2);
        EXPECT_EQ(e.message.rfind(expected, 0), 0u) << e.message;
        EXPECT_EQ(e.message.find('\n'), std::string::npos) << e.message;
    }
}
