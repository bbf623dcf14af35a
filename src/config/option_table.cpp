// The option table: every option, its SENTRYPEER_* variable, its help text and checks.
#include "config/option_table.hpp"

#include <thread>

#include "config/checks.hpp"
#include "config/toml_values.hpp"

namespace sp::config::detail {

namespace {

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
} // namespace

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

} // namespace sp::config::detail
