#pragma once
// The daemon's configuration: one option table (config.cpp) feeds the command line, the
// SENTRYPEER_* environment, the TOML config file (-g), --help and --check-config.
// Precedence: built-in default < config file < environment < command line.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace sp::config {

// "ADDR:PORT" with IPv6 in brackets ("[::1]:5060"). Validated: a numeric address.
struct HostPort {
    std::string host;
    std::uint16_t port = 0;
    std::string str() const;
};

// Parses "ADDR:PORT" / "[V6]:PORT". nullopt when malformed (host must be a numeric IP).
std::optional<HostPort> parseHostPort(const std::string& s);

struct Config {
    // Storage
    std::string db_file = "sentrypeer.db";
    std::string data_dir; // empty: the database's directory
    std::chrono::seconds max_age{7 * 24 * 3600};

    // Outputs
    bool json_log = false;
    std::string json_log_file = "sentrypeer_json.log";
    bool syslog = false;
    std::string syslog_socket = "/dev/log";
    std::string webhook_url; // empty: no webhook
    std::string oauth2_client_id;
    std::string oauth2_client_secret; // never printed (--check-config shows "<set>")
    std::string oauth2_token_url = "https://dev-vtqcrudk2kakzqos.uk.auth0.com/oauth/token";
    std::string oauth2_audience = "https://sentrypeer.com/api";

    // SIP
    bool sip_responsive = false;
    bool sip_disable = false;
    std::vector<HostPort> sip_listen;   // UDP + TCP
    std::optional<HostPort> tls_listen; // unset with --no-tls
    std::string cert;
    std::string key;
    int sip_agent = 200; // 200 or 404 (INVITE answer)
    std::string sip_redirect;
    std::string sip_server_header;
    std::size_t tcp_max_connections = 10000;
    std::size_t tcp_max_per_ip = 100;
    std::chrono::seconds tcp_idle_timeout{30};

    // REST API
    bool api = false;
    HostPort api_listen{"127.0.0.1", 8082};
    std::string api_token;
    unsigned api_threads = 1; // API worker threads: 1 measured best on 2 cores (docs/API.md)
    std::size_t api_max_connections = 1024; // ~20 KiB each at most: ~20 MiB on a 1 GiB VM
    std::size_t api_max_per_ip = 64;        // one client cannot take the whole budget
    std::size_t api_max_lists = 4;          // full lists/exports at once: each snapshots the index
    std::string api_cors_origin;            // empty: no Access-Control-Allow-Origin header

    // Peer to peer (OpenDHT): on unless opted out
    bool p2p = true;
    std::vector<std::string> bootstrap; // host[:port]
    std::uint16_t dht_port = 4222;
    std::uint64_t dht_network = 0;
    bool dht_no_rate_limit = false;

    // Operations
    bool verbose = false;
    bool debug = false;
    unsigned threads = 0; // 0: one per core
    bool check_config = false;
    std::string config_file;

    // Effective data directory (data_dir, else the database's directory).
    std::string dataDir() const;
};

// What parse() decided.
struct Exit {
    int code;            // 0 after --help/--version, 2 for a usage error
    std::string message; // printed by main: to stdout when code is 0, else to stderr
};

// Parses argv + environment + config file into a Config, or the Exit to take (help,
// version, or one line naming the bad option and value). Reads the process environment.
std::variant<Config, Exit> parse(int argc, const char* const* argv);

// The effective configuration as TOML (for --check-config), every option with its value.
std::string describe(const Config& c);

} // namespace sp::config
