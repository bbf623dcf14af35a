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
    bool operator==(const HostPort&) const = default;
};

// Parses "ADDR:PORT" / "[V6]:PORT". nullopt when malformed (host must be a numeric IP).
std::optional<HostPort> parseHostPort(const std::string& s);

struct Config {
    // Storage
    std::string db_file = "sentrypeer.db";
    std::string data_dir; // empty: the database's directory
    std::chrono::seconds max_age{7 * 24 * 3600};
    // Size budgets (oldest rows go first, database and index together). 2 M rows is about
    // 2 GB of database; 128 MiB of index holds about 450,000 distinct IPs + numbers.
    std::uint64_t max_rows = 2000000;       // 0: no limit
    std::size_t max_index_memory_mib = 128; // 0: no limit

    // Outputs
    bool json_log = false;
    std::string json_log_file = "sentrypeer_json.log";
    bool syslog = false;
    std::string syslog_socket = "/dev/log";
    std::string webhook_url; // empty: no webhook
    std::string oauth2_client_id;
    std::string oauth2_client_secret; // secret: --check-config never prints it
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
    // Responsive mode, UDP: replies per second per destination IP (burst: one second's
    // worth); 10 answers any real scanner yet caps a spoofed-source reflection; 0 = unlimited.
    std::size_t sip_reply_rate = 100;
    std::size_t tcp_max_connections = 10000;
    std::size_t tcp_max_per_ip = 100;
    std::chrono::seconds tcp_idle_timeout{30};

    // REST API
    bool api = false;
    HostPort api_listen{"127.0.0.1", 8082};
    std::string api_token;    // secret: --check-config never prints it
    unsigned api_threads = 1; // API worker threads: 1 measured best on 2 cores (docs/API.md)
    std::size_t api_max_connections = 1024; // ~20 KiB each at most: ~20 MiB on a 1 GiB VM
    std::size_t api_max_per_ip = 64;        // one client cannot take the whole budget
    std::size_t api_max_lists = 4;          // full lists/exports at once: each snapshots the index
    std::string api_cors_origin;            // empty: no Access-Control-Allow-Origin header
    // Keys of the feeds for blocking tools (CrowdSec bouncers' X-Api-Key, APIBAN's {KEY}):
    // none by default, and without one those routes answer 403 (secret: never printed).
    std::vector<std::string> bouncer_keys;
    std::string bouncer_key_file; // one key per line, # comments; empty: none

    // Peer to peer (OpenDHT): on unless opted out
    bool p2p = true;
    std::vector<std::string> bootstrap; // host[:port]
    std::uint16_t dht_port = 4222;
    std::uint64_t dht_network = 0;
    bool dht_no_rate_limit = false;
    double p2p_max_peer_rate = 1000; // peer events accepted per second, all publishers together
    // Share to receive (RCP1, src/share): what earns a publisher this node's key. L1 on every
    // network by default: a private network id is no secret, and L0 would let anyone who
    // learns it earn keys with made-up records (README: when to choose L0).
    std::string p2p_credit = "L1";        // L0 | L1 | L2
    std::chrono::seconds p2p_epoch{3600}; // publisher key period; a multiple of p2p_bucket
    std::chrono::seconds p2p_bucket{600}; // batch key period
    std::chrono::seconds p2p_flush{120};  // batch flush interval; less than p2p_bucket
    std::vector<std::string> p2p_trust;   // trust anchors (pkId, 40 hex digits)
    std::vector<std::string> p2p_deny;    // never granted, their values rejected
    // Bytes put + received by the share protocol per clock hour; beyond it values are dropped
    // (counted). 256 MiB/h: above the design's 208 MB/h for a 1,000-node full mesh, at most
    // about 6 GiB a day. 0: no cap.
    std::uint64_t p2p_max_bandwidth = 256ULL * 1024 * 1024;
    // Also put every local event as plaintext SentryPeer JSON under bad_actors (what
    // SentryPeer reads): anyone on the DHT, free riders included, reads those.
    bool p2p_sentrypeer_compat = false;

    // Blocking policy (block::Policy, shared by every blocking output)
    unsigned peer_min_reporters = 2;        // distinct reporters before peer events count; 0: never
    std::uint64_t block_after = 1;          // counted events before an address is blocked
    std::vector<std::string> allow;         // never-block CIDRs (or single addresses)
    std::string allow_file;                 // one CIDR per line, reloaded on SIGHUP; empty: none
    std::chrono::seconds block_time{0};     // a block lasts this long after the last event; 0: the
                                            // rest of the data window (--max-age)
    std::vector<std::string> allow_numbers; // called numbers the check routes never report as
                                            // blocked (emergency numbers); any spelling

    // nftables blocker (src/nft, docs/BLOCKING.md): needs CAP_NET_ADMIN
    bool nft = false;
    std::string nft_table = "sentrypeer"; // table inet <name>
    bool nft_set_only = false;            // sets only, no drop chain
    bool nft_keep = false;                // leave the table in place on exit

    // Operations
    bool verbose = false;
    bool debug = false;
    unsigned threads = 0; // 0: one per core
    bool check_config = false;
    std::string config_file;

    // Effective data directory (data_dir, else the database's directory).
    std::string dataDir() const;

    // Member-wise (the config round-trip test compares a parsed, described and re-parsed
    // Config with the original). A member type without == makes this deleted: add one.
    bool operator==(const Config&) const = default;
};

// What parse() decided.
struct Exit {
    int code;            // 0 after --help/--version, 2 for a usage error
    std::string message; // printed by main: to stdout when code is 0, else to stderr
};

// Parses argv + environment + config file into a Config, or the Exit to take (help,
// version, or one line naming the bad option and value). Reads the process environment.
std::variant<Config, Exit> parse(int argc, const char* const* argv);

// The effective configuration as TOML (for --check-config), generated from the option table:
// every option that the config file accepts appears, in table order, as `key = value` that
// -g reads back to the same Config. Exceptions, as comment lines: secrets (options marked
// secret in the table) are never printed, only whether they are set and which SENTRYPEER_*
// variable to give them in; an empty value that is also the default is shown as not set.
std::string describe(const Config& c);

// One row of the option table, for tests and tools (not used by the daemon).
struct OptionInfo {
    std::string flag;  // "--db-file"
    std::string key;   // config file key as describe() prints it: "db_file"
    std::string env;   // "SENTRYPEER_DB_FILE", or empty
    bool is_flag;      // a boolean flag (no value on the command line)
    bool secret;       // never printed by describe()
    bool configurable; // accepted in the config file (and printed by describe())
};
std::vector<OptionInfo> optionTable();

} // namespace sp::config
