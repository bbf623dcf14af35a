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
#include "config/option_table.hpp"
#include "config/toml.hpp"
#include "config/toml_values.hpp"
#include "core/text.hpp"
#include "core/version.hpp"

namespace sp::config {

using detail::buildOptions;
using detail::keyOf;
using detail::Raw;
using detail::Table;

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
