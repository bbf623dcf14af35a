#include "config/config.hpp"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <arpa/inet.h>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <thread>

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

// parse() runs at startup, before any other thread exists: getenv is safe there.
bool envSet(const std::string& name) {
    return std::getenv(name.c_str()) != nullptr; // NOLINT(concurrency-mt-unsafe)
}

// Booleans from the environment or the config file: SentryPeer treats any set variable as
// "on", even "0"; we accept exactly 1/true/yes/on and 0/false/no/off (any case).
std::string normaliseBool(const std::string& v) {
    std::string lower = v;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    if (lower == "1" || lower == "true" || lower == "yes" || lower == "on") {
        return "true";
    }
    if (lower == "0" || lower == "false" || lower == "no" || lower == "off" || lower == "-1") {
        return "false"; // "-1" is how CLI11 spells an explicit false internally
    }
    throw CLI::ValidationError("'" + v +
                               "' is not a boolean (use 1/true/yes/on or 0/false/no/off)");
}

std::string checkDuration(const std::string& v) {
    if (!core::parseDuration(v)) {
        return "'" + v + "' is not a duration (e.g. 0, 90s, 15m, 12h, 7d, 2w)";
    }
    return {};
}

std::string checkHostPort(const std::string& v) {
    if (!parseHostPort(v)) {
        return "'" + v + "' is not ADDR:PORT with a numeric IPv4 address or [IPv6] and a port";
    }
    return {};
}

// The config file: TOML, keys are long option names with '-' or '_' (SentryPeer's file
// uses cert, key and tls_listen_address). CLI11 lets the file override the environment;
// we want file < environment, so keys whose variable is set are dropped here.
class TomlConfig : public CLI::ConfigTOML {
public:
    explicit TomlConfig(const CLI::App& app) {
        for (const CLI::Option* o : app.get_options()) {
            const std::string& env = o->get_envname();
            if (!env.empty() && envSet(env)) {
                for (const auto& name : o->get_lnames()) {
                    set_by_env_.push_back(name);
                }
            }
        }
    }

    std::vector<CLI::ConfigItem> from_config(std::istream& input) const override {
        auto parsed = CLI::ConfigTOML::from_config(input);
        std::vector<CLI::ConfigItem> kept;
        for (auto& item : parsed) {
            std::string original = item.name;
            std::replace(item.name.begin(), item.name.end(), '_', '-');
            original_names_[item.name] = original;
            if (item.name == "tls-listen-address") {
                item.name = "tls-listen";
            }
            if (std::find(set_by_env_.begin(), set_by_env_.end(), item.name) == set_by_env_.end()) {
                kept.push_back(std::move(item));
            }
        }
        return kept;
    }

    // The key as the file spelt it, for error messages.
    std::string originalName(const std::string& normalised) const {
        auto it = original_names_.find(normalised);
        return it == original_names_.end() ? normalised : it->second;
    }

private:
    std::vector<std::string> set_by_env_;
    mutable std::map<std::string, std::string> original_names_;
};

struct Raw {
    std::vector<std::string> sip_listen;
    std::string api_listen = "127.0.0.1:8082";
    bool p2p_flag = false;
    bool no_p2p = false;
    std::string tls_listen = "0.0.0.0:5061";
    bool no_tls = false;
    std::string max_age = "7d";
    std::string tcp_idle_timeout = "30s";
};

CLI::Option* addFlag(CLI::App& app, const std::string& names, bool& target, const std::string& env,
                     const std::string& help) {
    auto* o = app.add_flag(names, target, help)->transform(normaliseBool);
    if (!env.empty()) {
        o->envname(env);
    }
    return o;
}

template <typename T>
CLI::Option* addOption(CLI::App& app, const std::string& names, T& target, const std::string& env,
                       const std::string& help) {
    auto* o = app.add_option(names, target, help)->capture_default_str();
    if (!env.empty()) {
        o->envname(env);
    }
    return o;
}

// The option table. Every option has a long name (the config file key); SentryPeer's short
// flags and SENTRYPEER_* variables are kept.
void buildOptions(CLI::App& app, Config& c, Raw& raw) {
    app.option_defaults()->group("Options");
    // Storage
    addOption(app, "-f,--db-file", c.db_file, "SENTRYPEER_DB_FILE", "SQLite database file");
    addOption(app, "--data-dir", c.data_dir, "SENTRYPEER_DATA_DIR",
              "Directory for the node id and the generated TLS certificate "
              "(default: the database's directory)");
    addOption(app, "--max-age", raw.max_age, "SENTRYPEER_MAX_AGE",
              "Keep events this long, e.g. 12h, 7d; 0 keeps everything")
        ->check(checkDuration);
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
              "POST each event as JSON to this http(s) URL");
    addOption(app, "-i,--oauth2-client-id", c.oauth2_client_id, "SENTRYPEER_OAUTH2_CLIENT_ID",
              "OAuth2 client id for the webhook (with --oauth2-client-secret)");
    addOption(app, "-c,--oauth2-client-secret", c.oauth2_client_secret,
              "SENTRYPEER_OAUTH2_CLIENT_SECRET", "OAuth2 client secret for the webhook");
    addOption(app, "--oauth2-token-url", c.oauth2_token_url, "SENTRYPEER_OAUTH2_TOKEN_URL",
              "OAuth2 token endpoint (client credentials grant)");
    addOption(app, "--oauth2-audience", c.oauth2_audience, "SENTRYPEER_OAUTH2_AUDIENCE",
              "OAuth2 audience of the webhook token");
    // SIP
    addFlag(app, "-r,--sip-responsive", c.sip_responsive, "SENTRYPEER_SIP_RESPONSIVE",
            "Answer SIP requests (default: passive, never send a byte)");
    addFlag(app, "-R,--sip-disable", c.sip_disable, "SENTRYPEER_SIP_DISABLE",
            "Run without any SIP listener");
    addOption(app, "--sip-listen", raw.sip_listen, "SENTRYPEER_SIP_LISTEN",
              "UDP+TCP SIP listen address, repeatable (default 0.0.0.0:5060 and [::]:5060)")
        ->check(checkHostPort)
        ->delimiter(',');
    addOption(app, "-z,--tls-listen", raw.tls_listen, "SENTRYPEER_TLS_LISTEN_ADDRESS",
              "TLS SIP listen address")
        ->check(checkHostPort);
    addFlag(app, "--no-tls", raw.no_tls, "SENTRYPEER_NO_TLS", "Do not listen for SIP over TLS");
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
    // REST API
    addFlag(app, "-a,--api", c.api, "SENTRYPEER_API", "Serve the REST API");
    addOption(app, "--api-listen", raw.api_listen, "SENTRYPEER_API_LISTEN",
              "REST API listen address (loopback by default; 0.0.0.0:8082 opens it)")
        ->check(checkHostPort);
    addOption(app, "--api-token", c.api_token, "SENTRYPEER_API_TOKEN",
              "Require 'Authorization: Bearer <token>' on every route but /health-check");
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
    addFlag(app, "-p,--p2p", raw.p2p_flag, "",
            "Peer-to-peer sharing (on by default; kept for SentryPeer's command line)");
    addFlag(app, "--no-p2p", raw.no_p2p, "",
            "Opt out of peer-to-peer sharing: send and receive nothing");
    addFlag(app, "--peer-to-peer", c.p2p, "SENTRYPEER_PEER_TO_PEER",
            "Peer-to-peer sharing on or off (SENTRYPEER_PEER_TO_PEER=0 opts out)")
        ->group("");
    addOption(app, "-b,--bootstrap", c.bootstrap, "SENTRYPEER_BOOTSTRAP_NODE",
              "DHT bootstrap node HOST[:PORT], repeatable (default bootstrap.sentrypeer.org:4222)")
        ->delimiter(',');
    addOption(app, "--dht-port", c.dht_port, "SENTRYPEER_DHT_PORT", "DHT UDP port (IPv4 and IPv6)")
        ->check(CLI::Range(1, 65535));
    addOption(app, "--dht-network", c.dht_network, "SENTRYPEER_DHT_NETWORK",
              "DHT network id: 0 is the public SentryPeer network; another number makes a "
              "private community");
    addFlag(app, "--dht-no-rate-limit", c.dht_no_rate_limit, "SENTRYPEER_DHT_NO_RATE_LIMIT",
            "Lift OpenDHT's per-IP rate limit (private networks, tests on loopback)");
    // Operations
    addFlag(app, "-v,--verbose", c.verbose, "SENTRYPEER_VERBOSE", "Verbose logging");
    addFlag(app, "-d,--debug", c.debug, "SENTRYPEER_DEBUG", "Debug logging");
    addOption(app, "--threads", c.threads, "SENTRYPEER_THREADS",
              "Network threads (0: one per core)")
        ->check(CLI::Range(0, 256));
    app.add_flag("--check-config", c.check_config,
                 "Validate the configuration, print it as TOML and exit");
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
    CLI::App app{"sentrypeer: a SIP honeypot that records VoIP fraud probes and shares them "
                 "peer to peer",
                 "sentrypeer"};
    app.set_config("-g,--config", "",
                   "TOML configuration file (keys: long option names; env SENTRYPEER_CONFIG_FILE)");
    app.allow_config_extras(CLI::config_extras_mode::error);
    app.set_version_flag("-V,--version", std::string("sentrypeer ") + core::kVersion + " (git " +
                                             core::kGitRevision + ")");
    buildOptions(app, c, raw);
    auto toml = std::make_shared<TomlConfig>(app);
    app.config_formatter(toml);

    // CLI11 reads the config file before the environment, so SENTRYPEER_CONFIG_FILE is
    // handled here: it names the file unless -g/--config is on the command line.
    std::vector<std::string> args(argv + 1, argv + argc);
    // NOLINTNEXTLINE(concurrency-mt-unsafe): parse() runs at startup, before any thread.
    const char* env_config = std::getenv("SENTRYPEER_CONFIG_FILE");
    bool has_config_flag = std::any_of(args.begin(), args.end(), [](const std::string& a) {
        return a == "-g" || a == "--config" || a.rfind("--config=", 0) == 0 ||
               (a.size() > 2 && a.rfind("-g", 0) == 0);
    });
    if (env_config != nullptr && *env_config != '\0' && !has_config_flag) {
        args.insert(args.begin(), {"--config", env_config});
    }
    std::reverse(args.begin(), args.end()); // CLI11 takes the arguments in reverse order
    try {
        app.parse(args);
    } catch (const CLI::CallForHelp&) {
        return Exit{0, app.help()};
    } catch (const CLI::CallForAllHelp&) {
        return Exit{0, app.help("", CLI::AppFormatMode::All)};
    } catch (const CLI::CallForVersion& e) {
        return Exit{0, e.what()};
    } catch (const CLI::ConfigError& e) {
        // A key that is no option, or a line that is not TOML: name the file and the key
        // as written (the parser has turned '_' into '-').
        std::string what = oneLine(e.what());
        const std::string marker = "INI was not able to parse ";
        if (auto at = what.find(marker); at != std::string::npos) {
            std::string key = what.substr(at + marker.size());
            what = "unknown key or not TOML: '" + toml->originalName(key) + "'";
        }
        std::string file = app.get_config_ptr()->as<std::string>();
        return Exit{2, "sentrypeer: " + (file.empty() ? std::string("config file") : file) + ": " +
                           what};
    } catch (const CLI::ParseError& e) {
        std::string what = oneLine(e.what());
        // A bad value from the environment: say which variable it came from.
        for (const CLI::Option* o : app.get_options()) {
            const std::string& env = o->get_envname();
            bool on_command_line = std::any_of(args.begin(), args.end(), [&](const std::string& a) {
                return o->check_name(a.substr(0, a.find('=')));
            });
            if (!env.empty() && envSet(env) && !on_command_line &&
                what.find(o->get_name()) != std::string::npos) {
                what += " (from " + env + ")";
                break;
            }
        }
        return Exit{2, "sentrypeer: " + what};
    }

    if (app.count("--json-log-file") > 0) {
        c.json_log = true;
    }
    c.max_age = *core::parseDuration(raw.max_age);
    c.tcp_idle_timeout = *core::parseDuration(raw.tcp_idle_timeout);
    if (c.tcp_idle_timeout.count() == 0) {
        return Exit{2, "sentrypeer: --tcp-idle-timeout: must be more than 0"};
    }
    if (raw.sip_listen.empty()) {
        raw.sip_listen = {"0.0.0.0:5060", "[::]:5060"};
    }
    for (const auto& s : raw.sip_listen) {
        c.sip_listen.push_back(*parseHostPort(s));
    }
    c.api_listen = *parseHostPort(raw.api_listen);
    if (raw.no_p2p) {
        c.p2p = false; // the explicit opt-out wins over -p and the environment
    }
    if (c.bootstrap.empty()) {
        c.bootstrap = {"bootstrap.sentrypeer.org:4222"};
    }
    for (const auto& b : c.bootstrap) {
        if (b.empty() || b.size() > 255 || b.find_first_of(" \t\r\n/") != std::string::npos) {
            return Exit{2, "sentrypeer: --bootstrap: '" + b + "' is not HOST[:PORT]"};
        }
    }
    if (!raw.no_tls) {
        c.tls_listen = parseHostPort(raw.tls_listen);
    }
    if (c.cert.empty() != c.key.empty()) {
        return Exit{2, "sentrypeer: --cert and --key must be given together"};
    }
    if (!c.sip_redirect.empty() && c.sip_redirect.rfind("sip:", 0) != 0 &&
        c.sip_redirect.rfind("sips:", 0) != 0) {
        return Exit{2, "sentrypeer: --sip-redirect: '" + c.sip_redirect +
                           "' is not a sip: or sips: URI"};
    }
    if (c.sip_redirect.find_first_of("\r\n<>") != std::string::npos) {
        return Exit{2, "sentrypeer: --sip-redirect: the URI contains forbidden characters"};
    }
    if (!c.webhook_url.empty() && c.webhook_url.rfind("http://", 0) != 0 &&
        c.webhook_url.rfind("https://", 0) != 0) {
        return Exit{2, "sentrypeer: --webhook-url: '" + c.webhook_url +
                           "' is not an http:// or https:// URL"};
    }
    if (c.sip_server_header.find_first_of("\r\n") != std::string::npos) {
        return Exit{2, "sentrypeer: --sip-server-header: must be one line"};
    }
    if (c.threads == 0) {
        c.threads = std::max(1u, std::thread::hardware_concurrency());
    }
    c.config_file = app.get_config_ptr()->as<std::string>();
    return c;
}

std::string describe(const Config& c) {
    std::ostringstream o;
    auto q = [](const std::string& s) {
        std::string out = "\"";
        for (char ch : s) {
            if (ch == '"' || ch == '\\') {
                out.push_back('\\');
            }
            out.push_back(ch);
        }
        return out + "\"";
    };
    auto b = [](bool v) { return v ? "true" : "false"; };
    o << "db_file = " << q(c.db_file) << "\n";
    o << "data_dir = " << q(c.dataDir()) << "\n";
    o << "max_age = \"" << c.max_age.count() << "s\"\n";
    o << "json_log = " << b(c.json_log) << "\n";
    if (c.json_log) { // a json_log_file key implies json_log
        o << "json_log_file = " << q(c.json_log_file) << "\n";
    }
    o << "syslog = " << b(c.syslog) << "\n";
    o << "syslog_socket = " << q(c.syslog_socket) << "\n";
    o << "webhook_url = " << q(c.webhook_url) << "\n";
    o << "oauth2_client_id = " << q(c.oauth2_client_id) << "\n";
    o << "oauth2_client_secret = " << q(c.oauth2_client_secret.empty() ? "" : "<set>") << "\n";
    o << "oauth2_token_url = " << q(c.oauth2_token_url) << "\n";
    o << "oauth2_audience = " << q(c.oauth2_audience) << "\n";
    o << "sip_responsive = " << b(c.sip_responsive) << "\n";
    o << "sip_disable = " << b(c.sip_disable) << "\n";
    o << "sip_listen = [";
    for (std::size_t i = 0; i < c.sip_listen.size(); ++i) {
        o << (i ? ", " : "") << q(c.sip_listen[i].str());
    }
    o << "]\n";
    if (c.tls_listen) {
        o << "tls_listen = " << q(c.tls_listen->str()) << "\n";
    } else {
        o << "no_tls = true\n";
    }
    if (!c.cert.empty()) {
        o << "cert = " << q(c.cert) << "\n";
        o << "key = " << q(c.key) << "\n";
    }
    o << "sip_agent = " << c.sip_agent << "\n";
    o << "sip_redirect = " << q(c.sip_redirect) << "\n";
    o << "sip_server_header = " << q(c.sip_server_header) << "\n";
    o << "tcp_max_connections = " << c.tcp_max_connections << "\n";
    o << "tcp_max_per_ip = " << c.tcp_max_per_ip << "\n";
    o << "tcp_idle_timeout = \"" << c.tcp_idle_timeout.count() << "s\"\n";
    o << "api = " << b(c.api) << "\n";
    o << "api_listen = " << q(c.api_listen.str()) << "\n";
    if (!c.api_token.empty()) {
        o << "api_token = \"<set>\"\n"; // never print secrets
    }
    o << "peer_to_peer = " << b(c.p2p) << "\n";
    o << "bootstrap = [";
    for (std::size_t i = 0; i < c.bootstrap.size(); ++i) {
        o << (i ? ", " : "") << q(c.bootstrap[i]);
    }
    o << "]\n";
    o << "dht_port = " << c.dht_port << "\n";
    o << "dht_network = " << c.dht_network << "\n";
    o << "dht_no_rate_limit = " << b(c.dht_no_rate_limit) << "\n";
    o << "verbose = " << b(c.verbose) << "\n";
    o << "debug = " << b(c.debug) << "\n";
    o << "threads = " << c.threads << "\n";
    return o.str();
}

} // namespace sp::config
