#include "config/config.hpp"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <arpa/inet.h>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <type_traits>

#include "block/policy.hpp"
#include "config/checks.hpp"
#include "config/toml.hpp"
#include "config/toml_values.hpp"
#include "core/text.hpp"
#include "core/version.hpp"

namespace sp::config {

std::string HostPort::str() const {
    return host.find(':') != std::string::npos ? "[" + host + "]:" + std::to_string(port)
                                               : host + ":" + std::to_string(port);
}

std::optional<HostPort> parseHostPort(const std::string& s) {
    std::string host;
    std::string port;
    if (!s.empty() && s.front() == '[') {
        auto close = s.find(']');
        if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':') {
            return std::nullopt;
        }
        host = s.substr(1, close - 1);
        port = s.substr(close + 2);
    } else {
        auto colon = s.rfind(':');
        if (colon == std::string::npos || s.find(':') != colon) {
            return std::nullopt;
        }
        host = s.substr(0, colon);
        port = s.substr(colon + 1);
    }
    unsigned char buf[16];
    bool v6 = host.find(':') != std::string::npos;
    if (inet_pton(v6 ? AF_INET6 : AF_INET, host.c_str(), buf) != 1) {
        return std::nullopt;
    }
    if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit)) {
        return std::nullopt;
    }
    int p = std::stoi(port);
    if (p < 1 || p > 65535) {
        return std::nullopt;
    }
    return HostPort{host, static_cast<std::uint16_t>(p)};
}

std::string Config::dataDir() const {
    if (!data_dir.empty()) {
        return data_dir;
    }
    auto parent = std::filesystem::path(db_file).parent_path();
    return parent.empty() ? "." : parent.string();
}

namespace {

// parse() runs at startup, before any other thread exists: getenv is safe there. CLI11
// ignores a variable that is set but empty, and so do we.
std::optional<std::string> envValue(const std::string& name) {
    const char* v = std::getenv(name.c_str()); // NOLINT(concurrency-mt-unsafe)
    if (v == nullptr || *v == '\0') {
        return std::nullopt;
    }
    return std::string(v);
}

// ---- the option table ----------------------------------------------------------------------

// --help shows kHiddenGroup options nowhere. (CLI11 hides an option by an empty group, which
// also empties its name in error messages, so the group is emptied only while the help text
// is made.)
const char* const kHiddenGroup = "Hidden";

// The CLI11 app plus what the table says about each option beyond CLI11: how describe()
// prints its effective value, and whether it is a secret.
class Table : public CLI::App {
public:
    using CLI::App::App;

    // describe() prints `reader()` (a TOML value) as this option's effective value.
    CLI::Option* shows(CLI::Option* o, std::function<std::string()> reader) {
        readers_[o] = std::move(reader);
        return o;
    }
    // describe() never prints this option's value, only whether it is set.
    CLI::Option* secret(CLI::Option* o) {
        secrets_.insert(o);
        return o;
    }
    CLI::Option* hidden(CLI::Option* o) { return o->group(kHiddenGroup); }

    bool isSecret(const CLI::Option* o) const { return secrets_.count(o) > 0; }

    // The option's effective value as TOML. An option added without addOption/addFlag
    // falls back to CLI11's string of the bound variable, quoted.
    std::string value(CLI::Option* o) const {
        if (auto it = readers_.find(o); it != readers_.end()) {
            return it->second();
        }
        o->capture_default_str();
        return tomlString(o->get_default_str());
    }

    std::string helpText(bool all) {
        std::vector<CLI::Option*> hidden_now;
        for (CLI::Option* o : get_options()) {
            if (o->get_group() == kHiddenGroup) {
                o->group("");
                hidden_now.push_back(o);
            }
        }
        std::string text = all ? help("", CLI::AppFormatMode::All) : help();
        for (CLI::Option* o : hidden_now) {
            o->group(kHiddenGroup);
        }
        return text;
    }

private:
    std::map<const CLI::Option*, std::function<std::string()>> readers_;
    std::set<const CLI::Option*> secrets_;
};

// The config file key describe() prints: the first long name with '_' for '-'.
std::string keyOf(const CLI::Option* o) {
    const auto& l = o->get_lnames();
    std::string k = l.empty() ? o->get_name() : l.front();
    std::replace(k.begin(), k.end(), '-', '_');
    return k;
}

std::string normaliseKey(std::string k) {
    std::replace(k.begin(), k.end(), '_', '-');
    if (k == "tls-listen-address") { // SentryPeer's key
        k = "tls-listen";
    }
    return k;
}

// The config file: TOML, keys are long option names with '-' or '_' (SentryPeer's file
// uses cert, key and tls_listen_address). CLI11 lets the file override the environment;
// we want file < environment, so keys whose variable is set are dropped here. Unknown keys,
// command-line-only options and TOML errors throw TomlError (line, message).
class TomlConfig : public CLI::ConfigTOML {
public:
    explicit TomlConfig(const CLI::App& app) {
        for (const CLI::Option* o : app.get_options()) {
            for (const auto& name : o->get_lnames()) {
                options_[name] = o;
            }
        }
    }

    std::vector<CLI::ConfigItem> from_config(std::istream& input) const override {
        TomlReader reader(input);
        std::vector<CLI::ConfigItem> kept;
        for (auto& item : reader.items()) {
            std::string name = normaliseKey(item.key);
            auto it = options_.find(name);
            if (it == options_.end()) {
                throw TomlError(item.line, "unknown key '" + item.key + "'");
            }
            const CLI::Option* o = it->second;
            if (!o->get_configurable()) {
                std::string hint = name == "p2p" || name == "no-p2p"
                                       ? " (in a config file: peer_to_peer = true or false)"
                                       : "";
                throw TomlError(item.line,
                                "'" + item.key + "' is a command-line option only" + hint);
            }
            if (auto [at, fresh] = keys_.emplace(name, Key{item.key, item.line}); !fresh) {
                throw TomlError(item.line, "'" + item.key + "' is given twice (first on line " +
                                               std::to_string(at->second.line) + ")");
            }
            if (item.array && item.values.empty()) {
                throw TomlError(item.line, item.key + ": empty array (leave the key out)");
            }
            if (!o->get_envname().empty() && envValue(o->get_envname())) {
                continue; // the environment beats the file
            }
            CLI::ConfigItem ci;
            ci.name = name;
            ci.inputs = std::move(item.values);
            kept.push_back(std::move(ci));
        }
        return kept;
    }

    // "LINE: KEY" as the file spelt it, when the file set this option.
    std::optional<std::string> where(const CLI::Option* o) const {
        for (const auto& name : o->get_lnames()) {
            if (auto it = keys_.find(name); it != keys_.end()) {
                return std::to_string(it->second.line) + ": " + it->second.written;
            }
        }
        return std::nullopt;
    }

private:
    struct Key {
        std::string written;
        int line = 0;
    };
    std::map<std::string, const CLI::Option*> options_;
    mutable std::map<std::string, Key> keys_;
};

// Values the table binds to before parse() turns them into Config members. An option bound
// here needs app.shows(...) so that describe() prints the effective Config value.
struct Raw {
    std::vector<std::string> sip_listen;
    std::string api_listen = "127.0.0.1:8082";
    bool p2p_flag = false;
    bool no_p2p = false;
    std::string tls_listen = "0.0.0.0:5061";
    bool no_tls = false;
    std::string max_age = "7d";
    std::string tcp_idle_timeout = "30s";
    std::string block_time = "0";
    std::string p2p_epoch = "1h";
    std::string p2p_bucket = "10m";
    std::string p2p_flush = "120s";
};

CLI::Option* addFlag(Table& app, const std::string& names, bool& target, const std::string& env,
                     const std::string& help) {
    auto* o = app.add_flag(names, target, help)->transform(normaliseBool);
    if (!env.empty()) {
        o->envname(env);
    }
    return app.shows(o, [&target] { return tomlValue(target); });
}

template <typename T>
CLI::Option* addOption(Table& app, const std::string& names, T& target, const std::string& env,
                       const std::string& help) {
    auto* o = app.add_option(names, target, help)->capture_default_str();
    if (!env.empty()) {
        o->envname(env);
    }
    return app.shows(o, [&target] { return tomlValue(target); });
}

// The option table: the one list that feeds the command line, the environment, the config
// file, --help and describe() (--check-config). Every option has a long name (the config
// file key); SentryPeer's short flags and SENTRYPEER_* variables are kept. Add an option with
// addOption/addFlag bound to a Config member and describe() prints it with no further
// work. Mark secrets with app.secret(o) (describe() then never prints the value); an option
// bound to a Raw field needs app.shows(o, reader of the effective Config value);
// command-line-only options are ->configurable(false) (describe() skips them, the file
// rejects them).
void buildOptions(Table& app, Config& c, Raw& raw) {
    app.option_defaults()->group("Options");
    // Storage
    addOption(app, "-f,--db-file", c.db_file, "SENTRYPEER_DB_FILE", "SQLite database file");
    addOption(app, "--data-dir", c.data_dir, "SENTRYPEER_DATA_DIR",
              "Directory for the node id and the generated TLS certificate "
              "(default: the database's directory)");
    addOption(app, "--max-age", raw.max_age, "SENTRYPEER_MAX_AGE",
              "Keep events this long, e.g. 12h, 7d; 0 keeps everything")
        ->check(checkDuration);
    app.shows(app.get_option("--max-age"), [&c] { return tomlValue(c.max_age); });
    addOption(app, "--max-rows", c.max_rows, "SENTRYPEER_MAX_ROWS",
              "Keep at most this many events; the oldest go first; 0: no limit");
    addOption(app, "--max-index-memory", c.max_index_memory_mib, "SENTRYPEER_MAX_INDEX_MEMORY",
              "Memory budget of the in-memory index in MiB; the oldest events go first when it "
              "is exceeded; 0: no limit");
    // Outputs
    addFlag(app, "-j,--json-log", c.json_log, "SENTRYPEER_JSON_LOG",
            "Write one JSON line per event to the JSON log file");
    addOption(app, "-l,--json-log-file", c.json_log_file, "SENTRYPEER_JSON_LOG_FILE",
              "JSON log file (implies --json-log); reopened on SIGHUP");
    addFlag(app, "-s,--syslog", c.syslog, "SENTRYPEER_SYSLOG",
            "Send one syslog line per event (for fail2ban)");
    addOption(app, "--syslog-socket", c.syslog_socket, "SENTRYPEER_SYSLOG_SOCKET",
              "Unix datagram socket of the syslog daemon");
    addOption(app, "-w,--webhook-url", c.webhook_url, "SENTRYPEER_WEBHOOK_URL",
              "POST each event as JSON to this http(s) URL")
        ->check(checkUrl);
    addOption(app, "-i,--oauth2-client-id", c.oauth2_client_id, "SENTRYPEER_OAUTH2_CLIENT_ID",
              "OAuth2 client id for the webhook (with --oauth2-client-secret)");
    app.secret(addOption(app, "-c,--oauth2-client-secret", c.oauth2_client_secret,
                         "SENTRYPEER_OAUTH2_CLIENT_SECRET",
                         "OAuth2 client secret for the webhook (secret: --check-config does "
                         "not print it)"));
    addOption(app, "--oauth2-token-url", c.oauth2_token_url, "SENTRYPEER_OAUTH2_TOKEN_URL",
              "OAuth2 token endpoint (client credentials grant)")
        ->check(checkUrl);
    addOption(app, "--oauth2-audience", c.oauth2_audience, "SENTRYPEER_OAUTH2_AUDIENCE",
              "OAuth2 audience of the webhook token");
    // SIP
    addFlag(app, "-r,--sip-responsive", c.sip_responsive, "SENTRYPEER_SIP_RESPONSIVE",
            "Answer SIP requests (default: passive, never send a byte)");
    addFlag(app, "-R,--sip-disable", c.sip_disable, "SENTRYPEER_SIP_DISABLE",
            "Run without any SIP listener");
    addOption(app, "--sip-reply-rate", c.sip_reply_rate, "SENTRYPEER_SIP_REPLY_RATE",
              "Responsive mode: UDP replies per second per destination IP, more are recorded "
              "but not answered (0 = unlimited)")
        ->check(CLI::Range(0, 1000000));
    addOption(app, "--sip-listen", raw.sip_listen, "SENTRYPEER_SIP_LISTEN",
              "UDP+TCP SIP listen address, repeatable (default 0.0.0.0:5060 and [::]:5060)")
        ->check(checkHostPort)
        ->delimiter(',');
    app.shows(app.get_option("--sip-listen"), [&c] { return tomlValue(c.sip_listen); });
    addOption(app, "-z,--tls-listen", raw.tls_listen, "SENTRYPEER_TLS_LISTEN_ADDRESS",
              "TLS SIP listen address")
        ->check(checkHostPort);
    app.shows(app.get_option("--tls-listen"), [&c, &raw] {
        return c.tls_listen ? tomlValue(*c.tls_listen) : tomlValue(raw.tls_listen);
    });
    addFlag(app, "--no-tls", raw.no_tls, "SENTRYPEER_NO_TLS", "Do not listen for SIP over TLS");
    app.shows(app.get_option("--no-tls"), [&c] { return tomlValue(!c.tls_listen); });
    addOption(app, "-t,--cert", c.cert, "SENTRYPEER_CERT",
              "TLS certificate (PEM); without --cert/--key a self-signed one for localhost is "
              "generated in the data directory")
        ->check(CLI::ExistingFile);
    addOption(app, "-k,--key", c.key, "SENTRYPEER_KEY", "TLS private key (PEM)")
        ->check(CLI::ExistingFile);
    addOption(app, "--sip-agent", c.sip_agent, "SENTRYPEER_SIP_AGENT",
              "Responsive answer to INVITE: 200 (OK, with SDP) or 404 (Not Found)")
        ->check(CLI::IsMember({200, 404}));
    addOption(app, "--sip-redirect", c.sip_redirect, "SENTRYPEER_SIP_REDIRECT",
              "Responsive: answer INVITE with 302 Moved Temporarily to this URI, e.g. "
              "sip:999@192.0.2.1");
    addOption(app, "--sip-server-header", c.sip_server_header, "SENTRYPEER_SIP_SERVER_HEADER",
              "Server header of responses (default: a common PBX's)");
    addOption(app, "--tcp-max-connections", c.tcp_max_connections, "SENTRYPEER_TCP_MAX_CONNECTIONS",
              "Open SIP TCP/TLS connections at most")
        ->check(CLI::Range(1, 1000000));
    addOption(app, "--tcp-max-per-ip", c.tcp_max_per_ip, "SENTRYPEER_TCP_MAX_PER_IP",
              "Open SIP TCP/TLS connections per source IP at most")
        ->check(CLI::Range(1, 1000000));
    addOption(app, "--tcp-idle-timeout", raw.tcp_idle_timeout, "SENTRYPEER_TCP_IDLE_TIMEOUT",
              "Close SIP TCP/TLS connections idle this long")
        ->check(checkDuration);
    app.shows(app.get_option("--tcp-idle-timeout"), [&c] { return tomlValue(c.tcp_idle_timeout); });
    // REST API
    addFlag(app, "-a,--api", c.api, "SENTRYPEER_API", "Serve the REST API");
    addOption(app, "--api-listen", raw.api_listen, "SENTRYPEER_API_LISTEN",
              "REST API listen address (loopback by default; 0.0.0.0:8082 opens it)")
        ->check(checkHostPort);
    app.shows(app.get_option("--api-listen"), [&c] { return tomlValue(c.api_listen); });
    app.secret(addOption(app, "--api-token", c.api_token, "SENTRYPEER_API_TOKEN",
                         "Require 'Authorization: Bearer <token>' on every route but "
                         "/health-check (secret: --check-config does not print it)"));
    addOption(app, "--api-threads", c.api_threads, "SENTRYPEER_API_THREADS",
              "REST API worker threads")
        ->check(CLI::Range(1, 64));
    addOption(app, "--api-max-connections", c.api_max_connections, "SENTRYPEER_API_MAX_CONNECTIONS",
              "Open REST API connections at most; more are closed at once")
        ->check(CLI::Range(1, 1000000));
    addOption(app, "--api-max-per-ip", c.api_max_per_ip, "SENTRYPEER_API_MAX_PER_IP",
              "Open REST API connections per client IP at most; more are closed at once")
        ->check(CLI::Range(1, 1000000));
    addOption(app, "--api-max-lists", c.api_max_lists, "SENTRYPEER_API_MAX_LISTS",
              "Full lists (no ?limit) and exports answered at once; more get 503 + Retry-After")
        ->check(CLI::Range(1, 1024));
    addOption(app, "--api-cors-origin", c.api_cors_origin, "SENTRYPEER_API_CORS_ORIGIN",
              "Send 'Access-Control-Allow-Origin: ORIGIN' (default: no CORS header, so no web "
              "page can read the API)")
        ->check(
            [](const std::string& v) {
                bool ok =
                    !v.empty() && v.size() <= 256 && std::none_of(v.begin(), v.end(), [](char ch) {
                        return static_cast<unsigned char>(ch) < 0x21 || ch == 0x7f;
                    });
                // The value is not echoed: it may hold line breaks.
                return ok ? std::string()
                          : std::string("not an origin (one token without spaces or control "
                                        "characters, e.g. https://dash.example)");
            },
            "ORIGIN");
    // Peer to peer
    // -p and --no-p2p are the command line's spellings; the file and the environment use
    // peer_to_peer / SENTRYPEER_PEER_TO_PEER.
    addFlag(app, "-p,--p2p", raw.p2p_flag, "",
            "Peer-to-peer sharing (on by default; kept for SentryPeer's command line)")
        ->configurable(false);
    addFlag(app, "--no-p2p", raw.no_p2p, "",
            "Opt out of peer-to-peer sharing: send and receive nothing")
        ->configurable(false);
    app.hidden(addFlag(app, "--peer-to-peer", c.p2p, "SENTRYPEER_PEER_TO_PEER",
                       "Peer-to-peer sharing on or off (SENTRYPEER_PEER_TO_PEER=0 opts out)"));
    addOption(app, "-b,--bootstrap", c.bootstrap, "SENTRYPEER_BOOTSTRAP_NODE",
              "DHT bootstrap node HOST[:PORT], repeatable (default bootstrap.sentrypeer.org:4222)")
        ->check(checkBootstrap)
        ->delimiter(',');
    addOption(app, "--dht-port", c.dht_port, "SENTRYPEER_DHT_PORT", "DHT UDP port (IPv4 and IPv6)")
        ->check(CLI::Range(1, 65535));
    addOption(app, "--dht-network", c.dht_network, "SENTRYPEER_DHT_NETWORK",
              "DHT network id (0 to 4294967295): 0 is the public SentryPeer network; another "
              "number makes a private community")
        ->check(unsignedUpTo(0xFFFFFFFFULL, "a DHT network id"));
    addFlag(app, "--dht-no-rate-limit", c.dht_no_rate_limit, "SENTRYPEER_DHT_NO_RATE_LIMIT",
            "Lift OpenDHT's per-IP rate limit (private networks, tests on loopback)");
    addOption(app, "--p2p-max-peer-rate", c.p2p_max_peer_rate, "SENTRYPEER_P2P_MAX_PEER_RATE",
              "Peer events accepted per second from all publishers together (burst: 10 s "
              "worth); the rest are counted and dropped")
        ->check(CLI::Range(1.0, 1000000.0));
    addOption(app, "--p2p-credit", c.p2p_credit, "SENTRYPEER_P2P_CREDIT",
              "What earns a peer this node's events (share to receive): L0 any valid record, "
              "L1 records this node confirms and got first, L2 L1 plus proof of work and an "
              "identity one epoch old")
        ->check(checkCredit);
    addOption(app, "--p2p-epoch", raw.p2p_epoch, "SENTRYPEER_P2P_EPOCH",
              "Share protocol: period of a publisher key (a multiple of --p2p-bucket)")
        ->check(checkDuration);
    app.shows(app.get_option("--p2p-epoch"), [&c] { return tomlValue(c.p2p_epoch); });
    addOption(app, "--p2p-bucket", raw.p2p_bucket, "SENTRYPEER_P2P_BUCKET",
              "Share protocol: period of the DHT keys batches are put under")
        ->check(checkDuration);
    app.shows(app.get_option("--p2p-bucket"), [&c] { return tomlValue(c.p2p_bucket); });
    addOption(app, "--p2p-flush", raw.p2p_flush, "SENTRYPEER_P2P_FLUSH",
              "Share protocol: events are put in one batch at most this often (less than "
              "--p2p-bucket)")
        ->check(checkDuration);
    app.shows(app.get_option("--p2p-flush"), [&c] { return tomlValue(c.p2p_flush); });
    addOption(app, "--p2p-trust", c.p2p_trust, "SENTRYPEER_P2P_TRUST",
              "Trust anchor identity (40 hex digits, from its /p2p/status), repeatable: granted "
              "to first, its records confirm others'; environment: comma-separated")
        ->check(checkPkId)
        ->delimiter(',');
    addOption(app, "--p2p-deny", c.p2p_deny, "SENTRYPEER_P2P_DENY",
              "Identity never granted this node's events, its values rejected, repeatable; "
              "environment: comma-separated")
        ->check(checkPkId)
        ->delimiter(',');
    addOption(app, "--p2p-max-bandwidth", c.p2p_max_bandwidth, "SENTRYPEER_P2P_MAX_BANDWIDTH",
              "Share protocol: bytes put and received per hour at most (default 256 MiB); "
              "more are dropped and counted; 0: no cap")
        ->check(unsignedUpTo(1ULL << 50, "a number of bytes"));
    addFlag(app, "--p2p-sentrypeer-compat", c.p2p_sentrypeer_compat,
            "SENTRYPEER_P2P_SENTRYPEER_COMPAT",
            "Also put every event as plaintext SentryPeer JSON (what SentryPeer nodes read): "
            "anyone on the DHT reads it, free riders included");
    // Blocking policy
    addOption(app, "--peer-min-reporters", c.peer_min_reporters, "SENTRYPEER_PEER_MIN_REPORTERS",
              "Blocking outputs count peer events for an address only once this many distinct "
              "peers reported it; 0: peer data alone never blocks")
        ->check(CLI::Range(0, 1000000));
    addOption(app, "--block-after", c.block_after, "SENTRYPEER_BLOCK_AFTER",
              "Events an address needs before blocking outputs list it")
        ->check(CLI::Range(1, 1000000000));
    addOption(app, "--allow", c.allow, "SENTRYPEER_ALLOW",
              "Never block this CIDR or address (your trunks, resolvers), repeatable; "
              "environment: comma-separated")
        ->check(checkCidr)
        ->delimiter(',');
    addOption(app, "--allow-file", c.allow_file, "SENTRYPEER_ALLOW_FILE",
              "Never block the CIDRs in this file (one per line, # comments); re-read on SIGHUP");
    addOption(app, "--block-time", raw.block_time, "SENTRYPEER_BLOCK_TIME",
              "How long blocking outputs block an address after its last event, e.g. 1h; "
              "0: for the rest of the data window (--max-age)")
        ->check(checkDuration);
    app.shows(app.get_option("--block-time"), [&c] { return tomlValue(c.block_time); });
    addOption(app, "--allow-number", c.allow_numbers, "SENTRYPEER_ALLOW_NUMBER",
              "Never report this called number as blocked in the check routes (e.g. 112, "
              "911, 999), repeatable; any spelling (+44.., 0044.., 44..); environment: "
              "comma-separated")
        ->check(checkPhoneNumber)
        ->delimiter(',');
    app.secret(addOption(app, "--bouncer-key", c.bouncer_keys, "SENTRYPEER_BOUNCER_KEY",
                         "A key that CrowdSec bouncers (X-Api-Key) and APIBAN clients ({KEY}) "
                         "must present, repeatable; environment: comma-separated (secret: "
                         "--check-config does not print it)"))
        ->check(checkApiKey)
        ->delimiter(',');
    addOption(app, "--bouncer-key-file", c.bouncer_key_file, "SENTRYPEER_BOUNCER_KEY_FILE",
              "File of bouncer keys, one per line (# comments)");
    // nftables blocker
    addFlag(app, "--nft", c.nft, "SENTRYPEER_NFT",
            "Block what the blocking policy blocks with nftables: table inet --nft-table, sets "
            "ipv4_addr/ipv6_addr and a drop chain (needs CAP_NET_ADMIN)");
    addOption(app, "--nft-table", c.nft_table, "SENTRYPEER_NFT_TABLE",
              "Name of the nftables table (inet family) that --nft creates")
        ->check(checkNftTable);
    addFlag(app, "--nft-set-only", c.nft_set_only, "SENTRYPEER_NFT_SET_ONLY",
            "With --nft, create only the sets (no drop chain), for your own ruleset to use");
    addFlag(app, "--nft-keep", c.nft_keep, "SENTRYPEER_NFT_KEEP",
            "With --nft, leave the table in place on exit (the next start replaces it "
            "atomically)");
    // Operations
    addFlag(app, "-v,--verbose", c.verbose, "SENTRYPEER_VERBOSE", "Verbose logging");
    addFlag(app, "-d,--debug", c.debug, "SENTRYPEER_DEBUG", "Debug logging");
    addOption(app, "--threads", c.threads, "SENTRYPEER_THREADS",
              "Network threads (0: one per core)")
        ->check(CLI::Range(0, 256));
    app.add_flag("--check-config", c.check_config,
                 "Validate the configuration, print it as TOML and exit")
        ->configurable(false);
}

// The app with the whole table bound to `c` and `raw`.
void buildApp(Table& app, Config& c, Raw& raw) {
    auto* config = app.set_config("-g,--config", "",
                                  "TOML configuration file (keys: long option names; env "
                                  "SENTRYPEER_CONFIG_FILE)");
    config->configurable(false);
    app.allow_config_extras(CLI::config_extras_mode::error);
    app.set_version_flag("-V,--version", std::string("sentrypeer ") + core::kVersion + " (git " +
                                             core::kGitRevision + ")");
    buildOptions(app, c, raw);
    for (CLI::Option* o : app.get_options()) {
        if (o == app.get_help_ptr() || o == app.get_help_all_ptr() || o->check_name("--version")) {
            o->configurable(false);
        }
    }
}

// The option a CLI11 error message is about: CLI11 starts it with the option's name
// ("--max-age: ...") or says "Could not convert: --threads = x". The longest name wins.
const CLI::Option* optionOfError(const CLI::App& app, const std::string& what, std::string& body) {
    const CLI::Option* best = nullptr;
    std::size_t best_len = 0;
    for (const CLI::Option* o : app.get_options()) {
        std::string name = o->get_name();
        if (name.empty() || name.size() <= best_len) {
            continue;
        }
        if (what.rfind(name + ": ", 0) == 0) {
            best = o;
            best_len = name.size();
            body = what.substr(name.size() + 2);
        } else if (auto at = what.find("Could not convert: " + name + " = ");
                   at != std::string::npos) {
            best = o;
            best_len = name.size();
            body = "'" + what.substr(at + 22 + name.size()) + "' is not a valid value";
        }
    }
    return best;
}

std::string oneLine(std::string s) {
    std::replace(s.begin(), s.end(), '\n', ' ');
    while (!s.empty() && s.back() == ' ') {
        s.pop_back();
    }
    return s;
}

} // namespace

std::variant<Config, Exit> parse(int argc, const char* const* argv) {
    Config c;
    Raw raw;
    Table app{"sentrypeer: a SIP honeypot that records VoIP fraud probes and shares them "
              "peer to peer",
              "sentrypeer"};
    buildApp(app, c, raw);
    auto toml = std::make_shared<TomlConfig>(app);
    app.config_formatter(toml);

    // CLI11 reads the config file before the environment, so SENTRYPEER_CONFIG_FILE is
    // handled here: it names the file unless -g/--config is on the command line.
    std::vector<std::string> args(argv + 1, argv + argc);
    auto env_config = envValue("SENTRYPEER_CONFIG_FILE");
    bool has_config_flag = std::any_of(args.begin(), args.end(), [](const std::string& a) {
        return a == "-g" || a == "--config" || a.rfind("--config=", 0) == 0 ||
               (a.size() > 2 && a.rfind("-g", 0) == 0);
    });
    if (env_config && !has_config_flag) {
        args.insert(args.begin(), {"--config", *env_config});
    }
    auto config_file_name = [&app] {
        std::string file = app.get_config_ptr()->as<std::string>();
        return file.empty() ? std::string("config file") : file;
    };
    // Where an option's value came from, as the start of an error line: the flag when it is
    // on the command line, else its SENTRYPEER_* variable when set, else FILE:LINE: KEY.
    auto origin = [&](const CLI::Option* o) {
        bool on_command_line = std::any_of(args.begin(), args.end(), [o](const std::string& a) {
            if (a.rfind("--", 0) == 0) {
                return o->check_name(a.substr(0, a.find('=')));
            }
            return a.size() >= 2 && a[0] == '-' && o->check_name(a.substr(0, 2));
        });
        if (on_command_line) {
            return o->get_name();
        }
        if (!o->get_envname().empty() && envValue(o->get_envname())) {
            return o->get_envname();
        }
        if (auto where = toml->where(o)) {
            return config_file_name() + ":" + *where;
        }
        return o->get_name();
    };
    auto fail = [&](const std::string& flag, const std::string& what) {
        return Exit{2, "sentrypeer: " + origin(app.get_option(flag)) + ": " + what};
    };

    std::reverse(args.begin(), args.end()); // CLI11 takes the arguments in reverse order
    try {
        app.parse(args);
    } catch (const CLI::CallForHelp&) {
        return Exit{0, app.helpText(false)};
    } catch (const CLI::CallForAllHelp&) {
        return Exit{0, app.helpText(true)};
    } catch (const CLI::CallForVersion& e) {
        return Exit{0, e.what()};
    } catch (const TomlError& e) {
        std::string line = e.line > 0 ? ":" + std::to_string(e.line) : "";
        return Exit{2, "sentrypeer: " + config_file_name() + line + ": " + oneLine(e.what())};
    } catch (const CLI::ConfigError& e) {
        return Exit{2, "sentrypeer: " + config_file_name() + ": " + oneLine(e.what())};
    } catch (const CLI::ParseError& e) {
        std::string what = oneLine(e.what());
        std::string body;
        if (const CLI::Option* o = optionOfError(app, what, body)) {
            return Exit{2, "sentrypeer: " + origin(o) + ": " + body};
        }
        return Exit{2, "sentrypeer: " + what};
    } catch (const std::exception& e) {
        return Exit{2, "sentrypeer: " + oneLine(e.what())};
    }

    // -l implies -j, unless -j (or its variable or key) is given explicitly.
    if (app.count("--json-log-file") > 0 && app.count("--json-log") == 0) {
        c.json_log = true;
    }
    c.max_age = *core::parseDuration(raw.max_age);
    c.tcp_idle_timeout = *core::parseDuration(raw.tcp_idle_timeout);
    c.block_time = *core::parseDuration(raw.block_time);
    if (c.tcp_idle_timeout.count() == 0) {
        return fail("--tcp-idle-timeout", "must be more than 0");
    }
    if (raw.sip_listen.empty()) {
        raw.sip_listen = {"0.0.0.0:5060", "[::]:5060"};
    }
    for (const auto& s : raw.sip_listen) {
        c.sip_listen.push_back(*parseHostPort(s));
    }
    c.api_listen = *parseHostPort(raw.api_listen);
    c.p2p_epoch = *core::parseDuration(raw.p2p_epoch);
    c.p2p_bucket = *core::parseDuration(raw.p2p_bucket);
    c.p2p_flush = *core::parseDuration(raw.p2p_flush);
    for (auto [flag, d] : {std::pair{"--p2p-epoch", c.p2p_epoch},
                           {"--p2p-bucket", c.p2p_bucket},
                           {"--p2p-flush", c.p2p_flush}}) {
        if (d.count() == 0) {
            return fail(flag, "must be more than 0");
        }
    }
    if (c.p2p_epoch % c.p2p_bucket != std::chrono::seconds(0)) {
        return fail("--p2p-epoch", durationText(c.p2p_epoch) +
                                       " is not a multiple of --p2p-bucket " +
                                       durationText(c.p2p_bucket));
    }
    if (c.p2p_flush >= c.p2p_bucket) {
        return fail("--p2p-flush", durationText(c.p2p_flush) + " must be less than --p2p-bucket " +
                                       durationText(c.p2p_bucket));
    }
    for (auto* ids : {&c.p2p_trust, &c.p2p_deny}) {
        for (auto& id : *ids) {
            std::transform(id.begin(), id.end(), id.begin(),
                           [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
        }
    }
    if (raw.no_p2p) {
        c.p2p = false; // the explicit opt-out wins over -p and the environment
    }
    if (c.bootstrap.empty()) {
        c.bootstrap = {"bootstrap.sentrypeer.org:4222"};
    }
    if (!raw.no_tls) {
        c.tls_listen = parseHostPort(raw.tls_listen);
    }
    if (c.cert.empty() != c.key.empty()) {
        return fail(c.cert.empty() ? "--key" : "--cert", "--cert and --key must be given together");
    }
    if (!c.sip_redirect.empty() && c.sip_redirect.rfind("sip:", 0) != 0 &&
        c.sip_redirect.rfind("sips:", 0) != 0) {
        return fail("--sip-redirect", "'" + c.sip_redirect + "' is not a sip: or sips: URI");
    }
    if (c.sip_redirect.find_first_of("\r\n<>") != std::string::npos) {
        return fail("--sip-redirect", "the URI contains forbidden characters");
    }
    if (c.sip_server_header.find_first_of("\r\n") != std::string::npos) {
        return fail("--sip-server-header", "must be one line");
    }
    if (c.threads == 0) {
        c.threads = std::max(1u, std::thread::hardware_concurrency());
    }
    c.config_file = app.get_config_ptr()->as<std::string>();
    return c;
}

std::string describe(const Config& c) {
    Config effective = c;
    Raw raw;
    Table app{"", "sentrypeer"};
    buildApp(app, effective, raw);
    Config defaults;
    Raw default_raw;
    Table default_app{"", "sentrypeer"};
    buildApp(default_app, defaults, default_raw);

    std::ostringstream o;
    o << "# sentrypeer " << core::kVersion << ": the effective configuration (-g reads it)\n";
    for (CLI::Option* opt : app.get_options()) {
        if (!opt->get_configurable()) {
            continue;
        }
        std::string key = keyOf(opt);
        std::string value = app.value(opt);
        bool empty = value == "\"\"" || value == "[]";
        const std::string& env = opt->get_envname();
        if (app.isSecret(opt)) {
            std::string use = env.empty() ? "" : ": use " + env;
            o << "# " << key << (empty ? " = (not set" : " = (set; not shown") << use << ")\n";
        } else if (empty && value == default_app.value(default_app.get_option(opt->get_name()))) {
            o << "# " << key << " = " << value << " (not set)\n";
        } else {
            o << key << " = " << value << "\n";
        }
    }
    return o.str();
}

std::vector<OptionInfo> optionTable() {
    Config c;
    Raw raw;
    Table app{"", "sentrypeer"};
    buildApp(app, c, raw);
    std::vector<OptionInfo> out;
    for (const CLI::Option* o : app.get_options()) {
        if (o->get_lnames().empty()) {
            continue;
        }
        out.push_back(OptionInfo{o->get_name(), keyOf(o), o->get_envname(), o->get_type_size() == 0,
                                 app.isSecret(o), o->get_configurable()});
    }
    return out;
}

} // namespace sp::config
